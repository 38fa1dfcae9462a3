"""`wsm check` against real servers after a real push: it passes, and it names the image or chart after the
internal registry or Helm repository lost or changed one (each test puts the servers back as they were)."""

from __future__ import annotations

import hashlib
import json
import ssl

import httpx
import pytest
import yaml

from charts import build_operator_chart, package
from e2e import IMAGES, PASSWORD, USER, Flow
from images import build_image, make_image, push_layout
from wsm._bundle import Bundle
from wsm._chart import chart_from_archive
from wsm._chartrepo import OciRepository
from wsm._check import CheckOptions, Status, check
from wsm._exceptions import BundleError
from wsm._download import download
from wsm._model import ImageSource, Method, ResolvedImage
from wsm._push import push_images
from wsm._pushed import PushedChart, PushRecord
from wsm._reference import Reference
from wsm._target import TargetRegistry, plan_targets


@pytest.fixture(scope="module")
def flow(tmp_path_factory):
    with Flow(tmp_path_factory.mktemp("check"), log=lambda message: None) as flow:
        flow.upstream()
        flow.internal()
        flow.download()
        flow.push()
        yield flow


def site(flow, name: str) -> str:
    return f"{flow.site_registry.host}/site/{name}"


def rows(table: str) -> list[list[str]]:
    """The first three columns of each line of the text table."""
    return [line.split()[:3] for line in table.splitlines()]


def problems(flow, *extra: str) -> list[dict]:
    result = flow.check("-o", "json", *extra)
    report = json.loads(result.stdout)
    assert result.returncode == (0 if report["ok"] else 1), result.stderr
    return [item for item in report["images"] + report["charts"] if item["status"] != "ok"]


def test_passes_after_push_and_prints_a_table(flow):
    result = flow.check()
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["STATUS", "KIND", "NAME", "DETAIL"]
    assert [row[:2] for row in rows(result.stdout)].count(["ok", "image"]) == len(IMAGES)
    assert ["ok", "chart", "operator"] in rows(result.stdout)
    assert problems(flow) == []


