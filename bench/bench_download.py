"""Download the same images with wsm and with skopeo from one loopback registry; print times, ratios, and
wsm's peak memory.

    python3 bench/bench_download.py [--images 4] [--layers-mb 30,20,15,10] [--concurrency 4] [--runs 3]
    python3 bench/bench_download.py --sets 300mb,1gb-layer,40-small,1.2gb    # the rows of issue 10's table

The images are synthetic (tests/images.py), with incompressible layers so that the bytes on the wire are
the sizes asked for, pushed into a CNCF Distribution registry on 127.0.0.1 (tests/servers.py). Each tool
runs as its own process, timed from outside, starting from an empty destination:

- wsm: `download()` of all images into a bundle (one tarball per image, SHA256SUMS, lock file);
- skopeo to `oci:` (one layout for all images, layers deduplicated) and to `docker-archive:` (one tarball
  per image; skopeo decompresses the layers for it), one `skopeo copy` per image as a script would loop.

With `--sets`, each named set (see SETS) is pushed to the same registry and measured in turn (wsm and skopeo
to `oci:` only), and a summary prints one row per set: medians, CPU seconds, the median of the per-turn
ratios wsm/skopeo (each turn's two runs back to back), time per GB, and wsm's peak RSS.

skopeo's blob-info cache (/var/lib/containers/cache) is removed before each skopeo run, or its second run
would be faster than a first. Everything is on loopback with the registry's storage in the page cache, so
the figures compare the clients, not the network. The tools take turns, `--runs` times, and the median of
each is printed (a shared machine's disk and CPUs are noisy), with the CPU time the tool used.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from images import build_image, push_layout  # noqa: E402
from servers import Registry  # noqa: E402

SKOPEO_CACHE = Path("/var/lib/containers/cache")
# name: (images, layer sizes in MB), the cases of issue 10
SETS = {
    "300mb": (4, "30,20,15,10"),
    "1gb-layer": (1, "1000"),
    "40-small": (40, "1,1"),
    "1.2gb": (4, "120,80,60,40"),
}

WSM_CHILD = """
import json, sys, time
from pathlib import Path
sys.path.insert(0, {root!r})
from wsm._download import download
from wsm._http import TransportOptions
from wsm._model import ResolvedImage
from wsm._reference import Reference
from wsm._remote import RegistryClient, RegistryOptions
refs, bundle, concurrency = json.loads(sys.argv[1])
images = [ResolvedImage(Reference.parse(ref), "bench") for ref in refs]
options = RegistryOptions(transport=TransportOptions(plain_http=True), concurrency=concurrency)
started = time.monotonic()
with RegistryClient(options) as client:
    report = download(images, [], Path(bundle), client=client, platforms=None, concurrency=concurrency)
