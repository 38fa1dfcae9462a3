"""Files for the cluster's nodes: registry mirrors and the site CA, written by push under `bundle/node-files/`.

An image no values path sets (a hard-coded init container, a test hook) is pulled by its upstream name. The
mirror files make each container runtime fetch such pulls from the internal registry, under exactly the names
push created (`docker.io/acme/app` -> `registry.corp/wandb/acme/app`: the prefix is part of the mirror's
location). A mirror maps repository paths one-to-one under a prefix, so a source that `--mapping` sent
elsewhere is named one by one where the format can (CRI-O/podman) and reported where it cannot.

Each runtime gets a subtree laid out as the node's root, so that `cp -r node-files/<runtime>/. /` installs it:

    node-files/containerd/etc/containerd/certs.d/<source host>/hosts.toml        mirror (override_path)
    node-files/containerd/etc/containerd/certs.d/<registry host>/{hosts.toml,ca.crt}   CA only
    node-files/containers/etc/containers/registries.conf.d/50-wsm-mirrors.conf   CRI-O, podman, buildah
    node-files/containers/etc/containers/certs.d/<registry host>/ca.crt          CA only
    node-files/docker/etc/docker/certs.d/<registry host>/ca.crt                  CA only
    node-files/k3s/etc/rancher/k3s/registries.yaml (+ wsm-ca/<registry host>/ca.crt)
    node-files/rke2/etc/rancher/rke2/registries.yaml (+ wsm-ca/<registry host>/ca.crt)
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import yaml

from ._exceptions import Hint, StorageError, WsmError
from ._files import PARTIAL_SUFFIX, write_atomically
from ._pushed import PushedImage, PushRecord
from ._reference import DOCKER_HUB

NODE_FILES_DIR = "node-files"
CONTAINERD_HOSTS = PurePosixPath("/etc/containerd/certs.d")
CONTAINERS_CONF_D = PurePosixPath("/etc/containers/registries.conf.d")
CONTAINERS_CERTS = PurePosixPath("/etc/containers/certs.d")
DOCKER_CERTS = PurePosixPath("/etc/docker/certs.d")
DROP_IN = "50-wsm-mirrors.conf"
RANCHER = {"k3s": PurePosixPath("/etc/rancher/k3s"), "rke2": PurePosixPath("/etc/rancher/rke2")}
_UPSTREAM = {DOCKER_HUB: "https://registry-1.docker.io"}  # where docker.io's API lives
_HEADER = "written by wsm push: pulls of {what} go to the internal registry, under the names push created"


@dataclass(frozen=True)
class HostRule:
    """Every image of `source_host` was pushed to `target_host`/`prefix`/<its repository path>."""

    source_host: str
    target_host: str
    prefix: str  # "" when the images sit at the top of the registry

    def location(self, scheme: str, *, api: bool = False) -> str:
        """The mirror's URL; `api`: with containerd's API root (`/v2/<prefix>`), for `override_path`."""
        if api and self.prefix:
            return f"{scheme}://{self.target_host}/v2/{self.prefix}"
        return f"{scheme}://{self.target_host}" + (f"/{self.prefix}" if self.prefix else "")


@dataclass(frozen=True)
class NodeFiles:
    files: dict[PurePosixPath, bytes]  # runtime directory + the file's path on a node -> content
    rules: tuple[HostRule, ...]
    exceptions: tuple[PushedImage, ...]  # pushed under names no per-host rule gives (a --mapping target)
    has_ca: bool

    @property
    def runtimes(self) -> list[str]:
        return sorted({path.parts[0] for path in self.files})


def node_files(record: PushRecord, ca_pem: bytes | None) -> NodeFiles:
    """The mirror files for every source host of the pushed images, and the CA files when there is a CA."""
    if ca_pem is not None and b"-----BEGIN CERTIFICATE-----" not in ca_pem:
        raise WsmError("the site CA file holds no PEM certificate", hint=Hint.CA_FILE_FORMAT)
    host, scheme = record.target_registry.host, record.scheme
    rules, exceptions = host_rules(record.images, host)
    ca = _ca_paths(host) if ca_pem is not None else {}
    files: dict[PurePosixPath, bytes] = {path: ca_pem for path in ca.values() if ca_pem is not None}
    for rule in rules:
        files[_containerd_file(rule.source_host)] = _containerd_mirror(rule, scheme, ca.get("containerd")).encode()
    if ca:
        files[_containerd_file(host)] = _containerd_registry(host, scheme).encode()
    if rules or exceptions:
        files[PurePosixPath("containers") / _relative(CONTAINERS_CONF_D / DROP_IN)] = \
            _registries_conf(rules, exceptions, scheme).encode()
    for runtime in RANCHER:
        if rules or ca:
            files[PurePosixPath(runtime) / _relative(RANCHER[runtime] / "registries.yaml")] = \
                _rancher_registries(rules, host, scheme, ca.get(runtime)).encode()
    return NodeFiles(files, tuple(rules), tuple(exceptions), ca_pem is not None)


def host_rules(images: Iterable[PushedImage], registry_host: str) -> tuple[list[HostRule], list[PushedImage]]:
    """One rule per source host (the placement most of its images share) and the images no rule places."""
    by_host: dict[str, list[PushedImage]] = {}
    for image in images:
        if image.source.registry != registry_host:  # an image already in the site registry needs no mirror
            by_host.setdefault(image.source.registry, []).append(image)
    rules: list[HostRule] = []
    exceptions: list[PushedImage] = []
    for source_host, group in sorted(by_host.items()):
        placements = Counter(p for p in (_placement(image) for image in group) if p is not None)
        if not placements:
            exceptions += group
            continue
        (target_host, prefix), _ = placements.most_common(1)[0]
        rules.append(HostRule(source_host, target_host, prefix))
        exceptions += [image for image in group if _placement(image) != (target_host, prefix)]
    return rules, exceptions


def _placement(image: PushedImage) -> tuple[str, str] | None:
    """(target host, prefix) when the target keeps the source's path under a prefix; None for other names."""
    source, target = image.source.repository, image.target.repository
    if target == source:
        return image.target.registry, ""
    if target.endswith("/" + source):
        return image.target.registry, target[: -len(source) - 1]
    return None


