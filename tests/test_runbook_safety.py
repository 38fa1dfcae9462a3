"""RUNBOOK.md is pasted into a root shell: every value in its commands is quoted, so hostile chart names,
release names, namespaces, versions, URLs and bundle paths run exactly one command with exactly the expected
arguments. Run with bash and stub helm/kubectl that record their argv."""

from __future__ import annotations

from pathlib import Path

from runbook_run import command_lines, nothing_else_ran, run_lines, snapshot
from wsm._fetch import ChartSource
from wsm._install import ChartLocation, InstallFile
from wsm._manifest import ChartEntry, CustomResource, ReleaseManifest
from wsm._runbook import CheckCommand, MovedChart, MovedImage, runbook, tool_program

CHART = "shx;id>pwned;#"
RELEASE = "r$(touch pwned-release)"
NAMESPACE = "ns`touch pwned-ns`"
VERSION = "1.0.0 && touch pwned-version"
REPO = "http://charts.corp/x;touch pwned-url"
USER = "u'; touch pwned-user; echo '"
OPERATED = "op\ntouch pwned-newline"  # a newline in a name must not start a second command
FENCED = "c\n```sh\ntouch pwned-fenced\n```"  # ... nor open a code block of its own in the runbook's prose


TOOL = "tools/wsm.pyz"


def hostile_runbook(workdir: Path, repo: str, tool: str | None = None) -> tuple[str, Path]:
    bundle = workdir / "bundle $(touch pwned-dir)"
    helm = ChartEntry(name=CHART, group="g", source=ChartSource(chart=CHART), release=RELEASE,
                      namespace=NAMESPACE)
    operated = ChartEntry(name=OPERATED, group="g", source=ChartSource(chart=OPERATED), install="operator",
                          resource=CustomResource(file="cr $(touch pwned-cr).yaml", template={}))
    release = ReleaseManifest(name=f"demo; touch pwned-name {FENCED}", charts=(helm, operated), origin="test")
    locations = {CHART: ChartLocation(repo, CHART, VERSION, USER), OPERATED: ChartLocation(repo, OPERATED, VERSION, USER)}
    files = [InstallFile(CHART, bundle / "values" / f"{CHART}.yaml", "values"),
             InstallFile(OPERATED, bundle / "values" / "cr $(touch pwned-cr).yaml", "resource")]
    images = [MovedImage("docker.io/a/b:1", "sha256:" + "0" * 64, "registry.corp/a/b:1", "sent")]
    charts = [MovedChart(FENCED, VERSION, REPO, "sent")]
    check = CheckCommand(bundle.name, "registry.corp", program=tool_program(bundle, tool))
    return runbook(release, bundle, "registry.corp", locations, files, images, charts,
                   withheld=[(FENCED, FENCED)], check=check, tool=tool), bundle


def post_renderer(bundle, program: str = "wsm") -> list[str]:
    """`wsm rewrite --bundle <the bundle's directory name>` as helm's post-renderer: one argument each."""
    return ["--post-renderer", program, "--post-renderer-args", "rewrite", "--post-renderer-args", "--bundle",
            "--post-renderer-args", bundle.name]


def test_hostile_names_run_exactly_the_expected_commands(tmp_path):
    text, bundle = hostile_runbook(tmp_path, REPO)
    before = snapshot(tmp_path)
    lines = command_lines(text)
    ran = run_lines(lines, tmp_path)
    shown = f"{bundle.name}/values"
    assert ran == [
        [["helm", "repo", "add", "internal", REPO, "--username", USER]],
        [["helm", "repo", "update"]],
        [["helm", "upgrade", "--install", RELEASE, f"internal/{CHART}", "--version", VERSION, "-n", NAMESPACE,
          "--create-namespace", "-f", f"{shown}/{CHART}.yaml", *post_renderer(bundle)]],
        [["kubectl", "apply", "-f", f"{shown}/cr $(touch pwned-cr).yaml"]],
    ], text
    assert nothing_else_ran(tmp_path, before) == []


def test_oci_chart_reference_with_a_hostile_name_is_one_word(tmp_path):
    text, bundle = hostile_runbook(tmp_path, "oci://registry.corp/charts")
    ran = run_lines(command_lines(text), tmp_path)
    assert ran[0] == [["helm", "upgrade", "--install", RELEASE, f"oci://registry.corp/charts/{CHART}", "--version",
                       VERSION, "-n", NAMESPACE, "--create-namespace", "-f", f"{bundle.name}/values/{CHART}.yaml",
                       *post_renderer(bundle)]]
    assert len(ran) == 2 and ran[1][0][:3] == ["kubectl", "apply", "-f"]


def test_with_the_bundles_own_tool_the_commands_run_it_by_a_relative_path(tmp_path):
    """The offline machine may have no `wsm` on PATH: the check runs `python3 ./<bundle>/tools/wsm.pyz`, and
    helm's post-renderer is the tool itself (an executable path with a slash, which helm uses as it is)."""
    text, bundle = hostile_runbook(tmp_path, REPO, tool=TOOL)
    before = snapshot(tmp_path)
    tool = f"./{bundle.name}/{TOOL}"
    ran = run_lines(command_lines(text, ("sh", "bash")), tmp_path)
    assert ran[0] == [["python3", tool, "check", "--bundle", bundle.name, "--registry", "registry.corp"]]
    helm = [commands for commands in ran if commands and commands[0][:3] == ["helm", "upgrade", "--install"]]
    assert helm == [[["helm", "upgrade", "--install", RELEASE, f"internal/{CHART}", "--version", VERSION, "-n",
                      NAMESPACE, "--create-namespace", "-f", f"{bundle.name}/values/{CHART}.yaml",
                      *post_renderer(bundle, tool)]]]
    assert all(len(commands) == 1 for commands in ran), ran
    assert "wsm check" not in text and "--post-renderer wsm" not in text
    assert nothing_else_ran(tmp_path, before) == []
