"""Hostile charts and documents made by the tests, and a way to measure what `wsm` takes to refuse them."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import yaml

# Nine levels of nine aliases: 9**9 (387 million) strings from 800 bytes, as in the issue.
ALIAS_BOMB = "".join(
    [f'a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n']
    + [f"a{i}: &a{i} [{','.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 9)]
)

# Peak memory of one `wsm` child, measured by a fresh parent (RUSAGE_CHILDREN is a cumulative maximum), under
# an address-space cap so that code without budgets fails quickly instead of taking the machine.
_MEASURE = """
import json, resource, subprocess, sys
cap = 1536 * 2**20
limit = lambda: resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
done = subprocess.run([sys.executable, "-m", "wsm", *sys.argv[1:]], capture_output=True, text=True, preexec_fn=limit)
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024
print(json.dumps({"rc": done.returncode, "stdout": done.stdout, "stderr": done.stderr, "peak_mb": peak}))
"""


def measured_wsm(*args: str, cwd: Path) -> tuple[subprocess.CompletedProcess[str], int]:
    """`wsm ARGS` in a fresh process tree: its result and its peak resident memory in MiB."""
    env = {"WSM_CACHE_DIR": str(cwd / ".cache"), "PATH": "/usr/bin:/bin", "HOME": str(cwd),
           **{key: os.environ[key] for key in ("PYTHONPATH",) if key in os.environ}}
    outer = subprocess.run([sys.executable, "-c", _MEASURE, *args], capture_output=True, text=True, cwd=cwd,
                           env=env, check=True)
    data = json.loads(outer.stdout)
    result = subprocess.CompletedProcess(args, data["rc"], data["stdout"], data["stderr"])
    return result, data["peak_mb"]


def chart_tgz(name: str, values: str | bytes = "", *, version: str = "1.0.0", top: str | None = None,
              subcharts: dict[str, bytes] | None = None, extra: dict[str, bytes] | None = None,
              chart_yaml: dict | None = None) -> bytes:
    """A chart archive in memory: Chart.yaml, values.yaml, `charts/<file>` sub-chart archives, extra files."""
    metadata = chart_yaml or {"apiVersion": "v2", "name": name, "version": version}
    files = {"Chart.yaml": yaml.safe_dump(metadata).encode(),
             "values.yaml": values.encode() if isinstance(values, str) else values}
    files.update({f"charts/{file}": data for file, data in (subcharts or {}).items()})
    files.update(extra or {})
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for path, data in files.items():
            add_member(tar, f"{top or 'chart'}/{path}", data)
    return raw.getvalue()


def add_member(tar: tarfile.TarFile, name: str, data: bytes | io.RawIOBase, size: int | None = None) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data) if isinstance(data, bytes) else int(size or 0)
    tar.addfile(info, io.BytesIO(data) if isinstance(data, bytes) else data)


class Zeros(io.RawIOBase):
    """`size` zero bytes, read in chunks: a member that inflates a lot and compresses to almost nothing."""

    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        count = min(len(buffer), self.left)
        buffer[:count] = bytes(count)
        self.left -= count
        return count
