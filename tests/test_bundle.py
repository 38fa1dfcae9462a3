"""Bundle names, the lock file, SHA256SUMS, and verify end to end."""

from __future__ import annotations

import hashlib
import json
import subprocess

import pytest

from wsm._bundle import (
    Bundle,
    BundleDir,
    assign_names,
    image_stem,
    portable_stem,
    read_checksums,
    write_checksums,
)
from wsm._exceptions import BundleError, CorruptBundle
from wsm._lock import BundleChart, BundleLock
from wsm._reference import Reference
from wsm._remote import Platform
from wsm._verify import VerifyReport
from wsm._verify import verify as verify_bundle

WINDOWS_REFUSES = set('<>:"/\\|?*@')


@pytest.mark.parametrize(
    "reference,stem",
    [
        ("redis:7", "docker.io_library_redis_7"),
        ("127.0.0.1:5000/acme/app:1.0", "127.0.0.1_5000_acme_app_1.0"),
        ("quay.io/prometheus/node-exporter:v1.8.2", "quay.io_prometheus_node-exporter_v1.8.2"),
        ("wandb/local@sha256:" + "0123456789ab" + "f" * 52, "docker.io_wandb_local_sha256-0123456789ab"),
        ("wandb/local:0.62@sha256:" + "a" * 64, "docker.io_wandb_local_0.62"),
        ("[::1]:5000/acme/app:1", "1__5000_acme_app_1"),
    ],
)
def test_image_file_names_are_readable_and_portable(reference, stem):
    assert image_stem(Reference.parse(reference)) == stem
    assert not WINDOWS_REFUSES & set(stem)


def test_long_and_odd_names_stay_portable_and_distinct():
    long_tag = "v" + "1" * 127
    first = image_stem(Reference.parse(f"registry.example.com/{'a' * 100}/{'b' * 60}:{long_tag}"))
    second = image_stem(Reference.parse(f"registry.example.com/{'a' * 100}/{'b' * 60}:{long_tag[:-1]}2"))
    assert len(first) <= 190 and first != second
    assert portable_stem("ünïcode tag:\tx") == "n_code_tag__x"


def test_colliding_names_get_a_short_hash_and_case_counts_as_a_collision():
    wanted = [
        ("docker.io/acme/app_x:1", "docker.io_acme_app_x_1"),
        ("docker.io/acme/app/x:1", "docker.io_acme_app_x_1"),
        ("docker.io/acme/app:V1", "docker.io_acme_app_V1"),
        ("docker.io/acme/app:v1", "docker.io_acme_app_v1"),
    ]
    names = assign_names(wanted, {}, ".tar")
    assert len({name.lower() for name in names.values()}) == 4  # distinct on exFAT and NTFS too
    assert names["docker.io/acme/app/x:1"] == "docker.io_acme_app_x_1.tar"  # first in key order: plain name
    assert names["docker.io/acme/app_x:1"].startswith("docker.io_acme_app_x_1-")
    assert names == assign_names(list(reversed(wanted)), {}, ".tar")  # stable, whatever the order


def test_names_from_an_earlier_run_are_kept_so_that_reruns_resume():
    kept = {"docker.io/acme/app_x:1": "docker.io_acme_app_x_1.tar"}
    names = assign_names([("docker.io/acme/app/x:1", "docker.io_acme_app_x_1")], kept, ".tar")
    assert names["docker.io/acme/app/x:1"] != "docker.io_acme_app_x_1.tar"


def test_lock_round_trips(tmp_path):
    bundle = BundleDir(tmp_path)
    bundle.prepare()
    assert bundle.read_lock() is None
    lock = BundleLock(manifest="release: x\n", platforms=(Platform.parse("linux/amd64"),))
    chart = BundleChart("wandb", "1.2.3", "https://charts.wandb.ai", "core", "charts/wandb-1.2.3.tgz", "sha256:ab", 3)
    lock.charts[chart.key] = chart
    bundle.write_lock(lock)
    again = bundle.read_lock()
    assert again.to_dict() == lock.to_dict()
    assert json.loads(bundle.lock_path.read_text())["format"] == 1
    assert not list(tmp_path.glob("*.partial"))


def test_a_damaged_or_newer_lock_is_refused_in_one_line(tmp_path):
    bundle = BundleDir(tmp_path)
    bundle.lock_path.write_text("{not json")
    with pytest.raises(BundleError, match="wsm.lock.json: unreadable.*move it aside"):
        bundle.read_lock()
    bundle.lock_path.write_text(json.dumps({"format": 99, "images": []}))
    with pytest.raises(BundleError, match="newer wsm"):
        bundle.read_lock()
    bundle.lock_path.write_text(json.dumps({"format": 1, "images": [{"image": "x"}]}))
    with pytest.raises(BundleError, match=r"wsm.lock.json: images\[0\].digest: is missing; the lock file was edited "
                                          "or damaged") as caught:
        bundle.read_lock()
    assert "\n" not in str(caught.value)


