"""Publishing charts through `ChartRepository.publish`: nginx with PUT (a real server) and a real registry, read
back by a real helm; ChartMuseum's upload API in-process (no ChartMuseum binary is installable here)."""

import json
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

from charts import build_platform_chart, package
from servers import HelmRepo, run_helm
from wsm import AuthError, ChartError, Reference, RegistryError
from wsm._chart import load_chart
from wsm._chartrepo import ClassicRepository, OciRepository, RepoAuth, open_repository
from wsm._http import TransportOptions

FAST = TransportOptions(retries=1, backoff=0.01, timeout=10)
AUTH = RepoAuth("pusher", "s3cret")


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    return package(build_platform_chart(tmp_path_factory.mktemp("src")), tmp_path_factory.mktemp("pkg"))


@pytest.fixture(scope="module")
def archive_040(tmp_path_factory):
    return package(build_platform_chart(tmp_path_factory.mktemp("src"), version="0.4.0"),
                   tmp_path_factory.mktemp("pkg"))


@pytest.fixture
def guarded_repo(tmp_path):
    with HelmRepo(tmp_path / "nginx", auth=("pusher", "s3cret")) as server:
        yield server


def publish(url, archive, auth=AUTH, **options):
    with ClassicRepository(url, transport=FAST, auth=auth, **options) as repository:
        return repository.publish(archive.read_bytes(), load_chart(archive).metadata)


def test_put_repository_round_trip_with_helm(guarded_repo, archive, tmp_path):
    # An entry already there must survive the merge.
    (guarded_repo.root / "index.yaml").write_text(yaml.safe_dump(
        {"apiVersion": "v1", "entries": {"other": [{"name": "other", "version": "1.0.0", "urls": ["other-1.0.0.tgz"]}]}}))
    first = publish(guarded_repo.url, archive)
    assert first.sent and first.url == f"{guarded_repo.url}/platform-0.3.0.tgz"
    index = yaml.safe_load((guarded_repo.root / "index.yaml").read_text())
    assert set(index["entries"]) == {"other", "platform"}
    home = tmp_path / "helm"
    run_helm(home, "repo", "add", "internal", guarded_repo.url)
    (tmp_path / "pulled").mkdir()
    run_helm(home, "pull", "internal/platform", "--version", "0.3.0", "--destination", str(tmp_path / "pulled"))
    assert (tmp_path / "pulled" / "platform-0.3.0.tgz").read_bytes() == archive.read_bytes()
    again = publish(guarded_repo.url, archive)
    assert not again.sent


def test_put_without_credentials_is_refused_clearly(guarded_repo, archive):
    with pytest.raises(AuthError) as refused:
        publish(guarded_repo.url, archive, auth=RepoAuth())
    assert str(refused.value) == (f"upload of platform-0.3.0.tgz to {guarded_repo.url}: access refused (401); "
                                  "check the username and password")
    assert refused.value.status == 401


def test_same_version_other_content_is_a_conflict(guarded_repo, archive):
    publish(guarded_repo.url, archive)
    digest = yaml.safe_load((guarded_repo.root / "index.yaml").read_text())["entries"]["platform"][0]["digest"]
    with ClassicRepository(guarded_repo.url, transport=FAST, auth=AUTH) as repository:
        with pytest.raises(ChartError, match=f"already has platform 0.3.0 with digest {digest}, "
                                             "not sha256:[0-9a-f]{64}; a chart version is immutable"):
            repository.publish(archive.read_bytes() + b"\0", load_chart(archive).metadata)


class ConnectionCounter:
    """A TCP relay in front of a server that counts the connections clients open through it."""

    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self.accepted = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            self.accepted += 1
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source, sink):
        try:
            while data := source.recv(65536):
                sink.sendall(data)
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self):
        self._listener.close()


def access_log(server: HelmRepo, prefix: str, count: int) -> list[tuple[str, str, int]]:
    """(method, path, status) of the nginx access log lines for paths under `prefix`, once `count` are there."""
    pattern = re.compile(r'"(\w+) (/\S*) HTTP/[\d.]+" (\d+) ')
    for _ in range(100):
        lines = (server.workdir / "logs" / "access.log").read_text().splitlines()
        found = [(m[1], m[2], int(m[3])) for m in map(pattern.search, lines) if m and m[2].startswith(prefix)]
        if len(found) >= count:
            return found
        time.sleep(0.02)
    return found


