"""Running a runbook's commands as an operator pastes them, with `helm`, `kubectl` and `wsm` replaced by stubs
that record their arguments: what each line would really run, and nothing else."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

STUBBED = ("helm", "kubectl", "wsm", "python3")  # python3: the bundle's own tool runs as `python3 ./bundle/tools/wsm.pyz`
_STUB = """#!{python}
import json, os, sys
with open(os.environ["STUB_LOG"], "a") as log:
    log.write(json.dumps([os.path.basename(sys.argv[0]), *sys.argv[1:]]) + "\\n")
"""


def command_lines(runbook: str, languages: tuple[str, ...] = ("sh",)) -> list[str]:
    """Every line inside the runbook's code blocks of `languages` (```sh blocks by default)."""
    lines, inside = [], False
    for line in runbook.splitlines():
        if line.startswith("```"):
            inside = line[3:] in languages
        elif inside and line.strip():
            lines.append(line)
    return lines


def run_lines(lines: list[str], workdir: Path) -> list[list[list[str]]]:
    """Run each line alone with `bash -c` in `workdir`; for each, the argv lists of the stubbed commands it ran."""
    stubs = workdir / "stub-bin"
    stubs.mkdir(parents=True, exist_ok=True)
    for name in STUBBED:
        stub = stubs / name
        stub.write_text(_STUB.format(python=sys.executable))
        stub.chmod(0o755)
    ran = []
    for number, line in enumerate(lines):
        log = workdir / f"stub-{number}.jsonl"
        environment = {"PATH": f"{stubs}:/usr/bin:/bin", "STUB_LOG": str(log), "HOME": str(workdir)}
        subprocess.run(["bash", "-c", line], cwd=workdir, env=environment, check=True, timeout=60,
                       stdin=subprocess.DEVNULL, capture_output=True)
        ran.append([json.loads(entry) for entry in log.read_text().splitlines()] if log.exists() else [])
    return ran


def nothing_else_ran(workdir: Path, before: set[str]) -> list[str]:
    """Files that appeared in `workdir` other than the stubs' logs: what an injected command would leave."""
    now = {str(path.relative_to(workdir)) for path in workdir.rglob("*")}
    return sorted(name for name in now - before if not name.startswith("stub-"))


def snapshot(workdir: Path) -> set[str]:
    return {str(path.relative_to(workdir)) for path in workdir.rglob("*")} if workdir.exists() else set()

