"""Credentials stay with the host (and port) they were given for: redirects, a redirect target's challenge,
token realms, plain-HTTP realms of HTTPS registries, classic Helm repositories (issue 8, case 1).

Hosts are told apart by port: 127.0.0.1:A and 127.0.0.1:B are two hosts, as they are two credential scopes.
"""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import trustme
from charts import package, write_chart
from faults import FaultProxy
from images import build_image, push_layout
from remote_support import client, install_helper, isolated_credentials, ref, transport, unique  # noqa: F401
from servers import Registry
from support import wsm
from tokenserver import TokenServer

from wsm import AuthError
from wsm._chartrepo import ClassicRepository, RepoAuth
from wsm._remote import Descriptor, RegistryClient, RegistryOptions, compute_digest

USER, PASSWORD = "site-user", "site-Pa55word"
SITE_BASIC = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
REPOSITORY = "acme/private"


@pytest.fixture(scope="module")
def redirecting_site(tmp_path_factory):
    """Issue 8 case 1: registry R needs Basic auth and answers blob requests with 307 to host X; X answers
    401 `Bearer realm="http://Y/token"`. R is a Distribution registry with htpasswd behind a proxy that does
    the redirect; X is a token-auth Distribution registry (behind a recording proxy) holding the same image;
    Y is its token service, which grants anonymous pulls and records every Authorization header it gets."""
    workdir = tmp_path_factory.mktemp("redirecting")
    built = build_image(workdir / "image", platforms=("linux/amd64",), layer_sizes=(50_000,))
    with TokenServer(workdir / "y", users={"x-admin": "x-pw"}) as y, \
            Registry(workdir / "x", token=y.registry_config()) as x, \
            Registry(workdir / "r", htpasswd={USER: PASSWORD}) as r:
        push_layout(built, f"{r.host}/{REPOSITORY}:1.0", creds=f"{USER}:{PASSWORD}")
        push_layout(built, f"{x.host}/{REPOSITORY}:1.0", creds="x-admin:x-pw")
        with FaultProxy(x.url) as x_proxy, FaultProxy(r.url, redirect_blobs_to=x_proxy.url) as r_proxy:
            yield r_proxy, x_proxy, y, built


def _site_client(r_proxy: FaultProxy) -> RegistryClient:
    return client(username=USER, password=PASSWORD, credential_hosts=(r_proxy.host,))


def _configured_client(r_proxy: FaultProxy, source: str, home: Path) -> RegistryClient:
    """R's credentials as given (`explicit`), or stored for R's host in docker's or Helm's config file."""
    if source == "explicit":
        return _site_client(r_proxy)
    if source == "explicit, unbound":  # a library caller that names no host: R is the one its references name
        return client(username=USER, password=PASSWORD)
    auths = {"auths": {r_proxy.host: {"auth": SITE_BASIC.removeprefix("Basic ")}}}
    path = home / "docker" / "config.json" if source == "docker" else home / "helm" / "config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(auths))
    return client()


@pytest.mark.parametrize("setting", ["credHelpers", "credsStore"])
def test_credentials_from_a_credential_helper_stay_with_the_redirecting_registry(
    redirecting_site, tmp_path, isolated_credentials, monkeypatch, setting  # noqa: F811
):
    """R's credentials kept by a docker credential helper (`docker-credential-test get`, as `docker login` with
    a keychain leaves them) answer R's challenge, and never X's or its token realm Y's."""
    r_proxy, x_proxy, y, built = redirecting_site
    y.authorizations.clear()
    x_proxy.reset_counts()
    r_proxy.reset_counts()
    asked = install_helper(tmp_path / "bin", r_proxy.host, monkeypatch, USER, PASSWORD)
    helper = {"credHelpers": {r_proxy.host: "test"}} if setting == "credHelpers" else {"credsStore": "test"}
    isolated_credentials.mkdir(parents=True, exist_ok=True)
    (isolated_credentials / "config.json").write_text(json.dumps({"auths": {r_proxy.host: {}}, **helper}))
    _fetch_a_layer_through_the_redirect(client(), r_proxy, tmp_path)
    assert r_proxy.host in asked.read_text().split()  # the helper gave R's credentials ...
    assert y.authorizations and all(header is None for header in y.authorizations)  # ... X's challenge: anonymous
    _no_site_credentials_left_r(r_proxy, x_proxy, y)


