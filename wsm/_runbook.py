"""The runbook and report of a push: the exact commands for this bundle and this site, and what moved.

Operators paste it into change tickets, so it is plain Markdown: steps with commands, then a table of every
image (source -> digest -> target, sent or already there) and chart.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ._format import one_line
from ._install import ChartLocation, InstallFile
from ._manifest import ChartEntry, ReleaseManifest
from ._nodefiles import NODE_FILES_DIR, NodeFiles, on_node

REPO_ALIAS = "internal"
TOOL_INTERPRETER = "python3"
# Variables the runbook's commands use: the password lives in one only between a prompt and a pipe.
PASSWORD_VARIABLE = "WSM_PASSWORD"
PULL_USER, PULL_PASSWORD, PULL_AUTH = "WSM_PULL_USER", "WSM_PULL_PASSWORD", "WSM_PULL_AUTH"
DOCKER_CONFIG_VARIABLE = "WSM_DOCKER_CONFIG"


@dataclass(frozen=True)
class CheckCommand:
    """`wsm check` with the servers and TLS options the push was given; a password comes through stdin."""

    bundle: str
    registry: str
    helm_repo: str | None = None
    ca_file: str | None = None
    insecure: bool = False
    plain_http: bool = False
    username: str | None = None
    program: tuple[str, ...] = ("wsm",)  # how the offline side runs wsm: `python3 ./bundle/tools/wsm.pyz`

    def lines(self) -> list[str]:
        argv = [*self.program, "check", "--bundle", self.bundle, "--registry", self.registry]
        argv += ["--helm-repo", self.helm_repo] if self.helm_repo else []
        argv += ["--ca-file", self.ca_file] if self.ca_file else []
        argv += ["--insecure"] * self.insecure + ["--plain-http"] * self.plain_http
        if not self.username:
            return [shlex.join(argv)]
        argv += ["--username", self.username, "--password-stdin"]
        prompt = shlex.quote(f"Password of {self.username}: ")
        # printf is a shell builtin: the password is never in a process's argv.
        return [f"read -rs -p {prompt} {PASSWORD_VARIABLE}; echo",
                f'printf \'%s\\n\' "${PASSWORD_VARIABLE}" | {shlex.join(argv)}', f"unset {PASSWORD_VARIABLE}"]


@dataclass(frozen=True)
class PullSecretSteps:
    """The pull secret the written values name, where it must exist, and what rendering showed."""

    name: str
    registry_host: str  # the key of the secret's `auths`
    namespaces: tuple[str, ...]
    without_keys: tuple[str, ...] = ()  # charts whose values take no pull secret
    gaps: tuple[str, ...] = ()  # rendered pod specs pulling internal images without it
    notes: tuple[str, ...] = ()

    def from_config_file(self) -> list[str]:
        """`kubectl create secret` from a docker config file holding the registry's credentials."""
        lines = [f"{DOCKER_CONFIG_VARIABLE}=~/.docker/config.json"]
        for namespace in self.namespaces:
            argv = self._create(namespace)
            lines.append(f'{argv} --from-file=.dockerconfigjson="${DOCKER_CONFIG_VARIABLE}"')
        return lines

    def from_prompt(self) -> list[str]:
        """The config JSON built in the shell from a user and a typed password, piped into kubectl."""
        host = shlex.quote(self.registry_host)
        lines = [f"read -r -p {shlex.quote(f'User for {self.registry_host}: ')} {PULL_USER}",
                 f"read -rs -p 'Password: ' {PULL_PASSWORD}; echo",
                 f'{PULL_AUTH}=$(printf \'%s:%s\' "${PULL_USER}" "${PULL_PASSWORD}" | base64 | tr -d \'\\n\')']
        for namespace in self.namespaces:
            lines.append(f'printf \'{{"auths":{{"%s":{{"auth":"%s"}}}}}}\' {host} "${PULL_AUTH}" | '
                         f"{self._create(namespace)} --from-file=.dockerconfigjson=/dev/stdin")
        return lines + [f"unset {PULL_PASSWORD} {PULL_AUTH}"]

    def namespace_lines(self) -> list[str]:
        return [f"kubectl get namespace {shlex.quote(ns)} >/dev/null 2>&1 || kubectl create namespace {shlex.quote(ns)}"
                for ns in self.namespaces]

    def _create(self, namespace: str) -> str:
        return shlex.join(["kubectl", "create", "secret", "generic", self.name,
                           "--type=kubernetes.io/dockerconfigjson", "-n", namespace])