def _relative(path: PurePosixPath) -> PurePosixPath:
    return path.relative_to("/")


def _containerd_file(host: str) -> PurePosixPath:
    return PurePosixPath("containerd") / _relative(CONTAINERD_HOSTS / host / "hosts.toml")


def _ca_paths(host: str) -> dict[str, PurePosixPath]:
    """Where the CA goes for each runtime (runtime directory + the path on a node)."""
    paths = {
        "containerd": CONTAINERD_HOSTS / host / "ca.crt",
        "containers": CONTAINERS_CERTS / host / "ca.crt",
        "docker": DOCKER_CERTS / host / "ca.crt",
        **{runtime: root / "wsm-ca" / host / "ca.crt" for runtime, root in RANCHER.items()},
    }
    return {runtime: PurePosixPath(runtime) / _relative(path) for runtime, path in paths.items()}


def on_node(path: PurePosixPath) -> PurePosixPath:
    """The path a file of the node files has on a node (its runtime directory dropped)."""
    return PurePosixPath("/", *path.parts[1:])


def _toml(text: str) -> str:
    return json.dumps(text)  # a TOML basic string: the names here are plain ASCII, JSON's escapes are TOML's


def _containerd_mirror(rule: HostRule, scheme: str, ca: PurePosixPath | None) -> str:
    """hosts.toml for a source host: the internal registry first; `override_path` carries the prefix."""
    server = _UPSTREAM.get(rule.source_host, f"https://{rule.source_host}")
    lines = [f"# {_HEADER.format(what=rule.source_host + ' images')}", f"server = {_toml(server)}", "",
             f"[host.{_toml(rule.location(scheme, api=True))}]", '  capabilities = ["pull", "resolve"]']
    if rule.prefix:
        lines.append("  override_path = true")
    if ca is not None:  # relative to this file (containerd's rule): the tree works under any config_path
        lines.append(f"  ca = {_toml(f'../{ca.parent.name}/{ca.name}')}")
    return "\n".join(lines) + "\n"


def _containerd_registry(host: str, scheme: str) -> str:
    """hosts.toml for the internal registry itself: its CA, for pulls by internal name."""
    url = f"{scheme}://{host}"
    return (f"# written by wsm push: the internal registry's CA\nserver = {_toml(url)}\n\n[host.{_toml(url)}]\n"
            f'  capabilities = ["pull", "resolve"]\n  ca = "ca.crt"\n')


def _registries_conf(rules: Sequence[HostRule], exceptions: Sequence[PushedImage], scheme: str) -> str:
    """A containers-registries.conf(5) drop-in: a mirror per source host, and per image for the exceptions
    (the longest matching prefix wins)."""
    lines = [f"# {_HEADER.format(what='these registries')}"]
    entries = [(rule.source_host, rule.location(scheme).split("://", 1)[1]) for rule in rules]
    entries += [(image.source.name, image.target.name) for image in exceptions]
    for prefix, mirror in entries:
        lines += ["", "[[registry]]", f"prefix = {_toml(prefix)}", f"location = {_toml(prefix)}", "",
                  "[[registry.mirror]]", f"location = {_toml(mirror)}"]
        if scheme == "http":
            lines.append("insecure = true")
    return "\n".join(lines) + "\n"


def _rancher_registries(rules: Sequence[HostRule], host: str, scheme: str, ca: PurePosixPath | None) -> str:
    """k3s/RKE2 registries.yaml: a mirror per source host, a `rewrite` adding the prefix; the CA in `configs`."""
    mirrors: dict[str, object] = {}
    for rule in rules:
        mirror: dict[str, object] = {"endpoint": [f"{scheme}://{rule.target_host}"]}
        if rule.prefix:
            mirror["rewrite"] = {"^(.*)$": f"{rule.prefix}/$1"}
        mirrors[rule.source_host] = mirror
    data: dict[str, object] = {"mirrors": mirrors}
    if ca is not None:
        data["configs"] = {host: {"tls": {"ca_file": str(on_node(ca))}}}
    return f"# {_HEADER.format(what='these registries')}\n" + yaml.safe_dump(data, sort_keys=False)


def write_node_files(bundle_root: Path, files: NodeFiles) -> Path:
    """Replace `bundle/node-files/` as a whole: written beside it first, so a killed push leaves the old tree
    or a `.partial` one, never a mix."""
    final = bundle_root / NODE_FILES_DIR
    partial = bundle_root / (NODE_FILES_DIR + PARTIAL_SUFFIX)
    try:
        shutil.rmtree(partial, ignore_errors=True)
        for path, content in files.files.items():
            target = partial / path
            target.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(target, content)
        partial.mkdir(exist_ok=True)
        shutil.rmtree(final, ignore_errors=True)
        partial.rename(final)
    except OSError as error:
        raise StorageError(f"cannot write {final}: {error.strerror}", path=final, errno=error.errno) from None
    return final

