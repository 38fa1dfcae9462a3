"""TLS, Basic (htpasswd) and token authentication against real Distribution registries, and every place
credentials come from: an explicit username, docker config.json, credential helpers, Helm's registry config."""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path

import pytest
import trustme
from images import build_image, push_layout
from remote_support import client, install_helper, isolated_credentials, ref, transport, unique  # noqa: F401
from servers import Registry
from tokenserver import TokenServer

from wsm import AuthError, Hint, NotFound, RegistryError
from wsm._remote import Descriptor, RegistryClient, RegistryOptions, compute_digest

USER, PASSWORD = "bob", "s3cret-Pa55"


# -- TLS ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_registry(tmp_path_factory):
    ca = trustme.CA()
    workdir = tmp_path_factory.mktemp("tls")
    ca_file = workdir / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    with Registry(workdir / "registry", tls=ca) as server:
        built = build_image(workdir / "image", platforms=("linux/amd64",))
        push_layout(built, f"{server.host}/acme/tls:1.0")
        yield server, ca_file, built


def test_tls_verified_with_the_site_ca(tls_registry):
    server, ca_file, built = tls_registry
    with RegistryClient(RegistryOptions(transport=transport(plain_http=False, ca_file=str(ca_file)))) as c:
        assert c.get_manifest(ref(server.host, "acme/tls")).digest == built.digest


def test_tls_refused_without_the_ca(tls_registry):
    server, _, _ = tls_registry
    with RegistryClient(RegistryOptions(transport=transport(plain_http=False))) as c:
        with pytest.raises(RegistryError) as error:
            c.get_manifest(ref(server.host, "acme/tls"))
    message = str(error.value)
    assert server.host in message and "TLS certificate not trusted" in message and "\n" not in message


def test_untrusted_tls_is_a_ca_file_hint_without_option_names(tls_registry, tmp_path):
    """The library words the remedy plainly and hands it over as a `Hint`: the CLI names its own options."""
    server, _, _ = tls_registry
    with RegistryClient(RegistryOptions(transport=transport(plain_http=False))) as c:
        with pytest.raises(RegistryError) as error:
            c.head_manifest(ref(server.host, "acme/tls"))
    assert error.value.hint is Hint.CA_FILE and error.value.status is None
    assert "--" not in str(error.value) and str(error.value).endswith(Hint.CA_FILE.value)
    not_pem = tmp_path / "not-a-ca.pem"
    not_pem.write_text("not a certificate\n")
    with pytest.raises(RegistryError) as error:
        RegistryClient(RegistryOptions(transport=transport(plain_http=False, ca_file=str(not_pem))))
    assert error.value.hint is Hint.CA_FILE_FORMAT and str(not_pem) in str(error.value)
    assert "--" not in str(error.value)


def test_tls_insecure_skips_verification(tls_registry):
    server, _, built = tls_registry
    with RegistryClient(RegistryOptions(transport=transport(plain_http=False, insecure=True))) as c:
        assert c.get_manifest(ref(server.host, "acme/tls")).digest == built.digest


def test_https_client_against_a_plain_registry_says_plain_http(registry):
    with RegistryClient(RegistryOptions(transport=transport(plain_http=False, retries=0))) as c:
        with pytest.raises(RegistryError, match="does not speak TLS") as error:
            c.get_manifest(ref(registry.host, "acme/whatever"))
    assert error.value.hint is Hint.PLAIN_HTTP and "--" not in str(error.value)


# -- Basic auth (htpasswd) ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def basic_registry(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("basic")
    with Registry(workdir / "registry", htpasswd={USER: PASSWORD}) as server:
        built = build_image(workdir / "image", platforms=("linux/amd64",))
        push_layout(built, f"{server.host}/acme/private:1.0", creds=f"{USER}:{PASSWORD}")
        yield server, built


def private(server) -> object:
    return ref(server.host, "acme/private")


def write_docker_config(directory: Path, config: dict) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "config.json"
    path.write_text(json.dumps(config))
    return path


def test_basic_auth_with_explicit_credentials(basic_registry):
    server, built = basic_registry
    with client(username=USER, password=PASSWORD) as c:
        assert c.get_manifest(private(server)).digest == built.digest
        data = b"pushed with basic auth"
        blob = Descriptor("application/octet-stream", compute_digest(data), len(data))
        c.push_blob(ref(server.host, "acme/pushed"), blob, data)
        assert c.read_blob(ref(server.host, "acme/pushed"), blob) == data


