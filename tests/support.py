"""Helpers every test module shares: running the `wsm` command, and running skopeo (a client we did not write)."""

from __future__ import annotations

import hashlib
import os
import re
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


# --- the bundle's own tool (tools/wsm.pyz), run as a site runs it ---------------------------------------------------

SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"  # a stock machine's PATH: no pyenv, no venv, no wsm
DEBIAN_PYTHON = Path("/usr/bin/python3")


def tool_interpreters() -> list[Path]:
    """The interpreters the tool must run on here: Debian's own and the one this venv was made from (pyenv's)."""
    found = [DEBIAN_PYTHON, Path(sys.base_prefix) / "bin" / "python3"]
    unique = {path.resolve(): path for path in found if path.exists()}
    return list(unique.values())


def supported_interpreters() -> list[Path]:
    """Every CPython 3.10 or newer pyenv has here, beside tool_interpreters(): the range README promises."""
    found = sorted(Path.home().glob(".pyenv/versions/3.*/bin/python3"))
    wanted = [path for path in found if re.fullmatch(r"3\.(1[0-9])\.[0-9]+", path.parent.parent.name)]
    return [path for path in wanted if path.resolve() not in {p.resolve() for p in tool_interpreters()}]


def tool_command(python: Path, pyz: Path, *, site: bool = False) -> list[str]:
    """`python -I -S pyz`: -I drops the working directory and PYTHON* variables from the path, -S every
    site-packages directory, so only the archive's modules load; `site`: `python -I pyz`, as README has it."""
    return [str(python), "-I", *([] if site else ["-S"]), str(pyz)]


def run_tool(
    python: Path, pyz: Path, *args: str, cwd: Path, stdin: str = "", env: dict[str, str] | None = None,
    site: bool = False,
) -> subprocess.CompletedProcess[str]:
    """The bundle's tool run with a system PATH and nothing of this checkout (see tool_command)."""
    environment = {"PATH": SYSTEM_PATH, "HOME": str(cwd), "WSM_CACHE_DIR": str(cwd / ".cache"), **(env or {})}
    return subprocess.run([*tool_command(python, pyz, site=site), *args], capture_output=True, text=True,
                          input=stdin, env=environment, cwd=cwd)
