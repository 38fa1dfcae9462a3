"""The whole flow offline, with real servers on both sides and real helm and skopeo checking the result."""

import base64
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from e2e import IMAGES, PASSWORD, PULL_SECRET, Flow
from support import sha256, skopeo
from wsm._pullsecret import pod_spec_gaps


@pytest.fixture(scope="module")
def flow(tmp_path_factory):
    with Flow(tmp_path_factory.mktemp("e2e"), log=lambda message: None) as flow:
        flow.upstream()
        flow.internal()
        yield flow


@pytest.fixture(scope="module")
def pushed(flow):
    """The connected side and the first push, done once: what each test below starts from, in any order."""
    listed = flow.list_images()
    downloaded = flow.download()
    verified = flow.verify()
    sums = subprocess.run(["sha256sum", "-c", "--strict", "SHA256SUMS"], cwd=flow.bundle, capture_output=True)
    return {"listed": listed, "verified": verified, "sums": sums.returncode, "runbook": flow.push(),
            "downloaded": downloaded}


def test_list_download_verify_push_install_from_internal_sources_only(flow, pushed):
    listed = pushed["listed"]
    expected = {f"docker.io/{name}:{tag}" for name, tag in IMAGES.items() if name != "acme/tool"}
    assert expected <= set(listed)
    assert f"docker.io/acme/tool@{flow.built['acme/tool'].digest}" in listed
    assert len(listed) == len(IMAGES)

    assert "every digest matches" in pushed["verified"]
    assert pushed["sums"] == 0

    runbook = pushed["runbook"]
    site = f"{flow.site_registry.host}/site"
    # Every image in the internal registry has its upstream digest.
    for name, built in flow.built.items():
        where = f"@{built.digest}" if name == "acme/tool" else f":{IMAGES[name]}"
        raw = skopeo("inspect", "--raw", f"--cert-dir={flow.workdir}/certs", "--tls-verify=false",
                     "--creds=site-admin:s3cret-pw", f"docker://{site}/{name}{where}")
        assert sha256(raw) == built.digest
    # Before anyone runs helm: wsm check finds every image and chart in place.
    check = flow.check()
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"all {len(IMAGES)} images and 2 charts are in place" in check.stdout
    # helm template with the written values renders internal images only, and the operator is air-gapped.
    rendered = flow.rendered_images()
    for chart, images in rendered.items():
        assert images, chart
        assert all(image.startswith(site + "/") for image in images), (chart, images)
    assert f"{site}/acme/controller:1.16.1" in rendered["operator"]
    # Every rendered pod spec that pulls an internal image names the pull secret: the operator's
    # image.pullSecrets, and through the custom resource's values svc's imagePullSecrets, the platform's
    # global.imagePullSecrets and bitnami's image.pullSecrets.
    for chart, output in flow.outputs.items():
        documents = [("?", document) for document in yaml.safe_load_all(output)]
        checked, gaps = pod_spec_gaps(documents, chart, flow.site_registry.host, PULL_SECRET)
        assert checked == {"operator": 1, "platform": 5}[chart] and gaps == [], (chart, gaps)
    assert runbook.index("## 1. Check that every image and chart is in place") < runbook.index("helm repo add")
    assert '{name: AIRGAPPED, value: "true"}' in flow.outputs["operator"]
    # The runbook's commands are for this bundle and this site.
    assert f"helm repo add internal {flow.site_charts.url}\nhelm repo update\n" in runbook
    assert "helm upgrade --install operator internal/operator --version 1.3.8 -n demo --create-namespace " \
           "-f bundle/values/operator.yaml" in runbook
    assert "kubectl apply -f bundle/values/platform-cr.yaml" in runbook
    assert "`spec.values.global.host`" in runbook
    assert (flow.bundle / "RUNBOOK.md").read_text().strip() in runbook
    # Both sides proved the values by rendering them before saying done.
    assert "rendered 2 charts with the written values: 6 image references, all internal" in pushed["downloaded"]
    assert "proof: rendered 2 charts with the written values: 6 image references, all internal" in runbook
    # ... and the runbook says so, after the root digest (which the bundle's own tool checks).
    written = (flow.bundle / "RUNBOOK.md").read_text()
    root = written.index("Root digest of the bundle: `sha256:")
    assert "`python3 ./bundle/tools/wsm.pyz verify bundle --expect sha256:" in written[root:]
    assert written.index("Rendering proof: rendered 2 charts with the written values: 6 image references, all "
                         "internal.") > root
    assert written.index("Rendering proof:") < written.index("## 1.")


def test_second_push_sends_no_blob(flow, pushed):
    report = json.loads(flow.push("-o", "json"))
    assert report["totals"]["bytes_sent"] == 0 and report["totals"]["blobs_sent"] == 0
    assert {job["result"] for job in report["images"]} == {"present"}
    assert len(report["images"]) == len(IMAGES)
    assert {chart["result"] for chart in report["charts"]} == {"present"}
    assert len(report["charts"]) == 2
    assert report["pull_secret"] == {"name": PULL_SECRET, "pod_specs_checked": 6, "gaps": [],
                                     "charts_without_keys": [], "notes": []}
    assert report["proof"] == "rendered 2 charts with the written values: 6 image references, all internal"


def runbook_blocks(flow, heading: str) -> list[str]:
    """The shell blocks of the runbook's step whose heading starts with `heading` (after its number)."""
    text = (flow.bundle / "RUNBOOK.md").read_text()
    step = next(part for part in text.split("\n## ") if re.match(rf"\d+\. {re.escape(heading)}", part))
    return re.findall(r"```(?:sh|bash)\n(.*?)```", step, re.S)


