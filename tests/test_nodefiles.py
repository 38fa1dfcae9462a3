"""The node files against their documented formats: containerd hosts.toml, containers-registries.conf(5) and
k3s/RKE2 registries.yaml (real pulls through them: tests/test_end_to_end.py)."""

import posixpath
import re
import tomllib
from pathlib import Path, PurePosixPath

import pytest
import trustme
import yaml

from wsm._exceptions import WsmError
from wsm._nodefiles import NODE_FILES_DIR, node_files, on_node, write_node_files
from wsm._pushed import PushedImage, PushRecord
from wsm._reference import Reference
from wsm._target import TargetRegistry

SITE = "registry.corp:5000"


def pushed(source: str, target: str) -> PushedImage:
    return PushedImage(Reference.parse(source), Reference.parse(target), "sha256:" + "0" * 64)


@pytest.fixture(scope="module")
def ca_pem() -> bytes:
    return trustme.CA().cert_pem.bytes()


def site_record(scheme: str = "https", prefix: str = "site") -> PushRecord:
    base = f"{SITE}/{prefix}" if prefix else SITE
    images = [
        pushed("docker.io/acme/app:1.0", f"{base}/acme/app:1.0"),
        pushed("docker.io/library/busybox:1.36", f"{base}/library/busybox:1.36"),
        pushed("ghcr.io/org/tool@sha256:" + "1" * 64, f"{base}/org/tool@sha256:" + "1" * 64),
        pushed("quay.io/x/y:2", f"{SITE}/custom/y:2"),  # a --mapping target: no per-host rule gives it
    ]
    return PushRecord(TargetRegistry.parse(base).base, None, tuple(images), (), scheme=scheme)


def text(files, path: str) -> str:
    return files.files[PurePosixPath(path)].decode()


def test_containerd_hosts_send_each_source_host_to_the_prefixed_internal_path(ca_pem):
    files = node_files(site_record(), ca_pem)
    hosts = tomllib.loads(text(files, "containerd/etc/containerd/certs.d/docker.io/hosts.toml"))
    assert hosts["server"] == "https://registry-1.docker.io"
    # override_path: the URL's path is the API root, so /v2/site/acme/app/manifests/1.0 is asked for.
    assert hosts["host"] == {f"https://{SITE}/v2/site": {
        "capabilities": ["pull", "resolve"], "override_path": True, "ca": f"../{SITE}/ca.crt"}}
    # containerd reads a relative path from the hosts.toml's own directory: the CA file is there.
    beside = posixpath.join("containerd/etc/containerd/certs.d/docker.io", hosts["host"][f"https://{SITE}/v2/site"]["ca"])
    assert files.files[PurePosixPath(posixpath.normpath(beside))] == ca_pem
    ghcr = tomllib.loads(text(files, "containerd/etc/containerd/certs.d/ghcr.io/hosts.toml"))
    assert ghcr["server"] == "https://ghcr.io" and list(ghcr["host"]) == [f"https://{SITE}/v2/site"]
    own = tomllib.loads(text(files, f"containerd/etc/containerd/certs.d/{SITE}/hosts.toml"))
    assert own == {"server": f"https://{SITE}", "host": {f"https://{SITE}": {"capabilities": ["pull", "resolve"],
                                                                              "ca": "ca.crt"}}}
    # quay.io's only image went to a name of its own: no host rule can express it, and it is reported.
    assert not any("quay.io" in str(path) for path in files.files)
    assert [image.source.canonical for image in files.exceptions] == ["quay.io/x/y:2"]


def test_registries_conf_drop_in_mirrors_each_host_and_names_mapped_images_exactly(ca_pem):
    files = node_files(site_record(), ca_pem)
    conf = tomllib.loads(text(files, "containers/etc/containers/registries.conf.d/50-wsm-mirrors.conf"))
    entries = {entry["prefix"]: entry for entry in conf["registry"]}
    assert set(entries) == {"docker.io", "ghcr.io", "quay.io/x/y"}
    for prefix, entry in entries.items():
        assert set(entry) == {"prefix", "location", "mirror"} and entry["location"] == prefix
    assert entries["docker.io"]["mirror"] == [{"location": f"{SITE}/site"}]
    assert entries["quay.io/x/y"]["mirror"] == [{"location": f"{SITE}/custom/y"}]
    # The prefix is replaced by the mirror's location: the source name becomes exactly push's target name.
    for image in site_record().images:
        prefix = max((p for p in entries if image.source.name.startswith(p)), key=len)
        mirrored = entries[prefix]["mirror"][0]["location"] + image.source.name.removeprefix(prefix)
        assert mirrored == image.target.name