def test_basic_auth_wrong_password_is_an_auth_error_without_the_password(basic_registry, caplog):
    server, _ = basic_registry
    caplog.set_level(logging.DEBUG)
    options = RegistryOptions(transport=transport(), username=USER, password="wrong-Pa55word")
    assert "wrong-Pa55word" not in repr(options)
    with RegistryClient(options) as c, pytest.raises(AuthError) as error:
        c.get_manifest(private(server))
    message = str(error.value)
    assert server.host in message and "docker login" in message and "--" not in message
    assert error.value.hint is Hint.CREDENTIALS and error.value.status == 401
    assert "wrong-Pa55word" not in message and "wrong-Pa55word" not in caplog.text


def test_basic_auth_without_credentials_says_how_to_give_them(basic_registry):
    server, _ = basic_registry
    with client() as c, pytest.raises(AuthError) as error:
        c.head_manifest(private(server))
    assert "requires credentials" in str(error.value) and server.host in str(error.value)


def test_errors_carry_the_http_status(basic_registry):
    """Code reads `status`, never the message: 401 for missing or refused credentials, 404 for a missing tag."""
    server, _ = basic_registry
    with client() as c, pytest.raises(AuthError) as missing_credentials:
        c.get_manifest(private(server))
    assert missing_credentials.value.status == 401 and missing_credentials.value.hint is Hint.CREDENTIALS
    with client(username=USER, password="not-it") as c, pytest.raises(AuthError) as refused:
        c.get_manifest(private(server))
    assert refused.value.status == 401
    with client(username=USER, password=PASSWORD) as c, pytest.raises(NotFound) as not_found:
        c.get_manifest(ref(server.host, "acme/private", "no-such-tag"))
    assert not_found.value.status == 404 and not_found.value.hint is None


@pytest.mark.parametrize("key_form", ["{host}", "https://{host}", "http://{host}/v2/"])
def test_credentials_from_docker_config_auths(basic_registry, isolated_credentials, key_form):
    server, built = basic_registry
    encoded = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    write_docker_config(isolated_credentials, {"auths": {key_form.format(host=server.host): {"auth": encoded}}})
    with client() as c:  # found through $DOCKER_CONFIG
        assert c.get_manifest(private(server)).digest == built.digest


def test_credentials_from_an_explicit_docker_config_with_username_and_password(basic_registry, tmp_path):
    server, built = basic_registry
    entry = {"username": USER, "password": PASSWORD}
    path = write_docker_config(tmp_path / "elsewhere", {"auths": {server.host: entry}})
    with client(docker_config=path) as c:
        assert c.get_manifest(private(server)).digest == built.digest


def test_explicit_credentials_win_over_docker_config(basic_registry, isolated_credentials):
    server, _ = basic_registry
    write_docker_config(isolated_credentials, {"auths": {server.host: {"username": USER, "password": PASSWORD}}})
    with client(username=USER, password="not-it") as c, pytest.raises(AuthError, match="the credentials given"):
        c.get_manifest(private(server))


@pytest.mark.parametrize("setting", ["credHelpers", "credsStore"])
def test_credentials_from_a_credential_helper(basic_registry, isolated_credentials, tmp_path, monkeypatch, setting):
    server, built = basic_registry
    asked = install_helper(tmp_path / "bin", server.host, monkeypatch, USER, PASSWORD)
    config = {"credHelpers": {server.host: "test"}} if setting == "credHelpers" else {"credsStore": "test"}
    # What `docker login` leaves in auths when a helper holds the secret: an empty entry.
    write_docker_config(isolated_credentials, {"auths": {server.host: {}}, **config})
    with client() as c:
        assert c.get_manifest(private(server)).digest == built.digest
        assert c.head_manifest(private(server)).digest == built.digest
    assert asked.read_text().split() == [server.host]  # asked once, for this host


def test_credential_helper_that_knows_nothing_means_anonymous(basic_registry, isolated_credentials, tmp_path,
                                                              monkeypatch):
    server, _ = basic_registry
    install_helper(tmp_path / "bin", "some.other.host", monkeypatch, USER, PASSWORD)
    write_docker_config(isolated_credentials, {"credsStore": "test"})
    with client() as c, pytest.raises(AuthError, match="requires credentials"):
        c.get_manifest(private(server))


def test_credentials_from_helm_registry_config(basic_registry, isolated_credentials, tmp_path, monkeypatch):
    server, built = basic_registry
    encoded = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    helm_config = write_docker_config(tmp_path / "helm", {"auths": {server.host: {"auth": encoded}}})
    with client(helm_registry_config=helm_config) as c:
        assert c.get_manifest(private(server)).digest == built.digest
    monkeypatch.setenv("HELM_REGISTRY_CONFIG", str(helm_config))
    with client() as c:
        assert c.get_manifest(private(server)).digest == built.digest


