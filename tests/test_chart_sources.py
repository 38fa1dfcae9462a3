"""Charts from a real classic repository (nginx, index made by `helm repo index`) and a real OCI registry
(Distribution, chart pushed by `helm push`)."""

import hashlib
import shutil

import pytest
import yaml

from charts import build_platform_chart, package
from servers import run_helm
from wsm import ChartError, NotFound, RegistryError
from wsm._fetch import ChartSource, FetchOptions, fetch_chart
from wsm._http import TransportOptions

FAST = FetchOptions(transport=TransportOptions(retries=1, backoff=0.01, timeout=5))


@pytest.fixture(scope="module")
def packaged(tmp_path_factory):
    """platform 0.3.0 and 0.4.0 (and 0.5.0-rc.1) as .tgz files."""
    out = tmp_path_factory.mktemp("packages")
    archives = {}
    for version in ("0.3.0", "0.4.0", "0.5.0-rc.1"):
        chart = build_platform_chart(tmp_path_factory.mktemp(f"src-{version}"), version=version)
        archives[version] = package(chart, out)
    return archives


@pytest.fixture(scope="module")
def classic_repo(helm_repo, packaged, tmp_path_factory):
    """Two repositories on nginx: one with relative chart URLs, one whose index gives absolute URLs elsewhere."""
    relative = helm_repo.root / "relative"
    relative.mkdir()
    for archive in packaged.values():
        shutil.copy(archive, relative)
    home = tmp_path_factory.mktemp("helm")
    run_helm(home, "repo", "index", str(relative))
    absolute = helm_repo.root / "absolute"
    absolute.mkdir()
    index = yaml.safe_load((relative / "index.yaml").read_text())
    for entries in index["entries"].values():
        for entry in entries:
            entry["urls"] = [f"{helm_repo.url}/relative/{entry['urls'][0]}"]
    (absolute / "index.yaml").write_text(yaml.safe_dump(index))
    return helm_repo


@pytest.mark.parametrize(
    "constraint,expected", [("0.3.0", "0.3.0"), ("^0.3", "0.3.0"), (">=0.3", "0.4.0"), ("~0.3.0", "0.3.0"), (">=0.5.0-0", "0.5.0-rc.1")]
)
@pytest.mark.parametrize("layout", ["relative", "absolute"])
def test_classic_repository_picks_the_highest_matching_version(classic_repo, packaged, layout, constraint, expected):
    source = ChartSource(chart="platform", version=constraint, repo=f"{classic_repo.url}/{layout}")
    chart = fetch_chart(source, FAST)
    assert chart.version == expected
    assert chart.archive == packaged[expected].read_bytes()  # byte for byte as served
    assert chart.digest == "sha256:" + hashlib.sha256(chart.archive).hexdigest()


def test_unknown_version_names_the_newest(classic_repo):
    source = ChartSource(chart="platform", version="9.9.9", repo=f"{classic_repo.url}/relative")
    with pytest.raises(NotFound, match=r"no version matching '9.9.9'.*0\.4\.0"):
        fetch_chart(source, FAST)


def test_missing_chart(classic_repo):
    with pytest.raises(NotFound, match="chart 'nothere' is not in Helm repository"):
        fetch_chart(ChartSource(chart="nothere", version="1.0.0", repo=f"{classic_repo.url}/relative"), FAST)


def test_no_repository_at_the_url(classic_repo):
    with pytest.raises(NotFound, match="index.yaml.*not found"):
        fetch_chart(ChartSource(chart="platform", version="*", repo=f"{classic_repo.url}/nowhere"), FAST)


def test_unreachable_repository():
    from servers import free_port

    source = ChartSource(chart="platform", version="*", repo=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(RegistryError, match="Helm repository http://127.0.0.1:\\d+: .*attempts"):
        fetch_chart(source, FAST)


def test_tampered_archive_is_refused(classic_repo, packaged):
    tampered = classic_repo.root / "tampered"
    shutil.copytree(classic_repo.root / "relative", tampered)
    archive = tampered / packaged["0.3.0"].name
    archive.write_bytes(archive.read_bytes() + b"\0")
    with pytest.raises(ChartError, match="does not match the index's digest"):
        fetch_chart(ChartSource(chart="platform", version="0.3.0", repo=f"{classic_repo.url}/tampered"), FAST)


def test_oci_registry_chart_exact_and_range(registry, packaged, tmp_path):
    home = tmp_path / "helm"
    for version in ("0.3.0", "0.4.0"):
        run_helm(home, "push", str(packaged[version]), f"oci://{registry.host}/charts", "--plain-http")
    from wsm._remote import RegistryOptions

    options = FetchOptions(registry_options=RegistryOptions(transport=TransportOptions(plain_http=True)))
    for constraint, expected in (("0.3.0", "0.3.0"), (">=0.3 <1", "0.4.0")):
        source = ChartSource(chart="platform", version=constraint, oci=f"oci://{registry.host}/charts/platform")
        chart = fetch_chart(source, options)
        assert chart.version == expected
        assert chart.archive == packaged[expected].read_bytes()
    with pytest.raises(NotFound):
        fetch_chart(ChartSource(chart="platform", version="^7", oci=f"oci://{registry.host}/charts/platform"), options)
