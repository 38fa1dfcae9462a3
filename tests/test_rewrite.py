"""`wsm rewrite` as a helm post-renderer (real `helm template --post-renderer`) and on plain manifests."""

import subprocess
import sys
from pathlib import Path

import pytest

from charts import SVC_DEPLOYMENT, helm_test_pod, write_chart
from servers import helm_env, helm_binary, run_helm
from support import one_line_error, wsm
from wsm._pushed import PushedImage, PushRecord
from wsm._reference import Reference
from wsm._render import images_in_manifests
from wsm._rewrite import ImageMap, Uncovered, rewrite_manifests
from wsm._target import TargetRegistry

SITE = "registry.corp/site"
DIGEST = "sha256:" + "ab" * 32
WSM = str(Path(sys.executable).parent / "wsm")  # helm runs a post-renderer by path

MAPPING = f"""\
docker.io/acme/app: {SITE}/acme/app
busybox: {SITE}/library/busybox
docker.io/acme/tool: {SITE}/acme/tool
quay.io/acme/agent: {SITE}/quay/agent
"""

TEMPLATES = {
    # The platform chart's service (a hard-coded busybox init container) with references in args and env.
    "deployment.yaml": SVC_DEPLOYMENT + """\
          args: ["--sidecar-image=quay.io/acme/agent:3.1", "--log-level=info"]
          env:
            - name: TOOL_IMAGE
              value: docker.io/acme/tool@""" + DIGEST + "\n",
    "configmap.yaml": """\
apiVersion: v1
kind: ConfigMap
metadata: {name: {{ .Release.Name }}-jobs}
data:
  runner.yaml: |
    # which image the job runner starts
    image: busybox:1.36
    mode: fast
""",
    "agent.yaml": """\
apiVersion: agents.example.com/v1
kind: Agent
metadata: {name: {{ .Release.Name }}-agent}
spec:
  agent:
    image: quay.io/acme/agent:3.1
""",
    "test-connection.yaml": helm_test_pod("probe", "busybox:1.36"),
}


@pytest.fixture
def chart(tmp_path) -> Path:
    return write_chart(tmp_path / "demo", {"apiVersion": "v2", "name": "demo", "version": "0.1.0"},
                       {"component": "app", "image": {"repository": "acme/app", "tag": "1.0"}}, TEMPLATES)


@pytest.fixture
def mapping(tmp_path) -> Path:
    path = tmp_path / "mapping.yaml"
    path.write_text(MAPPING)
    return path


def documents_by_kind(text: str) -> dict[str, list[str]]:
    images: dict[str, list[str]] = {}
    for image in images_in_manifests(text):
        images.setdefault(image.kind, []).append(image.reference.canonical)
    return images


def test_post_renderer_points_hard_coded_images_inside(chart, mapping, tmp_path):
    assert helm_binary()
    home = tmp_path / "helm"
    plain = run_helm(home, "template", "demo", str(chart)).stdout
    rendered = run_helm(home, "template", "demo", str(chart), "--post-renderer", WSM, "--post-renderer-args",
                        "rewrite", "--post-renderer-args", "--mapping", "--post-renderer-args", str(mapping)).stdout
    manifests, _, hooks = rendered.partition("# Source: demo/templates/test-connection.yaml")
    images = documents_by_kind(manifests)
    assert images == {"Deployment": [f"{SITE}/library/busybox:1.36", f"{SITE}/acme/app:1.0"],
                      "Agent": [f"{SITE}/quay/agent:3.1"]}
    assert f"--sidecar-image={SITE}/quay/agent:3.1" in manifests
    assert f"value: {SITE}/acme/tool@{DIGEST}" in manifests
    assert f"    image: {SITE}/library/busybox:1.36\n    mode: fast" in manifests  # the ConfigMap's string
    # Helm 3 does not pass hooks through a post-renderer: the test hook comes out as the chart wrote it (the
    # node mirror files cover it; the README says so), and `helm template | wsm rewrite` covers it too.
    assert "image: busybox:1.36" in hooks
    piped = subprocess.run([WSM, "rewrite", "--mapping", str(mapping)], input=plain, capture_output=True, text=True)
    assert piped.returncode == 0, piped.stderr
    assert all(image.startswith(SITE + "/") for images in documents_by_kind(piped.stdout).values() for image in images)


