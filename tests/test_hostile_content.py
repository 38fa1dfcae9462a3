"""Upstream content is hostile: alias bombs, deep nesting, chart and values bombs, names that would become paths,
and invalid image references. Each is refused (or reported) in one line, in well under 200 MB."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
import yaml

from hostile import ALIAS_BOMB, Zeros, add_member, chart_tgz, measured_wsm
from support import one_line_error, wsm

MEMORY_MB = 200


def refused(tmp_path: Path, *args: str, fragments: tuple[str, ...]) -> None:
    result, peak = measured_wsm(*args, cwd=tmp_path)
    one_line_error(result, *fragments)
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert peak < MEMORY_MB, f"peak {peak} MB"


def write(path: Path, data: bytes | str) -> Path:
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


def manifest(archive: Path, **entry: object) -> str:
    return yaml.safe_dump({"apiVersion": "wsm/v1", "kind": "Release", "name": "r",
                           "charts": [{"name": "app", "path": str(archive), **entry}]})


# --- YAML budgets ------------------------------------------------------------------------------------------


def test_alias_bomb_in_chart_values(tmp_path):
    chart = write(tmp_path / "bomb.tgz", chart_tgz("bomb", ALIAS_BOMB))
    refused(tmp_path, "list", "--chart", str(chart), fragments=("bomb.tgz/values.yaml", "alias bomb"))


def test_alias_bomb_in_manifest_values_and_in_a_values_file(tmp_path):
    chart = write(tmp_path / "app.tgz", chart_tgz("app", "image: {repository: nginx, tag: '1'}\n"))
    bomb_values = "values:\n" + "".join("  " + line + "\n" for line in ALIAS_BOMB.splitlines())
    text = manifest(chart).replace("  path:", bomb_values.replace("\n  ", "\n    ").replace("values:", "  values:", 1)
                                   + "    path:", 1)
    path = write(tmp_path / "m.yaml", text)
    refused(tmp_path, "list", "--manifest", str(path), "--resolve", fragments=(str(path), "alias bomb"))
    values = write(tmp_path / "site.yaml", ALIAS_BOMB)
    refused(tmp_path, "list", "--chart", str(chart), "-f", str(values), fragments=(str(values), "alias bomb"))


def test_deep_nesting_and_self_reference(tmp_path):
    deep = write(tmp_path / "deep.yaml", "a: " + "[" * 5000 + "]" * 5000 + "\n")
    chart = write(tmp_path / "app.tgz", chart_tgz("app"))
    refused(tmp_path, "list", "--chart", str(chart), "-f", str(deep), fragments=(str(deep), "malformed YAML"))
    nested = write(tmp_path / "nested.yaml", "a:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 80)) + "x: 1\n")
    refused(tmp_path, "list", "--chart", str(chart), "-f", str(nested), fragments=(str(nested), "deeper than 64"))
    loop = write(tmp_path / "loop.yaml", "a: &x {b: *x}\n")
    refused(tmp_path, "list", "--chart", str(chart), "-f", str(loop), fragments=(str(loop), "refers to itself"))


def test_deep_set_expression(tmp_path):
    chart = write(tmp_path / "app.tgz", chart_tgz("app"))
    refused(tmp_path, "list", "--chart", str(chart), "--set", ".".join(["k"] * 3000) + "=1",
            fragments=("more than 100 keys deep",))


# --- chart budgets ------------------------------------------------------------------------------------------


def test_one_thousand_nested_sub_charts(tmp_path):
    archive = chart_tgz("level-1100")
    for level in range(1099, 0, -1):
        archive = chart_tgz(f"level-{level}", subcharts={"sub.tgz": archive})
    assert len(archive) < 512 * 1024
    chart = write(tmp_path / "tower.tgz", archive)
    refused(tmp_path, "list", "--chart", str(chart), fragments=("tower.tgz", "nest deeper than 10 levels"))


def test_sub_charts_share_one_inflation_budget(tmp_path):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz", compresslevel=1) as tar:
        add_member(tar, "big/Chart.yaml", b"apiVersion: v2\nname: big\nversion: 1.0.0\n")
        add_member(tar, "big/templates/zeros", Zeros(200 * 2**20), size=200 * 2**20)
    big = raw.getvalue()
    chart = write(tmp_path / "many.tgz", chart_tgz("many", subcharts={f"big{i}.tgz": big for i in range(12)}))
    refused(tmp_path, "list", "--chart", str(chart), fragments=("many.tgz", "with its sub-charts inflates past 256"))


def test_values_larger_than_the_budget(tmp_path):
    values = b"a: " + b"x" * (32 * 2**20) + b"\n"
    archive = chart_tgz("fat", values)
    assert len(archive) < 64 * 1024
    chart = write(tmp_path / "fat.tgz", archive)
    refused(tmp_path, "list", "--chart", str(chart), fragments=("fat.tgz", "chart/values.yaml is larger than 4.0 MiB"))


def test_a_real_sized_chart_still_loads(tmp_path):
    # 3,000 images in a 300 KB values file with an anchor used a few times, three levels of sub-charts
    values = "common: &common {pullPolicy: IfNotPresent, resources: {limits: {cpu: 1}}}\n" + "".join(
        f"svc{i}:\n  image: {{repository: example/svc{i}, tag: '1.{i}'}}\n  settings: *common\n" for i in range(3000))
    inner = chart_tgz("inner", "image: {repository: example/inner, tag: '1'}\n")
    middle = chart_tgz("middle", subcharts={"inner.tgz": inner})
    chart = write(tmp_path / "real.tgz", chart_tgz("real", values, subcharts={"middle.tgz": middle}))
    result, peak = measured_wsm("list", "--chart", str(chart), "-o", "plain", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.split()) == 3001 and "docker.io/example/inner:1" in result.stdout
    assert peak < MEMORY_MB


# --- names --------------------------------------------------------------------------------------------------


def test_chart_name_that_climbs_out_of_the_cache(tmp_path):
    chart = write(tmp_path / "evil.tgz", chart_tgz("x", chart_yaml={"apiVersion": "v2", "version": "1.0.0",
                                                                  "name": "../" * 12 + "tmp/wsm-escape"}))
    result = wsm("list", "--chart", str(chart), cwd=tmp_path)
    one_line_error(result, "evil.tgz/Chart.yaml", "chart name '../../../../../../", "is not valid")
    assert not list(Path("/tmp").glob("wsm-escape*"))


def test_chart_name_of_300_characters(tmp_path):
    name = "a" * 300
    chart = write(tmp_path / "long.tgz", chart_tgz(name))
    result = wsm("list", "--chart", str(chart), cwd=tmp_path)
    one_line_error(result, "long.tgz/Chart.yaml", "longer than 250 characters")
    assert "File name too long" not in result.stderr


@pytest.mark.parametrize("name", ["shx;id>pwned;#", "a b", "-rf", ".."])
def test_chart_names_that_are_not_helm_names(tmp_path, name):
    chart = write(tmp_path / "bad.tgz", chart_tgz("x", chart_yaml={"apiVersion": "v2", "version": "1.0.0",
                                                                 "name": name}))
    one_line_error(wsm("list", "--chart", str(chart), cwd=tmp_path), "is not valid")


def test_chart_version_must_be_semver(tmp_path):
    chart = write(tmp_path / "v.tgz", chart_tgz("app", version="1.0;rm -rf"))
    one_line_error(wsm("list", "--chart", str(chart), cwd=tmp_path), "is not a SemVer version")


@pytest.mark.parametrize("entry,fragment", [
    ({"release": "Bad_Release"}, "charts[0].release: release name 'Bad_Release' is not valid"),
    ({"release": "r" * 54}, "at most 53"),
    ({"namespace": "ns;id"}, "charts[0].namespace: namespace 'ns;id' is not valid"),
    ({"install": "operator", "resource": {"file": "../../x.yaml", "template": {"apiVersion": "v1", "kind": "X"}}},
     "charts[0].resource.file: '../../x.yaml' is not a plain file name"),
    ({"chart": "a/b"}, "charts[0].chart: chart name 'a/b' is not valid"),
])
def test_manifest_names_are_validated(tmp_path, entry, fragment):
    chart = write(tmp_path / "app.tgz", chart_tgz("app"))
    path = write(tmp_path / "m.yaml", manifest(chart, **entry))
    one_line_error(wsm("list", "--manifest", str(path), "--resolve", cwd=tmp_path), str(path), fragment)


def test_the_manifest_a_bundle_keeps_is_validated_too(tmp_path):
    from types import SimpleNamespace

    from wsm import ManifestError
    from wsm._manifest import ReleaseManifest

    chart = write(tmp_path / "app.tgz", chart_tgz("app"))
    text = manifest(chart, install="operator",
                    resource={"file": "../../x.yaml", "template": {"apiVersion": "v1", "kind": "X"}})
    with pytest.raises(ManifestError, match=r"the bundle's release manifest: charts\[0\].resource.file"):
        ReleaseManifest.from_bundle(SimpleNamespace(manifest=text))  # type: ignore[arg-type]


def test_lock_entries_are_validated(tmp_path):
    from wsm import BundleError
    from wsm._lock import BundleChart

    entry = {"name": "../x", "version": "1.0.0", "source": "s", "group": "g", "file": "charts/x-1.0.0.tgz",
             "digest": "sha256:" + "a" * 64, "size": 1}
    with pytest.raises(BundleError, match=r"charts\[0\].name: chart name '../x' is not valid"):
        BundleChart.from_dict(entry, "charts[0]")
    with pytest.raises(BundleError, match="is not a file directly under charts/"):
        BundleChart.from_dict({**entry, "name": "x", "file": "charts/../../x.tgz"}, "charts[0]")


def test_written_files_stay_in_their_directory(tmp_path):
    from wsm import WsmError
    from wsm._names import inside

    (tmp_path / "values").mkdir()
    (tmp_path / "values" / "link.yaml").symlink_to(tmp_path / "outside.yaml")
    assert inside(tmp_path / "values", "ok.yaml", "w", WsmError) == tmp_path / "values" / "ok.yaml"
    (tmp_path / "values" / "up").symlink_to(tmp_path)
    for name in ("../x.yaml", "/etc/x", "up/x.yaml", ".."):
        with pytest.raises(WsmError, match="leads outside"):
            inside(tmp_path / "values", name, "w", WsmError)
    # A link as the last component is the writer's to replace by a rename (never written through).
    assert inside(tmp_path / "values", "link.yaml", "w", WsmError) == tmp_path / "values" / "link.yaml"


# --- invalid references are reported, not dropped -----------------------------------------------------------

INVALID_VALUES = f"""\
good: {{image: {{repository: example/good, tag: '1.0'}}}}
upper: {{image: {{repository: Example/Upper, tag: '1.0'}}}}
longtag: {{image: {{repository: example/long, tag: '{"t" * 200}'}}}}
digest: {{image: {{repository: example/digest, digest: 'sha256:1234'}}}}
worker: {{sidecarImage: 'example/worker:bad tag'}}
plain: {{image: 'Example/String:1'}}
template: {{image: {{repository: example/tpl, tag: '{{{{ .Values.tag }}}}'}}}}
notimage: {{repository: 'https://github.com/example/repo', tag: main}}
gitremote: {{repository: 'git@github.com:example/repo.git', tag: main}}
"""


def test_invalid_references_are_reported_by_list(tmp_path):
    chart = write(tmp_path / "app.tgz", chart_tgz("app", INVALID_VALUES))
    result = wsm("list", "--chart", str(chart), "-o", "json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert [i["image"] for i in data["images"]] == ["docker.io/example/good:1.0"]
    invalid = {item["path"]: item for item in data["invalid"]}
    assert set(invalid) == {"upper.image", "longtag.image", "digest.image", "plain.image"}
    assert invalid["upper.image"]["chart"] == "app" and "lower-case" in invalid["upper.image"]["reason"]
    assert "at most 128" in invalid["longtag.image"]["reason"]
    assert "is not a digest" in invalid["digest.image"]["reason"]
    notes = [line for line in result.stderr.splitlines() if "invalid image reference, not carried" in line]
    assert len(notes) == 4 and any("app: values path upper.image" in line for line in notes)


def test_download_fails_on_invalid_references_unless_allowed(tmp_path):
    chart = write(tmp_path / "app.tgz", chart_tgz("app", "upper: {image: {repository: Example/Upper, tag: '1'}}\n"))
    bundle = tmp_path / "bundle"
    result = wsm("download", "--chart", str(chart), "--bundle", str(bundle), "-q", cwd=tmp_path, offline=True)
    one_line_error(result, "1 image references do not parse", "app: values path upper.image",
                   "--allow-invalid")
    assert not (bundle / "wsm.lock.json").exists()
    allowed = wsm("download", "--chart", str(chart), "--bundle", str(bundle), "--allow-invalid", cwd=tmp_path,
                  offline=True)
    assert allowed.returncode == 0, allowed.stderr
    assert "invalid image reference, not carried: app: values path upper.image" in allowed.stderr
    assert (bundle / "charts" / "app-1.0.0.tgz").exists()


ANNOTATED = {"apiVersion": "v2", "name": "app", "version": "1.0.0", "annotations": {"helm.sh/images": (
    "- name: good\n  image: example/annotated:1.0\n"
    "- name: upper\n  image: Example/Annotated:1.0\n"
    "- name: number\n  image: 42\n")}}
INVALID_JSON = [
    {"chart": "app", "image": "Example/Upper:1", "path": "upper.image", "found_in": "values"},
    {"chart": "app", "image": "Example/Annotated:1.0", "path": "[1].image", "found_in": "annotation helm.sh/images"},
    {"chart": "app", "image": "42", "path": "[2].image", "found_in": "annotation helm.sh/images"},
]


def annotated_chart(tmp_path: Path) -> Path:
    values = "upper: {image: {repository: Example/Upper, tag: '1'}}\n"
    return write(tmp_path / "app.tgz", chart_tgz("app", values, chart_yaml=ANNOTATED))


def without_reasons(invalid: list[dict]) -> list[dict]:
    assert all(item["reason"] for item in invalid), invalid
    return [{key: value for key, value in item.items() if key != "reason"} for item in invalid]


def test_invalid_entries_of_the_images_annotation_are_reported_as_values_are(tmp_path):
    result = wsm("list", "--chart", str(annotated_chart(tmp_path)), "-o", "json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert [i["image"] for i in data["images"]] == ["docker.io/example/annotated:1.0"]
    assert without_reasons(data["invalid"]) == INVALID_JSON
    assert "lower-case" in data["invalid"][1]["reason"] and "not a string" in data["invalid"][2]["reason"]
    assert "invalid image reference, not carried: app: annotation helm.sh/images [1].image: " in result.stderr


def test_download_json_lists_the_invalid_references_whether_it_stops_or_goes_on(tmp_path):
    chart, bundle = annotated_chart(tmp_path), tmp_path / "bundle"
    refused = wsm("download", "--chart", str(chart), "--bundle", str(bundle), "-o", "json", cwd=tmp_path,
                  offline=True)
    assert refused.returncode == 1 and "3 image references do not parse" in refused.stderr
    assert "app: annotation helm.sh/images [2].image" in refused.stderr and "Traceback" not in refused.stderr
    data = json.loads(refused.stdout)
    assert data["ok"] is False and without_reasons(data["invalid"]) == INVALID_JSON
    assert not (bundle / "wsm.lock.json").exists()
    allowed = wsm("download", "--chart", str(chart), "--bundle", str(bundle), "--allow-invalid", "-o", "json",
                  cwd=tmp_path, offline=True)
    data = json.loads(allowed.stdout)
    assert without_reasons(data["invalid"]) == INVALID_JSON
    assert [image["image"] for image in data["images"]] == ["docker.io/example/annotated:1.0"], data


def test_chart_put_url_is_percent_encoded(tmp_path):
    # The chart's name is checked when a chart is loaded; the URL is still built so that a name is one path
    # segment, whatever it holds (`#` would otherwise cut the URL, `;` and `>` reach the server raw).
    from servers import HelmRepo
    from wsm._chartrepo import ClassicRepository
    from wsm._http import TransportOptions

    archive = chart_tgz("app")
    metadata = {"apiVersion": "v2", "name": "shx;id>pwned;#", "version": "1.0.0"}
    with HelmRepo(tmp_path / "nginx") as server:
        with ClassicRepository(server.url, transport=TransportOptions(retries=1, backoff=0.01)) as repository:
            repository.publish(archive, metadata)
        assert sorted(path.name for path in server.root.iterdir()) == ["index.yaml", "shx;id>pwned;#-1.0.0.tgz"]
        assert (server.root / "shx;id>pwned;#-1.0.0.tgz").read_bytes() == archive


def test_alias_bomb_in_rendered_templates():
    from wsm import RenderError
    from wsm._render import images_in_manifests

    with pytest.raises(RenderError, match="helm template output templates/x.yaml: aliases expand"):
        images_in_manifests("---\n# Source: templates/x.yaml\n" + ALIAS_BOMB)


def test_user_values_file_with_an_alias_bomb_is_left_alone(tmp_path):
    from wsm import ValuesError
    from wsm._overrides import rewrite_values_file

    path = write(tmp_path / "mine.yaml", ALIAS_BOMB)
    with pytest.raises(ValuesError, match="mine.yaml: aliases expand to more than 100000 nodes"):
        rewrite_values_file(path, {"image": {"repository": "registry.corp/x"}})
    assert path.read_text() == ALIAS_BOMB and not (tmp_path / "mine.yaml.bak").exists()


def test_alias_bomb_in_a_repository_index(tmp_path):
    from servers import HelmRepo

    with HelmRepo(tmp_path / "nginx") as server:
        (server.root / "index.yaml").write_text("apiVersion: v1\n" + ALIAS_BOMB + "entries: {app: *a8}\n")
        result, peak = measured_wsm("list", "--chart", "app", "--repo", server.url, "--version", "1.0.0", cwd=tmp_path)
    one_line_error(result, f"Helm repository {server.url}: index.yaml: aliases expand")
    assert peak < MEMORY_MB


def test_a_chart_and_its_sub_charts_spend_one_budget(tmp_path):
    from wsm import UnsafeArchive
    from wsm._archive import InflationBudget
    from wsm._chart import chart_from_archive

    archive = chart_tgz("top", extra={"templates/pad": bytes(600)}, subcharts={"sub.tgz": chart_tgz("sub")})
    budget = InflationBudget(limit=10**6)
    chart = chart_from_archive(archive, "top.tgz", budget=budget)
    assert chart.subcharts["sub"].name == "sub" and budget.used > len(archive) > 0
    with pytest.raises(UnsafeArchive, match="top.tgz:top/charts/sub.tgz: the chart with its sub-charts inflates"):
        chart_from_archive(archive, "top.tgz", budget=InflationBudget(limit=budget.used - 1))


def test_a_version_with_build_metadata_is_cached(tmp_path):
    chart = write(tmp_path / "app.tgz", chart_tgz("app", "image: {repository: nginx, tag: '1'}\n", version="1.0.0+build.7"))
    result = wsm("list", "--chart", str(chart), "-o", "plain", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert [path.name.startswith("app-1.0.0_build.7-") for path in (tmp_path / ".cache").rglob("*.tgz")] == [True]
