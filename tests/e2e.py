"""The whole story offline, as an operator runs it: an "upstream" registry and Helm repository serving a small
stand-in release -> wsm list -> wsm download -> (the gap) -> wsm verify -> wsm push into an internal registry
(TLS + htpasswd) and Helm repository (nginx, PUT behind basic auth), naming the pull secret `regcred` ->
wsm check -> helm template with the written values. The offline half runs as a site runs it: the bundle's own
tools/wsm.pyz on the system's python3 (Debian's /usr/bin/python3 where there is one), with nothing installed.

Used by tests/test_end_to_end.py and by scripts/try-offline.py (README: "Try the whole flow offline").
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import trustme
import yaml

from charts import build_operator_chart, build_platform_chart, package
from images import make_image
from servers import Containerd, HelmRepo, Registry, helm_binary, run_helm
from support import DEBIAN_PYTHON, run_tool, tool_command, wsm

USER, PASSWORD = "site-admin", "s3cret-pw"
PULL_SECRET = "regcred"
# The stand-in release's images, as the charts name them once the manifest's values pin them.
IMAGES = {
    "acme/controller": "1.16.1",
    "acme/app": "0.62.2",
    "acme/console": "4.5.6",
    "bitnami/redis": "7.2.4-debian-12-r9",
    "oliver006/redis_exporter": "0.15.1",
    "acme/tool": "1.0",  # pinned by digest in the manifest
}
# Written into the platform chart's templates when a flow is made with `hardcoded=True`: no values path moves
# them; `download --render` finds them, and the post-renderer and the node mirror files cover them.
HARDCODED = {"library/busybox": "1.36", "library/alpine": "3.19"}
# Every proxy pointed at a port nothing listens on: a node pull that tried the internet would fail.
OFFLINE = {"HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9", "NO_PROXY": "127.0.0.1"}

MANIFEST = """\
apiVersion: wsm/v1
kind: Release
name: demo
description: a stand-in release shaped like W&B's (an operator chart, a platform chart installed through a CR)
charts:
  - name: operator
    group: Operator
    repo: {repo}
    version: 1.3.8
    namespace: demo
    values:
      image: {{tag: 1.16.1}}
  - name: platform
    group: Platform
    repo: {repo}
    version: "^0.3"
    install: operator
    resource:
      file: platform-cr.yaml
      template:
        apiVersion: apps.example.com/v1
        kind: Platform
        metadata: {{name: demo}}
        spec:
          values:
            global: {{host: CHANGE-ME https://demo.example.com}}
    values:
      app: {{image: {{tag: 0.62.2}}}}
      tool: {{image: {{digest: "{tool_digest}"}}}}
"""


@dataclass
class Flow:
    workdir: Path
    log: Callable[[str], None] = print
    servers: list = field(default_factory=list)
    outputs: dict = field(default_factory=dict)
    hardcoded: bool = False  # the platform chart with images written into its templates
    scratch: list = field(default_factory=list)  # short directories outside workdir, removed at the end

    def __enter__(self) -> Flow:
        return self

    def __exit__(self, *exc) -> None:
        for server in reversed(self.servers):
            server.stop()
        for directory in self.scratch:
            shutil.rmtree(directory, ignore_errors=True)

    # -- the connected side ------------------------------------------------------------------------------------

    def upstream(self) -> None:
        """A registry and a Helm repository standing in for docker.io and the vendor's chart repository."""
        w = self.workdir
        self.registry = self._start(Registry(w / "upstream-registry"))
        self.charts = self._start(HelmRepo(w / "upstream-charts"))
        images = {**IMAGES, **(HARDCODED if self.hardcoded else {})}
        self.built = {
            name: make_image(self.registry, f"dockerhub/{name}", w / "images", tag=tag) for name, tag in images.items()
        }
        for chart_dir in (build_operator_chart(w / "src"), build_platform_chart(w / "src", hardcoded=self.hardcoded)):
            package(chart_dir, self.charts.root)
        run_helm(w / "helm", "repo", "index", str(self.charts.root))
        self.manifest = w / "demo.yaml"
        self.manifest.write_text(MANIFEST.format(repo=self.charts.url, tool_digest=self.built["acme/tool"].digest))
        self.log(f"upstream registry {self.registry.url}, Helm repository {self.charts.url}, manifest {self.manifest}")

    def list_images(self) -> list[str]:
        result = self.wsm("list", "--manifest", str(self.manifest), "-o", "plain")
        return result.stdout.split()

    def download(self) -> str:
        mirror = f"docker.io={self.registry.host}/dockerhub"
        render = ["--render"] if self.hardcoded else []  # the hard-coded images are found by rendering only
        return self.wsm("download", "--manifest", str(self.manifest), "--bundle", str(self.bundle),
                        "--registry-mirror", mirror, "--plain-http", *render).stderr

    # -- the offline side --------------------------------------------------------------------------------------

    def internal(self) -> None:
        w = self.workdir
        self.ca = trustme.CA()
        self.ca_file = w / "site-ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        self.site_registry = self._start(Registry(w / "site-registry", tls=self.ca, htpasswd={USER: PASSWORD}))
        self.site_charts = self._start(HelmRepo(w / "site-charts", auth=(USER, PASSWORD)))
        self.log(f"internal registry {self.site_registry.url} (TLS, htpasswd), Helm repository {self.site_charts.url}")

    def verify(self) -> str:
        return self.tool("verify", "bundle").stdout

    def push(self, *extra: str) -> str:
        return self.tool(
            "push", "--bundle", "bundle", *self.site_options(), "--pull-secret", PULL_SECRET,
            "--helm", helm_binary() or "helm", *extra, stdin=PASSWORD + "\n",
        ).stdout

    def check(self, *extra: str) -> subprocess.CompletedProcess[str]:
        """`wsm check` against the internal servers; its exit code is the caller's to judge."""
        return self.wsm("check", "--bundle", str(self.bundle), *self.site_options(), *extra,
                        stdin=PASSWORD + "\n", expect_success=False)

    def site_options(self) -> list[str]:
        return ["--registry", f"{self.site_registry.host}/site", "--helm-repo", self.site_charts.url,
                "--ca-file", str(self.ca_file), "--username", USER, "--password-stdin"]

    def rendered_images(self, *helm_args: str) -> dict[str, list[str]]:
        """`helm template` of each chart from the internal repository with the values wsm wrote (and
        `helm_args`, e.g. a post-renderer)."""
        home = self.workdir / "site-helm"
        run_helm(home, "repo", "add", "--force-update", "internal", self.site_charts.url)
        values_dir = self.bundle / "values"
        cr = yaml.safe_load((values_dir / "platform-cr.yaml").read_text())
        platform_values = self.workdir / "platform-from-cr.yaml"  # beside the bundle: wsm did not write it
        platform_values.write_text(yaml.safe_dump(cr["spec"]["values"]))
        found = {}
        for chart, values in (("operator", values_dir / "operator.yaml"), ("platform", platform_values)):
            output = run_helm(home, "template", "demo", f"internal/{chart}", "-f", str(values), *helm_args).stdout
            self.outputs[chart] = output
            from wsm._render import images_in_manifests

            found[chart] = sorted({image.reference.canonical for image in images_in_manifests(output)})
        return found

    # -- the nodes: pulls by upstream name through the node files ----------------------------------------------

    def podman_pull(self, image: str) -> str:
        """Pull `image` by its upstream name as a CRI-O/podman node would, with the bundle's drop-in and CA
        installed where podman reads them (a home of its own, so the machine's files play no part); the
        digest podman stored."""
        home, files = self.workdir / "podman-home", self.bundle / "node-files" / "containers" / "etc" / "containers"
        config = home / ".config" / "containers"
        if not config.exists():
            shutil.copytree(files, config)  # registries.conf.d/ and certs.d/, as under /etc/containers
            (config / "registries.conf").write_text("unqualified-search-registries = []\n")
        auth = self.workdir / "podman-auth.json"
        token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        auth.write_text(json.dumps({"auths": {self.site_registry.host: {"auth": token}}}))
        if not hasattr(self, "podman_run"):  # podman refuses a runroot path longer than 50 characters
            self.podman_run = Path(tempfile.mkdtemp(prefix="wsm-podman-"))
            self.scratch.append(self.podman_run)
        storage = ["--root", str(self.workdir / "podman-root"), "--runroot", str(self.podman_run),
                   "--storage-driver", "vfs"]
        env = {**os.environ, **OFFLINE, "HOME": str(home), "REGISTRY_AUTH_FILE": str(auth)}
        pulled = subprocess.run(["podman", *storage, "pull", "-q", image], capture_output=True, text=True, env=env)
        assert pulled.returncode == 0, pulled.stderr
        inspect = ["podman", *storage, "image", "inspect", "--format", "{{.Digest}}", image]
        return subprocess.run(inspect, capture_output=True, text=True, env=env, check=True).stdout.strip()

    def containerd_fetch(self, image: str) -> str:
        """Fetch `image` by its upstream name with containerd reading the bundle's hosts.toml files (as with
        `config_path = "/etc/containerd/certs.d"`); the digest containerd recorded for it."""
        if not hasattr(self, "containerd"):
            self.containerd = self._start(Containerd(self.workdir / "containerd"))
        hosts = self.bundle / "node-files" / "containerd" / "etc" / "containerd" / "certs.d"
        fetched = self.containerd.ctr("content", "fetch", "--hosts-dir", str(hosts), "--user", f"{USER}:{PASSWORD}",
                                      image, env=OFFLINE)
        assert fetched.returncode == 0, fetched.stderr
        listed = self.containerd.ctr("images", "ls").stdout.splitlines()
        return next(line.split()[2] for line in listed if line.split()[0] == image)

    # -- plumbing ------------------------------------------------------------------------------------------------

    @property
    def bundle(self) -> Path:
        return self.workdir / "bundle"

    def wsm(self, *args: str, stdin: str = "", expect_success: bool = True) -> subprocess.CompletedProcess[str]:
        result = self.wsm_unchecked(*args, stdin=stdin)
        if expect_success and result.returncode != 0:
            raise AssertionError(f"wsm {args[0]} failed ({result.returncode}): {result.stderr}{result.stdout}")
        return result

    def wsm_unchecked(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        self.log("$ wsm " + " ".join(args))
        # helm for wsm too: download and push prove the values they write by rendering them.
        env = {"DOCKER_CONFIG": str(self.workdir / "docker"), "WSM_HELM": helm_binary() or ""}
        return wsm(*args, stdin=stdin, cwd=self.workdir, env=env)
    @property
    def offline_python(self) -> Path:
        return DEBIAN_PYTHON if DEBIAN_PYTHON.exists() else Path(sys.base_prefix) / "bin" / "python3"

    def tool(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        """The bundle's own wsm, `python3 -I bundle/tools/wsm.pyz ARGS`, run from the bundle's parent directory."""
        pyz = self.bundle / "tools" / "wsm.pyz"
        command = tool_command(self.offline_python, pyz.relative_to(self.workdir), site=True)
        self.log("$ " + " ".join([*command, *args]))
        result = run_tool(self.offline_python, pyz, *args, stdin=stdin, cwd=self.workdir, site=True)
        if result.returncode != 0:
            raise AssertionError(f"{pyz} {args[0]} failed ({result.returncode}): {result.stderr}{result.stdout}")
        return result

    def _start(self, server):
        self.servers.append(server)
        return server
