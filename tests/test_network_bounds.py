"""Bounded reads, bounded loops and fast failures against hostile or absent servers (issue 8 cases 2 and 7,
issue 11 item 3): real Distribution registries and token services behind the fault proxy (tests/faults.py)."""

from __future__ import annotations

import socket
import threading

import pytest
from charts import package, write_chart
from faults import FaultProxy
from images import make_image
from remote_support import client, isolated_credentials, ref, transport, unique  # noqa: F401
from servers import Registry, free_port
from support import one_line_error, wsm, wsm_measured
from tokenserver import TokenServer

from wsm import AuthError, RegistryError
from wsm._chartrepo import ClassicRepository
from wsm._remote import OCI_MANIFEST

MEMORY_CEILING = 200 * 1024 * 1024


@pytest.fixture(scope="module")
def small_image(registry, tmp_path_factory):
    repository = unique("bounds/app")
    built = make_image(registry, repository, tmp_path_factory.mktemp("bounds"), platforms=("linux/amd64",),
                       layer_sizes=(200_000,), incompressible=True)
    with client() as c:
        manifest = c.get_manifest(ref(registry.host, repository))
    return repository, built, max(manifest.layers(), key=lambda d: d.size)


# -- bounded reads -----------------------------------------------------------------------------------------


def test_an_endless_error_body_is_not_read(registry, small_image, tmp_path):
    """A 404 whose body runs on (512 MiB here): the message needs a few KiB, and memory stays flat."""
    repository, _, _ = small_image
    with FaultProxy(registry.url, flood=(r"/manifests/", 404, "application/json")) as proxy:
        result, peak = wsm_measured("list", "--chart", f"oci://{proxy.host}/{repository}", "--version", "1.0",
                                    "--plain-http", cwd=tmp_path)
        sent = proxy.flood_sent
    one_line_error(result, "not found")
    assert peak < MEMORY_CEILING, f"wsm peaked at {peak // 2**20} MiB"
    assert sent < proxy.flood_limit // 8, f"wsm read {sent} bytes of an error body"


def test_an_endless_manifest_is_refused_at_distributions_limit(registry, small_image):
    repository, _, _ = small_image
    with FaultProxy(registry.url, flood=(r"/manifests/", 200, OCI_MANIFEST)) as proxy:
        with client() as c, pytest.raises(RegistryError) as refused:
            c.get_manifest(ref(proxy.host, repository))
        sent = proxy.flood_sent
    message = str(refused.value)
    assert f"http://{proxy.host}/v2/{repository}/manifests/1.0 is larger than 4.0 MiB, wsm's limit" in message
    assert "\n" not in message and sent < 64 * 2**20


def test_an_endless_token_answer_is_refused(tmp_path):
    with TokenServer(tmp_path / "tokens") as tokens, \
            FaultProxy(f"http://127.0.0.1:{tokens.port}", flood=(r"^/token", 200, "application/json")) as proxy:
        config = {**tokens.registry_config(), "realm": f"{proxy.url}/token"}
        with Registry(tmp_path / "registry", token=config) as server:
            with client() as c, pytest.raises(RegistryError) as refused:
                c.get_manifest(ref(server.host, "acme/app"))
        sent = proxy.flood_sent
    message = str(refused.value)
    assert f"token service {proxy.url}/token for registry {server.host}" in message
    assert "larger than 1.0 MiB" in message and "\n" not in message and sent < 64 * 2**20


# -- bounded loops -----------------------------------------------------------------------------------------


def test_a_registry_answering_416_to_every_blob_request_ends_in_one_line(registry, small_image, tmp_path):
    repository, _, layer = small_image
    with FaultProxy(registry.url, blob_status=416) as proxy:
        dest = tmp_path / "layer.partial"
        dest.write_bytes(b"x" * 1000)  # a prefix to resume from: the ranged request is refused, then the whole
        with client() as c, pytest.raises(RegistryError) as refused:
            c.fetch_blob(ref(proxy.host, repository), layer, dest)
        blob_requests = proxy.requests_for("GET", "/blobs/")
    assert "416" in str(refused.value) and "\n" not in str(refused.value)
    assert [bool(record.range) for record in blob_requests] == [True, False]


