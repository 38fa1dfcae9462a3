"""The whole flow with images hard-coded in the chart's templates: after push, the node files make podman and
containerd pull them by their upstream names from the internal registry (offline, through its TLS and
htpasswd), and `wsm rewrite` as helm's post-renderer (the runbook's exact command) leaves only internal
images in what helm renders."""

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from e2e import HARDCODED, Flow
from servers import helm_binary, helm_env
from wsm._render import images_in_manifests

VENV_BIN = str(Path(sys.executable).parent)  # where `wsm` is, for helm's --post-renderer wsm


@pytest.fixture(scope="module")
def flow(tmp_path_factory):
    with Flow(tmp_path_factory.mktemp("e2e-nodes"), log=lambda message: None, hardcoded=True) as flow:
        flow.upstream()
        flow.internal()
        flow.download()
        flow.runbook = flow.push()
        yield flow


def test_push_records_the_internal_names_of_every_image(flow):
    record = json.loads((flow.bundle / "pushed.json").read_text())
    site = f"{flow.site_registry.host}/site"
    assert record["registry"] == site and record["scheme"] == "https"
    by_source = {image["source"]: image["target"] for image in record["images"]}
    for name, tag in HARDCODED.items():
        assert by_source[f"docker.io/{name}:{tag}"] == f"{site}/{name}:{tag}"
    assert len(by_source) == len(flow.built)


@pytest.mark.parametrize("image", sorted(HARDCODED))
def test_podman_pulls_a_hard_coded_image_by_its_upstream_name_through_the_drop_in(flow, image):
    digest = flow.podman_pull(f"docker.io/{image}:{HARDCODED[image]}")
    assert digest == flow.built[image].digest


@pytest.mark.parametrize("image", sorted(HARDCODED))
def test_containerd_fetches_a_hard_coded_image_by_its_upstream_name_through_hosts_toml(flow, image):
    digest = flow.containerd_fetch(f"docker.io/{image}:{HARDCODED[image]}")
    assert digest == flow.built[image].digest


def test_the_ca_files_are_where_the_runbook_puts_them(flow):
    host, ca = flow.site_registry.host, flow.ca_file.read_bytes()
    files = flow.bundle / "node-files"
    for place in (f"containerd/etc/containerd/certs.d/{host}/ca.crt", f"docker/etc/docker/certs.d/{host}/ca.crt",
                  f"containers/etc/containers/certs.d/{host}/ca.crt", f"k3s/etc/rancher/k3s/wsm-ca/{host}/ca.crt",
                  f"rke2/etc/rancher/rke2/wsm-ca/{host}/ca.crt"):
        assert (files / place).read_bytes() == ca
        assert f"| `/{place.split('/', 1)[1]}` | `bundle/node-files/{place}` |" in flow.runbook
    for runtime in ("containerd", "containers", "docker", "k3s", "rke2"):
        assert f"cp -r bundle/node-files/{runtime}/. /" in flow.runbook


def test_post_renderer_leaves_only_internal_images(flow):
    site = f"{flow.site_registry.host}/site"
    plain = flow.rendered_images()["platform"]
    assert "docker.io/library/busybox:1.36" in plain and "docker.io/library/alpine:3.19" in plain
    rendered = flow.rendered_images("--post-renderer", str(Path(VENV_BIN) / "wsm"), "--post-renderer-args",
                                    "rewrite", "--post-renderer-args", "--bundle", "--post-renderer-args",
                                    str(flow.bundle))
    for chart, images in rendered.items():
        assert images and all(image.startswith(site + "/") for image in images), (chart, images)
    assert {f"{site}/library/busybox:1.36", f"{site}/library/alpine:3.19"} <= set(rendered["platform"])


def test_the_runbooks_helm_command_runs_with_the_post_renderer(flow):
    flow.rendered_images()  # adds the internal repository to the helm home used below
    start = flow.runbook.index("helm upgrade --install operator")
    command = flow.runbook[start:flow.runbook.index("\n```", start)].replace("\\\n", " ")
    assert command.endswith("--post-renderer ./bundle/tools/wsm.pyz --post-renderer-args rewrite "
                            "--post-renderer-args --bundle --post-renderer-args bundle")
    assert os.access(flow.bundle / "tools" / "wsm.pyz", os.X_OK)
    argv = shlex.split(command.replace("helm upgrade --install", "template", 1))
    # No wsm on PATH, as on the offline machine: helm runs the bundle's own tool through its #! line.
    env = {**helm_env(flow.workdir / "site-helm"), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([helm_binary(), *argv], cwd=flow.workdir, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    images = {image.reference.canonical for image in images_in_manifests(result.stdout)}
    assert images == {f"{flow.site_registry.host}/site/acme/controller:1.16.1"}