def test_broken_docker_config_is_a_one_line_error(basic_registry, isolated_credentials):
    server, _ = basic_registry
    isolated_credentials.mkdir(parents=True)
    (isolated_credentials / "config.json").write_text("{not json")
    with client() as c, pytest.raises(RegistryError) as error:
        c.get_manifest(private(server))
    assert "config.json" in str(error.value) and "\n" not in str(error.value)


# -- Token auth --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("token")
    with TokenServer(workdir / "tokens", users={USER: PASSWORD}, refresh_tokens={"identity-123": USER}) as tokens:
        with Registry(workdir / "registry", token=tokens.registry_config()) as server:
            built = build_image(workdir / "image", platforms=("linux/amd64", "linux/arm64"))
            push_layout(built, f"{server.host}/acme/tokened:1.0", creds=f"{USER}:{PASSWORD}")
            yield server, tokens, built


def test_token_auth_anonymous_pull(token_registry):
    server, tokens, built = token_registry
    tokens.requests.clear()
    with client() as c:
        index = c.get_manifest(ref(server.host, "acme/tokened"))
        assert index.digest == built.digest
        for child in index.children():
            manifest = c.get_manifest(ref(server.host, "acme/tokened").with_digest(child.digest))
            c.read_blob(ref(server.host, "acme/tokened"), manifest.config())
    # One token for the repository's pull scope, reused by every later request.
    assert [(r.account, r.scopes) for r in tokens.requests] == [(None, ["repository:acme/tokened:pull"])]


def test_token_auth_push_with_credentials(token_registry, tmp_path):
    server, tokens, built = token_registry
    repository = unique("acme/tokenpush")
    tokens.requests.clear()
    with client(username=USER, password=PASSWORD) as c:
        source = ref(server.host, "acme/tokened")
        destination = ref(server.host, repository)
        manifest = c.get_manifest(source.with_digest(built.manifests["linux/amd64"]))
        for blob in [manifest.config(), *manifest.layers()]:
            c.push_blob(destination, blob, c.read_blob(source, blob))
        assert c.put_manifest(destination, manifest.raw, manifest.media_type) == manifest.digest
        assert c.list_tags(destination) == ["1.0"]
        assert c.mount_blob(ref(server.host, unique("acme/mounted")), manifest.config().digest, repository)
    assert all(r.account == USER for r in tokens.requests)
    scopes = [tuple(r.scopes) for r in tokens.requests]
    assert (f"repository:{repository}:pull,push",) in scopes
    assert len(scopes) == len(set(scopes))  # cached: one token per scope


def test_token_auth_insufficient_scope_fetches_a_wider_token(token_registry):
    """A request made with a pull token that the registry wants push for: it names the scope, we follow."""
    server, tokens, _ = token_registry
    repository = unique("acme/widen")
    with client(username=USER, password=PASSWORD) as c:
        tokens.requests.clear()
        assert c.head_manifest(ref(server.host, repository)) is None  # a pull token, the scheme now known
        target = c._push_target(ref(server.host, repository))
        pull_only = (f"repository:{repository}:pull",)
        response = c._request("POST", target, "blobs/uploads/", pull_only, "test upload")
        response.close()
        assert response.status_code == 202
    assert [r.scopes for r in tokens.requests] == [[f"repository:{repository}:pull"],
                                                    [f"repository:{repository}:pull,push"]]


def test_token_auth_anonymous_push_is_refused(token_registry):
    server, _, _ = token_registry
    data = b"anonymous upload"
    blob = Descriptor("application/octet-stream", compute_digest(data), len(data))
    with client() as c, pytest.raises(AuthError) as error:
        c.push_blob(ref(server.host, unique("acme/anon")), blob, data)
    assert server.host in str(error.value) and error.value.hint is Hint.CREDENTIALS and error.value.status == 401


def test_token_auth_wrong_password(token_registry, caplog):
    server, _, _ = token_registry
    caplog.set_level(logging.DEBUG)
    with client(username=USER, password="Wr0ng-pw") as c, pytest.raises(AuthError) as error:
        c.get_manifest(ref(server.host, "acme/tokened"))
    assert server.host in str(error.value) and repr(USER) in str(error.value)
    assert "Wr0ng-pw" not in str(error.value) and "Wr0ng-pw" not in caplog.text


