"""The typed bundle lock: old lock files read back exactly, and a damaged or hostile one fails in one line."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from wsm._exceptions import BundleError
from wsm._lock import BundleLock, Kept
from wsm._reference import Reference
from wsm._remote import Descriptor, Platform

FIXTURES = Path(__file__).parent / "fixtures"


def legacy_lock(name: str) -> dict:
    return json.loads((FIXTURES / name / "wsm.lock.json").read_text())


@pytest.mark.parametrize("name", ["legacy-release", "legacy-chart"])
def test_a_lock_written_before_the_typed_lock_reads_back_to_the_same_json(name):
    data = legacy_lock(name)
    lock = BundleLock.from_dict(data, name)
    assert lock.to_dict() == data
    assert json.loads(lock.to_json()) == data


def test_lock_fields_are_typed():
    lock = BundleLock.from_dict(legacy_lock("legacy-release"), "lock")
    assert lock.platforms == (Platform("linux", "amd64"), Platform("linux", "arm64"))
    multi = lock.images["docker.io/acme/multi:2.0"]
    assert multi.reference == Reference.parse("acme/multi:2.0")
    assert multi.kept is Kept.SUBSET_INDEX and multi.top.digest != multi.digest
    assert isinstance(multi.top, Descriptor) and all(isinstance(blob, Descriptor) for blob in multi.blobs)
    assert {str(m.platform) for m in multi.manifests} == {"linux/amd64", "linux/arm64"}
    assert multi.resolved.reference == multi.reference and multi.resolved.group == "Extras"
    redis = lock.images["docker.io/bitnami/redis:7.2.4-debian-12-r9"]
    assert [(s.chart, s.path) for s in redis.resolved.sources][0] == ("platform/redis", "redis.image")
    chart_lock = BundleLock.from_dict(legacy_lock("legacy-chart"), "lock")
    (only,) = chart_lock.images.values()
    assert only.kept is Kept.PLATFORM and only.top.platform == Platform("linux", "amd64")
    assert chart_lock.manifest is None and [c.name for c in chart_lock.release_charts()] == ["operator"]


def test_select_finds_images_by_reference_familiar_name_or_file():
    lock = BundleLock.from_dict(legacy_lock("legacy-release"), "lock")
    by_familiar = lock.select(["acme/pair:1.0"])
    by_file = lock.select(["docker.io_acme_pair_1.0.tar"])
    assert [e.key for e in by_familiar] == [e.key for e in by_file] == ["docker.io/acme/pair:1.0"]
    with pytest.raises(BundleError, match="image 'acme/none:1' is not in the bundle"):
        lock.select(["acme/none:1"])


def broken(mutate) -> str:
    data = copy.deepcopy(legacy_lock("legacy-release"))
    mutate(data)
    with pytest.raises(BundleError) as caught:
        BundleLock.from_dict(data, "wsm.lock.json")
    message = str(caught.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("path", ["../../x.tar", "/etc/passwd", "images/../../x.tar", "charts/x.tar", "images/a/b.tar",
                                  "images/./x.tar", "images\\..\\x.tar"])
def test_a_file_entry_that_leaves_its_directory_is_refused(path):
    message = broken(lambda data: data["images"][0].update(file=path))
    assert message == (f"wsm.lock.json: images[0].file: {path!r} is not a file directly under images/; "
                       "the lock file was edited or damaged")


def test_a_chart_file_outside_charts_is_refused():
    assert "charts[0].file: '../c.tgz' is not a file directly under charts/" in broken(
        lambda data: data["charts"][0].update(file="../c.tgz"))


@pytest.mark.parametrize("key,value,fragment", [
    ("kept", "most", "images[0].kept: 'most' is not one of as-is, platform, subset-index"),
    ("image", "Not A/Reference", "images[0].image: invalid image reference"),
    ("file_size", "12", "images[0].file_size: expected int, found str"),
    ("file_size", True, "images[0].file_size: expected int, found bool"),
    ("digest", "md5:abc", "images[0].digest: 'md5:abc' is not a digest"),
    ("platforms", ["amd64"], "images[0].platforms: invalid platform 'amd64'"),
    ("top", [], "images[0].top: expected dict, found list"),
])
def test_a_mistyped_entry_names_its_key(key, value, fragment):
    assert fragment in broken(lambda data: data["images"][0].update({key: value}))


def test_a_blob_without_a_digest_is_named():
    assert "images[0].blobs[1].digest: is missing" in broken(lambda data: data["images"][0]["blobs"][1].pop("digest"))
