"""Helpers every test module shares: running the `wsm` command, and running skopeo (a client we did not write)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

# Every proxy variable pointed at a port nothing listens on: a command run with `offline=True` that tried to
# reach a server would fail, which proves it needs no network.
_DEAD_PROXY = "http://127.0.0.1:9"
# The chart cache of commands run without a working directory of their own: never the user's, never the checkout.
_SHARED_CACHE = Path(tempfile.gettempdir()) / f"wsm-test-cache-{os.getpid()}"


def wsm(
    *args: str, stdin: str = "", cwd: Path | None = None, offline: bool = False, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`wsm ARGS` in a child process, as an operator runs it; its chart cache stays under `cwd` when given."""
    cache = Path(cwd).resolve() / ".cache" if cwd else _SHARED_CACHE
    environment = {**os.environ, "WSM_CACHE_DIR": str(cache), **(env or {})}
    if offline:
        environment.update(HTTPS_PROXY=_DEAD_PROXY, HTTP_PROXY=_DEAD_PROXY, ALL_PROXY=_DEAD_PROXY)
    return subprocess.run(
        [sys.executable, "-m", "wsm", *args], capture_output=True, text=True, input=stdin, env=environment, cwd=cwd
    )


# Runs `wsm ARGV` as its own child and writes that child's peak RSS (KiB) to $WSM_TEST_RSS_FILE. A process
# forked from pytest starts with pytest's pages counted in its high-water mark, which survives exec; forked
# from this small launcher, wsm's own peak is what gets measured.
_MEASURING_LAUNCHER = """
import os, subprocess, sys
child = subprocess.Popen([sys.executable, "-m", "wsm", *sys.argv[1:]])
_, status, usage = os.wait4(child.pid, 0)
with open(os.environ["WSM_TEST_RSS_FILE"], "w") as out:
    out.write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def wsm_measured(*args: str, cwd: Path) -> tuple[subprocess.CompletedProcess[str], int]:
    """`wsm ARGS` as `wsm()` runs it, and its peak resident memory in bytes (from wait4's rusage)."""
    rss_file = Path(cwd) / ".wsm-peak-rss"
    environment = {**os.environ, "WSM_CACHE_DIR": str(Path(cwd).resolve() / ".cache"),
                   "WSM_TEST_RSS_FILE": str(rss_file)}
    result = subprocess.run([sys.executable, "-c", _MEASURING_LAUNCHER, *args], capture_output=True, text=True,
                            env=environment, cwd=cwd)
    return result, int(rss_file.read_text()) * 1024  # Linux reports KiB


def one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    """The command failed with exit code 1 and one line naming the problem, no traceback."""
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in result.stdout + result.stderr


def skopeo(*args: str) -> bytes:
    """skopeo's standard output; a failure raises with its stderr."""
    result = subprocess.run(["skopeo", *args], capture_output=True)
    if result.returncode != 0:
        raise AssertionError(f"skopeo {' '.join(args)} failed: {result.stderr.decode(errors='replace')}")
    return result.stdout


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()
