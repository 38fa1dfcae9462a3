"""download, verify, load and push as an operator runs them: outputs, exit codes, and one-line errors."""

from __future__ import annotations

import json

import pytest
import trustme
import yaml

from charts import IMAGE_DEPLOYMENT, package, write_chart
from images import make_image
from servers import Registry, free_port
from support import one_line_error, wsm

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: x}
spec:
  template:
    spec:
      containers:
        - {name: a, image: "{{ .Values.image.repository }}:{{ .Values.image.tag }}"}
        - {name: b, image: "{{ .Values.sidecar.image }}"}
"""


@pytest.fixture(scope="module")
def release(registry, tmp_path_factory):
    """A one-chart release whose two images live in the session registry; a bundle downloaded from it."""
    work = tmp_path_factory.mktemp("cli-bundle")
    app = make_image(registry, "cli/app", work, tag="2.0")
    side = make_image(registry, "cli/side", work, tag="0.1", platforms=("linux/amd64", "linux/arm64"))
    chart = write_chart(
        work / "src" / "demo",
        {"apiVersion": "v2", "name": "demo", "version": "1.0.0", "airgapped": None},
        {"image": {"repository": f"{registry.host}/cli/app", "tag": "2.0"},
         "sidecar": {"image": f"{registry.host}/cli/side:0.1"}, "airgapped": False},
        {"deployment.yaml": DEPLOYMENT},
    )
    archive = package(chart, work / "pkg")
    bundle = work / "bundle"
    result = wsm("download", "--chart", str(archive), "--bundle", str(bundle), "--plain-http", cwd=work)
    assert result.returncode == 0, result.stderr
    return {"work": work, "archive": archive, "bundle": bundle, "app": app, "side": side, "output": result}


def test_download_prints_a_tick_per_image_and_a_summary(release):
    result = release["output"]
    assert "\u2713" in result.stderr and "cli/app:2.0" in result.stderr
    assert result.stdout.startswith("2 of 2 images and 1 of 1 charts in ")
    lock = json.loads((release["bundle"] / "wsm.lock.json").read_text())
    assert {entry["platforms"][0] for entry in lock["images"]} == {"linux/amd64"}
    assert (release["bundle"] / "charts" / "demo-1.0.0.tgz").read_bytes() == release["archive"].read_bytes()


def test_download_rerun_json_skips_complete_images(release):
    result = wsm("download", "--chart", str(release["archive"]), "--bundle", str(release["bundle"]), "--plain-http",
                 "-o", "json", cwd=release["work"])
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert [image["status"] for image in report["images"]] == ["skipped", "skipped"]
    assert report["bytes_fetched"] == 0


def test_download_failure_is_listed_and_exit_code_is_1(registry, tmp_path):
    chart = write_chart(tmp_path / "broken", {"apiVersion": "v2", "name": "broken", "version": "0.1.0"},
                        {"image": {"repository": f"{registry.host}/cli/missing", "tag": "9.9"}},
                        {"deployment.yaml": IMAGE_DEPLOYMENT})
    result = wsm("download", "--chart", str(chart), "--bundle", str(tmp_path / "b"), "--plain-http", cwd=tmp_path)
    one_line_error(result, f"FAILED {registry.host}/cli/missing:9.9", "Run the same command again")


def test_verify_names_a_flipped_byte(release, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(release["bundle"], copy)
    assert wsm("verify", str(copy)).returncode == 0
    tar = sorted((copy / "images").glob("*.tar"))[0]
    data = bytearray(tar.read_bytes())
    data[len(data) // 2] ^= 0x01
    tar.write_bytes(bytes(data))
    result = wsm("verify", str(copy))
    one_line_error(result, tar.name)
    assert len(result.stderr.strip().splitlines()) == 1


def test_load_without_an_engine_is_one_line(release):
    result = wsm("load", "--bundle", str(release["bundle"]), "--docker-host", f"tcp://127.0.0.1:{free_port()}")
    one_line_error(result, "no Docker engine answers")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    work = tmp_path_factory.mktemp("site")
    ca = trustme.CA()
    ca_file = work / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    with Registry(work / "registry", tls=ca, htpasswd={"ops": "pw"}) as server:
        yield {"registry": server, "ca": ca_file, "work": work}


def push(release, site, *extra, password="pw"):
    return wsm("push", "--bundle", str(release["bundle"]), "--registry", f"{site['registry'].host}/team",
               "--ca-file", str(site["ca"]), "--username", "ops", "--password-stdin", *extra, stdin=password + "\n")


def test_push_refuses_an_untrusted_certificate_and_wrong_credentials(release, site):
    untrusted = wsm("push", "--bundle", str(release["bundle"]), "--registry", site["registry"].host)
    one_line_error(untrusted, "--ca-file")
    wrong = push(release, site, password="nope")
    one_line_error(wrong, site["registry"].host)
    assert "nope" not in wrong.stdout + wrong.stderr


def test_push_dry_run_then_push_then_conflict(release, site, tmp_path):
    dry = push(release, site, "--dry-run", "-o", "json")
    assert dry.returncode == 0, dry.stderr
    report = json.loads(dry.stdout)
    assert report["dry_run"] and {job["result"] for job in report["images"]} == {"would send"}
    assert report["totals"]["bytes_sent"] > 0
    assert not (release["bundle"] / "RUNBOOK.md").exists()

    values = tmp_path / "mine.yaml"
    values.write_text("# our site\nreplicas: 2  # two\n")
    done = push(release, site, "--helm-repo", f"oci://{site['registry'].host}/charts", "--values", str(values))
    assert done.returncode == 0, done.stderr
    assert "helm upgrade --install demo oci://" in done.stdout and "/charts/demo --version 1.0.0" in done.stdout
    text = values.read_text()
    assert text.startswith("# our site\nreplicas: 2  # two\n")
    data = yaml.safe_load(text)
    assert data["image"]["repository"] == f"{site['registry'].host}/team/cli/app"
    assert data["sidecar"]["image"] == f"{site['registry'].host}/team/cli/side:0.1"
    assert data["airgapped"] is True
    written = yaml.safe_load((release["bundle"] / "values" / "demo.yaml").read_text())
    assert written == {k: v for k, v in data.items() if k != "replicas"}


def test_download_credentials_are_bound_to_their_registry(tmp_path):
    with Registry(tmp_path / "private", htpasswd={"reader": "pw"}) as private:
        make_image(private, "vendor/app", tmp_path, tag="3.0", creds="reader:pw")
        chart = package(write_chart(tmp_path / "c", {"apiVersion": "v2", "name": "c", "version": "0.1.0"},
                                    {"image": {"repository": f"{private.host}/vendor/app", "tag": "3.0"}},
                                    {"deployment.yaml": IMAGE_DEPLOYMENT}), tmp_path)
        base = ["download", "--chart", str(chart), "--plain-http", "--username", "reader", "--password-stdin"]
        unbound = wsm(*base, "--bundle", str(tmp_path / "b0"), stdin="pw\n", cwd=tmp_path)
        one_line_error(unbound, "--login-host")
        other = wsm(*base, "--login-host", "registry.elsewhere.example", "--bundle", str(tmp_path / "b1"),
                    stdin="pw\n", cwd=tmp_path)
        one_line_error(other, f"FAILED {private.host}/vendor/app:3.0")  # the password was not sent there
        bound = wsm(*base, "--login-host", private.host, "--bundle", str(tmp_path / "b2"), stdin="pw\n", cwd=tmp_path)
        assert bound.returncode == 0, bound.stdout + bound.stderr
        assert "pw" not in bound.stdout.replace("pwd", "")


def test_push_dry_run_to_a_dead_registry_fails_fast_in_one_line(release):
    """Nobody listens: each image is tried twice, not six times (issue 11: fail fast when offline)."""
    dead = f"127.0.0.1:{free_port()}"
    result = wsm("push", "--bundle", str(release["bundle"]), "--registry", f"{dead}/team", "--plain-http",
                 "--dry-run")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    output = result.stdout + result.stderr
    assert dead in output and "Connection refused" in output
    assert "after 2 attempts" in output and "after 6 attempts" not in output
