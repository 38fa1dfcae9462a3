"""`download --chart DIR`: the directory packaged as `helm package` lays it out, the same bytes every time."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

from charts import write_chart
from servers import run_helm
from support import sha256, wsm
from wsm._package import package_directory

CONFIGMAP = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: {{ .Release.Name }}-c}\ndata: {a: {{ .Values.a | quote }}}\n"


def chart_dir(root: Path) -> Path:
    chart = write_chart(root / "c", {"apiVersion": "v2", "name": "c", "version": "0.1.0"}, {"a": 1},
                        {"cm.yaml": CONFIGMAP})
    (chart / "docs").mkdir()
    (chart / "docs" / "readme.md").write_text("not packaged\n")
    (chart / "notes.bak").write_text("not packaged\n")
    (chart / "templates" / "NOTES.txt").write_text("installed\n")
    (chart / ".helmignore").write_text("# editor files\n*.bak\ndocs/\n")
    return chart


def members(data: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return tar.getnames()


def test_a_directory_packages_as_helm_does_with_the_same_bytes_every_time(tmp_path):
    chart = chart_dir(tmp_path)
    first = package_directory(chart, "c")
    (chart / "templates" / "cm.yaml").touch()  # a newer time changes nothing
    assert package_directory(chart, "c") == first
    run_helm(tmp_path / "helm", "package", str(chart), "-d", str(tmp_path / "by-helm"))
    by_helm = (tmp_path / "by-helm" / "c-0.1.0.tgz").read_bytes()
    assert sorted(members(first)) == sorted(members(by_helm))
    assert members(first)[:2] == ["c/Chart.yaml", "c/values.yaml"]
    (tmp_path / "ours.tgz").write_bytes(first)
    rendered = run_helm(tmp_path / "helm", "template", "r", str(tmp_path / "ours.tgz")).stdout
    assert 'a: "1"' in rendered


def test_download_of_a_chart_directory_carries_its_package(tmp_path):
    chart = chart_dir(tmp_path)
    bundle = tmp_path / "bundle"
    result = wsm("download", "--chart", str(chart), "--bundle", str(bundle), "-o", "json", offline=True)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert [c["status"] for c in report["charts"]] == ["ok"]
    packaged = (bundle / "charts" / "c-0.1.0.tgz").read_bytes()
    assert packaged == package_directory(chart, "c")
    lock = json.loads((bundle / "wsm.lock.json").read_text())
    assert lock["charts"][0]["digest"] == sha256(packaged)
    assert wsm("verify", str(bundle)).returncode == 0
