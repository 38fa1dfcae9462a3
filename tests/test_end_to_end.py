"""The whole flow offline, with real servers on both sides and real helm and skopeo checking the result."""

import json
import subprocess

import pytest

from e2e import IMAGES, Flow
from support import sha256, skopeo


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
    # helm template with the written values renders internal images only, and the operator is air-gapped.
    rendered = flow.rendered_images()
    for chart, images in rendered.items():
        assert images, chart
        assert all(image.startswith(site + "/") for image in images), (chart, images)
    assert f"{site}/acme/controller:1.16.1" in rendered["operator"]
    assert '{name: AIRGAPPED, value: "true"}' in flow.outputs["operator"]
    # The runbook's commands are for this bundle and this site.
    assert f"helm repo add internal {flow.site_charts.url} && helm repo update" in runbook
    assert "helm upgrade --install operator internal/operator --version 1.3.8 -n demo --create-namespace " \
           "-f bundle/values/operator.yaml" in runbook
    assert "kubectl apply -f bundle/values/platform-cr.yaml" in runbook
    assert "`spec.values.global.host`" in runbook
    assert (flow.bundle / "RUNBOOK.md").read_text().strip() in runbook
    # Both sides proved the values by rendering them before saying done.
    assert "rendered 2 charts with the written values: 6 image references, all internal" in pushed["downloaded"]
    assert "proof: rendered 2 charts with the written values: 6 image references, all internal" in runbook


def test_second_push_sends_no_blob(flow, pushed):
    report = json.loads(flow.push("-o", "json"))
    assert report["totals"]["bytes_sent"] == 0 and report["totals"]["blobs_sent"] == 0
    assert {job["result"] for job in report["images"]} == {"present"}
    assert len(report["images"]) == len(IMAGES)
    assert {chart["result"] for chart in report["charts"]} == {"present"}
    assert len(report["charts"]) == 2
    assert report["proof"] == "rendered 2 charts with the written values: 6 image references, all internal"


def test_push_fails_naming_an_image_its_values_leave_outside(flow, pushed, tmp_path):
    """A site that switches on a component the bundle does not carry: helm would pull from the internet, and
    push says so instead of "done"."""
    site = tmp_path / "site.yaml"
    site.write_text("weave: {install: true}\n")
    result = flow.wsm_unchecked("push", "--bundle", str(flow.bundle), "--registry", f"{flow.site_registry.host}/site",
                                "--helm-repo", flow.site_charts.url, "--ca-file", str(flow.ca_file),
                                "--username", "site-admin", "--password-stdin", "--site-values", f"platform={site}",
                                stdin="s3cret-pw\n")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "not every image is internal: platform:" in result.stderr
    assert "renders acme/weave:7.7.7, not an internal image" in result.stderr
