"""`wsm list` as an operator runs it: the embedded release offline, a chart, formats, --why, and bad input."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from charts import build_platform_chart
from support import wsm

EMBEDDED = [
    "docker.io/wandb/controller:1.16.1",
    "docker.io/wandb/local:0.62.2",
    "docker.io/bitnami/redis:7.2.4-debian-12-r9",
    "quay.io/prometheus-operator/prometheus-config-reloader:v0.67.0",
    "quay.io/prometheus/prometheus:v2.47.0",
    "docker.io/otel/opentelemetry-collector-contrib:0.97.0",
    "docker.io/wandb/console:2.13.1",
]


def test_embedded_release_offline_grouped_as_documented():
    result = wsm("list", offline=True)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "Operator Images:"
    assert lines[1].split()[0] == "docker.io/wandb/controller:1.16.1"
    assert lines[2] == "W&B Images:"
    assert [line.split()[0] for line in lines[3:9]] == EMBEDDED[1:]
    assert "operator-wandb: app.image, weave.image, parquet.image" in lines[3]
    assert "7 images" in lines[9] and "operator-wandb 0.18.0" in lines[9]


def test_plain_json_yaml_outputs():
    assert wsm("list", "-o", "plain").stdout.split() == EMBEDDED
    data = json.loads(wsm("list", "-o", "json").stdout)
    assert data["from"] == "lock" and data["platforms"] == ["linux/amd64"]
    assert [i["image"] for i in data["images"]] == EMBEDDED
    assert data["images"][2]["sources"][0] == {
        "chart": "operator-wandb/redis", "method": "values", "path": "redis.image", "shape": "registry"}
    assert [c["version"] for c in data["charts"]] == ["1.3.8", "0.18.0"]
    assert yaml.safe_load(wsm("list", "-o", "yaml").stdout) == data


def test_why_explains_an_image():
    result = wsm("list", "--why", "wandb/local:0.62.2")
    assert result.returncode == 0
    assert "docker.io/wandb/local:0.62.2 (group W&B) is needed by:" in result.stdout
    assert "chart operator-wandb/weave, values path weave.image (repository shape), found by values" in result.stdout
    short = wsm("list", "--why", "redis")  # unique by its last path component
    assert short.stdout.startswith("docker.io/bitnami/redis:7.2.4-debian-12-r9 (group W&B)")
    assert "values path redis.image (registry shape)" in short.stdout
    missing = wsm("list", "--why", "nginx:1")
    assert missing.returncode == 1 and "is not an image of this release" in missing.stderr


def test_platform_option_is_validated():
    assert json.loads(wsm("list", "-o", "json", "--platform", "linux/arm64/v8")
                      .stdout)["platforms"] == ["linux/arm64/v8"]
    bad = wsm("list", "--platform", "amd64")
    assert bad.returncode != 0 and "amd64" in bad.stderr and "Traceback" not in bad.stderr


def test_chart_directory_with_values_and_set(tmp_path):
    chart = build_platform_chart(tmp_path)
    values = tmp_path / "mine.yaml"
    values.write_text("weave:\n  install: true\n")
    result = wsm("list", "--chart", str(chart), "-f", str(values), "--set", "app.image.tag=5.0", "-o", "plain")
    assert result.returncode == 0, result.stderr
    images = result.stdout.split()
    assert "docker.io/acme/weave:7.7.7" in images and "docker.io/acme/app:5.0" in images
    assert "docker.io/acme/extras:3.3.3" not in images


def test_chart_render_reports_template_only_images(tmp_path):
    from servers import helm_binary

    chart = build_platform_chart(tmp_path)
    result = wsm("list", "--chart", str(chart), "--render", "--helm", helm_binary(), "-o", "json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert "docker.io/library/alpine:3.19" in [i["image"] for i in data["images"]]
    assert "docker.io/library/alpine:3.19 is hard-coded in the templates" in result.stderr


def test_values_need_a_chart_name_when_the_release_has_several(tmp_path):
    values = tmp_path / "v.yaml"
    values.write_text("a: 1\n")
    result = wsm("list", "-f", str(values))
    assert result.returncode == 1 and "name the chart it is for (operator|operator-wandb)" in result.stderr


def manifest(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "release.yaml"
    path.write_text(text)
    return path


GOOD_HEAD = "apiVersion: wsm/v1\nkind: Release\nname: x\n"


@pytest.mark.parametrize(
    "args_or_text,message",
    [
        (["--manifest", "/nonexistent.yaml"], "manifest /nonexistent.yaml does not exist"),
        ("apiVersion: wsm/v1\nkind: [unclosed\n", "malformed YAML at line"),
        (GOOD_HEAD + "charts:\n  - {name: a, repo: https://x, version: 1.0.0, colour: red}\n",
         "charts[0].colour: unknown key"),
        (GOOD_HEAD + "charts:\n  - {name: a, repo: https://x}\n", "charts[0].version: a version or a range"),
        (GOOD_HEAD + "charts:\n  - {name: a, repo: ftp://x, version: 1}\n", "charts[0].repo: must start with"),
        (GOOD_HEAD + "charts:\n  - {name: a, path: /x}\nimages:\n  - {image: 'Bad:Ref', group: g}\n",
         "images[0].image: invalid image reference 'Bad:Ref'"),
        (GOOD_HEAD + "charts: []\n", "charts: a release needs at least one chart"),
        (["--chart", "/no/such/chart"], "chart /no/such/chart: no such file or directory; for a repository chart add "
                                        "--repo URL"),
        (["--chart", "x", "--manifest", "y"], "give --manifest or --chart, not both"),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path, args_or_text, message):
    args = args_or_text if isinstance(args_or_text, list) else ["--manifest", str(manifest(tmp_path, args_or_text))]
    result = wsm("list", *args)
    assert result.returncode == 1, result.stdout
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_missing_chart_version_and_unreachable_repo_are_clear(tmp_path, helm_repo):
    from servers import free_port

    down = wsm("list", "--chart", "platform", "--repo", f"http://127.0.0.1:{free_port()}", "--version", "1.0.0")
    assert down.returncode == 1 and "Helm repository http://127.0.0.1" in down.stderr
    assert "Traceback" not in down.stderr
    (helm_repo.root / "empty").mkdir(exist_ok=True)
    (helm_repo.root / "empty" / "index.yaml").write_text("apiVersion: v1\nentries: {}\n")
    missing = wsm("list", "--chart", "platform", "--repo", f"{helm_repo.url}/empty", "--version", "1.0.0")
    assert missing.returncode == 1 and "chart 'platform' is not in Helm repository" in missing.stderr


def test_malicious_chart_archive_is_refused(tmp_path):
    from charts import malicious_tgz

    archive = malicious_tgz(tmp_path / "evil-1.0.0.tgz", "evil/../../../tmp/pwned")
    result = wsm("list", "--chart", str(archive))
    assert result.returncode == 1 and "points outside the archive" in result.stderr


def test_resolve_reports_drift_against_the_lock(tmp_path, helm_repo):
    from charts import package

    repo = helm_repo.root / "drift"
    package(build_platform_chart(tmp_path / "src"), repo)
    from servers import run_helm

    run_helm(tmp_path / "helm", "repo", "index", str(repo))
    path = manifest(tmp_path, GOOD_HEAD + f"""
