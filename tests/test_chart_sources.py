"""Charts from a real classic repository (nginx, index made by `helm repo index`), a real OCI registry
(Distribution, chart pushed by `helm push`) and the disk, through `fetch_chart` and `ChartRepository.fetch`."""

import hashlib
import re
import shutil
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

from charts import build_platform_chart, package
from servers import run_helm
from wsm import ChartError, DigestMismatch, NotFound, RegistryError
from wsm._chartrepo import (
    MAX_INDEX_BYTES,
    ClassicRepository,
    LocalRepository,
    OciRepository,
    RepoAuth,
    open_repository,
)
from wsm._fetch import ChartSource, FetchOptions, fetch_chart
from wsm._http import TransportOptions
from wsm._remote import RegistryOptions

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
    original = archive.read_bytes()
    archive.write_bytes(original + b"\0")
    with pytest.raises(DigestMismatch, match="does not match the index's digest") as refused:
        fetch_chart(ChartSource(chart="platform", version="0.3.0", repo=f"{classic_repo.url}/tampered"), FAST)
    assert refused.value.expected == "sha256:" + hashlib.sha256(original).hexdigest()
    assert refused.value.actual == "sha256:" + hashlib.sha256(original + b"\0").hexdigest()


PLAIN = RegistryOptions(transport=TransportOptions(plain_http=True, retries=1, backoff=0.01, timeout=5))


@pytest.fixture(scope="module")
def oci_charts(registry, packaged, tmp_path_factory):
    """platform 0.3.0 and 0.4.0 pushed by helm to oci://HOST/chart-sources."""
    home = tmp_path_factory.mktemp("helm")
    for version in ("0.3.0", "0.4.0"):
        run_helm(home, "push", str(packaged[version]), f"oci://{registry.host}/chart-sources", "--plain-http")
    return f"oci://{registry.host}/chart-sources"


def test_oci_registry_chart_exact_and_range(oci_charts, packaged):
    options = FetchOptions(registry_options=PLAIN)
    for constraint, expected in (("0.3.0", "0.3.0"), (">=0.3 <1", "0.4.0")):
        source = ChartSource(chart="platform", version=constraint, oci=f"{oci_charts}/platform")
        chart = fetch_chart(source, options)
        assert chart.version == expected
        assert chart.archive == packaged[expected].read_bytes()
    with pytest.raises(NotFound, match=rf"chart {oci_charts}/platform has no version matching '\^7' "
                                       r"\(newest: 0.3.0, 0.4.0\)"):
        fetch_chart(ChartSource(chart="platform", version="^7", oci=f"{oci_charts}/platform"), options)


# --- one interface, the kind chosen once from the location -------------------------------------------------------


@pytest.mark.parametrize("kind", ["classic", "oci", "local archive", "local directory"])
def test_the_factory_picks_the_kind_from_the_location(kind, classic_repo, oci_charts, packaged, tmp_path):
    """The same call on every kind of place gives the same chart; the archive byte for byte where there is one."""
    source = build_platform_chart(tmp_path)  # the directory packaged["0.3.0"] was made from
    location, expected_type, expected_archive = {
        "classic": (f"{classic_repo.url}/relative", ClassicRepository, packaged["0.3.0"].read_bytes()),
        "oci": (oci_charts, OciRepository, packaged["0.3.0"].read_bytes()),
        "local archive": (str(packaged["0.3.0"]), LocalRepository, packaged["0.3.0"].read_bytes()),
        "local directory": (str(source), LocalRepository, None),
    }[kind]
    with open_repository(location, transport=FAST.transport, auth=RepoAuth(), registry_options=PLAIN) as repository:
        assert type(repository) is expected_type
        assert repository.location == location
        fetched = repository.fetch("platform", "^0.3")
    assert (fetched.name, fetched.version, fetched.chart.version) == ("platform", "0.3.0", "0.3.0")
    assert fetched.archive == expected_archive


def test_fetch_origins_name_the_place(classic_repo, oci_charts, packaged):
    with open_repository(f"{classic_repo.url}/relative", transport=FAST.transport) as classic:
        assert classic.fetch("platform", "0.4.0").origin == f"platform-0.4.0 from {classic_repo.url}/relative"
    with open_repository(oci_charts, registry_options=PLAIN) as oci:
        assert oci.fetch("platform", "*").origin == f"{oci_charts}/platform:0.4.0"


def test_local_repository_refuses_to_publish(packaged):
    with open_repository(str(packaged["0.3.0"])) as repository:
        with pytest.raises(ChartError) as refused:
            repository.publish(packaged["0.3.0"].read_bytes(), {"name": "platform", "version": "0.3.0"})
    assert str(refused.value) == (f"{packaged['0.3.0']} is a local path, not a chart repository: charts cannot be "
                                  "published to it; give an http(s):// or oci:// repository")