def test_a_416_to_a_resume_starts_over_once(registry, small_image, tmp_path):
    repository, built, layer = small_image
    with FaultProxy(registry.url, blob_status=416, ranged_only=True) as proxy:
        dest = tmp_path / "layer.partial"
        dest.write_bytes(b"not a prefix of the blob")
        with client() as c:
            c.fetch_blob(ref(proxy.host, repository), layer, dest)
        blob_requests = proxy.requests_for("GET", "/blobs/")
    assert dest.read_bytes() == (built.layout / layer.digest.split(":")[1]).read_bytes()
    assert [(bool(r.range), r.status) for r in blob_requests] == [(True, 416), (False, 200)]


def test_a_redirect_loop_is_cut_off(registry, small_image):
    repository, _, _ = small_image
    with FaultProxy(registry.url, redirect_loop=True) as proxy:
        with client() as c, pytest.raises(RegistryError) as refused:
            c.get_manifest(ref(proxy.host, repository))
        requests = len(proxy.records)
    assert "more than 10 redirects" in str(refused.value) and "\n" not in str(refused.value)
    assert requests == 11  # the request and ten redirects followed, not retried


def test_a_registry_that_always_wants_a_wider_scope_is_asked_a_bounded_number_of_times(registry, tmp_path):
    with TokenServer(tmp_path / "tokens") as tokens:
        challenge = (f'Bearer realm="{tokens.realm}",service="{tokens.service}",'
                     'scope="repository:acme/app:pull,push",error="insufficient_scope"')
        with FaultProxy(registry.url, challenge=challenge) as proxy:
            with client() as c, pytest.raises(AuthError) as refused:
                c.get_manifest(ref(proxy.host, "acme/app"))
            requests = len(proxy.records)
    assert "access refused" in str(refused.value) and "\n" not in str(refused.value)
    assert requests <= 4 and len(tokens.requests) <= 3


# -- fail fast when nobody is there ------------------------------------------------------------------------


def test_a_refused_connection_is_tried_twice_not_six_times():
    host = f"127.0.0.1:{free_port()}"
    with client(transport=transport(retries=5)) as c, pytest.raises(RegistryError) as refused:
        c.get_manifest(ref(host, "acme/app"))
    assert "(after 2 attempts)" in str(refused.value) and host in str(refused.value)


class _SilentListener:
    """Accepts connections and never answers: every request times out. Counts the connections."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                self.accepted.append(self.sock.accept()[0])
            except OSError:
                return

    def close(self) -> None:
        self.sock.close()
        for conn in self.accepted:
            conn.close()


def test_timeouts_keep_their_retries():
    listener = _SilentListener()
    try:
        with client(transport=transport(retries=2, timeout=0.2)) as c, pytest.raises(RegistryError) as refused:
            c.get_manifest(ref(f"127.0.0.1:{listener.port}", "acme/app"))
        assert "(after 3 attempts)" in str(refused.value)
        assert len(listener.accepted) == 3
    finally:
        listener.close()


def test_offline_list_resolve_fails_after_two_attempts_in_one_line(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    result = wsm("list", "--resolve", "--chart", "platform", "--repo", url, cwd=tmp_path)
    one_line_error(result, url, "after 2 attempts")
    errors = [line for line in result.stderr.splitlines() if line.startswith("wsm: error:")]
    assert len(errors) == 1 and "Connection refused" in errors[0]


def test_endless_chartmuseum_answers_are_read_a_few_kib_at_most(helm_repo, tmp_path):
    """A ChartMuseum-looking server whose every /api/charts answer runs on: detection and upload read 4 KiB."""
    chart_yaml = {"apiVersion": "v2", "name": "bounded", "version": "0.1.0"}
    archive = package(write_chart(tmp_path / "bounded", chart_yaml, {}), tmp_path).read_bytes()
    with FaultProxy(helm_repo.url, flood=(r"^/[^/]+/api/charts", 200, "application/json")) as proxy:
        with ClassicRepository(f"{proxy.url}/{unique('museum')}", transport=transport()) as repository:
            published = repository.publish(archive, chart_yaml)
        sent = proxy.flood_sent
    assert published.sent and sent < 64 * 2**20
    assert [record.method for record in proxy.records if "/api/charts" in record.path] == ["GET", "POST"]