charts:
  - {{name: platform, group: Platform, repo: "{helm_repo.url}/drift", version: "0.3.x"}}
lock:
  charts: [{{name: platform, version: 0.2.0}}]
  images:
    - {{image: docker.io/acme/app:latest, group: Platform, sources: [{{chart: platform/app, method: values, path: app.image, shape: repository}}]}}
    - {{image: docker.io/acme/gone:1.0, group: Platform}}
""")
    offline = wsm("list", "--manifest", str(path), "-o", "plain")
    assert offline.stdout.split() == ["docker.io/acme/app:latest", "docker.io/acme/gone:1.0"]
    resolved = wsm("list", "--manifest", str(path), "--resolve", "-o", "json")
    assert resolved.returncode == 0, resolved.stderr
    assert json.loads(resolved.stdout)["from"] == "charts"
    assert "added since the lock: docker.io/acme/console:4.5.6" in resolved.stderr
    assert "in the lock but no longer found: docker.io/acme/gone:1.0" in resolved.stderr
    assert "chart platform resolves to 0.3.0, not the locked version" in resolved.stderr


def test_closed_pipe_is_not_a_traceback():
    import os

    # `true` exits at once, so the pipe is closed before wsm (half a second to start) writes to it.
    result = subprocess.run(f"{sys.executable} -m wsm list | true", shell=True, capture_output=True, text=True,
                            env=dict(os.environ))
    assert result.returncode == 0 and result.stderr == ""