@dataclass(frozen=True)
class MovedImage:
    source: str
    digest: str
    target: str
    result: str  # "sent", "present" (already there), "skipped tag (pinned by digest)", "failed"
    bytes_sent: int = 0
    pinned: bool = False  # the tag holds another image: the values pin `digest`


@dataclass(frozen=True)
class MovedChart:
    name: str
    version: str
    target: str
    result: str  # "sent", "present" (the repository has this exact archive), "would publish" (a dry run)

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version, "target": self.target, "result": self.result}


def runbook(
    manifest: ReleaseManifest,
    bundle_dir: Path,
    registry: str,
    locations: dict[str, ChartLocation],
    files: Sequence[InstallFile],
    images: Sequence[MovedImage],
    charts: Sequence[MovedChart],
    *,
    root_digest: str | None = None,
    withheld: Sequence[tuple[str, str]] = (),
    check: CheckCommand | None = None,
    pull_secret: PullSecretSteps | None = None,
    repinned: Sequence[tuple[str, str]] = (),
    nodes: NodeFiles | None = None,
    tool: str | None = None,
    proof: str | None = None,
) -> str:
    """The runbook of the charts in `manifest` (the published ones); `withheld` (chart, why) are named, with no
    command; `root_digest` identifies the bundle this was made from; `tool` is the bundle's own wsm (its path in
    the bundle), which the commands run where there is one: the offline machine need not have wsm on PATH;
    `proof` is what rendering the written values proved (or why it was skipped)."""
    lines = [f"# Offline install of {manifest.name or 'the release'} from {registry}", ""]
    lines += [f"Bundle: `{bundle_dir}`. Images are in `{registry}`; charts in `{_repo_urls(locations)}`.",
              f"Run the commands from the directory that holds `{bundle_dir.name}/`.", ""]
    if root_digest:
        verify = _command(*tool_program(bundle_dir, tool), "verify", bundle_dir.name, "--expect", root_digest)
        lines += [f"Root digest of the bundle: `{root_digest}` (`{verify}` checks a copy).", ""]
    if proof:
        lines += [f"Rendering proof: {proof}.", ""]
    lines += [f"NOT PUBLISHED: {name}: {why}. Nothing here installs it." for name, why in withheld]
    lines += _pinned_notes(images)
    step = 1
    if check is not None:
        lines += [f"## {step}. Check that every image and chart is in place", "",
                  "Read-only credentials are enough; it names anything missing or different and exits 1.", "",
                  "```bash", *check.lines(), "```", ""]
        step += 1
    if pull_secret is not None:
        lines += _pull_secret_step(step, pull_secret)
        step += 1
    classic = sorted({(loc.repo_url, loc.username or "") for loc in locations.values() if not loc.is_oci})
    if classic:
        lines += [f"## {step}. Add the internal Helm repository", "", "```sh"]
        lines += [_command("helm", "repo", "add", REPO_ALIAS, url, *(["--username", user] if user else []))
                  for url, user in classic]
        lines += [_command("helm", "repo", "update"), "```", ""]
        step += 1
    if nodes is not None and nodes.files:
        lines += _node_files_step(step, nodes, bundle_dir)
        step += 1
    by_chart = {f.chart: f for f in files}
    for entry in manifest.charts:
        location, file = locations[entry.name], by_chart[entry.name]
        if entry.install == "operator":
            lines += [f"## {step}. Install {entry.name} through its operator", ""]
            lines += _placeholder_note(file)
            lines += ["```sh", _command("kubectl", "apply", "-f", _shown(file.path, bundle_dir)), "```", ""]
        else:
            lines += [f"## {step}. Install {entry.name}", "", "```sh", _helm_install(entry, location, file, bundle_dir, tool)]
            lines += ["```", ""]
        lines += _unredirected_note(file)
        step += 1
    lines += _repinned_note(repinned)
    lines += _image_table(images) + [""] + _chart_table(charts)
    # Every element is one line: a name holding a newline must not open a code block of its own.
    return "\n".join(one_line(line) for line in lines) + "\n"


