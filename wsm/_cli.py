"""The `wsm` command: argument parsing and printing over the library, nothing more.

Every WsmError becomes one line on stderr and exit code 1; usage errors exit 2 (argparse); an interrupt exits
130. Data goes to stdout (text, json, yaml or plain), progress and notes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from . import __version__
from ._bundle import Bundle
from ._chartrepo import RepoAuth
from ._exceptions import Hint, ValuesError, WsmError
from ._fetch import FetchOptions
from ._format import human_bytes
from ._http import TransportOptions
from ._manifest import ReleaseManifest, load_manifest
from ._model import ResolvedImage
from ._parts import MEDIA
from ._remote import Platform, RegistryClient, RegistryOptions
from ._resolve import Resolution, ResolveOptions, resolve, resolve_for_bundle
from ._values import Values, load_values_file, merge, parse_set

if TYPE_CHECKING:
    from ._check import CheckReport
    from ._download import ChartResult, DownloadReport, ImageResult
    from ._push import PushReport

    Commands = argparse._SubParsersAction[argparse.ArgumentParser]

OUTPUTS = ("text", "json", "yaml", "plain")
DEFAULT_PLATFORM = "linux/amd64"

# A library error's remedy, in this command's words: the library cannot name the options that give it.
HINTS = {
    Hint.BUNDLE: "pick another --bundle",
    Hint.CA_FILE: "pass --ca-file with the site's CA, or --insecure to skip verification",
    Hint.CA_FILE_FORMAT: "give --ca-file the CA certificate as PEM",
    Hint.PLAIN_HTTP: "pass --plain-http if it is meant to be plain HTTP",
    Hint.CREDENTIALS: "check --username/--password-stdin or run `docker login` for that registry",
    Hint.MAPPING: "name one of them explicitly with --mapping FILE",
    Hint.ON_EXISTING: "use --on-existing skip or overwrite if that is intended",
    Hint.HELM: "install helm on PATH, or give its path with --helm PATH or in WSM_HELM",
    Hint.RESOLVE: "run with --resolve to fetch its charts",
    Hint.CHART_REPO: "for a repository chart add --repo URL",
    Hint.BASE: "give the base bundle's directory with --base OLD",
}


def describe(error: WsmError) -> str:
    """The one line printed for `error`, its remedy worded with this command's options."""
    return f"{error.message}; {HINTS[error.hint]}" if error.hint else str(error)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        code = handler(args)
        sys.stdout.flush()  # here, not at exit: a reader that went away (`| head`) is then caught below
        return code
    except WsmError as error:
        print(f"wsm: error: {describe(error)}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("wsm: interrupted; run the same command again to continue", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader (`| head`) went away: not an error of ours. Point stdout at devnull so that the
        # interpreter's final flush does not complain either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wsm", description="Carry a chart-based Kubernetes release across an air gap."
    )
    parser.add_argument("--version", action="version", version=f"wsm {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_list(commands)
    _add_download(commands)
    _add_verify(commands)
    _add_sign(commands)
    _add_report(commands)
    _add_load(commands)
    _add_push(commands)
    _add_check(commands)
    _add_inventory(commands)
    _add_rewrite(commands)
    return parser


# --- shared option groups ---------------------------------------------------------------------------------------


def add_release_options(parser: argparse.ArgumentParser, *, lock: bool = True) -> None:
    """Which release; `lock`: offer --resolve, for commands that can list a release from its lock."""
    group = parser.add_argument_group("release (default: the embedded W&B manifest)")
    group.add_argument("--manifest", type=_non_empty_path, metavar="FILE",
                       help="a release manifest (see manifests/README.md)")
    group.add_argument(
        "--chart", type=_non_empty, metavar="REF",
        help="a single chart: a directory, a .tgz, oci://host/path/name, or a name with --repo",
    )
    group.add_argument("--repo", metavar="URL", help="classic Helm repository URL for --chart NAME")
    group.add_argument("--version", dest="chart_version", metavar="VERSION", help="chart version or range for --chart")
    group.add_argument(
        "-f", "--values", action="append", default=[], metavar="[CHART=]FILE",
        help="values file layered on top (repeatable; name the chart when the release has several)",
    )
    group.add_argument("--set", action="append", default=[], metavar="[CHART:]KEY=VAL", help="a value, as helm --set")
    group.add_argument("--set-string", action="append", default=[], metavar="[CHART:]KEY=VAL", help="as helm --set-string")
    if lock:
        group.add_argument("--resolve", action="store_true",
                           help="fetch the charts and derive the images (else: the manifest's lock)")
    group.add_argument("--render", action="store_true",
                       help="insist on differential rendering with helm (it runs whenever helm is found)")
    group.add_argument("--no-render", action="store_true",
                       help="the values method alone, even when helm is found (nothing is proved by rendering)")
    group.add_argument("--helm", metavar="PATH", help="the helm binary for rendering (default: $WSM_HELM, then PATH)")


def add_transport_options(parser: argparse.ArgumentParser, *, credentials: bool = False) -> None:
    """TLS choices; `credentials`: --username/--password-stdin, offered only where one site is addressed
    (push), since elsewhere they would be sent to every public registry. Otherwise credentials come from
    ~/.docker/config.json, credential helpers and Helm's registry config, per host."""
    group = parser.add_argument_group("connection")
    group.add_argument("--ca-file", metavar="PEM", help="trust this CA bundle (a private CA) instead of the system's")
    group.add_argument("--insecure", action="store_true", help="do not verify TLS certificates (say it explicitly)")
    group.add_argument("--plain-http", action="store_true", help="use plain HTTP instead of HTTPS")
    if credentials:
        group.add_argument("--username", metavar="USER", help="user for the internal registry and Helm repository")
        group.add_argument("--password-stdin", action="store_true", help="read the password from standard input")


def transport_options(args: argparse.Namespace) -> TransportOptions:
    if args.ca_file and not Path(args.ca_file).is_file():
        raise WsmError(f"--ca-file {args.ca_file} does not exist; give the PEM file of the site's CA")
    return TransportOptions(ca_file=args.ca_file, insecure=args.insecure, plain_http=args.plain_http)


def read_password(args: argparse.Namespace) -> str | None:
    if not getattr(args, "password_stdin", False):
        return None
    if not args.username:
        raise WsmError("--password-stdin needs --username")
    return stdin_secret("--password-stdin")


def stdin_secret(option: str) -> str:
    """The first line of standard input, for an option that reads a secret there (never from argv)."""
    secret = sys.stdin.readline().rstrip("\r\n")
    if not secret:
        raise WsmError(f"{option}: standard input held no password")
    return secret


def registry_options(args: argparse.Namespace, **extra: Any) -> RegistryOptions:
    return RegistryOptions(transport=transport_options(args), **extra)


def fetch_options(args: argparse.Namespace) -> FetchOptions:
    options = registry_options(args)
    return FetchOptions(transport=options.transport, registry_options=options)


def select_release(args: argparse.Namespace) -> ReleaseManifest:
    if args.chart is not None and args.manifest:
        raise WsmError("give --manifest or --chart, not both")
    if args.chart is not None:
        return ReleaseManifest.single_chart(args.chart, args.repo, args.chart_version)
    if args.repo or args.chart_version:
        raise WsmError("--repo and --version go with --chart")
    return load_manifest(args.manifest)


def user_values(args: argparse.Namespace, release: ReleaseManifest) -> dict[str, Values]:
    """-f/--set layers by chart name; a chart must be named when the release has several."""
    layers: dict[str, Values] = {}
    for item in args.values:
        name, path = chart_option(item, "=", release, "--values")
        layers[name] = merge(layers.get(name, {}), load_values_file(Path(path)))
    for item, strings in [(s, False) for s in args.set] + [(s, True) for s in args.set_string]:
        name, expression = chart_option(item, ":", release, "--set")
        layers[name] = merge(layers.get(name, {}), parse_set(expression, strings=strings))
    return layers


def chart_option(item: str, separator: str, release: ReleaseManifest, option: str) -> tuple[str, str]:
    """(chart name, rest) of `[CHART<separator>]rest`; the chart may go unnamed only in a one-chart release."""
    head, sep, tail = item.partition(separator)
    if sep and head in release.chart_names and not Path(item).exists():
        return head, tail
    if len(release.charts) == 1:
        return release.charts[0].name, item
    raise ValuesError(f"{option} {item}: name the chart it is for ({'|'.join(release.chart_names)}), e.g. CHART=FILE")


def resolve_options(args: argparse.Namespace, release: ReleaseManifest) -> ResolveOptions:
    return ResolveOptions(
        fetch=fetch_options(args), user_values=user_values(args, release), helm=args.helm,
        render=True if args.render else False if args.no_render else None,
        progress=_progress,
    )


def _progress(message: str) -> None:
    print(message, file=sys.stderr)


# --- wsm list -------------------------------------------------------------------------------------------------------


def _add_list(commands: Commands) -> None:
    parser = commands.add_parser("list", help="list the images and charts a release needs")
    add_release_options(parser)
    add_transport_options(parser)
    parser.add_argument("--platform", action="append", metavar="OS/ARCH", help=f"platforms (default {DEFAULT_PLATFORM})")
    parser.add_argument("-o", "--output", choices=OUTPUTS, default="text", help="output format (plain: one image a line)")
    parser.add_argument("--why", metavar="IMAGE", help="say where IMAGE comes from (chart, values path, method)")
    parser.set_defaults(handler=run_list)


def run_list(args: argparse.Namespace) -> int:
    platforms = parse_platforms(args.platform)
    release = select_release(args)
    resolution = resolve(release, resolve_options(args, release), fresh=args.resolve)
    for note in resolution.notes + _invalid_notes(resolution):
        print(f"wsm: note: {note}", file=sys.stderr)
    if args.why:
        return print_why(resolution, args.why, args.output)
    data = list_data(release, resolution, platforms)
    if args.output == "text":
        print(render_text(release, resolution))
    elif args.output == "plain":
        print("\n".join(image.reference.canonical for image in resolution.to_download()))
    else:
        print_data(data, args.output)
    return 0


def _invalid_data(resolution: Resolution) -> list[dict[str, Any]]:
    return [invalid.to_dict() for invalid in resolution.invalid]


def _invalid_notes(resolution: Resolution) -> list[str]:
    return [f"invalid image reference, not carried: {invalid.describe()}" for invalid in resolution.invalid]


def parse_platforms(values: list[str] | None) -> list[str]:
    return [str(Platform.parse(value)) for value in (values or [DEFAULT_PLATFORM])]


def list_data(release: ReleaseManifest, resolution: Resolution, platforms: list[str]) -> dict[str, Any]:
    return {
        "release": release.name,
        "manifest": release.origin,
        "from": "lock" if resolution.from_lock else "charts",
        "platforms": platforms,
        "charts": [chart.to_dict() for chart in resolution.charts],
        "images": [image_data(image) for image in resolution.images],
        "skipped": [skipped.to_dict() for skipped in resolution.skipped],
        "invalid": _invalid_data(resolution),
        "notes": resolution.notes,
    }


def render_text(release: ReleaseManifest, resolution: Resolution) -> str:
    """Images grouped as the W&B documentation shows them, each with where it was found."""
    groups = release.groups + sorted({i.group for i in resolution.images} - set(release.groups))
    width = max((len(i.reference.canonical) for i in resolution.images), default=0)
    lines: list[str] = []
    for group in groups:
        images = [image for image in resolution.images if image.group == group]
        if not images:
            continue
        lines.append(f"{group} Images:")
        lines += [f"  {image.reference.canonical:<{width}}  {_where(image)}" for image in images]
    charts = ", ".join(f"{chart.name} {chart.version}" for chart in resolution.charts)
    origin = "from the lock of" if resolution.from_lock else "resolved from the charts of"
    lines.append(f"{len(resolution.images)} images, charts: {charts} ({origin} {release.origin})")
    if resolution.skipped:
        lines.append(f"{len(resolution.skipped)} components left out as disabled (-o json lists them)")
    return "\n".join(lines)


def _where(image: ResolvedImage) -> str:
    """Its values paths (as the transformation that renders it, when rendering bound it), how it was found, and
    a mark for hard-coded and unused images."""
    places: dict[str, list[str]] = {}
    for binding in image.bindings:
        places.setdefault(binding.chart, []).append(binding.transformation)
    for source in image.sources if not image.bindings else ():
        chart = source.chart.split("/", 1)[0]
        places.setdefault(chart, []).append(source.path or source.template or source.method.value)
    where = "; ".join(f"{chart}: {', '.join(dict.fromkeys(paths))}" for chart, paths in places.items())
    if image.found_by is not None and (image.bindings or image.hardcoded or image.unused):
        where += f" (found by {image.found_by.value})"
    if image.hardcoded:
        where += " [hard-coded: no values path moves it]"
    if image.unused:
        where += " [unused: never rendered, not downloaded]"
    return where


def image_data(image: ResolvedImage) -> dict[str, Any]:
    """An image as `-o json` shows it: the lock's record and how it was found."""
    data = image.to_dict()
    if image.found_by is not None:
        data["found_by"] = image.found_by.value
    data["values_paths"] = sorted({p.path for b in image.bindings for p in b.paths} or
                                  {s.path for s in image.sources if s.path})
    data.setdefault("hardcoded", False)
    data.setdefault("unused", False)
    return data


def print_why(resolution: Resolution, text: str, output: str) -> int:
    image = resolution.image(text)
    if image is None:
        raise WsmError(f"{text} is not an image of this release; `wsm list -o plain` lists them")
    if output in ("json", "yaml"):
        print_data(image_data(image), output)
        return 0
    print(f"{image.reference.canonical} (group {image.group}) is needed by:")
    for binding in image.bindings:
        print(f"  chart {binding.chart}, rendered as {binding.transformation} ({binding.field} at {binding.location})")
    if image.found_by is not None:
        marks = ", hard-coded: no values path moves it" if image.hardcoded else ""
        marks += ", unused: the templates never render it (not downloaded)" if image.unused else ""
        print(f"  found by {image.found_by.value}{marks}")
    for source in image.sources:
        parts = [f"chart {source.chart}"]
        if source.path:
            parts.append(f"values path {source.path} ({source.shape.value if source.shape else '?'} shape)")
        if source.template:
            parts.append(f"template {source.template}")
        parts.append(f"found by {source.method.value}")
        if source.note:
            parts.append(source.note)
        print("  " + ", ".join(parts))
    return 0


def print_data(data: Any, output: str) -> None:
    if output == "json":
        print(json.dumps(data, indent=2))
    else:
        print(yaml.safe_dump(data, sort_keys=False), end="")


# --- wsm download ---------------------------------------------------------------------------------------------------


def _add_download(commands: Commands) -> None:
    parser = commands.add_parser("download", help="download the release's images and charts into a bundle")
    add_release_options(parser, lock=False)  # a bundle always needs the charts themselves
    add_transport_options(parser)
    add_bundle_option(parser)
    platforms = parser.add_mutually_exclusive_group()
    platforms.add_argument("--platform", action="append", metavar="OS/ARCH", help=f"keep these (default {DEFAULT_PLATFORM})")
    platforms.add_argument("--all-platforms", action="store_true", help="keep every platform of multi-platform images")
    parser.add_argument("--concurrency", type=_positive, default=4, metavar="N", help="images fetched at once (default 4)")
    parser.add_argument("--registry-mirror", action="append", default=[], metavar="SRC=DST",
                        help="fetch SRC's images from a mirror, e.g. docker.io=artifactory.corp/dockerhub")
    parser.add_argument("--username", metavar="USER", help="user for the --login-host registries (and mirrors)")
    parser.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    parser.add_argument("--login-host", action="append", default=[], metavar="HOST",
                        help="the registry --username is for (default: the --registry-mirror hosts); "
                             "other registries use ~/.docker/config.json")
    add_quiet_and_output(parser)
    parser.add_argument("--allow-invalid", action="store_true",
                        help="go on when values hold image references that do not parse (they are not carried)")
    parser.add_argument("--since", type=Path, metavar="OLD",
                        help="a delta bundle: leave out the layers OLD holds (a bundle directory, its wsm.lock.json, "
                             "or a wsm inventory file)")
    media = parser.add_mutually_exclusive_group()
    media.add_argument("--max-file-size", type=_size, metavar="SIZE",
                       help="store image tarballs and charts larger than SIZE (4GiB, 700MB, bytes) as NAME.part-NNN")
    media.add_argument("--media", choices=sorted(MEDIA), help="the medium's limit by name: fat32 = 4 GiB - 1")
    parser.add_argument("--sign-key", type=Path, metavar="KEY.pem",
                        help="sign the finished bundle with this EC P-256 private key, not encrypted (writes "
                             "SHA256SUMS.sig; an encrypted key: wsm sign --key-password-stdin afterwards)")
    parser.add_argument("--with-referrers", action="store_true",
                        help="also carry each image's signatures, SBOMs and attestations (OCI referrers, cosign tags)")
    parser.set_defaults(handler=run_download)


def add_bundle_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bundle", type=Path, default=Path("bundle"), metavar="DIR", help="the bundle (default ./bundle)")


def add_quiet_and_output(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress, only errors and the result")
    add_output_option(parser)


def add_output_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", choices=("text", "json"), default="text", help="output format")


def add_bundle_argument(parser: argparse.ArgumentParser) -> None:
    """The bundle as the command's one positional argument (verify, sign, report)."""
    parser.add_argument("bundle", nargs="?", type=Path, default=Path("bundle"), help="the bundle (default ./bundle)")


def _non_empty(text: str) -> str:
    """An argument that names something: an empty one (`--chart ""`) is a usage error, not the default."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def _non_empty_path(text: str) -> Path:
    return Path(_non_empty(text))


def _size(text: str) -> int:
    from ._parts import parse_size

    try:
        return parse_size(text)
    except WsmError as error:
        raise argparse.ArgumentTypeError(error.message) from None


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of 1 or more")
    return int(text)


def run_download(args: argparse.Namespace) -> int:
    from ._delta import read_base
    from ._download import download

    base = read_base(args.since) if args.since else None
    platforms = None if args.all_platforms else [Platform.parse(p) for p in (args.platform or [DEFAULT_PLATFORM])]
    if args.sign_key is not None:  # a key that cannot sign fails now, not after the download
        from ._sign import load_private_key

        load_private_key(args.sign_key)
    release = select_release(args)
    how = resolve_options(args, release)
    resolution = resolve_for_bundle(release, how)
    images = resolution.to_download()
    quiet = args.quiet or args.output == "json"
    for note in resolution.notes + _invalid_notes(resolution):
        _say(quiet, f"wsm: note: {note}")
    if resolution.invalid and not args.allow_invalid:
        error = WsmError(f"{len(resolution.invalid)} image references do not parse "
                         f"({'; '.join(i.describe() for i in resolution.invalid)}); fix the values or the chart, "
                         "or give --allow-invalid to download the rest")
        if args.output == "json":  # what a script reads: the same `invalid` list as `wsm list -o json`
            print_data({"bundle": str(args.bundle), "ok": False, "error": str(error),
                        "invalid": _invalid_data(resolution)}, "json")
        raise error
    _say(quiet, f"wsm: note: {prove_before_download(release, resolution, how)}")
    mirrors = parse_mirrors(args.registry_mirror)
    options = registry_options(args, mirrors=mirrors, concurrency=args.concurrency, **download_credentials(args, mirrors))
    with RegistryClient(options) as client, ProgressBar("download", enabled=show_bar(quiet), leave=True) as bar:
        report = download(
            images, resolution.charts, args.bundle, client=client, platforms=platforms,
            concurrency=args.concurrency, progress=bar, manifest_text=release.text or None,
            on_image_done=None if quiet else _tick, base=base,
            max_file_size=args.max_file_size or MEDIA.get(args.media or ""),
            with_referrers=args.with_referrers,
        )
    for note in report.notes:
        _say(quiet, f"wsm: note: {note}")
    if args.sign_key is not None and report.root_digest:
        from ._sign import sign_bundle

        _say(quiet, f"wsm: signed SHA256SUMS: {sign_bundle(args.bundle, args.sign_key)}")
    if args.output == "json":
        print_data({**report.to_dict(), "invalid": _invalid_data(resolution)}, "json")
    else:
        _print_download_summary(report)
    return 0 if report.ok else 1


def prove_before_download(release: ReleaseManifest, resolution: Resolution, options: ResolveOptions) -> str:
    """The values push will write, rendered under a stand-in registry before any image is fetched."""
    from ._proof import helm_available, proof_summary, prove_mapping

    if not helm_available(options.helm):
        return "helm not found: the values were not rendered to prove that they point every image inside"
    if not resolution.rendered:
        return "no chart rendered with these values: the values were not proved by rendering"
    proofs = prove_mapping(release, resolution.charts, resolution.to_download(), options.user_values, options.helm,
                           resolution.rendered_charts)
    return proof_summary(proofs)


def download_credentials(args: argparse.Namespace, mirrors: dict[str, str]) -> dict[str, Any]:
    """--username/--password-stdin, bound to the hosts they are for: never sent to every public registry."""
    if not args.username:
        if args.login_host:
            raise WsmError("--login-host goes with --username")
        return {}
    hosts = tuple(args.login_host) or tuple(target.split("/", 1)[0] for target in mirrors.values())
    if not hosts:
        raise WsmError("--username on download needs the registry it is for: --login-host HOST (or a "
                       "--registry-mirror); for several registries use docker login (~/.docker/config.json)")
    return {"username": args.username, "password": read_password(args), "credential_hosts": hosts}


def parse_mirrors(items: list[str]) -> dict[str, str]:
    mirrors = {}
    for item in items:
        source, sep, target = item.partition("=")
        if not sep or not source or not target:
            raise WsmError(f"--registry-mirror {item!r}: expected SRC=DST, e.g. docker.io=artifactory.corp/dockerhub")
        mirrors[source.strip()] = target.strip().rstrip("/")
    return mirrors


def _tick(result: ImageResult) -> None:
    """One line per finished image, above the progress bar (called from a download worker thread)."""
    from tqdm import tqdm

    from ._download import Status

    mark = "\u2713" if result.ok else "\u2717"
    skipped = "already in the bundle" if result.status is Status.SKIPPED else ""
    detail = _reason(result) if not result.ok else (result.note or skipped)
    tqdm.write(f"{mark} {result.image}" + (f"  ({detail})" if detail else ""), file=sys.stderr)


def _reason(result: ImageResult | ChartResult) -> str:
    """Why an image or chart failed, its remedy in this command's words."""
    from ._download import ImageResult

    if isinstance(result, ImageResult) and result.error is not None:
        return describe(result.error)
    return result.reason or "unknown"


def _print_download_summary(report: DownloadReport) -> None:
    from ._download import ImageResult

    ok = [r for r in report.images if r.ok]
    print(f"{len(ok)} of {len(report.images)} images and {sum(c.ok for c in report.charts)} of {len(report.charts)} "
          f"charts in {report.bundle} ({human_bytes(report.bytes_fetched)} fetched in {report.seconds:.1f}s)")
    referrers = sum(r.referrers for r in ok)
    if referrers:
        print(f"{referrers} referrers (signatures, SBOMs, attestations) carried in {report.bundle / 'referrers'}")
    for failure in report.failures:
        name = failure.image if isinstance(failure, ImageResult) else f"chart {failure.name} {failure.version}"
        print(f"FAILED {name}: {_reason(failure)}")
    if report.failures:
        print("Run the same command again to retry what failed; what is complete is kept.")
    if report.base:
        print(f"delta bundle against base {report.base}: {human_bytes(report.bytes_from_base)} of layers left to the "
              "base (push it onto a registry that holds the base; load and verify it with --base)")
    if report.root_digest:
        print(f"root digest {report.root_digest} (note it in the change ticket; on the offline side: "
              f"wsm verify --expect {report.root_digest})")
        print(f"change-ticket report: {report.bundle / 'REPORT.md'} (wsm report; --since OLD compares)")


def show_bar(quiet: bool) -> bool:
    """Progress bars only for a person at a terminal: in a log or a pipe they are noise."""
    return not quiet and sys.stderr.isatty()


def _say(quiet: bool, message: str) -> None:
    if not quiet:
        print(message, file=sys.stderr)


# --- wsm verify and wsm load -----------------------------------------------------------------------------------------


def _add_verify(commands: Commands) -> None:
    parser = commands.add_parser("verify", help="re-hash every file and blob of a bundle against its lock")
    add_bundle_argument(parser)
    parser.add_argument("--allow-incomplete", action="store_true", help="accept a bundle whose download had failures")
    parser.add_argument("--expect", metavar="sha256:HEX",
                        help="the root digest wsm download printed: fail unless the bundle has it")
    parser.add_argument("--base", type=Path, metavar="OLD",
                        help="a delta bundle's base bundle directory: verify it too, and that it holds every layer "
                             "the delta leaves to it")
    parser.add_argument("--key", type=Path, metavar="PUB.pem",
                        help="fail unless SHA256SUMS.sig is a signature of SHA256SUMS by this public key")
    add_quiet_and_output(parser)
    parser.set_defaults(handler=run_verify)


def run_verify(args: argparse.Namespace) -> int:
    from ._delta import read_base
    from ._verify import verify

    quiet = args.quiet or args.output == "json"
    base = read_base(args.base) if args.base else None
    with ProgressBar("verify", enabled=show_bar(quiet)) as bar:
        report = verify(Bundle.open(args.bundle), progress=bar, allow_incomplete=args.allow_incomplete,
                        expect=args.expect, base=base, key=args.key)
    if args.output == "json":
        print_data(report.to_dict(), "json")
    else:
        print(f"\u2713 {args.bundle}: {report.files_checked} files, {report.images_checked} images "
              f"({report.blobs_checked} blobs), {report.charts_checked} charts, "
              f"{'the tool, ' if report.tool_checked else ''}{human_bytes(report.bytes_checked)}: "
              "every digest matches")
        print(f"root digest {report.root_digest}" + (" (as expected)" if args.expect else ""))
        if report.base:
            checked = "each checked in the base" if report.base_checked else "not checked: give --base OLD"
            print(f"delta bundle: {len(report.from_base)} layers expected from base {report.base} ({checked})")
            if not report.base_checked:
                for digest in report.from_base:
                    print(f"  {digest}")
        if report.signature_checked:
            print(f"signature SHA256SUMS.sig verifies with {args.key}")
        elif (args.bundle / "SHA256SUMS.sig").exists():
            print("note: the bundle is signed (SHA256SUMS.sig); give --key PUB.pem to check the signature")
        for name in report.unlisted:
            print(f"note: {name} is not part of the bundle's checksums (written after the download)")
    return 0


def _add_sign(commands: Commands) -> None:
    parser = commands.add_parser("sign", help="sign a bundle's SHA256SUMS (writes SHA256SUMS.sig, as cosign sign-blob)")
    add_bundle_argument(parser)
    parser.add_argument("--key", type=Path, required=True, metavar="KEY.pem",
                        help="EC P-256 private key, PEM (PKCS#8 or SEC1, as openssl writes it)")
    parser.add_argument("--key-password-stdin", action="store_true",
                        help="read the password of an encrypted key from standard input")
    parser.set_defaults(handler=run_sign)


def run_sign(args: argparse.Namespace) -> int:
    from ._sign import sign_bundle

    password = None
    if args.key_password_stdin:
        password = stdin_secret("--key-password-stdin").encode()
    Bundle.open(args.bundle)  # one clear line when it is not a bundle
    path = sign_bundle(args.bundle, args.key, password)
    print(f"\u2713 wrote {path}: a signature of SHA256SUMS (check it with wsm verify --key PUB.pem, "
          "cosign verify-blob or openssl dgst -sha256 -verify)")
    return 0


def _add_report(commands: Commands) -> None:
    parser = commands.add_parser("report", help="the change-ticket report of a bundle (what REPORT.md says)")
    add_bundle_argument(parser)
    parser.add_argument("--since", type=Path, metavar="OLD",
                        help="compare with this earlier bundle (its directory or its wsm.lock.json)")
    add_output_option(parser)
    parser.set_defaults(handler=run_report)


def run_report(args: argparse.Namespace) -> int:
    from ._report import render_markdown, report_of

    report = report_of(Bundle.open(args.bundle), args.since)
    if args.output == "json":
        print_data(report.to_dict(), "json")
    else:
        print(render_markdown(report), end="")
    return 0


def _add_load(commands: Commands) -> None:
    parser = commands.add_parser("load", help="load the bundle's images into a local Docker engine")
    add_bundle_option(parser)
    parser.add_argument("--docker-host", metavar="URL", help="the engine (default DOCKER_HOST or the local socket)")
    parser.add_argument("images", nargs="*", metavar="IMAGE", help="only these images (default: all)")
    parser.add_argument("--base", type=Path, metavar="OLD",
                        help="a delta bundle's base bundle directory: the layers the delta leaves to it are read there")
    parser.set_defaults(handler=run_load)


def run_load(args: argparse.Namespace) -> int:
    from ._delta import read_base
    from ._load import load

    base = read_base(args.base) if args.base else None
    for name in load(Bundle.open(args.bundle), docker_host=args.docker_host, images=args.images or None, base=base):
        print(f"\u2713 loaded {name}")
    return 0


# --- wsm push --------------------------------------------------------------------------------------------------------


def _add_push(commands: Commands) -> None:
    parser = commands.add_parser("push", help="push a bundle into the site's registry and Helm repository")
    add_bundle_option(parser)
    parser.add_argument("--registry", required=True, metavar="HOST[/PREFIX]", help="the internal registry, e.g. registry.corp/wandb")
    parser.add_argument("--helm-repo", metavar="URL", help="oci://registry.corp/charts or https://charts.corp")
    parser.add_argument("--helm-repo-type", choices=("auto", "chartmuseum", "put"), default="auto",
                        help="classic repository protocol (default: detect)")
    parser.add_argument("--mapping", type=Path, metavar="FILE", help="YAML: source image name -> target name")
    parser.add_argument("--on-existing", choices=("fail", "skip", "overwrite"), default="fail",
                        help="a tag that exists with another digest (default fail)")
    parser.add_argument("--values", action="append", default=[], metavar="[CHART=]FILE",
                        help="rewrite your own values file in place (comments kept, backup beside it)")
    parser.add_argument("--site-values", action="append", default=[], metavar="[CHART=]FILE",
                        help="site keys (host, license, ...) merged into the written values")
    parser.add_argument("--concurrency", type=_positive, default=4, metavar="N", help="images pushed at once")
    parser.add_argument("--dry-run", action="store_true", help="show what would be sent; change nothing")
    parser.add_argument("--pull-secret", metavar="NAME",
                        help="name this kubernetes.io/dockerconfigjson secret for pulling in every written values "
                             "file (the runbook creates it)")
    parser.add_argument("--helm", metavar="PATH",
                        help="helm, to prove the written values by rendering and check the pull secret "
                             "(default: $WSM_HELM, then PATH)")
    add_transport_options(parser, credentials=True)
    add_quiet_and_output(parser)
    parser.set_defaults(handler=run_push)


def run_push(args: argparse.Namespace) -> int:
    from ._push import OnExisting, PushOptions, push_release

    bundle = Bundle.open(args.bundle)
    password = read_password(args)
    options = PushOptions(
        registry=args.registry, helm_repo=args.helm_repo, helm_repo_type=args.helm_repo_type, mapping=args.mapping,
        on_existing=OnExisting(args.on_existing), concurrency=args.concurrency, dry_run=args.dry_run,
        site_values={name: load_values_file(path) for name, path in
                     _chart_files(args.site_values, bundle.release, "--site-values").items()},
        user_values_files=_chart_files(args.values, bundle.release, "--values"),
        repo_auth=RepoAuth(args.username, password), pull_secret=args.pull_secret, helm=args.helm,
    )
    quiet = args.quiet or args.output == "json"
    bound = registry_options(args, username=args.username, password=password,
                             credential_hosts=site_credential_hosts(args.registry, args.helm_repo))
    with RegistryClient(bound) as client, \
            ProgressBar("pushing", enabled=show_bar(quiet)) as bar:
        report = push_release(bundle, options, client, progress=bar, transport=transport_options(args))
    if args.output == "json":
        print_data(report.to_dict(describe), "json")
    else:
        _print_push(report)
    return 0 if report.ok else 1


def _add_check(commands: Commands) -> None:
    parser = commands.add_parser("check", help="check that the site's servers hold every image and chart of a push")
    add_bundle_option(parser)
    parser.add_argument("--registry", metavar="HOST[/PREFIX]", help="the internal registry (default: where the "
                        "bundle was pushed)")
    parser.add_argument("--helm-repo", metavar="URL", help="the internal Helm repository (default: where the bundle "
                        "was pushed)")
    parser.add_argument("--values", action="append", default=[], type=Path, metavar="FILE",
                        help="check the images this values file names instead of the written ones (repeatable)")
    add_transport_options(parser, credentials=True)
    add_output_option(parser)
    parser.set_defaults(handler=run_check)


def run_check(args: argparse.Namespace) -> int:
    from ._check import CheckOptions, check
    from ._pushed import PushRecord

    bundle = Bundle.open(args.bundle)
    for path in args.values:
        if not path.is_file():
            raise ValuesError(f"--values {path}: the file does not exist")
    password = read_password(args)
    options = CheckOptions(registry=args.registry, helm_repo=args.helm_repo, values_files=args.values,
                           transport=transport_options(args), repo_auth=RepoAuth(args.username, password))
    record = PushRecord.read(bundle.root)
    registry = args.registry or (record.registry if record else None)
    helm_repo = args.helm_repo or (record.helm_repo if record else None)
    hosts = site_credential_hosts(registry, helm_repo) if registry else ()
    with RegistryClient(registry_options(args, username=args.username, password=password,
                                         credential_hosts=hosts)) as client:
        report = check(bundle, options, client)
    if args.output == "json":
        print_data(report.to_dict(), "json")
    else:
        _print_check(report)
    return 1 if report.problems else 0


def _print_check(report: CheckReport) -> None:
    rows = [(f.status.value, f.kind, f.name, f.detail) for f in report.findings]
    widths = [max([len(header)] + [len(row[i]) for row in rows]) for i, header in enumerate(("STATUS", "KIND", "NAME"))]
    for row in [("STATUS", "KIND", "NAME", "DETAIL"), *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[3])
    images = sum(1 for f in report.findings if f.kind == "image")
    charts = len(report.findings) - images
    if report.problems:
        print(f"{len(report.problems)} of {images} images and {charts} charts missing or different")
    else:
        print(f"\u2713 all {images} images and {charts} charts are in place in {report.registry}"
              + (f" and {report.helm_repo}" if report.helm_repo else ""))


def _add_inventory(commands: Commands) -> None:
    parser = commands.add_parser("inventory", help="record what the site's registry holds, for download --since")
    parser.add_argument("--registry", required=True, metavar="HOST[/PREFIX]",
                        help="the internal registry (only repositories under PREFIX are read)")
    parser.add_argument("-o", "--output", required=True, type=Path, metavar="FILE",
                        help="where to write the inventory (JSON)")
    add_transport_options(parser, credentials=True)
    parser.set_defaults(handler=run_inventory)


def run_inventory(args: argparse.Namespace) -> int:
    from ._files import write_atomically
    from ._inventory import take_inventory

    password = read_password(args)
    bound = registry_options(args, username=args.username, password=password,
                             credential_hosts=site_credential_hosts(args.registry, None))
    with RegistryClient(bound) as client:
        inventory = take_inventory(args.registry, client, note=lambda text: _say(False, f"wsm: note: left out {text}"))
    write_atomically(args.output, inventory.to_json())
    tags = sum(len(repo.tags) for repo in inventory.repositories)
    print(f"\u2713 {args.output}: {len(inventory.repositories)} repositories, {tags} tags, "
          f"{len(inventory.blobs())} blobs in {args.registry}; on the connected side: wsm download --since "
          f"{args.output.name}")
    return 0


def site_credential_hosts(registry: str, helm_repo: str | None) -> tuple[str, ...]:
    """--username is for the internal registry (and an oci:// Helm repository): no other host gets it."""
    hosts = [registry.split("/", 1)[0]]
    if helm_repo and helm_repo.startswith("oci://"):
        hosts.append(helm_repo.removeprefix("oci://").split("/", 1)[0])
    return tuple(hosts)


def _chart_files(items: list[str], release: ReleaseManifest, option: str) -> dict[str, Path]:
    """`[CHART=]FILE` options by chart name; each file must exist."""
    result: dict[str, Path] = {}
    for item in items:
        name, path = chart_option(item, "=", release, option)
        if not Path(path).is_file():
            raise ValuesError(f"{option} {path}: the file does not exist")
        result[name] = Path(path)
    return result


class ProgressBar:
    """A tqdm bytes bar on stderr that library calls report to (the `Progress` protocol); when not `enabled`
    (quiet, or not a terminal) it draws nothing; `leave` keeps the finished bar on the screen. Thread-safe:
    the library reports from several threads, and tqdm's counters are plain read-modify-writes."""

    def __init__(self, description: str, *, enabled: bool, leave: bool = False):
        import threading

        from tqdm import tqdm

        self._bar = tqdm(total=0, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr, desc=description,
                         disable=not enabled, leave=leave, dynamic_ncols=True)
        self._lock = threading.Lock()

    def expect(self, count: int) -> None:
        with self._lock:
            self._bar.total = (self._bar.total or 0) + count
            self._bar.refresh()

    def advance(self, count: int) -> None:
        with self._lock:
            self._bar.update(count)

    def write(self, line: str) -> None:
        """A line printed above the bar, leaving the bar intact."""
        self._bar.write(line, file=sys.stderr)

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.close()


def _print_push(report: PushReport) -> None:
    from ._push import image_totals

    if report.runbook:
        print(report.runbook)
    else:
        for job in report.images:
            print(f"{job.result.value:<12} {job.source} -> {job.target} ({human_bytes(job.bytes_sent)})")
        for chart in report.charts:
            print(f"{chart.result:<12} chart {chart.name} {chart.version} -> {chart.target}")
    if not report.helm_repo:
        print("note: no --helm-repo given: charts were not published and no values or runbook were written")
    totals = image_totals(report.images)
    verb = "would send" if report.dry_run else "sent"
    print(f"{totals['images']} images: {verb} {human_bytes(totals['bytes_sent'])} in {totals['blobs_sent']} blobs, "
          f"{totals['blobs_present']} blobs already there, {totals['blobs_mounted']} mounted")
    for path in report.files:
        print(f"wrote {path}")
    if report.proof:
        print(f"proof: {report.proof}")
    for job in report.failures:
        print(f"FAILED {job.source}: {describe(job.error) if job.error else 'unknown'}")
    if report.referrers:
        print(f"referrers: {len(report.referrers) - len(report.referrer_failures)} of {len(report.referrers)} "
              "written by the scheme they were found by")
    for referrer in report.referrer_failures:
        print(f"FAILED referrer {referrer.digest} of {referrer.source}: {describe(referrer.error) if referrer.error else ''}")
    for job in report.pinned:
        print(f"note: {job.target} holds another image and was left alone; the values pin the carried {job.digest}")
    for withheld in report.withheld:
        print(f"NOT PUBLISHED chart {withheld.name}: {withheld.reason}; no values or runbook lines were written for it")


# --- wsm rewrite -----------------------------------------------------------------------------------------------------

MAX_MANIFEST_BYTES = 256 * 1024 * 1024


def _add_rewrite(commands: Commands) -> None:
    parser = commands.add_parser(
        "rewrite", help="point the images of Kubernetes manifests (stdin -> stdout) at the internal registry",
        description="Reads Kubernetes YAML on stdin and writes it to stdout with every image the bundle moved "
                    "pointed at the internal registry, the rest byte for byte. As a helm post-renderer: "
                    "--post-renderer wsm --post-renderer-args rewrite --post-renderer-args --bundle "
                    "--post-renderer-args DIR. Exits 1, writing nothing, when an image is not covered.")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--bundle", type=Path, metavar="DIR",
                        help="the pushed bundle (its pushed.json names the internal images; default ./bundle)")
    source.add_argument("--mapping", type=Path, metavar="FILE", help="YAML: source image name -> target name")
    parser.add_argument("-q", "--quiet", action="store_true", help="no summary on stderr")
    parser.set_defaults(handler=run_rewrite)


def run_rewrite(args: argparse.Namespace) -> int:
    from ._pushed import PushRecord
    from ._rewrite import ImageMap, rewrite_manifests
    from ._target import load_mapping

    if args.mapping:
        images = ImageMap.from_names(load_mapping(args.mapping))
    else:
        images = ImageMap.from_record(PushRecord.load(args.bundle or Path("bundle")))
    raw = sys.stdin.buffer.read(MAX_MANIFEST_BYTES + 1)
    if len(raw) > MAX_MANIFEST_BYTES:
        raise WsmError(f"the manifests on standard input are larger than {human_bytes(MAX_MANIFEST_BYTES)}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise WsmError(f"the manifests on standard input are not UTF-8 (byte {error.start})") from None
    result = rewrite_manifests(text, images)
    sys.stdout.buffer.write(result.text.encode("utf-8"))
    if not args.quiet:
        print(f"wsm rewrite: {result.summary()}", file=sys.stderr)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