def test_a_bundle_path_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(BundleError, match="is a file, not a directory"):
        BundleDir(tmp_path / "file").prepare()


def test_sha256sums_is_read_by_sha256sum_and_leaves_out_the_work_area(tmp_path):
    bundle = BundleDir(tmp_path)
    bundle.prepare()
    (bundle.images / "a.tar").write_bytes(b"a" * 1000)
    (bundle.charts / "c-1.0.tgz").write_bytes(b"chart")
    (bundle.blobs / ("0" * 64)).write_bytes(b"partial work")
    (bundle.images / "b.tar.partial").write_bytes(b"half")
    (tmp_path / "notes with space.txt").write_text("hello")
    write_checksums(bundle, BundleLock())
    sums = read_checksums(bundle.sums_path)
    assert list(sums) == ["charts/c-1.0.tgz", "images/a.tar", "notes with space.txt"]
    checked = subprocess.run(
        ["sha256sum", "-c", "--strict", "SHA256SUMS"], cwd=tmp_path, capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_checksums_come_from_the_lock_for_big_files_so_later_damage_shows(tmp_path):
    bundle = BundleDir(tmp_path)
    bundle.prepare()
    (bundle.charts / "c-1.0.tgz").write_bytes(b"chart")
    lock = BundleLock()
    digest = "sha256:" + hashlib.sha256(b"chart").hexdigest()
    chart = BundleChart("c", "1.0", "repo", "g", "charts/c-1.0.tgz", digest, 5)
    lock.charts[chart.key] = chart
    bundle.write_lock(lock)
    (bundle.charts / "c-1.0.tgz").write_bytes(b"CHART")  # damaged after it was written, same size
    write_checksums(bundle, lock)
    assert read_checksums(bundle.sums_path)["charts/c-1.0.tgz"] == digest.split(":")[1]


def test_a_malformed_sha256sums_line_is_named(tmp_path):
    (tmp_path / "SHA256SUMS").write_text("abc  file\n")
    with pytest.raises(BundleError, match="SHA256SUMS, line 1"):
        read_checksums(tmp_path / "SHA256SUMS")
    with pytest.raises(BundleError, match="rerun wsm download"):
        read_checksums(tmp_path / "missing")


# ------------------------------------------------------------------------------------- verify, end to end


@pytest.fixture
def downloaded(registry, tmp_path, plain_client):
    """A fresh bundle: two images (one multi-platform) and a chart."""
    from images import make_image
    from wsm._download import download
    from wsm._model import ResolvedChart, ResolvedImage

    built = {
        "verify/one": make_image(registry, "verify/one", tmp_path, layer_sizes=(30_000, 20_000), incompressible=True),
        "verify/two": make_image(registry, "verify/two", tmp_path, platforms=("linux/amd64", "linux/arm64")),
    }
    archive = tmp_path / "chart.tgz"
    archive.write_bytes(b"chart bytes" * 50)
    chart = ResolvedChart("app", "1.0.0", "https://charts.example.com", "core", archive)
    images = [ResolvedImage(Reference.parse(f"{registry.host}/{name}:1.0"), "core") for name in built]
    report = download(images, [chart], tmp_path / "bundle", client=plain_client, platforms=None)
    assert report.ok
    return tmp_path / "bundle", built


def verify(root) -> VerifyReport:
    return verify_bundle(Bundle.open(root))


def rewrite_checksums(root) -> None:
    """SHA256SUMS made again with `sha256sum` over what is there now, as someone covering up a change would."""
    files = BundleDir(root).files()
    sums = subprocess.run(["sha256sum", *files], cwd=root, check=True, capture_output=True, text=True).stdout
    (root / "SHA256SUMS").write_text(sums)


def flip_byte(path, offset: int) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0x40]))


def test_verify_passes_on_a_fresh_bundle_and_counts_what_it_checked(downloaded):
    root, built = downloaded
    report = verify(root)
    assert report.ok and report.files_checked == 5 and report.images_checked == 2 and report.charts_checked == 1
    assert report.tool_checked  # tools/wsm.pyz
    assert report.blobs_checked == sum(len(b.blobs) for b in built.values())
    assert report.bytes_checked == sum(p.stat().st_size for p in root.rglob("*") if p.is_file()
                                       and ".wsm-partial" not in p.parts and p.name not in ("SHA256SUMS", "REPORT.md"))


