"""Differential rendering on a chart with many sub-charts: how many `helm template` runs, and how long.

    python3 bench/bench_bind.py [--subcharts 40] [--runs 3]

The chart is synthetic: a parent whose `--subcharts` dependencies (each vendored as a .tgz, each under its own
alias) render a Deployment with an image made of registry, repository and `"v" + tag`, an image in `args`
and a hard-coded init container, so every sub-chart has several candidate values paths. Timed in process
(`bind_chart`, which runs helm as a child): the baseline render, the sentinel render(s), and the binding.
The median of `--runs` is printed with the number of renders and candidate paths.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from charts import package, write_chart  # noqa: E402
from servers import helm_binary  # noqa: E402

from wsm._bind import bind_chart  # noqa: E402
from wsm._chart import load_chart  # noqa: E402

SUB_TEMPLATE = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: {{ .Release.Name }}-{{ .Chart.Name }}-{{ .Values.component }}}
spec:
  template:
    spec:
      initContainers:
        - {name: wait, image: busybox:1.36}
      containers:
        - name: main
          image: "{{ .Values.image.registry }}/{{ .Values.image.repository }}:v{{ .Values.image.tag | default .Chart.AppVersion }}"
          args: ["--helper={{ .Values.helper.image }}"]
"""


def build(workdir: Path, count: int) -> Path:
    sub = write_chart(workdir / "src" / "svc", {"apiVersion": "v2", "name": "svc", "version": "1.0.0",
                                                "appVersion": "1.2.3"},
                      {"component": "svc", "image": {"registry": "quay.io", "repository": "acme/svc", "tag": ""},
                       "helper": {"image": "acme/helper:1.0"}},
                      {"deployment.yaml": SUB_TEMPLATE})
    aliases = [f"part{n:02d}" for n in range(count)]
    parent = write_chart(
        workdir / "big",
        {"apiVersion": "v2", "name": "big", "version": "1.0.0",
         "dependencies": [{"name": "svc", "alias": alias, "version": "1.0.0"} for alias in aliases]},
        {alias: {"component": alias, "image": {"repository": f"acme/{alias}"}} for alias in aliases},
    )
    package(sub, parent / "charts")
    return package(parent, workdir / "dist")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subcharts", type=int, default=40)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    helm = helm_binary()
    if helm is None:
        sys.exit("helm is not installed: run scripts/test-prereqs.sh")
    with tempfile.TemporaryDirectory(prefix="wsm-bench-bind-") as scratch:
        archive = build(Path(scratch), args.subcharts)
        chart = load_chart(archive)
        seconds = []
        for _ in range(args.runs):
            started = time.monotonic()
            bound = bind_chart(archive, chart, chart.values, chart_name="big", release="bench", namespace="bench",
                               helm=helm)
            seconds.append(time.monotonic() - started)
    images = {item.reference for item in bound.images}
    bindings = sum(1 for item in bound.images if item.binding)
    print(f"chart with {args.subcharts} sub-charts: {bound.candidates} candidate values paths, "
          f"{bound.renders} helm renders, {len(bound.images)} rendered references ({len(images)} images, "
          f"{bindings} bound), differential rendering {statistics.median(seconds):.2f}s "
          f"(median of {args.runs}; min {min(seconds):.2f}s, max {max(seconds):.2f}s)")


if __name__ == "__main__":
    main()