def test_one_repository_object_uses_one_connection(helm_repo, archive, archive_040):
    """Two publishes and two fetches: 13 requests to nginx, all over the one TCP connection of the client."""
    relay = ConnectionCounter(helm_repo.port)
    try:
        with open_repository(f"http://127.0.0.1:{relay.port}/reuse", transport=FAST) as repository:
            assert isinstance(repository, ClassicRepository)
            for item in (archive, archive_040):
                assert repository.publish(item.read_bytes(), load_chart(item).metadata).sent
            fetched = [repository.fetch("platform", version) for version in ("0.3.0", "0.4.0")]
    finally:
        relay.close()
    assert [f.archive for f in fetched] == [archive.read_bytes(), archive_040.read_bytes()]
    assert relay.accepted == 1
    first_publish = [("GET", "/reuse/index.yaml", 404), ("GET", "/reuse/api/charts", 404),  # detected once
                     ("PUT", "/reuse/platform-0.3.0.tgz", 201), ("GET", "/reuse/index.yaml", 404),
                     ("PUT", "/reuse/index.yaml", 201)]
    second_publish = [("GET", "/reuse/index.yaml", 200), ("PUT", "/reuse/platform-0.4.0.tgz", 201),
                      ("GET", "/reuse/index.yaml", 200), ("PUT", "/reuse/index.yaml", 204)]
    fetches = [("GET", "/reuse/index.yaml", 200), ("GET", "/reuse/platform-0.3.0.tgz", 200),
               ("GET", "/reuse/index.yaml", 200), ("GET", "/reuse/platform-0.4.0.tgz", 200)]
    assert access_log(helm_repo, "/reuse/", 13) == first_publish + second_publish + fetches


class ChartMuseumAPI(BaseHTTPRequestHandler):
    """ChartMuseum's upload path (`POST /api/charts`) and its listing, as the detection reads it."""

    uploads: list[bytes] = []
    listings = 0

    def do_GET(self):
        if self.path == "/api/charts":
            type(self).listings += 1
            self._answer(200, json.dumps({}).encode(), "application/json")
        else:
            self._answer(404, b"not found", "text/plain")

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if body in self.uploads:
            self._answer(409, b'{"error":"file already exists"}', "application/json")
            return
        self.uploads.append(body)
        self._answer(201, b'{"saved":true}', "application/json")

    def _answer(self, status, body, content_type):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def chartmuseum():
    ChartMuseumAPI.uploads, ChartMuseumAPI.listings = [], 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), ChartMuseumAPI)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_chartmuseum_api_is_detected_once_per_repository(chartmuseum, archive, archive_040):
    with ClassicRepository(chartmuseum, transport=FAST) as repository:
        sent = [repository.publish(a.read_bytes(), load_chart(a).metadata) for a in (archive, archive_040)]
    assert [p.sent for p in sent] == [True, True]
    assert ChartMuseumAPI.uploads == [archive.read_bytes(), archive_040.read_bytes()]
    assert ChartMuseumAPI.listings == 1


def test_chartmuseum_refusal_carries_its_reason_and_status(chartmuseum, archive):
    ChartMuseumAPI.uploads.append(archive.read_bytes())  # the index is empty, but ChartMuseum has the file
    with pytest.raises(RegistryError) as refused:
        publish(chartmuseum, archive, repo_type="chartmuseum")
    assert str(refused.value) == (f"upload of platform-0.3.0.tgz to {chartmuseum}: server answered 409 "
                                  "(file already exists)")
    assert refused.value.status == 409
    assert ChartMuseumAPI.listings == 0  # the type was given: nothing to detect


def test_oci_chart_push_is_what_helm_pulls(registry, archive, tmp_path, plain_client):
    chart = load_chart(archive)
    repo = f"oci://{registry.host}/published-charts"
    with open_repository(repo, registry_client=plain_client) as repository:
        assert isinstance(repository, OciRepository)
        first = repository.publish(archive.read_bytes(), chart.metadata)
        assert first.sent and first.url == f"oci://{registry.host}/published-charts/platform:0.3.0"
        assert not repository.publish(archive.read_bytes(), chart.metadata).sent
        with pytest.raises(ChartError, match="already holds another archive for platform 0.3.0; "
                                             "a chart version is immutable"):
            repository.publish(archive.read_bytes() + b"\0", chart.metadata)
    # The client passed in is the caller's: the repository did not close it.
    assert plain_client.head_manifest(Reference.parse(f"{registry.host}/published-charts/platform:0.3.0")) is not None
    out = tmp_path / "pulled"
    out.mkdir()
    run_helm(tmp_path / "helm", "pull", f"{repo}/platform", "--version", "0.3.0", "--plain-http", "--destination", str(out))
    assert (out / "platform-0.3.0.tgz").read_bytes() == archive.read_bytes()