assert report.ok, report.to_dict()
seconds = time.monotonic() - started
# VmHWM is this program's own peak; ru_maxrss would also count the parent's memory this process forked from.
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({{"seconds_inner": seconds, "fetched": report.bytes_fetched, "peak_kib": peak}}))
"""


def main() -> int:
    args, layer_sizes = parse_args(__doc__, keep=True)

    work = Path(tempfile.mkdtemp(prefix="wsm-bench-"))
    try:
        with Registry(work / "registry") as registry:
            if args.sets:
                summary = [measure_set(registry, work, name, args) for name in args.sets]
                print_summary(summary, "download", "skopeo copy -> oci:")
                return 0
            refs, total = build_and_push(registry, work, args.images, layer_sizes)
            print(f"{len(refs)} images x {len(layer_sizes)} layers, {total / 1e6:.0f} MB on the wire, "
                  f"registry {registry.host}, {os.cpu_count()} CPUs, {args.runs} runs each\n")
            tools = {
                "wsm download": lambda: run_wsm(refs, fresh(work / "bundle"), args.concurrency),
                "wsm download (rerun, all complete)": lambda: run_wsm(refs, work / "bundle", args.concurrency),
                "skopeo copy -> oci:": lambda: run_skopeo(refs, fresh(work / "oci"), oci_destination),
                "skopeo copy -> docker-archive:": lambda: run_skopeo(
                    refs, fresh(work / "archives"), archive_destination
                ),
            }
            runs = alternate(tools, args.runs)
            report(runs, total)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


def alternate(tools: dict[str, Callable[[], dict]], turns: int) -> dict[str, list[dict]]:
    """Every tool once per turn, in order, `turns` times."""
    runs: dict[str, list[dict]] = {name: [] for name in tools}
    for _ in range(turns):
        for name, tool in tools.items():
            runs[name].append(tool())
    return runs


def measure_set(registry: Registry, work: Path, name: str, args: argparse.Namespace) -> dict:
    """One named set: wsm download and skopeo to oci: in alternating turns; printed, and summed up."""
    count, layers_mb = SETS[name]
    sizes = layer_sizes_of(layers_mb)
    refs, total = build_and_push(registry, work, count, sizes, prefix=f"{name}-")
    print(f"== {name}: {count} images x {len(sizes)} layers, {total / 1e6:.0f} MB on the wire, "
          f"{args.runs} turns, load {os.getloadavg()[0]:.2f}")
    tools = {
        "wsm download": lambda: run_wsm(refs, fresh(work / "bundle"), args.concurrency),
        "skopeo copy -> oci:": lambda: run_skopeo(refs, fresh(work / "oci"), oci_destination),
    }
    runs = alternate(tools, args.runs)
    print_runs(runs, total, "wsm download")
    fresh(work / "bundle")
    fresh(work / "oci")
    return summarize(name, total, runs["wsm download"], runs["skopeo copy -> oci:"])


def summarize(name: str, total: int, wsm: list[dict], other: list[dict]) -> dict:
    """The medians of a set, and the median of the per-turn ratios wsm / other."""
    return {
        "name": name, "bytes": total,
        "wsm": statistics.median(r["seconds"] for r in wsm),
        "wsm_cpu": statistics.median(r["cpu"] for r in wsm),
        "wsm_inner": statistics.median(r["inner"] for r in wsm),  # without start-up and set-up
        "other": statistics.median(r["seconds"] for r in other),
        "other_cpu": statistics.median(r["cpu"] for r in other),
        "ratio": statistics.median(a["seconds"] / b["seconds"] for a, b in zip(wsm, other)),
        "peak_mib": max(r["peak_kib"] for r in wsm) / 1024,
        "load": os.getloadavg()[0],
    }


def print_summary(rows: list[dict], what: str, other: str) -> None:
    """One line per set, then the time per GB of each (whether cost grows linearly with bytes)."""
    print(f"\nsummary ({what}; ratio = median over turns of wsm / {other} in the same turn)")
    print(f"{'set':12} {'MB':>6} {'wsm s':>7} {'CPU s':>6} {'other s':>8} {'CPU s':>6} {'ratio':>6} "
          f"{'wsm s/GB':>8} {'inner s/GB':>10} {'peak RSS':>9} {'load':>5}")
    for row in rows:
        gigabytes = row["bytes"] / 1e9
        print(f"{row['name']:12} {row['bytes'] / 1e6:6.0f} {row['wsm']:7.2f} {row['wsm_cpu']:6.2f} "
              f"{row['other']:8.2f} {row['other_cpu']:6.2f} {row['ratio']:6.2f} {row['wsm'] / gigabytes:8.2f} "
              f"{row['wsm_inner'] / gigabytes:10.2f} {row['peak_mib']:6.0f} MiB {row['load']:5.2f}")
    print(f"other = {other}; wsm s/GB: median wall time per GB moved (start-up included); inner s/GB: the same "
          "inside wsm's call (download() or push_release()), without Python's start-up and imports")


def parse_args(doc: str, keep: bool = False) -> tuple[argparse.Namespace, tuple[int, ...]]:
    """The options both benchmarks take, and the layer sizes in bytes."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--layers-mb", default="30,20,15,10", help="layer sizes of each image, in MB")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3, help="turns per tool; medians are printed")
    parser.add_argument("--sets", type=lambda text: text.split(","), default=None,
                        help=f"named sets to measure in turn, comma-separated: {', '.join(SETS)}")
    if keep:
        parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    unknown = [name for name in args.sets or [] if name not in SETS]
    if unknown:
        parser.error(f"unknown set {unknown[0]}; known: {', '.join(SETS)}")
    return args, layer_sizes_of(args.layers_mb)


def layer_sizes_of(layers_mb: str) -> tuple[int, ...]:
    return tuple(int(float(mb) * 1_000_000) for mb in layers_mb.split(","))