def _pull_secret_step(step: int, secret: PullSecretSteps) -> list[str]:
    spaces = ", ".join(f"`{ns}`" for ns in secret.namespaces)
    lines = [f"## {step}. Create the pull secret `{secret.name}`", "",
             f"The values name it; it must exist in {spaces} before the install. The namespaces:", "",
             "```sh", *secret.namespace_lines(), "```", "",
             f"Then either from a docker config file with credentials for `{secret.registry_host}` "
             f"(`docker login {secret.registry_host}` writes one; a read-only user is enough):", "",
             "```sh", *secret.from_config_file(), "```", "",
             "or with a user and a password typed at the prompt (the password is in no command line):", "",
             "```bash", *secret.from_prompt(), "```", ""]
    if secret.without_keys:
        charts = ", ".join(f"`{chart}`" for chart in secret.without_keys)
        lines += [f"Note: the values of {charts} take no pull secret; its pods need the secret another way "
                  "(the namespace's default service account: `kubectl patch serviceaccount default -p "
                  f"'{{\"imagePullSecrets\": [{{\"name\": \"{secret.name}\"}}]}}'`).", ""]
    if secret.gaps:
        lines += ["Note: rendered with the written values, these pod specs pull internal images without the "
                  "secret:", "", *[f"- {gap}" for gap in secret.gaps], ""]
    lines += [f"Note: {note}" for note in secret.notes] + ([""] if secret.notes else [])
    return lines


def _helm_install(entry: ChartEntry, location: ChartLocation, file: InstallFile, bundle_dir: Path,
                  tool: str | None) -> str:
    chart = location.oci_ref if location.is_oci else f"{REPO_ALIAS}/{location.name}"
    release = entry.release or entry.name
    return _command("helm", "upgrade", "--install", release, chart, "--version", location.version,
                    "-n", entry.namespace, "--create-namespace", "-f", _shown(file.path, bundle_dir),
                    *_post_renderer(bundle_dir, tool))


def _command(*argv: str) -> str:
    """One shell command line with every word quoted: names come from charts and manifests, which are upstream
    content, and an operator pastes these lines into a root shell."""
    return " ".join(_quote(word) for word in argv)


def _quote(word: str) -> str:
    """`shlex.quote`; a word holding a newline or another control character is written in bash's `$'...'`
    form instead, so that every command stays on one line of the runbook."""
    if word.isprintable():
        return shlex.quote(word)
    return "$'" + "".join(_ansi_c(character) for character in word) + "'"


def _ansi_c(character: str) -> str:
    if character in "\\'":
        return "\\" + character
    if character.isprintable():
        return character
    code = ord(character)
    return f"\\x{code:02x}" if code < 0x80 else f"\\U{code:08x}"  # bash: \x is a byte, \U a character


def tool_program(bundle_dir: Path, tool: str | None) -> tuple[str, ...]:
    """The words that run wsm in the runbook: the bundle's own tool through python3 where it has one (a path
    relative to the bundle's parent, where the commands run, starting with `./` so no name reads as an
    option), else a `wsm` on PATH."""
    return (TOOL_INTERPRETER, _tool_path(bundle_dir, tool)) if tool else ("wsm",)


def _tool_path(bundle_dir: Path, tool: str) -> str:
    return f"./{bundle_dir.name}/{tool}"


def _post_renderer(bundle_dir: Path, tool: str | None) -> list[str]:
    """helm's options that pass the rendered manifests through `wsm rewrite` with this bundle's names:
    images a chart hard-codes point inside too, and one the bundle lacks fails the install, naming it. helm
    takes one executable, which it finds with Go's exec.LookPath: a path with a slash is used as it is, so the
    bundle's tool runs directly (it is written with mode 0755 and a `#!/usr/bin/env python3` line)."""
    words = ["--post-renderer", _tool_path(bundle_dir, tool) if tool else "wsm"]
    for arg in ("rewrite", "--bundle", bundle_dir.name):
        words += ["--post-renderer-args", arg]
    return words


# What an operator runs per runtime after copying its subtree into `/`, and what it is for.
_RUNTIMES = {
    "containerd": ("containerd (kubeadm and most clusters)",
                   'needs `config_path = "/etc/containerd/certs.d"` under the CRI registry plugin in '
                   "/etc/containerd/config.toml (then `systemctl restart containerd`); files there are read at "
                   "each pull"),
    "containers": ("CRI-O, podman, buildah", "CRI-O: `systemctl reload crio`"),
    "docker": ("Docker hosts (single-host installs)", "the CA only: Docker has no mirror with a path prefix"),
    "k3s": ("k3s", "merge into an existing registries.yaml; then `systemctl restart k3s` (k3s-agent on agents)"),
    "rke2": ("RKE2", "merge into an existing registries.yaml; then `systemctl restart rke2-server` "
             "(rke2-agent on agents)"),
}


