"""The `wsm` command: argument parsing and printing over the library, nothing more.

Every WsmError becomes one line on stderr and exit code 1; usage errors exit 2 (argparse); an interrupt exits
130. Data goes to stdout (text, json, yaml or plain), progress and notes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from . import __version__
from ._exceptions import ManifestError, ValuesError, WsmError
from ._fetch import ChartSource, FetchOptions
from ._helmrepo import RepoAuth
from ._http import TransportOptions
from ._manifest import ChartEntry, ReleaseManifest, load_manifest
from ._model import ResolvedImage
from ._resolve import Resolution, ResolveOptions, drift, from_lock, resolve_release
from ._values import Values, merge, parse_set, load_values_file

OUTPUTS = ("text", "json", "yaml", "plain")
DEFAULT_PLATFORM = "linux/amd64"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except WsmError as error:
        print(f"wsm: error: {error}", file=sys.stderr)
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
    return parser


# --- shared option groups ---------------------------------------------------------------------------------------


def add_release_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("release (default: the embedded W&B manifest)")
    group.add_argument("--manifest", type=Path, metavar="FILE", help="a release manifest (see manifests/README.md)")
    group.add_argument(
        "--chart", metavar="REF", help="a single chart: a directory, a .tgz, oci://host/path/name, or a name with --repo"
    )
    group.add_argument("--repo", metavar="URL", help="classic Helm repository URL for --chart NAME")
    group.add_argument("--version", dest="chart_version", metavar="VERSION", help="chart version or range for --chart")
    group.add_argument(
        "-f", "--values", action="append", default=[], metavar="[CHART=]FILE",
        help="values file layered on top (repeatable; name the chart when the release has several)",
    )
    group.add_argument("--set", action="append", default=[], metavar="[CHART:]KEY=VAL", help="a value, as helm --set")
    group.add_argument("--set-string", action="append", default=[], metavar="[CHART:]KEY=VAL", help="as helm --set-string")
    group.add_argument("--resolve", action="store_true", help="fetch the charts and derive the images (else: the lock)")
    group.add_argument("--render", action="store_true", help="also run `helm template` and compare (implies --resolve)")
    group.add_argument("--helm", metavar="PATH", help="the helm binary for --render (default: helm on PATH)")


def add_transport_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("connection")
    group.add_argument("--ca-file", metavar="PEM", help="trust this CA bundle (a private CA) instead of the system's")
    group.add_argument("--insecure", action="store_true", help="do not verify TLS certificates (say it explicitly)")
    group.add_argument("--plain-http", action="store_true", help="use plain HTTP instead of HTTPS")
    group.add_argument("--username", metavar="USER", help="user for registries and Helm repositories")
    group.add_argument("--password-stdin", action="store_true", help="read the password from standard input")


def transport_options(args: argparse.Namespace) -> TransportOptions:
    if args.ca_file and not Path(args.ca_file).is_file():
        raise WsmError(f"--ca-file {args.ca_file} does not exist; give the PEM file of the site's CA")
    return TransportOptions(ca_file=args.ca_file, insecure=args.insecure, plain_http=args.plain_http)


def read_password(args: argparse.Namespace) -> str | None:
    if not args.password_stdin:
        return None
    if not args.username:
        raise WsmError("--password-stdin needs --username")
    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise WsmError("--password-stdin: standard input held no password")
    return password


def fetch_options(args: argparse.Namespace) -> FetchOptions:
    transport = transport_options(args)
    password = read_password(args)
    from ._remote import RegistryOptions

    return FetchOptions(
        transport=transport,
        repo_auth=RepoAuth(args.username, password),
        registry_options=RegistryOptions(transport=transport, username=args.username, password=password),
    )


def select_release(args: argparse.Namespace) -> ReleaseManifest:
    if args.chart and args.manifest:
        raise WsmError("give --manifest or --chart, not both")
    if args.chart:
        return single_chart_release(args.chart, args.repo, args.chart_version)
    if args.repo or args.chart_version:
        raise WsmError("--repo and --version go with --chart")
    return load_manifest(args.manifest)


def single_chart_release(ref: str, repo: str | None, version: str | None) -> ReleaseManifest:
    if repo:
        source = ChartSource(chart=ref, version=version, repo=repo)
    elif ref.startswith("oci://"):
        source = ChartSource(chart=ref.rstrip("/").rsplit("/", 1)[-1], version=version, oci=ref)
    elif Path(ref).exists():
        source = ChartSource(chart=Path(ref).name.removesuffix(".tgz"), path=Path(ref))
    else:
        raise WsmError(f"--chart {ref}: no such file or directory; for a repository chart add --repo URL")
    name = source.chart if not source.path else "chart"
    entry = ChartEntry(name=name, group=name, source=source)
    return ReleaseManifest(
        name=name, description="", charts=(entry,), images=(), lock=None, origin=f"--chart {ref}", text=""
    )


def user_values(args: argparse.Namespace, release: ReleaseManifest) -> dict[str, Values]:
    """-f/--set layers by chart name; a chart must be named when the release has several."""
    layers: dict[str, Values] = {}

    def target(prefix: str | None, what: str) -> str:
        if prefix is not None:
            release.chart(prefix)  # raises naming the charts there are
            return prefix
        if len(release.charts) == 1:
            return release.charts[0].name
        raise ValuesError(f"{what}: name the chart it is for ({'|'.join(release.chart_names)}), e.g. CHART=FILE")

    for item in args.values:
        prefix, path = _split_prefix(item, "=", release)
        name = target(prefix, f"--values {item}")
        layers[name] = merge(layers.get(name, {}), load_values_file(Path(path)))
    for item, strings in [(s, False) for s in args.set] + [(s, True) for s in args.set_string]:
        prefix, expression = _split_prefix(item, ":", release)
        name = target(prefix, f"--set {item}")
        layers[name] = merge(layers.get(name, {}), parse_set(expression, strings=strings))
    return layers


def _split_prefix(item: str, separator: str, release: ReleaseManifest) -> tuple[str | None, str]:
    head, sep, tail = item.partition(separator)
    if sep and head in release.chart_names and not Path(item).exists():
        return head, tail
    return None, item


def resolve(args: argparse.Namespace, release: ReleaseManifest) -> Resolution:
    """The lock when it can serve, else (or with --resolve/--render/values) the charts themselves."""
    layers = user_values(args, release)
    fresh = args.resolve or args.render or bool(layers) or release.lock is None
    if not fresh:
        return from_lock(release)
    options = ResolveOptions(
        fetch=fetch_options(args), user_values=layers, render=args.render, helm=args.helm, progress=_progress
    )
    resolution = resolve_release(release, options)
    if release.lock is not None and not layers:
        resolution.notes += drift(from_lock(release), resolution)
    return resolution


def _progress(message: str) -> None:
    print(message, file=sys.stderr)


# --- wsm list -------------------------------------------------------------------------------------------------------


def _add_list(commands) -> None:
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
    resolution = resolve(args, release)
    for note in resolution.notes:
        print(f"wsm: note: {note}", file=sys.stderr)
    if args.why:
        return print_why(resolution, args.why, args.output)
    data = list_data(release, resolution, platforms)
    if args.output == "text":
        print(render_text(release, resolution))
    elif args.output == "plain":
        print("\n".join(image.reference.canonical for image in resolution.images))
    else:
        print_data(data, args.output)
    return 0


def parse_platforms(values: list[str] | None) -> list[str]:
    from ._remote import Platform

    return [str(Platform.parse(value)) for value in (values or [DEFAULT_PLATFORM])]


def list_data(release: ReleaseManifest, resolution: Resolution, platforms: list[str]) -> dict[str, Any]:
    return {
        "release": release.name,
        "manifest": release.origin,
        "from": "lock" if resolution.from_lock else "charts",
        "platforms": platforms,
        "charts": [chart.to_dict() for chart in resolution.charts],
        "images": [image.to_dict() for image in resolution.images],
        "skipped": [skipped.to_dict() for skipped in resolution.skipped],
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
    places: dict[str, list[str]] = {}
    for source in image.sources:
        chart = source.chart.split("/", 1)[0]
        places.setdefault(chart, []).append(source.path or source.template or source.method.value)
    return "; ".join(f"{chart}: {', '.join(dict.fromkeys(paths))}" for chart, paths in places.items())


def print_why(resolution: Resolution, text: str, output: str) -> int:
    image = resolution.image(text)
    if image is None:
        raise WsmError(f"{text} is not an image of this release; `wsm list -o plain` lists them")
    if output in ("json", "yaml"):
        print_data(image.to_dict(), output)
        return 0
    print(f"{image.reference.canonical} (group {image.group}) is needed by:")
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
