"""Chart archives from servers we do not control are read safely."""

import gzip
import io
import tarfile

import pytest

from charts import malicious_tgz
from wsm import ChartError, UnsafeArchive
from wsm._archive import read_tgz
from wsm._chart import load_chart


@pytest.mark.parametrize(
    "member,link,fault",
    [
        ("/etc/evil", None, "absolute path"),
        ("evil/../../escape", None, "points outside"),
        ("evil/link", "../../../etc/passwd", "leaves the archive"),
        ("evil/abs-link", "/etc/passwd", "leaves the archive"),
    ],
)
def test_hostile_members_are_refused(tmp_path, member, link, fault):
    archive = malicious_tgz(tmp_path / "evil.tgz", member, link_target=link)
    with pytest.raises(UnsafeArchive) as caught:
        load_chart(archive)
    assert fault in str(caught.value) and str(archive) in str(caught.value)


def test_link_inside_the_archive_is_fine(tmp_path):
    archive = malicious_tgz(tmp_path / "ok.tgz", "evil/values-link.yaml", link_target="Chart.yaml")
    assert load_chart(archive).name == "evil"


def test_compression_bomb_stops_at_the_limit(tmp_path):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for i in range(4):
            info = tarfile.TarInfo(f"bomb/zeros-{i}")
            info.size = 1024 * 1024
            tar.addfile(info, io.BytesIO(b"\0" * info.size))
    data = gzip.compress(raw.getvalue())
    assert len(data) < 64 * 1024  # small on the wire
    with pytest.raises(UnsafeArchive, match="inflates past"):
        read_tgz(data, "bomb.tgz", limit=2 * 1024 * 1024)


def test_device_file_is_refused(tmp_path):
    path = tmp_path / "dev.tgz"
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("evil/null")
        info.type = tarfile.CHRTYPE
        tar.addfile(info)
    with pytest.raises(UnsafeArchive, match="device or special file"):
        load_chart(path)


def test_not_an_archive(tmp_path):
    path = tmp_path / "junk.tgz"
    path.write_bytes(b"this is not gzip")
    with pytest.raises(UnsafeArchive, match="not a readable .tgz"):
        load_chart(path)


def test_archive_without_chart_yaml(tmp_path):
    path = tmp_path / "empty.tgz"
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("thing/README")
        tar.addfile(info, io.BytesIO(b""))
    with pytest.raises(ChartError, match="no Chart.yaml"):
        load_chart(path)