def test_local_chart_outside_the_range_is_refused(packaged):
    with LocalRepository(packaged["0.3.0"]) as repository:
        with pytest.raises(ChartError, match=r"is version 0.3.0, which does not match '\^0.4'"):
            repository.fetch("platform", "^0.4")


class Files(BaseHTTPRequestHandler):
    """Serves `files` (path: bytes) and records (path, Authorization header) of every request."""

    files: dict[str, bytes] = {}
    seen: list[tuple[str, str | None]] = []

    def do_GET(self):
        self.seen.append((self.path, self.headers.get("Authorization")))
        body = self.files.get(self.path)
        self.send_response(200 if body is not None else 404)
        self.send_header("Content-Length", str(len(body or b"")))
        self.end_headers()
        self.wfile.write(body or b"")

    def log_message(self, *args):
        pass


@pytest.fixture
def file_servers():
    """Two servers on two ports (two origins), each with its own files and record of requests."""
    servers, urls = [], []
    for _ in range(2):
        handler = type("Handler", (Files,), {"files": {}, "seen": []})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        urls.append((f"http://127.0.0.1:{server.server_address[1]}", handler))
    yield urls
    for server in servers:
        server.shutdown()
        server.server_close()


def test_credentials_go_to_the_repository_origin_only(file_servers, packaged):
    """As Helm does: an index may point anywhere, and the repository's password must not follow it there."""
    (repo_url, repo), (elsewhere_url, elsewhere) = file_servers
    archive = packaged["0.3.0"].read_bytes()
    entry = {"name": "platform", "version": "0.3.0", "digest": hashlib.sha256(archive).hexdigest()}
    repo.files["/index.yaml"] = yaml.safe_dump({"apiVersion": "v1", "entries": {"platform": [
        {**entry, "urls": [f"{elsewhere_url}/platform-0.3.0.tgz"]}]}}).encode()
    elsewhere.files["/platform-0.3.0.tgz"] = archive
    with ClassicRepository(repo_url, transport=FAST.transport, auth=RepoAuth("reader", "s3cret")) as repository:
        assert repository.fetch("platform", "0.3.0").archive == archive
    assert repo.seen == [("/index.yaml", "Basic cmVhZGVyOnMzY3JldA==")]
    assert elsewhere.seen == [("/platform-0.3.0.tgz", None)]


# --- bounded reads -------------------------------------------------------------------------------------------


def test_oversized_index_is_refused_without_reading_it(helm_repo):
    """nginx announces the size; the client refuses at the headers and drops the connection."""
    huge = helm_repo.root / "huge-index"
    huge.mkdir()
    with open(huge / "index.yaml", "wb") as handle:
        handle.truncate(MAX_INDEX_BYTES + 1)  # sparse: no 64 MiB written to the disk
    url = f"{helm_repo.url}/huge-index"
    with ClassicRepository(url, transport=FAST.transport) as repository:
        with pytest.raises(ChartError) as refused:
            repository.fetch("platform", None)
    assert str(refused.value) == f"Helm repository {url}: index.yaml is larger than 64 MiB; refusing to read it"
    sent = _bytes_sent(helm_repo, "/huge-index/index.yaml")
    assert sent < MAX_INDEX_BYTES // 4, f"nginx sent {sent} bytes: the client read on"


def _bytes_sent(server, path: str) -> int:
    """nginx's `$body_bytes_sent` for the request of `path` (logged once the connection is gone)."""
    pattern = re.compile(rf'"GET {re.escape(path)} HTTP/[\d.]+" \d+ (\d+)')
    for _ in range(250):
        found = pattern.findall((server.workdir / "logs" / "access.log").read_text())
        if found:
            return int(found[-1])
        time.sleep(0.02)
    raise AssertionError(f"nginx logged no request for {path}")


class EndlessIndex(BaseHTTPRequestHandler):
    """An index.yaml that never ends (chunked, no Content-Length): only a cap enforced while streaming stops it."""

    protocol_version = "HTTP/1.1"
    written = 0

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/yaml")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        lines = b"# padding padding padding padding padding padding padding padding padding padding\n" * 800
        try:
            self._chunk(b"apiVersion: v1\n")
            while True:
                self._chunk(lines)
        except OSError:
            pass  # the client hung up

    def _chunk(self, data):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        type(self).written += len(data)

    def log_message(self, *args):
        pass


def test_endless_index_is_cut_off_at_the_cap():
    EndlessIndex.written = 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), EndlessIndex)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with ClassicRepository(url, transport=FAST.transport) as repository:
            with pytest.raises(ChartError) as refused:
                repository.fetch("platform", None)
    finally:
        server.shutdown()
        server.server_close()
    assert str(refused.value) == f"Helm repository {url}: index.yaml is larger than 64 MiB; refusing to read it"
    assert EndlessIndex.written > MAX_INDEX_BYTES  # read up to the cap, then the connection was dropped
