"""Push the same images with wsm and with skopeo from a bundle's tarballs into a fresh loopback registry; print
times, CPU seconds, ratios, the time of a second (no-op) push, and wsm's peak memory.

    python3 bench/bench_push.py [--images 4] [--layers-mb 30,20,15,10] [--concurrency 4] [--runs 3]
    python3 bench/bench_push.py --sets 300mb          # the push rows of issue 10's table (sets: bench_download)

A bundle is made once with `wsm download` from a source registry (synthetic, incompressible images, as in
bench_download.py). Then, each turn, against a registry started empty for that turn:

- wsm: `push_release()`, what `wsm push --bundle B --registry R` runs, including the check it makes first
  (the lock, SHA256SUMS and the small files re-hashed, tarballs by size; every uploaded blob is hashed as it
  is read);
- wsm again into the same registry: the second push, which should read no tarball and send no blob (the
  child counts the files it opens under images/);
- skopeo: one `skopeo copy oci-archive:<tarball> docker://R/...` per image, as a script would loop (skopeo
  reads the same tarballs; its blob-info cache is removed first), into another empty registry;
- `wsm verify` of the bundle, the full pass (every file and blob re-hashed) to run once after the gap.

Each is timed from outside (start-up included); the push's own time (inside `push_release()`, without Python's
start-up, imports, opening the bundle and making the client) is printed too.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent)]

from bench_download import (  # noqa: E402
    ROOT, SETS, SKOPEO_CACHE, alternate, build_and_push, cpu_timed, layer_sizes_of, parse_args, print_runs,
    print_summary, summarize, timed,
)
from servers import Registry  # noqa: E402

WSM_PUSH = """
import io, builtins, json, sys, tarfile, time
from pathlib import Path
sys.path.insert(0, {root!r})
from wsm._bundle import Bundle
from wsm._http import TransportOptions
from wsm._push import PushOptions, image_totals, push_release
from wsm._remote import RegistryClient, RegistryOptions
bundle_dir, registry, concurrency = json.loads(sys.argv[1])
tarballs_opened = []
real_open = io.open
def counting_open(file, *args, **kwargs):
    if "/images/" in str(file):
        tarballs_opened.append(str(file))
    return real_open(file, *args, **kwargs)
builtins.open = io.open = tarfile.bltn_open = counting_open
opened = time.monotonic()
bundle = Bundle.open(Path(bundle_dir))
options = RegistryOptions(transport=TransportOptions(plain_http=True), concurrency=concurrency)
with RegistryClient(options) as client:  # its TLS context loads the CA store: ~20-40 ms of set-up
    started = time.monotonic()
    report = push_release(bundle, PushOptions(registry=registry, concurrency=concurrency), client)
    seconds = time.monotonic() - started
assert not report.failures, [job.error for job in report.failures]
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({{"inner": seconds, "setup": started - opened, "peak_kib": peak, "totals": image_totals(report.images),
                  "tarballs_opened": len(tarballs_opened)}}))