def _fetch_a_layer_through_the_redirect(registry_client: RegistryClient, r_proxy: FaultProxy, tmp_path: Path) -> None:
    """The image's manifest from R, then a layer, which R redirects to X."""
    with registry_client as c:
        manifest = c.get_manifest(ref(r_proxy.host, REPOSITORY))
        layer = manifest.layers()[0]
        c.fetch_blob(ref(r_proxy.host, REPOSITORY), layer, tmp_path / "layer.partial")  # verified by digest
    assert (tmp_path / "layer.partial").stat().st_size == layer.size
    assert any(record.status == 307 for record in r_proxy.records)


def _no_site_credentials_left_r(r_proxy: FaultProxy, x_proxy: FaultProxy, y: TokenServer) -> None:
    assert SITE_BASIC not in y.authorizations, "R's credentials reached the token service of the redirect target"
    assert all(record.authorization != SITE_BASIC for record in x_proxy.records), "R's credentials reached X"
    assert any(record.authorization == SITE_BASIC for record in r_proxy.records)  # R itself did get them


@pytest.mark.parametrize("source", ["explicit", "explicit, unbound", "docker", "helm"])
def test_download_redirected_to_another_host_keeps_the_site_credentials_home(
    redirecting_site, tmp_path, isolated_credentials, source  # noqa: F811
):
    r_proxy, x_proxy, y, built = redirecting_site
    y.authorizations.clear()
    x_proxy.reset_counts()
    _fetch_a_layer_through_the_redirect(_configured_client(r_proxy, source, isolated_credentials.parent), r_proxy,
                                        tmp_path)
    assert y.authorizations and all(header is None for header in y.authorizations)  # X's challenge: anonymous
    _no_site_credentials_left_r(r_proxy, x_proxy, y)


def test_push_redirected_to_another_host_keeps_the_site_credentials_home(redirecting_site):
    r_proxy, x_proxy, y, built = redirecting_site
    y.authorizations.clear()
    target = ref(r_proxy.host, REPOSITORY)
    fresh = f"pushed {unique('blob')}".encode()
    with _site_client(r_proxy) as c:
        manifest = c.get_manifest(target)
        layer = manifest.layers()[0]
        existing = (built.layout / layer.digest.split(":")[1]).read_bytes()
        c.push_blob(target, layer, existing)  # HEAD -> 307 -> X, which says it has it: nothing sent
        descriptor = Descriptor("application/octet-stream", compute_digest(fresh), len(fresh))
        c.push_blob(target, descriptor, fresh)  # R has no such blob: uploaded to R, with R's credentials
    assert any(record.method == "HEAD" and record.status == 307 for record in r_proxy.records)
    _no_site_credentials_left_r(r_proxy, x_proxy, y)
    with client(username=USER, password=PASSWORD) as direct:  # on R itself, not through the redirecting proxy
        r_host = f"127.0.0.1:{r_proxy.upstream_port}"
        assert direct.has_blob(ref(r_host, REPOSITORY), descriptor.digest)


def test_a_token_realm_on_another_host_still_gets_the_registrys_own_credentials(tmp_path):
    """Docker Hub's shape: the registry challenges, the realm is elsewhere (here: another port)."""
    with TokenServer(tmp_path / "auth", users={USER: PASSWORD}) as auth, \
            Registry(tmp_path / "hub", token=auth.registry_config()) as hub:
        repository = unique("acme/hub")
        data = b"a blob pushed with a token the realm gave for the registry's credentials"
        blob = Descriptor("application/octet-stream", compute_digest(data), len(data))
        with client(username=USER, password=PASSWORD, credential_hosts=(hub.host,)) as c:
            c.push_blob(ref(hub.host, repository), blob, data)
        assert SITE_BASIC in auth.authorizations
        assert {request.account for request in auth.requests} == {USER}


def test_no_credentials_to_a_plain_http_realm_of_an_https_registry(tmp_path):
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    with TokenServer(tmp_path / "tokens", users={USER: PASSWORD}) as tokens, \
            Registry(tmp_path / "registry", tls=ca, token=tokens.registry_config()) as server:
        assert tokens.realm.startswith("http://")
        options = RegistryOptions(transport=transport(plain_http=False, ca_file=str(ca_file)), username=USER,
                                  password=PASSWORD, credential_hosts=(server.host,))
        with RegistryClient(options) as c, pytest.raises(AuthError) as refused:
            c.get_manifest(ref(server.host, unique("acme/tls")))
        assert tokens.authorizations == []  # asked nothing, not even anonymously with the credentials held back
    message = str(refused.value)
    assert "plain-HTTP token service" in message and server.host in message and "\n" not in message
    assert PASSWORD not in message