def fresh(directory: Path) -> Path:
    shutil.rmtree(directory, ignore_errors=True)
    return directory


def oci_destination(directory: Path, index: int, ref: str) -> str:
    return f"oci:{directory}:img{index}"


def archive_destination(directory: Path, index: int, ref: str) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    return f"docker-archive:{directory / f'image-{index}.tar'}:{ref}"


def build_and_push(
    registry: Registry, work: Path, count: int, layer_sizes: tuple[int, ...], prefix: str = ""
) -> tuple[list[str], int]:
    refs, total = [], 0
    for index in range(count):
        built = build_image(work / f"layout-{index}", "1.0", layer_sizes=layer_sizes, incompressible=True)
        ref = f"{registry.host}/bench/{prefix}app{index}:1.0"
        push_layout(built, ref)
        shutil.rmtree(built.layout)
        refs.append(ref)
        total += sum(size for digest, size in built.blobs.items() if digest != built.digest)
    return refs, total


def timed(argv: list[str]) -> tuple[dict, str]:
    """Run `argv` and time it from outside (start-up included, as a user sees it)."""
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate()
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"{argv[0]} failed: {err.strip()[-2000:]}")
    return {"seconds": seconds}, out


def cpu_timed(action: Callable[[], dict]) -> dict:
    """`action`'s result with the wall time and the CPU time of the processes it ran (user + system)."""
    before = os.times()
    started = time.monotonic()
    result = action()
    seconds = time.monotonic() - started
    after = os.times()
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    return {**result, "seconds": seconds, "cpu": cpu}


def run_wsm(refs: list[str], bundle: Path, concurrency: int) -> dict:
    argv = [sys.executable, "-c", WSM_CHILD.format(root=str(ROOT)), json.dumps([refs, str(bundle), concurrency])]
    result = cpu_timed(lambda: json.loads(timed(argv)[1]))
    result["inner"] = result.pop("seconds_inner")  # inside download(), without start-up
    return result


def run_skopeo(refs: list[str], directory: Path, destination) -> dict:
    shutil.rmtree(SKOPEO_CACHE, ignore_errors=True)

    def copy_each() -> dict:
        for index, ref in enumerate(refs):
            argv = ["skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{ref}",
                    destination(directory, index, ref)]
            timed(argv)
        return {}

    return cpu_timed(copy_each)


def print_runs(runs: dict[str, list[dict]], total: int, reference: str) -> None:
    """Median time, rate, CPU time (when measured) and the ratio to `reference` of each tool, with every run.

    Rows whose name has "rerun" or "no-op" in it move no data: they get no rate."""
    median = {name: statistics.median(r["seconds"] for r in results) for name, results in runs.items()}
    base = median[reference]
    print(f"{'tool':38} {'median s':>9} {'MB/s':>6} {'CPU s':>6} {'vs wsm':>7}   all runs (s)")
    for name, results in runs.items():
        moves_data = "rerun" not in name and "no-op" not in name
        rate = f"{total / 1e6 / median[name]:6.0f}" if moves_data else f"{'-':>6}"
        cpu = f"{statistics.median(r['cpu'] for r in results):6.2f}" if "cpu" in results[0] else f"{'-':>6}"
        every = " ".join(f"{r['seconds']:.2f}" for r in results)
        print(f"{name:38} {median[name]:9.2f} {rate} {cpu} {median[name] / base:6.2f}x   {every}")
    print("vs wsm: a tool's median time divided by wsm's (above 1.00x: wsm was faster).\n")


def report(runs: dict[str, list[dict]], total: int) -> None:
    print_runs(runs, total, "wsm download")
    first = runs["wsm download"]
    inner = statistics.median(r["inner"] for r in first)
    peak = max(r["peak_kib"] for r in first)
    print(f"wsm: {inner:.2f} s inside download() (the rest is Python start-up and imports), "
          f"{first[0]['fetched'] / 1e6:.0f} MB fetched, peak RSS {peak / 1024:.0f} MiB")
    rerun = runs["wsm download (rerun, all complete)"]
    print(f"wsm rerun: {max(r['fetched'] for r in rerun)} bytes fetched, "
          f"peak RSS {max(r['peak_kib'] for r in rerun) / 1024:.0f} MiB")


if __name__ == "__main__":
    sys.exit(main())