def test_one_flipped_byte_in_a_tarball_names_the_file_and_the_blob(downloaded):
    import tarfile

    root, built = downloaded
    tar = next((root / "images").glob("*verify_one*"))
    layer = max(built["verify/one"].blobs, key=built["verify/one"].blobs.get)
    with tarfile.open(tar) as archive:
        offset = archive.getmember("blobs/sha256/" + layer.split(":")[1]).offset_data + 12_345
    flip_byte(tar, offset)
    with pytest.raises(CorruptBundle) as caught:
        verify(root)
    message = str(caught.value)
    assert message.startswith(f"bundle {root}: images/{tar.name} (blob {layer}): content hashes to sha256:")
    assert "(1 more problem)" in message and "\n" not in message  # the whole-file sum differs too
    report = caught.value.report
    assert [(p.file, p.blob) for p in report.problems] == [(f"images/{tar.name}", layer), (f"images/{tar.name}", None)]


def test_a_flipped_byte_in_a_tar_header_or_a_chart_names_that_file(downloaded):
    root, _ = downloaded
    tar = next((root / "images").glob("*verify_two*"))
    flip_byte(tar, 0)  # the first member's name: no blob is damaged, the file still is
    flip_byte(root / "charts/app-1.0.0.tgz", 5)
    with pytest.raises(CorruptBundle) as caught:
        verify(root)
    assert str(caught.value).startswith(f"bundle {root}: charts/app-1.0.0.tgz: sha256 is ")
    assert [p.file for p in caught.value.report.problems] == ["charts/app-1.0.0.tgz", f"images/{tar.name}"]


def test_unlisted_files_are_reported_and_missing_ones_are_errors(downloaded):
    root, _ = downloaded
    (root / "images/extra.tar").write_bytes(b"someone put this here")
    report = verify(root)
    assert report.ok and report.unlisted == ["images/extra.tar"]  # reported, not an error: it is never pushed
    (root / "charts/app-1.0.0.tgz").unlink()
    with pytest.raises(CorruptBundle, match=r"charts/app-1.0.0.tgz is listed in SHA256SUMS but missing") as caught:
        verify(root)
    assert caught.value.report.missing == ["charts/app-1.0.0.tgz"]
    rewrite_checksums(root)  # a SHA256SUMS rewritten without it does not hide it: the lock still lists it
    with pytest.raises(CorruptBundle, match=r"charts/app-1.0.0.tgz: listed in the lock file but not in SHA256SUMS"):
        verify(root)


def test_a_tarball_replaced_by_another_image_is_caught_against_the_lock(downloaded):
    root, _ = downloaded
    one = next((root / "images").glob("*verify_one*"))
    two = next((root / "images").glob("*verify_two*"))
    one.write_bytes(two.read_bytes())
    rewrite_checksums(root)  # even with SHA256SUMS rewritten to match, the lock says what belongs there
    with pytest.raises(CorruptBundle, match=rf"images/{one.name} \(blob sha256:\w+\): not in the lock file"):
        verify(root)


def test_a_tarball_edited_with_sha256sums_rewritten_is_caught_by_the_lock(downloaded):
    """Renaming the image in manifest.json changes no blob; the lock's file_sha256 still tells."""
    import tarfile

    root, _ = downloaded
    tar = next((root / "images").glob("*verify_two*"))
    with tarfile.open(tar) as archive:
        member = archive.getmember("manifest.json")
    data = bytearray(tar.read_bytes())
    start = member.offset_data
    text = bytes(data[start : start + member.size])
    assert b"verify/two:1.0" in text
    data[start : start + member.size] = text.replace(b"verify/two:1.0", b"verify/evi:1.0")  # same length
    tar.write_bytes(bytes(data))
    rewrite_checksums(root)
    with pytest.raises(CorruptBundle, match=rf"images/{tar.name}: sha256 is \w+, the lock says \w+"):
        verify(root)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", ["fifo", "link to /dev/zero"])
def test_a_tarball_that_is_not_a_regular_file_is_refused_without_reading_it(downloaded, kind):
    import os

    root, _ = downloaded
    tar = next((root / "images").glob("*verify_one*"))
    tar.unlink()
    if kind == "fifo":
        os.mkfifo(tar)
    else:
        tar.symlink_to("/dev/zero")
    with pytest.raises(CorruptBundle, match=rf"images/{tar.name}: is not a regular file"):
        verify(root)