def test_everything_but_the_references_stays_byte_for_byte(chart, mapping, tmp_path):
    plain = run_helm(tmp_path / "helm", "template", "demo", str(chart)).stdout
    result = wsm("rewrite", "--mapping", str(mapping), stdin=plain)
    assert result.returncode == 0, result.stderr
    expected = plain
    for source, target in [("docker.io/library/busybox:1.36", f"{SITE}/library/busybox:1.36"),
                           (" busybox:1.36", f" {SITE}/library/busybox:1.36"),  # the hook, the ConfigMap
                           ("quay.io/acme/agent:3.1", f"{SITE}/quay/agent:3.1"),
                           (f"docker.io/acme/tool@{DIGEST}", f"{SITE}/acme/tool@{DIGEST}"),
                           ('"acme/app:1.0"', f'"{SITE}/acme/app:1.0"')]:
        assert source in expected
        expected = expected.replace(source, target)
    assert result.stdout == expected
    # Run again on its own output: nothing left to move, nothing changes.
    assert wsm("rewrite", "--mapping", str(mapping), stdin=result.stdout).stdout == result.stdout


def test_quoting_comments_and_escapes_are_kept():
    text = ("# leading comment, not ASCII: é ü ß\nkind: Pod  # trailing ✓\nspec:\n  containers:\n"
            "  - {name: a, image: 'docker.io/acme/app:1.0'}   # flow style\n"
            "  - name: b\n    image: \"docker.io/acme/app:1.0\"\n    args: [\"x\\u0041\", \"acme/app:1.0\"]\n"
            "    command: [busybox, sh, 'level:info', /bin/busybox]\n")  # words that are no references
    images = ImageMap.from_names({"docker.io/acme/app": f"{SITE}/acme/app", "busybox": f"{SITE}/library/busybox"})
    out = rewrite_manifests(text, images).text
    assert out == text.replace("docker.io/acme/app:1.0", f"{SITE}/acme/app:1.0").replace(
        '"acme/app:1.0"', f'"{SITE}/acme/app:1.0"')


def test_unmapped_images_exit_1_naming_each_and_write_nothing(chart, tmp_path):
    partial = tmp_path / "partial.yaml"
    partial.write_text(f"docker.io/acme/app: {SITE}/acme/app\n")
    plain = run_helm(tmp_path / "helm", "template", "demo", str(chart)).stdout
    result = wsm("rewrite", "--mapping", str(partial), stdin=plain)
    one_line_error(result, "busybox:1.36 (Deployment/demo-demo-app spec.template.spec.initContainers[0].image)",
                   "quay.io/acme/agent:3.1 (Agent/demo-agent spec.agent.image)",
                   f"docker.io/acme/tool@{DIGEST} (Deployment/demo-demo-app spec.template.spec.containers[0].env[0].value)",
                   "busybox:1.36 (Pod/demo-test spec.containers[0].image)")
    assert result.stdout == "" and len(result.stderr.strip().splitlines()) == 1


def pushed(source: str, target: str, digest: str = DIGEST) -> PushedImage:
    return PushedImage(Reference.parse(source), Reference.parse(target), digest)


def test_a_push_record_covers_exactly_what_was_pushed(tmp_path):
    record = PushRecord(SITE, None, (
        pushed("docker.io/acme/app:1.0", f"{SITE}/acme/app:1.0"),
        pushed(f"docker.io/acme/tool@{DIGEST}", f"{SITE}/acme/tool@{DIGEST}"),
    ), ())
    images = ImageMap.from_record(record)
    text = f"a: {{image: acme/app:1.0}}\nb: {{image: 'docker.io/acme/tool@{DIGEST}'}}\nc: {{image: {SITE}/x/y:1}}\n"
    assert rewrite_manifests(text, images).text == text.replace("acme/app:1.0", f"{SITE}/acme/app:1.0").replace(
        f"docker.io/acme/tool@{DIGEST}", f"{SITE}/acme/tool@{DIGEST}")
    with pytest.raises(Uncovered, match=r"acme/app:2\.0 \(\?/\? image\)"):  # a tag push never sent
        rewrite_manifests("image: acme/app:2.0\n", images)
    record.write(tmp_path)
    result = wsm("rewrite", "--bundle", str(tmp_path), stdin=text)
    assert result.returncode == 0 and f"{SITE}/acme/app:1.0" in result.stdout


def test_bad_input_is_one_line(tmp_path, mapping):
    one_line_error(wsm("rewrite", "--mapping", str(mapping), stdin="a: [unclosed\n"), "not YAML at line")
    one_line_error(wsm("rewrite", "--bundle", str(tmp_path), stdin=""), "has not been pushed yet")