STUB_KUBECTL = """#!{python}
import json, sys
args = sys.argv[1:]
stdin = sys.stdin.read() if any(a.endswith("=/dev/stdin") for a in args) else None
with open({log!r}, "a") as log:
    log.write(json.dumps({{"argv": args, "stdin": stdin}}) + "\\n")
sys.exit(1 if args[:1] == ["get"] else 0)
"""


def run_with_stub_kubectl(tmp_path, script: str, stdin: str = "") -> list[dict]:
    bin_dir, log = tmp_path / "bin", tmp_path / "kubectl.log"
    bin_dir.mkdir(exist_ok=True)
    log.unlink(missing_ok=True)
    stub = bin_dir / "kubectl"
    stub.write_text(STUB_KUBECTL.format(python=sys.executable, log=str(log)))
    stub.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "HOME": str(tmp_path)}
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", script], input=stdin, text=True, env=env,
                            capture_output=True)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_runbook_creates_the_pull_secret_in_every_namespace_without_the_password_in_argv(flow, pushed, tmp_path):
    namespaces, from_file, from_prompt = runbook_blocks(flow, "Create the pull secret")
    host = flow.site_registry.host
    created = ["create", "secret", "generic", PULL_SECRET, "--type=kubernetes.io/dockerconfigjson"]

    calls = run_with_stub_kubectl(tmp_path, namespaces)
    assert [c["argv"] for c in calls] == [["get", "namespace", "demo"], ["create", "namespace", "demo"],
                                          ["get", "namespace", "default"], ["create", "namespace", "default"]]

    calls = run_with_stub_kubectl(tmp_path, from_file)
    config = f"--from-file=.dockerconfigjson={tmp_path}/.docker/config.json"
    assert [c["argv"] for c in calls] == [[*created, "-n", ns, config] for ns in ("demo", "default")]

    pull_password = "pull-Pw with 'quotes' $and spaces"
    calls = run_with_stub_kubectl(tmp_path, from_prompt, stdin=f"puller\n{pull_password}\n")
    assert [c["argv"] for c in calls] == [[*created, "-n", ns, "--from-file=.dockerconfigjson=/dev/stdin"]
                                          for ns in ("demo", "default")]
    auth = base64.b64encode(f"puller:{pull_password}".encode()).decode()
    for call in calls:
        assert json.loads(call["stdin"]) == {"auths": {host: {"auth": auth}}}
        assert not any(pull_password in arg or auth in arg for arg in call["argv"])


def test_runbook_first_step_runs_wsm_check(flow, pushed):
    (block,) = runbook_blocks(flow, "Check that every image and chart is in place")
    assert PASSWORD not in block
    assert block.count("python3 ./bundle/tools/wsm.pyz check --bundle bundle") == 1
    # No wsm on PATH, as on the offline machine: the block runs the bundle's own tool.
    env = {**os.environ, "PATH": "/usr/bin:/bin", "WSM_CACHE_DIR": str(flow.workdir / ".cache")}
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", block], input=PASSWORD + "\n", text=True,
                            cwd=flow.workdir, env=env, capture_output=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"all {len(IMAGES)} images and 2 charts are in place" in result.stdout


def test_a_users_values_file_gets_the_pull_secret_too(flow, pushed):
    own = flow.workdir / "operator-site.yaml"
    own.write_text("# our operator settings\nimage:\n  pullPolicy: Always  # keep\n")
    output = flow.push("--values", f"operator={own}")
    # The rewritten file is proved too: the operator rendered with it over wsm's values.
    assert "proof: rendered 2 charts with the written values (1 also with the user's values files): " in output
    text = own.read_text()
    assert "# our operator settings" in text and "pullPolicy: Always  # keep" in text
    values = yaml.safe_load(text)
    assert values["image"]["pullSecrets"] == [PULL_SECRET]
    assert values["image"]["repository"] == f"{flow.site_registry.host}/site/acme/controller"


def push_unchecked(flow, *extra: str):
    """`wsm push` to the site's servers; its exit code is the caller's to judge."""
    return flow.wsm_unchecked("push", "--bundle", str(flow.bundle), "--registry", f"{flow.site_registry.host}/site",
                              "--helm-repo", flow.site_charts.url, "--ca-file", str(flow.ca_file),
                              "--username", "site-admin", "--password-stdin", *extra, stdin="s3cret-pw\n")


def test_push_fails_naming_an_image_its_values_leave_outside(flow, pushed, tmp_path):
    """A site that switches on a component the bundle does not carry: helm would pull from the internet, and
    push says so instead of "done"."""
    site = tmp_path / "site.yaml"
    site.write_text("weave: {install: true}\n")
    result = push_unchecked(flow, "--site-values", f"platform={site}")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "not every image is internal: platform:" in result.stderr
    assert "renders acme/weave:7.7.7, not an internal image" in result.stderr


def test_push_fails_naming_an_image_a_users_values_file_leaves_outside(flow, pushed, tmp_path):
    """The user's own values file (`--values`, rewritten in place) is proved by rendering too: a component it
    switches on that the bundle does not carry fails the push, naming the image and the file."""
    own = tmp_path / "platform-own.yaml"
    own.write_text("# ours\nweave: {install: true}\n")
    result = push_unchecked(flow, "--values", f"platform={own}")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "not every image is internal: platform:" in result.stderr
    assert f"renders acme/weave:7.7.7, not an internal image (with the values file {own})" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