@pytest.mark.parametrize("runtime", ["k3s", "rke2"])
def test_rancher_registries_rewrite_adds_the_prefix_and_trust_the_ca(ca_pem, runtime):
    files = node_files(site_record(), ca_pem)
    data = yaml.safe_load(text(files, f"{runtime}/etc/rancher/{runtime}/registries.yaml"))
    assert set(data) == {"mirrors", "configs"} and set(data["mirrors"]) == {"docker.io", "ghcr.io"}
    ca_file = data["configs"][SITE]["tls"]["ca_file"]
    assert ca_file == f"/etc/rancher/{runtime}/wsm-ca/{SITE}/ca.crt"
    assert files.files[PurePosixPath(runtime) / ca_file.lstrip("/")] == ca_pem
    for image in site_record().images[:3]:
        mirror = data["mirrors"][image.source.registry]
        assert mirror["endpoint"] == [f"https://{SITE}"]
        (pattern, replacement), = mirror["rewrite"].items()  # Go's regexp: $1 is the first group
        rewritten = re.sub(pattern, replacement.replace("$1", r"\1"), image.source.repository)
        assert rewritten == image.target.repository


def test_ca_goes_where_each_runtime_reads_it(ca_pem):
    files = node_files(site_record(), ca_pem)
    ca_files = {str(on_node(path)) for path, content in files.files.items() if content == ca_pem}
    assert ca_files == {f"/etc/containerd/certs.d/{SITE}/ca.crt", f"/etc/docker/certs.d/{SITE}/ca.crt",
                        f"/etc/containers/certs.d/{SITE}/ca.crt", f"/etc/rancher/k3s/wsm-ca/{SITE}/ca.crt",
                        f"/etc/rancher/rke2/wsm-ca/{SITE}/ca.crt"}
    assert files.runtimes == ["containerd", "containers", "docker", "k3s", "rke2"]


def test_plain_http_registry_without_prefix_or_ca():
    files = node_files(site_record(scheme="http", prefix=""), None)
    assert not any(path.name == "ca.crt" for path in files.files) and "docker" not in files.runtimes
    hosts = tomllib.loads(text(files, "containerd/etc/containerd/certs.d/docker.io/hosts.toml"))
    assert hosts["host"] == {f"http://{SITE}": {"capabilities": ["pull", "resolve"]}}
    conf = tomllib.loads(text(files, "containers/etc/containers/registries.conf.d/50-wsm-mirrors.conf"))
    docker = next(entry for entry in conf["registry"] if entry["prefix"] == "docker.io")
    assert docker["mirror"] == [{"location": SITE, "insecure": True}]
    data = yaml.safe_load(text(files, "k3s/etc/rancher/k3s/registries.yaml"))
    assert data == {"mirrors": {host: {"endpoint": [f"http://{SITE}"]} for host in ("docker.io", "ghcr.io")}}


def test_a_ca_file_that_is_not_pem_is_refused():
    with pytest.raises(WsmError, match="no PEM certificate"):
        node_files(site_record(), b"not a certificate")


def test_node_files_replace_the_previous_tree_whole(tmp_path: Path, ca_pem):
    write_node_files(tmp_path, node_files(site_record(), ca_pem))
    write_node_files(tmp_path, node_files(site_record(scheme="http"), None))
    root = tmp_path / NODE_FILES_DIR
    assert not list(root.rglob("ca.crt")) and not (tmp_path / f"{NODE_FILES_DIR}.partial").exists()
    assert (root / "containerd/etc/containerd/certs.d/docker.io/hosts.toml").is_file()


def test_push_record_round_trips(tmp_path: Path):
    record = site_record()
    record.write(tmp_path)
    assert PushRecord.load(tmp_path) == record
    (tmp_path / "pushed.json").write_text('{"format": 1, "registry": "r.corp", "images": [{"source": "x"}]}')
    with pytest.raises(WsmError, match="not a push record"):
        PushRecord.load(tmp_path)


def test_runbook_step_lists_every_file_and_the_images_a_mirror_cannot_place(ca_pem):
    from wsm._runbook import _node_files_step

    lines = "\n".join(_node_files_step(2, node_files(site_record(), ca_pem), Path("/media/usb/bundle")))
    assert lines.startswith("## 2. Set up the nodes' container runtimes")
    for runtime in ("containerd", "containers", "docker", "k3s", "rke2"):
        assert f"cp -r bundle/node-files/{runtime}/. /" in lines
    assert ("| `/etc/containerd/certs.d/docker.io/hosts.toml` | "
            "`bundle/node-files/containerd/etc/containerd/certs.d/docker.io/hosts.toml` |") in lines
    assert f"`quay.io/x/y` -> `{SITE}/custom/y`" in lines and "through `wsm rewrite`" in lines


def test_a_ca_file_larger_than_any_ca_bundle_is_refused_not_cut_short(tmp_path):
    from wsm._push import _read_ca

    ca = tmp_path / "ca.pem"
    ca.write_bytes(b"-----BEGIN CERTIFICATE-----\n" + b"A" * (1024 * 1024))
    with pytest.raises(WsmError, match="larger than 1048576 bytes: not a CA bundle"):
        _read_ca(str(ca))
    ca.write_bytes(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    assert _read_ca(str(ca)) == ca.read_bytes()