def test_names_an_image_whose_manifest_was_deleted(flow):
    name, tag = site(flow, "acme/console"), IMAGES["acme/console"]
    repository = name.split("/", 1)[1]
    with httpx.Client(verify=ssl.create_default_context(cafile=str(flow.ca_file)), auth=(USER, PASSWORD)) as http:
        url = f"{flow.site_registry.url}/v2/{repository}/manifests"
        head = http.head(f"{url}/{tag}", headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"})
        assert http.delete(f"{url}/{head.headers['Docker-Content-Digest']}").status_code == 202
    try:
        result = flow.check()
        assert result.returncode == 1
        assert ["missing", "image", f"{name}:{tag}"] in rows(result.stdout)
        assert [(p["name"], p["status"]) for p in problems(flow)] == [(f"{name}:{tag}", "missing")]
    finally:
        flow.push()  # sends the manifest again (its blobs are still there)
    assert problems(flow) == []


def test_names_an_image_whose_tag_was_moved(flow, tmp_path):
    name, tag = site(flow, "acme/app"), IMAGES["acme/app"]
    other = build_image(tmp_path / "other", tag)
    push_layout(other, f"{name}:{tag}", creds=f"{USER}:{PASSWORD}")
    try:
        (problem,) = problems(flow)
        assert problem["name"] == f"{name}:{tag}" and problem["status"] == "different"
        assert other.digest in problem["detail"]
        assert flow.check().returncode == 1
    finally:
        flow.push("--on-existing", "overwrite")
    assert problems(flow) == []


def test_names_a_chart_whose_file_changed_in_the_repository(flow, tmp_path):
    archive = flow.site_charts.root / "operator-1.3.8.tgz"
    index_path = flow.site_charts.root / "index.yaml"
    original, original_index = archive.read_bytes(), index_path.read_text()
    chart_dir = build_operator_chart(tmp_path)
    (chart_dir / "values.yaml").write_text((chart_dir / "values.yaml").read_text() + "extra: changed\n")
    changed = package(chart_dir, tmp_path / "out").read_bytes()
    try:
        archive.write_bytes(changed)  # the index still names the old digest
        (problem,) = problems(flow)
        assert (problem["kind"], problem["name"], problem["status"]) == ("chart", "operator 1.3.8", "different")
        # The index re-made for the new file: the bytes still differ from the bundle's.
        digest = hashlib.sha256(changed).hexdigest()
        index = yaml.safe_load(original_index)
        index["entries"]["operator"][0]["digest"] = digest
        index_path.write_text(yaml.safe_dump(index))
        (problem,) = problems(flow)
        assert problem["name"] == "operator 1.3.8" and f"sha256:{digest}" in problem["detail"]
        result = flow.check()
        assert result.returncode == 1 and ["different", "chart", "operator"] in rows(result.stdout)
    finally:
        archive.write_bytes(original)
        index_path.write_text(original_index)
    assert problems(flow) == []


def test_checks_the_images_a_values_file_names(flow, tmp_path):
    written = flow.bundle / "values" / "operator.yaml"
    assert problems(flow, "--values", str(written)) == []
    stale = tmp_path / "stale.yaml"
    stale.write_text(yaml.safe_dump({
        "image": {"repository": "docker.io/acme/controller", "tag": IMAGES["acme/controller"]},
        "sidecar": {"image": f"{site(flow, 'acme/unknown')}:1"},
        "app": {"image": {"repository": site(flow, "acme/app"), "tag": IMAGES["acme/app"]}},
    }))
    found = {p["name"]: p for p in problems(flow, "--values", str(stale))}
    assert set(found) == {f"docker.io/acme/controller:{IMAGES['acme/controller']}", f"{site(flow, 'acme/unknown')}:1"}
    assert all(p["status"] == "not from the bundle" for p in found.values())
    assert site(flow, "acme/controller") in found[f"docker.io/acme/controller:{IMAGES['acme/controller']}"]["detail"]


def test_a_registry_other_than_the_pushed_one_is_refused_in_one_line(flow):
    result = flow.wsm("check", "--bundle", str(flow.bundle), "--registry", "other.corp/site", expect_success=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "was pushed to registry" in result.stderr and "other.corp/site" in result.stderr


def test_refused_credentials_and_a_bad_pull_secret_name_are_one_line_errors(flow):
    result = flow.wsm("check", "--bundle", str(flow.bundle), *flow.site_options(), stdin="wrong\n",
                      expect_success=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr and len(result.stderr.splitlines()) == 1
    assert "--username/--password-stdin" in result.stderr
    result = flow.wsm("push", "--bundle", str(flow.bundle), *flow.site_options(), "--pull-secret", "Reg_Cred",
                      stdin=PASSWORD + "\n", expect_success=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "'Reg_Cred' is not a Kubernetes secret name" in result.stderr


def test_a_damaged_push_record_is_named(tmp_path):
    (tmp_path / "pushed.json").write_text(json.dumps({"format": 1, "registry": "r.corp", "images": [
        {"source": "docker.io/a/b:1", "target": "r.corp/a/b:1", "digest": "sha256:not-hex"}]}))
    with pytest.raises(BundleError, match="pushed.json is not a push record wsm wrote"):
        PushRecord.read(tmp_path)
    (tmp_path / "pushed.json").write_text(json.dumps({"format": 1, "registry": "r.corp", "files": ["../x"]}))
    with pytest.raises(BundleError, match="a file outside the bundle"):
        PushRecord.read(tmp_path)


def test_a_kept_platform_manifest_missing_under_an_index_is_named(registry, plain_client, tmp_path):
    """A multi-platform image kept as-is: its index is there, but one platform's manifest was deleted."""
    built = make_image(registry, "check/multi", tmp_path, platforms=("linux/amd64", "linux/arm64"))
    source = ResolvedImage(Reference.parse(f"{registry.host}/check/multi:1.0"), "g",
                           (ImageSource("app", Method.VALUES, "image"),))
    assert download([source], [], tmp_path / "bundle", client=plain_client, platforms=None).ok
    bundle = Bundle.open(tmp_path / "bundle")
    target_registry = f"{registry.host}/check-site"
    targets = plan_targets([source.reference], TargetRegistry.parse(target_registry))
    push_images(bundle, targets, plain_client)
    with pytest.raises(BundleError, match="was never pushed"):
        check(bundle, CheckOptions(), plain_client)
    # Without a record, the registry given: checked against the names push gives.
    assert check(bundle, CheckOptions(registry=target_registry), plain_client).problems == []
    PushRecord.planned(bundle, target_registry, targets, None).write(bundle.root)
    report = check(bundle, CheckOptions(), plain_client)
    assert report.problems == [] and "linux/amd64, linux/arm64" in report.findings[0].detail

    arm = built.manifests["linux/arm64"]
    response = httpx.delete(f"{registry.url}/v2/check-site/check/multi/manifests/{arm}")
    assert response.status_code == 202
    (problem,) = check(bundle, CheckOptions(), plain_client).problems
    assert problem.status is Status.MISSING and problem.name == f"{target_registry}/check/multi:1.0"
    assert "linux/arm64" in problem.detail and arm in problem.detail


def test_an_oci_chart_is_checked_by_its_layer(registry, plain_client, tmp_path):
    assert download([], [], tmp_path / "bundle", client=plain_client, platforms=None).ok
    bundle = Bundle.open(tmp_path / "bundle")
    archive = package(build_operator_chart(tmp_path / "src"), tmp_path / "out").read_bytes()
    location = f"oci://{registry.host}/check-charts"
    with OciRepository(location, client=plain_client) as repository:
        repository.publish(archive, chart_from_archive(archive, "operator").metadata)
    digest = "sha256:" + hashlib.sha256(archive).hexdigest()
    chart = PushedChart("operator", "1.3.8", location, digest)
    PushRecord(registry.host, location, (), (chart,)).write(bundle.root)
    (finding,) = check(bundle, CheckOptions(), plain_client).findings
    assert finding.ok and finding.kind == "chart" and digest in finding.detail

    other = PushedChart("operator", "1.3.8", location, "sha256:" + "0" * 64)  # the bundle holds other bytes
    missing = PushedChart("operator", "9.9.9", location, digest)
    PushRecord(registry.host, location, (), (other, missing)).write(bundle.root)
    statuses = [(f.name, f.status) for f in check(bundle, CheckOptions(), plain_client).findings]
    assert statuses == [("operator 1.3.8", Status.DIFFERENT), ("operator 9.9.9", Status.MISSING)]


def test_the_runbook_check_command_carries_the_push_options_but_no_password():
    from wsm._runbook import CheckCommand

    plain = CheckCommand("bundle", "registry.corp:5000/site", "oci://registry.corp:5000/charts", insecure=True,
                         plain_http=True)
    assert plain.lines() == ["wsm check --bundle bundle --registry registry.corp:5000/site "
                             "--helm-repo oci://registry.corp:5000/charts --insecure --plain-http"]
    with_user = CheckCommand("my bundle", "registry.corp", None, ca_file="/etc/ca dir/ca.pem", username="o'brien")
    read, piped, unset = with_user.lines()
    assert read == "read -rs -p 'Password of o'\"'\"'brien: ' WSM_PASSWORD; echo"
    assert piped == ("printf '%s\\n' \"$WSM_PASSWORD\" | wsm check --bundle 'my bundle' --registry registry.corp "
                     "--ca-file '/etc/ca dir/ca.pem' --username 'o'\"'\"'brien' --password-stdin")
    assert unset == "unset WSM_PASSWORD"
