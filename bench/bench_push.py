"""Push the same images with wsm and with skopeo from a bundle's tarballs into a fresh loopback registry; print
times, ratios, the time of a second (no-op) push, and wsm's peak memory.

    python3 bench/bench_push.py [--images 4] [--layers-mb 30,20,15,10] [--concurrency 4] [--runs 3]

A bundle is made once with `wsm download` from a source registry (synthetic, incompressible images, as in
bench_download.py). Then, each run, against a registry started empty for that run:

- wsm: `push_release()`, what `wsm push --bundle B --registry R` runs: it re-verifies the whole bundle (every
  file and blob re-hashed) and then pushes every image; the verification is also timed alone, and the push
  is printed without it;
- skopeo: one `skopeo copy oci-archive:<tarball> docker://R/...` per image, as a script would loop (skopeo
  reads the same tarballs; its blob-info cache is removed first);
- wsm again into the same registry: the second push, which should send no blob.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent)]

from bench_download import ROOT, SKOPEO_CACHE, build_and_push, parse_args, print_runs, timed  # noqa: E402
from servers import Registry  # noqa: E402

WSM_PUSH = """
import json, sys, time
from pathlib import Path
sys.path.insert(0, {root!r})
from wsm._bundle import Bundle
from wsm._http import TransportOptions
from wsm._push import PushOptions, image_totals, push_release
from wsm._remote import RegistryClient, RegistryOptions
from wsm._verify import verify
bundle_dir, registry, concurrency = json.loads(sys.argv[1])
started = time.monotonic()
bundle = Bundle.open(Path(bundle_dir))
verify(bundle)  # timed alone here; push_release verifies again, as `wsm push` does
verified = time.monotonic()
options = RegistryOptions(transport=TransportOptions(plain_http=True), concurrency=concurrency)
with RegistryClient(options) as client:
    report = push_release(bundle, PushOptions(registry=registry, concurrency=concurrency), client)
assert not report.failures, [job.error for job in report.failures]
done = time.monotonic()
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({{"verify": verified - started, "push": done - verified - (verified - started), "peak_kib": peak,
                  "totals": image_totals(report.images)}}))
"""


def main() -> int:
    args, layer_sizes = parse_args(__doc__)
    work = Path(tempfile.mkdtemp(prefix="wsm-bench-push-"))
    try:
        with Registry(work / "source") as source:
            refs, total = build_and_push(source, work, args.images, layer_sizes)
            bundle = make_bundle(refs, work / "bundle")
        print(f"{len(refs)} images x {len(layer_sizes)} layers, {total / 1e6:.0f} MB, {os.cpu_count()} CPUs, "
              f"{args.runs} runs each\n")
        runs: dict[str, list[dict]] = {"wsm push": [], "wsm push (second, no-op)": [], "skopeo copy oci-archive:": []}
        for turn in range(args.runs):
            with Registry(work / f"wsm-{turn}") as target:
                runs["wsm push"].append(run_wsm(bundle, target.host, args.concurrency))
                runs["wsm push (second, no-op)"].append(run_wsm(bundle, target.host, args.concurrency))
            with Registry(work / f"skopeo-{turn}") as target:
                runs["skopeo copy oci-archive:"].append(run_skopeo(bundle, target.host))
        report(runs, total)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


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
    result, out = timed(argv)
    return {**result, **json.loads(out)}


def run_skopeo(bundle: Path, registry: str) -> dict:
    shutil.rmtree(SKOPEO_CACHE, ignore_errors=True)
    lock = json.loads((bundle / "wsm.lock.json").read_text())
    started = time.monotonic()
    for index, entry in enumerate(lock["images"]):
        timed(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci-archive:{bundle / entry['file']}",
               f"docker://{registry}/bench/app{index}:1.0"])
    return {"seconds": time.monotonic() - started}


def report(runs: dict[str, list[dict]], total: int) -> None:
    print_runs(runs, total, "wsm push")
    skopeo = statistics.median(r["seconds"] for r in runs["skopeo copy oci-archive:"])
    first = runs["wsm push"]
    verify_s = statistics.median(r["verify"] for r in first)
    push_s = statistics.median(r["push"] for r in first)
    print(f"wsm push: {verify_s:.2f} s re-verifying the bundle, {push_s:.2f} s pushing "
          f"({total / 1e6 / push_s:.0f} MB/s; skopeo/wsm on the push alone {skopeo / push_s:.2f}x), "
          f"peak RSS {max(r['peak_kib'] for r in first) / 1024:.0f} MiB")
    second = runs["wsm push (second, no-op)"]
    print(f"second push: {max(r['totals']['bytes_sent'] for r in second)} bytes sent, "
          f"{max(r['totals']['blobs_sent'] for r in second)} blobs sent")


if __name__ == "__main__":
    sys.exit(main())