class _Redirecting(BaseHTTPRequestHandler):
    """Answers every GET with 307 to `target` (same path) and records the Authorization headers it got."""

    target = ""
    seen: list[str | None] = []

    def do_GET(self):
        type(self).seen.append(self.headers.get("Authorization"))
        if self.target:
            self.send_response(307)
            self.send_header("Location", self.target + self.path)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = b"apiVersion: v1\nentries: {}\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def _serve(handler: type[BaseHTTPRequestHandler]) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_a_helm_repository_redirect_does_not_carry_its_password():
    elsewhere_handler = type("Elsewhere", (_Redirecting,), {"target": "", "seen": []})
    elsewhere = _serve(elsewhere_handler)
    repo_handler = type("Repo", (_Redirecting,), {"target": f"http://127.0.0.1:{elsewhere.server_address[1]}",
                                                  "seen": []})
    repo = _serve(repo_handler)
    try:
        url = f"http://127.0.0.1:{repo.server_address[1]}"
        with ClassicRepository(url, transport=transport(), auth=RepoAuth(USER, PASSWORD)) as repository:
            assert repository._index() == {"apiVersion": "v1", "entries": {}}
    finally:
        for server in (repo, elsewhere):
            server.shutdown()
            server.server_close()
    assert repo_handler.seen == [SITE_BASIC]
    assert elsewhere_handler.seen == [None]


def test_an_upload_location_on_another_host_does_not_get_the_site_credentials(redirecting_site, tmp_path):
    """The registry opens an upload session at another host: that host is asked without R's credentials."""
    r_proxy, x_proxy, _, _ = redirecting_site
    r_url = f"http://127.0.0.1:{r_proxy.upstream_port}"
    with FaultProxy(r_url) as elsewhere, FaultProxy(r_url, upload_location_to=elsewhere.url) as r:
        data = f"upload {unique('x')}".encode()
        blob = Descriptor("application/octet-stream", compute_digest(data), len(data))
        with client(username=USER, password=PASSWORD, credential_hosts=(r.host,)) as c:
            with pytest.raises(AuthError) as refused:
                c.push_blob(ref(r.host, REPOSITORY), blob, data)
        assert elsewhere.records and all(record.authorization != SITE_BASIC for record in elsewhere.records)
        assert any(record.authorization == SITE_BASIC for record in r.records)
    assert elsewhere.host in str(refused.value) and "\n" not in str(refused.value)


def test_wsm_download_and_push_keep_the_site_credentials_home(redirecting_site, tmp_path):
    """Issue 8 case 1 through the command: `--username/--password-stdin` for R, blobs redirected to X."""
    r_proxy, x_proxy, y, built = redirecting_site
    y.authorizations.clear()
    x_proxy.reset_counts()
    # The push target holds the blobs under another tag, so that push's blob checks meet R's redirect.
    push_layout(built, f"127.0.0.1:{r_proxy.upstream_port}/copy/{REPOSITORY}:seed", creds=f"{USER}:{PASSWORD}")
    chart = package(write_chart(tmp_path / "c", {"apiVersion": "v2", "name": "c", "version": "0.1.0"},
                                {"image": {"repository": f"{r_proxy.host}/{REPOSITORY}", "tag": "1.0"}}), tmp_path)
    login = ["--plain-http", "--username", USER, "--password-stdin"]
    bundle = tmp_path / "bundle"
    download = wsm("download", "--chart", str(chart), "--bundle", str(bundle), *login, "--login-host", r_proxy.host,
                   stdin=PASSWORD + "\n", cwd=tmp_path)
    assert download.returncode == 0, download.stdout + download.stderr
    pushed = wsm("push", "--bundle", str(bundle), "--registry", f"{r_proxy.host}/copy", *login, stdin=PASSWORD + "\n",
                 cwd=tmp_path)
    assert pushed.returncode == 0, pushed.stdout + pushed.stderr
    assert any(record.method == "GET" and record.status == 307 for record in r_proxy.records)
    assert any(record.method == "HEAD" and record.status == 307 for record in r_proxy.records)
    _no_site_credentials_left_r(r_proxy, x_proxy, y)
    assert PASSWORD not in download.stdout + download.stderr + pushed.stdout + pushed.stderr