"""

WSM_VERIFY = """
import json, sys
from pathlib import Path
sys.path.insert(0, {root!r})
from wsm._bundle import Bundle
from wsm._verify import verify
report = verify(Bundle.open(Path(sys.argv[1])))
print(json.dumps({{"bytes": report.bytes_checked}}))
"""


def main() -> int:
    args, layer_sizes = parse_args(__doc__)
    work = Path(tempfile.mkdtemp(prefix="wsm-bench-push-"))
    try:
        sets = args.sets or ["custom"]
        rows, seconds = [], []
        for name in sets:
            count, sizes = (SETS[name][0], layer_sizes_of(SETS[name][1])) if name in SETS else (args.images, layer_sizes)
            row, second = measure(work, name, count, sizes, args)
            rows.append(row)
            seconds.append(second)
        print_summary(rows, "push", "skopeo copy oci-archive:")
        for row, second in zip(rows, seconds):
            print(second)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def measure(work: Path, name: str, count: int, sizes: tuple[int, ...], args) -> tuple[dict, str]:
    """A bundle of `count` images, pushed by each tool in alternating turns; the summary row and a line
    about the second push."""
    with Registry(work / f"source-{name}") as source:
        refs, total = build_and_push(source, work, count, sizes)
        bundle = make_bundle(refs, work / f"bundle-{name}")
    print(f"== {name}: {len(refs)} images x {len(sizes)} layers, {total / 1e6:.0f} MB, {os.cpu_count()} CPUs, "
          f"{args.runs} turns, load {os.getloadavg()[0]:.2f}")
    turn = iter(range(1_000_000))
    targets: dict[str, Registry] = {}

    def first() -> dict:
        targets["wsm"] = Registry(work / f"wsm-{name}-{next(turn)}").__enter__()
        return run_wsm(bundle, targets["wsm"].host, args.concurrency)

    def again() -> dict:
        try:
            return run_wsm(bundle, targets["wsm"].host, args.concurrency)
        finally:
            targets.pop("wsm").__exit__(None, None, None)

    def skopeo() -> dict:
        with Registry(work / f"skopeo-{name}-{next(turn)}") as target:
            return run_skopeo(bundle, target.host)

    tools = {"wsm push": first, "wsm push (second, no-op)": again, "skopeo copy oci-archive:": skopeo,
             "wsm verify (full pass)": lambda: run_verify(bundle)}
    runs = alternate(tools, args.runs)
    print_runs(runs, total, "wsm push")
    pushes, seconds = runs["wsm push"], runs["wsm push (second, no-op)"]
    share = statistics.median(b["inner"] / a["inner"] for a, b in zip(pushes, seconds))
    whole = statistics.median(b["seconds"] / a["seconds"] for a, b in zip(pushes, seconds))
    line = (f"{name} second push: {statistics.median(r['inner'] for r in seconds) * 1000:.0f} ms in push_release() "
            f"= {share:.1%} of the first push's (+ {statistics.median(r['setup'] for r in seconds) * 1000:.0f} ms "
            f"opening the bundle and the client; whole process, start-up included: "
            f"{statistics.median(r['seconds'] for r in seconds):.2f} s = {whole:.1%}); "
            f"{max(r['totals']['bytes_sent'] for r in seconds)} bytes and "
            f"{max(r['totals']['blobs_sent'] for r in seconds)} blobs sent, "
            f"{max(r['tarballs_opened'] for r in seconds)} tarballs opened; first push inside: "
            f"{statistics.median(r['inner'] for r in pushes):.2f} s")
    shutil.rmtree(bundle, ignore_errors=True)
    return summarize(name, total, pushes, runs["skopeo copy oci-archive:"]), line


def make_bundle(refs: list[str], bundle: Path) -> Path:
    from wsm._download import download
    from wsm._http import TransportOptions
    from wsm._model import ResolvedImage
    from wsm._reference import Reference
    from wsm._remote import RegistryClient, RegistryOptions

    images = [ResolvedImage(Reference.parse(ref), "bench") for ref in refs]
    with RegistryClient(RegistryOptions(transport=TransportOptions(plain_http=True))) as client:
        report = download(images, [], bundle, client=client, platforms=None)
    assert report.ok, report.to_dict()
    return bundle


def run_wsm(bundle: Path, registry: str, concurrency: int) -> dict:
    argv = [sys.executable, "-c", WSM_PUSH.format(root=str(ROOT)), json.dumps([str(bundle), registry, concurrency])]
    return cpu_timed(lambda: json.loads(timed(argv)[1]))


def run_verify(bundle: Path) -> dict:
    argv = [sys.executable, "-c", WSM_VERIFY.format(root=str(ROOT)), str(bundle)]
    return cpu_timed(lambda: json.loads(timed(argv)[1]))


def run_skopeo(bundle: Path, registry: str) -> dict:
    shutil.rmtree(SKOPEO_CACHE, ignore_errors=True)
    lock = json.loads((bundle / "wsm.lock.json").read_text())

    def copy_each() -> dict:
        for index, entry in enumerate(lock["images"]):
            timed(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci-archive:{bundle / entry['file']}",
                   f"docker://{registry}/bench/app{index}:1.0"])
        return {}

    return cpu_timed(copy_each)


if __name__ == "__main__":
    sys.exit(main())
