"""Publishing charts to classic Helm repositories: nginx with PUT (a real server), read back by a real helm."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

from charts import build_platform_chart, package
from servers import HelmRepo, run_helm
from wsm import ChartError, RegistryError
from wsm._chart import load_chart
from wsm._helmrepo import RepoAuth, publish_chart
from wsm._http import TransportOptions

FAST = TransportOptions(retries=1, backoff=0.01, timeout=10)
AUTH = RepoAuth("pusher", "s3cret")


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    return package(build_platform_chart(tmp_path_factory.mktemp("src")), tmp_path_factory.mktemp("pkg"))


@pytest.fixture
def guarded_repo(tmp_path):
    with HelmRepo(tmp_path / "nginx", auth=("pusher", "s3cret")) as server:
        yield server


def test_put_repository_round_trip_with_helm(guarded_repo, archive, tmp_path):
    # An entry already there must survive the merge.
    (guarded_repo.root / "index.yaml").write_text(yaml.safe_dump(
        {"apiVersion": "v1", "entries": {"other": [{"name": "other", "version": "1.0.0", "urls": ["other-1.0.0.tgz"]}]}}))
    chart = load_chart(archive)
    first = publish_chart(guarded_repo.url, archive.read_bytes(), chart.metadata, FAST, AUTH)
    assert first.sent and first.url == f"{guarded_repo.url}/platform-0.3.0.tgz"
    index = yaml.safe_load((guarded_repo.root / "index.yaml").read_text())
    assert set(index["entries"]) == {"other", "platform"}
    home = tmp_path / "helm"
    run_helm(home, "repo", "add", "internal", guarded_repo.url)
    (tmp_path / "pulled").mkdir()
    run_helm(home, "pull", "internal/platform", "--version", "0.3.0", "--destination", str(tmp_path / "pulled"))
    assert (tmp_path / "pulled" / "platform-0.3.0.tgz").read_bytes() == archive.read_bytes()
    again = publish_chart(guarded_repo.url, archive.read_bytes(), chart.metadata, FAST, AUTH)
    assert not again.sent


def test_put_without_credentials_is_refused_clearly(guarded_repo, archive):
    chart = load_chart(archive)
    with pytest.raises(RegistryError, match="access refused \\(401\\); check the username and password"):
        publish_chart(guarded_repo.url, archive.read_bytes(), chart.metadata, FAST)


def test_same_version_other_content_is_a_conflict(guarded_repo, archive):
    chart = load_chart(archive)
    publish_chart(guarded_repo.url, archive.read_bytes(), chart.metadata, FAST, AUTH)
    with pytest.raises(ChartError, match="already has platform 0.3.0 with digest"):
        publish_chart(guarded_repo.url, archive.read_bytes() + b"\0", chart.metadata, FAST, AUTH)


class ChartMuseumAPI(BaseHTTPRequestHandler):
    """Only the upload path of ChartMuseum's API (no ChartMuseum binary is installable here)."""

    uploads: list[bytes] = []

    def do_GET(self):
        if self.path == "/api/charts":
            self._answer(200, json.dumps({}).encode(), "application/json")
        else:
            self._answer(404, b"not found", "text/plain")

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
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


def test_chartmuseum_api_is_detected_and_used(archive):
    server = ThreadingHTTPServer(("127.0.0.1", 0), ChartMuseumAPI)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        published = publish_chart(url, archive.read_bytes(), load_chart(archive).metadata, FAST)
        assert published.sent and ChartMuseumAPI.uploads == [archive.read_bytes()]
    finally:
        server.shutdown()
        server.server_close()


def test_oci_chart_push_is_what_helm_pulls(registry, archive, tmp_path, plain_client):
    from wsm._helmoci import push_chart

    chart = load_chart(archive)
    repo = f"oci://{registry.host}/published-charts"
    first = push_chart(plain_client, repo, archive.read_bytes(), chart.metadata)
    assert first.sent and first.url == f"oci://{registry.host}/published-charts/platform:0.3.0"
    assert not push_chart(plain_client, repo, archive.read_bytes(), chart.metadata).sent
    out = tmp_path / "pulled"
    out.mkdir()
    run_helm(tmp_path / "helm", "pull", f"{repo}/platform", "--version", "0.3.0", "--plain-http", "--destination", str(out))
    assert (out / "platform-0.3.0.tgz").read_bytes() == archive.read_bytes()
    with pytest.raises(ChartError, match="already holds another archive"):
        push_chart(plain_client, repo, archive.read_bytes() + b"\0", chart.metadata)
