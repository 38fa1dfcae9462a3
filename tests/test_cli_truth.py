"""The CLI says only what is true: every option a command's --help offers is in README's options tables for that
command, and every option a table lists is one the command takes.

README's convention: before each table, a line `**Options of `wsm list`, `wsm download`:**` (words may follow)
naming the commands the table's options belong to; the table's first column holds the option's spellings in backticks
(`` `-f`, `--values [CHART=]FILE` ``). A command's options may be spread over several tables (a shared group
and its own).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from charts import write_chart
from servers import helm_binary
from support import SYSTEM_PATH, one_line_error, wsm
from wsm._cli import build_parser

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: d}
spec: {template: {spec: {containers: [{name: a, image: "{{ .Values.image.repository }}:{{ .Values.image.tag }}"}]}}}
"""
README = Path(__file__).resolve().parent.parent / "README.md"
_TABLE_HEADING = re.compile(r"^\*\*Options of (.+?):\*\*")
_COMMAND = re.compile(r"`wsm ([a-z-]+)`")
_OPTION = re.compile(r"(?<![\w-])(--?[A-Za-z][\w-]*)")


def commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(actions[0].choices)


def offered(parser: argparse.ArgumentParser) -> set[str]:
    """Every option string the command takes, but --help."""
    return {option for action in parser._actions if not isinstance(action, argparse._HelpAction)
            for option in action.option_strings}


def documented() -> dict[str, set[str]]:
    """Options README's tables give each command."""
    found: dict[str, set[str]] = {}
    owners: list[str] = []
    in_table = False
    for line in README.read_text().splitlines():
        heading = _TABLE_HEADING.match(line)
        if heading:
            owners, in_table = _COMMAND.findall(heading.group(1)), False
        elif owners and line.startswith("|"):
            in_table = True
            first_cell = line.strip("|").split("|")[0]
            for command in owners:
                found.setdefault(command, set()).update(_OPTION.findall(first_cell))
        elif in_table or line.strip():  # the table ended (a blank line may stand between heading and table)
            owners, in_table = [], False
    return found


@pytest.mark.parametrize("command", sorted(commands()))
def test_every_option_of_a_command_is_in_readme_and_every_documented_option_exists(command):
    takes = offered(commands()[command])
    tables = documented().get(command, set())
    missing = sorted(takes - tables)
    assert not missing, (f"README documents no {', '.join(missing)} of `wsm {command}`: add a row to a table "
                         f"under **Options of `wsm {command}`:**")
    unknown = sorted(tables - takes)
    assert not unknown, (f"README's options tables give `wsm {command}` {', '.join(unknown)}, which "
                         f"`wsm {command} --help` does not offer: remove the row or add the option")


def test_readme_has_an_options_table_for_every_command():
    assert sorted(documented()) == sorted(commands())


# --- what the options do -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["list", "download"])
@pytest.mark.parametrize("option", ["--chart", "--manifest"])
def test_an_empty_chart_or_manifest_is_a_usage_error(command, option, tmp_path):
    bundle = ["--bundle", str(tmp_path / "b")] if command == "download" else []
    result = wsm(command, option, "", *bundle, cwd=tmp_path, offline=True)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"argument {option}: must not be empty" in result.stderr
    assert not (tmp_path / "b").exists()


def test_download_offers_no_resolve_it_always_resolves():
    assert "--resolve" not in offered(commands()["download"])


@pytest.fixture(scope="module")
def chart(tmp_path_factory):
    work = tmp_path_factory.mktemp("helm-lookup")
    return write_chart(work / "demo", {"apiVersion": "v2", "name": "demo", "version": "1.0.0"},
                       {"image": {"repository": "registry.example/acme/app", "tag": "1.0"}}, {"d.yaml": DEPLOYMENT})


def list_rendered(chart, tmp_path, *extra: str, env: dict[str, str]):
    return wsm("list", "--chart", str(chart), "--render", "-o", "plain", *extra, cwd=tmp_path, offline=True,
               env={"PATH": SYSTEM_PATH, "WSM_HELM": "", **env})


def test_helm_is_found_at_the_option_then_wsm_helm_then_path(chart, tmp_path):
    helm = helm_binary()
    assert helm, "helm is not installed: run scripts/test-prereqs.sh"
    by_option = list_rendered(chart, tmp_path, "--helm", helm, env={"WSM_HELM": str(tmp_path / "not-helm")})
    assert by_option.returncode == 0 and "registry.example/acme/app:1.0" in by_option.stdout, by_option.stderr
    by_variable = list_rendered(chart, tmp_path, env={"WSM_HELM": helm})
    assert by_variable.returncode == 0, by_variable.stderr
    by_path = list_rendered(chart, tmp_path, env={"PATH": f"{Path(helm).parent}:{SYSTEM_PATH}"})
    assert by_path.returncode == 0, by_path.stderr


def test_no_helm_names_the_option_the_variable_and_path(chart, tmp_path):
    missing = list_rendered(chart, tmp_path, env={})
    one_line_error(missing, "--helm PATH", "WSM_HELM", "PATH")
    wrong = list_rendered(chart, tmp_path, "--helm", str(tmp_path / "nothing"), env={})
    one_line_error(wrong, f"helm {tmp_path / 'nothing'} (as given) is not an executable file", "--helm")
    wrong_variable = list_rendered(chart, tmp_path, env={"WSM_HELM": str(tmp_path / "nothing")})
    one_line_error(wrong_variable, "(from WSM_HELM) is not an executable file")