def _node_files_step(step: int, nodes: NodeFiles, bundle_dir: Path) -> list[str]:
    """Copying the mirror and CA files onto every node, one subtree per container runtime."""
    root = Path(bundle_dir.name) / NODE_FILES_DIR
    what = "mirror rules" + (" and the registry's CA" if nodes.has_ca else "")
    lines = [f"## {step}. Set up the nodes' container runtimes", "",
             f"`{root}/` holds {what} for each container runtime, laid out as the node's root: on every node "
             "(servers too, where they run pods), as root, copy the subtree of its runtime into `/`. The mirrors "
             "send pulls of images hard-coded in charts (by their upstream names) to the internal registry, "
             "under the names push gave them.", "", "```sh"]
    for runtime in nodes.runtimes:
        label, after = _RUNTIMES[runtime]
        lines.append(f"cp -r {root / runtime}/. /    # {label}: {after}")
    lines += ["```", "", "| on the node | file |", "|---|---|"]
    lines += [f"| `{on_node(path)}` | `{root / path}` |" for path in sorted(nodes.files)]
    lines.append("")
    if nodes.exceptions:
        names = ", ".join(f"`{image.source.name}` -> `{image.target.name}`" for image in nodes.exceptions)
        lines += [f"Pushed under names of their own (a mapping): {names}. Only the CRI-O/podman drop-in names "
                  "them; on containerd, k3s and RKE2 nodes deploy them through `wsm rewrite`.", ""]
    return lines


def _shown(path: Path, bundle_dir: Path) -> str:
    """Paths relative to the bundle's parent, as the operator runs the commands beside the bundle."""
    try:
        return str(Path(bundle_dir.name) / path.relative_to(bundle_dir))
    except ValueError:
        return str(path)


def _placeholder_note(file: InstallFile) -> list[str]:
    if not file.placeholders:
        return []
    keys = ", ".join(f"`{key}`" for key in file.placeholders)
    return [f"First fill in the site's keys marked CHANGE-ME in `{file.path.name}`: {keys}.", ""]


def _unredirected_note(file: InstallFile) -> list[str]:
    if not file.unredirected:
        return []
    images = ", ".join(f"`{image}`" for image in file.unredirected)
    return [f"Note: no values path sets {images}; the chart hard-codes it. It is in the internal registry: the "
            "post-renderer (`wsm rewrite`) points it there, and the node mirror files send its pulls there where "
            "the post-renderer cannot reach (helm 3 does not pass hooks through a post-renderer; an operator "
            "renders its charts itself).", ""]


def _pinned_notes(images: Sequence[MovedImage]) -> list[str]:
    pinned = [image for image in images if image.pinned]
    lines = [f"Note: the tag `{image.target}` holds another image in the registry and was left alone; the values pin "
             f"the carried digest `{image.digest}`." for image in pinned]
    return lines + [""] if lines else []


def _repinned_note(repinned: Sequence[tuple[str, str]]) -> list[str]:
    if not repinned:
        return []
    lines = ["## Digest-pinned images", "",
             "The bundle kept only some platforms of these digest-pinned images, so the internal registry does not "
             "have the upstream digest; the values pin the digest of what was kept:", ""]
    lines += [f"- `{source}` -> `{target}`" for source, target in repinned]
    return lines + [""]


def _image_table(images: Sequence[MovedImage]) -> list[str]:
    lines = ["## Images", "", "| source | digest | target | result |", "|---|---|---|---|"]
    lines += [f"| {i.source} | `{i.digest}` | {i.target} | {i.result} |" for i in images]
    return lines


def _chart_table(charts: Sequence[MovedChart]) -> list[str]:
    lines = ["## Charts", "", "| chart | version | target | result |", "|---|---|---|---|"]
    lines += [f"| {c.name} | {c.version} | {c.target} | {c.result} |" for c in charts]
    return lines


def _repo_urls(locations: dict[str, ChartLocation]) -> str:
    return ", ".join(sorted({location.repo_url for location in locations.values()}))
