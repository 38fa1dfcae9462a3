"""The change-ticket report: REPORT.md of a downloaded bundle, `wsm report -o json`, and two releases compared."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from images import BuiltImage, _write_blob, build_image, make_image, push_layout
from support import sha256, wsm
from wsm._bundle import Bundle
from wsm._download import download
from wsm._model import ImageSource, Method, ResolvedChart, ResolvedImage
from wsm._reference import Reference
from wsm._verify import verify


def resolved(host: str, name: str, tag: str) -> ResolvedImage:
    source = ImageSource(chart="app", method=Method.VALUES, path=f"{name.split('/')[-1]}.image")
    return ResolvedImage(Reference.parse(f"{host}/{name}:{tag}"), "core", (source,))


def chart(tmp_path: Path, version: str) -> ResolvedChart:
    archive = tmp_path / f"app-{version}.tgz"
    archive.write_bytes(f"pretend chart archive {version}".encode() * 50)
    return ResolvedChart("app", version, "https://charts.example.com", "core", archive, sha256(archive.read_bytes()))


def rebuilt(old: BuiltImage, layout: Path) -> BuiltImage:
    """The next release of a single-platform image: the same layers under a new config, so a new digest."""
    shutil.copytree(old.layout, layout)
    manifest = json.loads((layout / "manifest.json").read_text())
    config = json.loads((layout / manifest["config"]["digest"].split(":")[1]).read_text())
    config["config"]["Cmd"] = ["/bin/false"]
    digest, size = _write_blob(layout, json.dumps(config).encode())
    manifest["config"].update(digest=digest, size=size)
    body = json.dumps(manifest).encode()
    top, _ = _write_blob(layout, body)
    (layout / "manifest.json").write_bytes(body)
    return BuiltImage(layout, old.tag, top, old.media_type)


@pytest.fixture(scope="module")
def releases(registry, plain_client, tmp_path_factory):
    """Release 1: keep:1.0, moved:1.0, gone:1.0, chart 1.0.0. Release 2: keep:1.0 (same), moved:1.0 retagged
    to an image with the same layers, new:1.0, chart 1.1.0."""
    work = tmp_path_factory.mktemp("report")
    host = registry.host
    make_image(registry, "report/keep", work)
    moved = make_image(registry, "report/moved", work)
    make_image(registry, "report/gone", work)
    old_images = [resolved(host, f"report/{name}", "1.0") for name in ("keep", "moved", "gone")]
    old = work / "old"
    assert download(old_images, [chart(work, "1.0.0")], old, client=plain_client, platforms=None).ok
    push_layout(rebuilt(moved, work / "moved-2"), f"{host}/report/moved:1.0")
    make_image(registry, "report/new", work)
    new_images = [resolved(host, f"report/{name}", "1.0") for name in ("keep", "moved", "new")]
    new = work / "new"
    assert download(new_images, [chart(work, "1.1.0")], new, client=plain_client, platforms=None).ok
    return {"old": old, "new": new, "host": host, "moved": moved}


def lock(bundle: Path) -> dict:
    return json.loads((bundle / "wsm.lock.json").read_text())


def test_report_md_states_the_root_digest_exact_totals_and_every_image(releases):
    bundle = releases["old"]
    text = (bundle / "REPORT.md").read_text()
    data = lock(bundle)
    root = "sha256:" + sha256((bundle / "SHA256SUMS").read_bytes()).split(":")[1]
    blobs = {b["digest"]: b["size"] for image in data["images"] for b in image["blobs"]}
    size = sum(i["file_size"] for i in data["images"]) + sum(c["size"] for c in data["charts"])
    assert f"Root digest: `{root}`" in text
    assert f"3 images, 1 charts, {size} bytes" in text and f"{len(blobs)} distinct blobs, {sum(blobs.values())} bytes" in text
    for image in data["images"]:
        assert f"| {image['image']} | `{image['digest']}` | {image['file_size']} | linux/amd64 | app: " in text
    assert "| app | 1.0.0 |" in text
    checked = verify(Bundle.open(bundle))  # outside SHA256SUMS, and checked against the lock
    assert checked.ok and not checked.unlisted


def test_report_json_has_the_documented_shape(releases):
    result = wsm("report", str(releases["new"]), "-o", "json", cwd=releases["new"].parent)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert set(data) == {"root_digest", "totals", "images", "charts", "since"} and data["since"] is None
    assert data["totals"]["images"] == 3 and data["totals"]["charts"] == 1
    moved = next(i for i in data["images"] if i["image"].endswith("report/moved:1.0"))
    assert set(moved) == {"image", "digest", "top", "kept", "size", "platforms", "group", "sources",
                          "referrers"}
    assert moved["platforms"] == ["linux/amd64"] and moved["sources"][0] == {
        "chart": "app", "method": "values", "path": "moved.image"}
    text = wsm("report", str(releases["new"]), cwd=releases["new"].parent).stdout
    assert text == (releases["new"] / "REPORT.md").read_text()


def test_two_releases_compared_added_removed_changed_and_bytes_saved(releases):
    old, new, host = releases["old"], releases["new"], releases["host"]
    result = wsm("report", str(new), "--since", str(old), "-o", "json", cwd=new.parent)
    assert result.returncode == 0, result.stderr
    since = json.loads(result.stdout)["since"]
    old_lock, new_lock = lock(old), lock(new)
    moved = f"{host}/report/moved:1.0"
    digest = {lock_name: {i["image"]: i["digest"] for i in data["images"]}
              for lock_name, data in (("old", old_lock), ("new", new_lock))}
    assert since["base_root_digest"] == "sha256:" + sha256((old / "SHA256SUMS").read_bytes()).split(":")[1]
    assert since["images"] == {
        "added": [f"{host}/report/new:1.0"], "removed": [f"{host}/report/gone:1.0"],
        "changed": [{"name": moved, "old": digest["old"][moved], "new": digest["new"][moved]}]}
    assert since["charts"]["changed"][0]["name"] == "https://charts.example.com#app"
    old_blobs = {b["digest"] for i in old_lock["images"] for b in i["blobs"]}
    new_blobs = {b["digest"]: b["size"] for i in new_lock["images"] for b in i["blobs"]}
    fresh = {d: s for d, s in new_blobs.items() if d not in old_blobs}
    # the moved image kept its layers: only its config and manifest, and all of new:1.0, are new
    new_image = next(i for i in new_lock["images"] if i["image"].endswith("report/new:1.0"))
    assert len(fresh) == 2 + len(new_image["blobs"])
    assert since["new_blob_bytes"] == sum(fresh.values())
    assert since["bytes_saved"] == sum(new_blobs.values()) - sum(fresh.values()) > 0
    text = wsm("report", str(new), "--since", str(old / "wsm.lock.json"), cwd=new.parent).stdout
    assert "Images: 1 added, 1 removed, 1 changed" in text and f"- changed {moved}:" in text


def test_an_edited_report_fails_verify(releases, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(releases["old"], copy)
    (copy / "REPORT.md").write_text((copy / "REPORT.md").read_text().replace("3 images", "2 images"))
    result = wsm("verify", str(copy), cwd=tmp_path)
    assert result.returncode == 1 and "REPORT.md" in result.stderr