def test_token_auth_with_an_identity_token(token_registry, isolated_credentials):
    """docker config `identitytoken` is exchanged with an OAuth2 refresh-token grant (POST to the realm)."""
    server, tokens, _ = token_registry
    write_docker_config(isolated_credentials, {"auths": {server.host: {"identitytoken": "identity-123"}}})
    data = b"pushed with an identity token"
    blob = Descriptor("application/octet-stream", compute_digest(data), len(data))
    tokens.requests.clear()
    with client() as c:
        c.push_blob(ref(server.host, unique("acme/identity")), blob, data)
    assert tokens.requests and all(r.method == "POST" and r.account == USER for r in tokens.requests)



def test_parallel_pulls_share_one_token(token_registry, tmp_path):
    """The client is used from a thread pool: concurrent first requests wait for one token, then share it."""
    from concurrent.futures import ThreadPoolExecutor

    server, tokens, built = token_registry
    source = ref(server.host, "acme/tokened")
    with client() as c:
        manifests = [c.get_manifest(source.with_digest(digest)) for digest in built.manifests.values()]
    blobs = [blob for manifest in manifests for blob in [manifest.config(), *manifest.layers()]]
    tokens.requests.clear()
    with client() as c:  # a fresh client: all threads meet the 401 challenge at once
        jobs = list(enumerate(blobs * 3))  # each blob three times, into its own file
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(lambda job: c.fetch_blob(source, job[1], tmp_path / f"{job[0]}.partial"), jobs))
    assert len(tokens.requests) == 1
    for number, blob in jobs:
        assert compute_digest((tmp_path / f"{number}.partial").read_bytes()) == blob.digest


# -- Where credentials are looked up (files only, no server) ------------------------------------------------


def store(tmp_path: Path, docker: dict | None = None, helm: dict | None = None, **explicit):
    from wsm._remote._credentials import CredentialStore

    docker_path = write_docker_config(tmp_path / "docker", docker) if docker is not None else tmp_path / "none"
    helm_path = write_docker_config(tmp_path / "helm", helm) if helm is not None else tmp_path / "none"
    return CredentialStore(explicit.get("username"), explicit.get("password"), docker_path, helm_path)


def test_docker_hub_credentials_under_every_key_docker_uses(tmp_path):
    encoded = base64.b64encode(b"hubuser:hubpass").decode()
    for key in ("https://index.docker.io/v1/", "docker.io", "index.docker.io", "registry-1.docker.io"):
        found = store(tmp_path / key.replace("/", "_"), {"auths": {key: {"auth": encoded}}}).lookup("docker.io")
        assert (found.username, found.password) == ("hubuser", "hubpass")
    assert store(tmp_path / "other", {"auths": {"quay.io": {"auth": encoded}}}).lookup("docker.io") is None


def test_docker_hub_is_asked_of_helpers_as_docker_does(tmp_path, monkeypatch):
    asked = install_helper(tmp_path / "bin", "https://index.docker.io/v1/", monkeypatch, USER, PASSWORD)
    found = store(tmp_path, {"credsStore": "test"}).lookup("docker.io")
    assert found.username == USER and asked.read_text().split() == ["https://index.docker.io/v1/"]


def test_lookup_order_explicit_auths_helper_helm(tmp_path, monkeypatch):
    def basic(user: str) -> dict:
        return {"auth": base64.b64encode(f"{user}:pw".encode()).decode()}

    install_helper(tmp_path / "bin", "reg.example", monkeypatch, USER, PASSWORD)  # answers with USER
    helm = {"auths": {"reg.example": basic("from-helm")}}
    both = {"auths": {"reg.example": basic("from-auths")}, "credsStore": "test"}
    explicit = store(tmp_path / "a", both, helm, username="explicit", password="pw")
    assert explicit.lookup("reg.example").username == "from-auths"  # not a registry the caller addressed
    explicit.address("reg.example")
    assert explicit.lookup("reg.example").username == "explicit"
    assert store(tmp_path / "b", both, helm).lookup("reg.example").username == "from-auths"
    assert store(tmp_path / "c", {"credsStore": "test"}, helm).lookup("reg.example").username == USER
    assert store(tmp_path / "d", {}, helm).lookup("reg.example").username == "from-helm"
    assert store(tmp_path / "e", {}, {}).lookup("reg.example") is None


def test_secrets_stay_out_of_reprs_and_errors(tmp_path):
    found = store(tmp_path, {"auths": {"reg.example": {"username": "u", "password": "hunter2-secret"}}}).lookup(
        "reg.example"
    )
    assert "hunter2-secret" not in repr(found) and "hunter2-secret" not in found.describe()
    with pytest.raises(AuthError) as error:
        store(tmp_path / "bad", {"auths": {"reg.example": {"auth": "bm90LWJhc2U2NC1wYWly"}}}).lookup("reg.example")
    assert "docker login" in str(error.value)
