"""Registry authentication: the `WWW-Authenticate` challenge, Bearer tokens per scope, Basic credentials.

The Docker token protocol: a registry answers 401 with `Bearer realm=...,service=...,scope=...`; the client
asks the realm for a token for those scopes (with Basic credentials if it has any, else anonymously) and
repeats the request with `Authorization: Bearer <token>`. A registry that needs more (a push after a pull)
answers 401 again with `error="insufficient_scope"` and the wider scope.

Credentials are scoped by host and port. The realm may be on another host (Docker Hub's auth.docker.io): it
gets the credentials of the host whose challenge named it (the caller passes that host, never a redirect's
origin), and never over plain HTTP when that challenge came over HTTPS.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from dataclasses import dataclass

import httpx

from .._exceptions import AuthError, Hint, RegistryError
from .._http import TransportOptions, raise_for_retry, read_capped, safe_url, with_retries
from ._credentials import Credentials, CredentialStore

_PARAM = re.compile(r'([A-Za-z][\w-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')
# Refresh a token this long before the registry would start refusing it.
_EXPIRY_MARGIN = 20.0
_DEFAULT_TOKEN_LIFETIME = 60.0  # what the token specification says to assume
MAX_TOKEN_BYTES = 1024 * 1024  # a token answer is a few KiB; more is a broken or hostile token service


@dataclass(frozen=True)
class Challenge:
    scheme: str  # lower case: "bearer" or "basic"
    params: dict[str, str]
    over_tls: bool = False  # the challenge came over HTTPS: its realm must be HTTPS too to get credentials

    @property
    def scopes(self) -> tuple[str, ...]:
        return tuple(self.params.get("scope", "").split())


def parse_challenge(response: httpx.Response) -> Challenge | None:
    """The first usable challenge of a 401 response (Bearer preferred over Basic)."""
    challenges = []
    over_tls = response.url.scheme == "https"
    for header in response.headers.get_list("www-authenticate"):
        scheme, _, rest = header.strip().partition(" ")
        params = {key.lower(): (quoted if quoted is not None else bare) for key, quoted, bare in _PARAM.findall(rest)}
        params = {key: value.replace('\\"', '"') for key, value in params.items()}
        challenges.append(Challenge(scheme.lower(), params, over_tls))
    for wanted in ("bearer", "basic"):
        for challenge in challenges:
            if challenge.scheme == wanted:
                return challenge
    return None


def repository_scope(repository: str, actions: str) -> str:
    return f"repository:{repository}:{actions}"


def merge_scopes(*groups: tuple[str, ...]) -> tuple[str, ...]:
    """Union of scopes, actions merged per resource: `repository:a:pull` + `repository:a:push` -> `pull,push`."""
    actions: dict[str, set[str]] = {}
    for scope in (scope for group in groups for scope in group):
        resource, _, wanted = scope.rpartition(":")
        if resource:
            actions.setdefault(resource, set()).update(a for a in wanted.split(",") if a)
    return tuple(sorted(f"{resource}:{','.join(sorted(acts))}" for resource, acts in actions.items()))


@dataclass
class _Token:
    header: str
    expires_at: float

    def fresh(self) -> bool:
        return time.monotonic() < self.expires_at


class Authenticator:
    """Knows, per registry host, which scheme it wants, and caches Bearer tokens per (host, scopes)."""

    def __init__(self, http: httpx.Client, transport: TransportOptions, credentials: CredentialStore) -> None:
        self._http = http
        self._transport = transport
        self._credentials = credentials
        self._challenges: dict[str, Challenge] = {}
        self._tokens: dict[tuple[str, tuple[str, ...]], _Token] = {}
        self._lock = threading.Lock()
        self._fetch_locks: dict[tuple[str, tuple[str, ...]], threading.Lock] = {}

    def header(self, host: str, registry: str, scopes: tuple[str, ...]) -> str | None:
        """The Authorization header to send up front, when the host's scheme is already known."""
        challenge = self._challenges.get(host)
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            return self._basic_header(host, registry, challenge)
        return self._bearer_header(host, registry, challenge, scopes, stale=None)

    def answer(
        self, host: str, registry: str, scopes: tuple[str, ...], response: httpx.Response, sent: str | None
    ) -> str:
        """A new Authorization header after the 401 `response` (to a request that carried `sent`)."""
        challenge = parse_challenge(response)
        if challenge is None:
            raise AuthError(f"registry {host} refused access (401) without saying how to authenticate", status=401)
        self._challenges[host] = challenge
        if challenge.scheme == "basic":
            header = self._basic_header(host, registry, challenge)
            if header == sent:
                raise AuthError(_refused(host, registry, self._credentials.lookup(registry)), status=401,
                                hint=Hint.CREDENTIALS)
            return header
        # The registry's scope, merged with ours, covers what it just said was missing.
        wanted = merge_scopes(scopes, challenge.scopes)
        header = self._bearer_header(host, registry, challenge, wanted, stale=sent)
        if wanted != scopes:
            with self._lock:
                self._tokens[(host, scopes)] = self._tokens[(host, wanted)]
        return header

    def refused(self, host: str, registry: str, what: str) -> str:
        """The message for a registry that keeps answering 401 to `what` whatever token we send.

        The caller raises it as an `AuthError` with `status=401` and `hint=Hint.CREDENTIALS`.
        """
        credentials = self._credentials.lookup(registry)
        who = credentials.describe() if credentials else "no credentials"
        # Registries such as Docker Hub answer 401, not 404, for a repository that does not exist.
        return f"{what}: access refused with {who}; check that the repository exists"

    def _basic_header(self, host: str, registry: str, challenge: Challenge) -> str:
        credentials = self._credentials.lookup(registry)
        if credentials is None or not credentials.username:
            # Only reached once the registry answered 401 with a Basic challenge.
            raise AuthError(_missing(host, registry), status=401, hint=Hint.CREDENTIALS)
        return basic_header(credentials.username, credentials.password)

    def _bearer_header(
        self, host: str, registry: str, challenge: Challenge, scopes: tuple[str, ...], stale: str | None
    ) -> str:
        key = (host, scopes)
        with self._lock:
            fetch_lock = self._fetch_locks.setdefault(key, threading.Lock())
        # One token request per (host, scopes) at a time: parallel pulls share the answer.
        with fetch_lock:
            token = self._tokens.get(key)
            if token is not None and token.fresh() and token.header != stale:
                return token.header
            token = self._fetch_token(host, registry, challenge, scopes)
            with self._lock:
                self._tokens[key] = token
            return token.header

    def _fetch_token(self, host: str, registry: str, challenge: Challenge, scopes: tuple[str, ...]) -> _Token:
        realm = challenge.params.get("realm")
        if not realm or not realm.startswith(("http://", "https://")):
            raise AuthError(f"registry {host} asks for a token but names no usable realm ({realm!r})", status=401)
        credentials = self._credentials.lookup(registry)
        what = f"token service {safe_url(realm)} for registry {host}"
        if credentials is not None and challenge.over_tls and not realm.startswith("https://"):
            raise AuthError(f"{what}: registry {host} speaks HTTPS but names a plain-HTTP token service; wsm does "
                            "not send its credentials there", status=401)

        def attempt() -> tuple[int, bytes]:
            response = raise_for_retry(self._token_request(realm, challenge, scopes, credentials))
            if response.status_code >= 400:
                response.close()
                return response.status_code, b""
            return response.status_code, read_capped(response, MAX_TOKEN_BYTES, what)

        status, body = with_retries(self._transport, what, attempt)
        if status in (401, 403):
            if credentials is None:
                raise AuthError(_missing(host, registry), status=status, hint=Hint.CREDENTIALS)
            raise AuthError(_refused(host, registry, credentials), status=status, hint=Hint.CREDENTIALS)
        if status >= 400:
            raise RegistryError(f"{what}: answered {status}; try later or check the registry", status=status)
        return _token_from(body, what)

    def _token_request(
        self, realm: str, challenge: Challenge, scopes: tuple[str, ...], credentials: Credentials | None
    ) -> httpx.Response:
        """The token service's answer, streamed (the caller reads a bounded amount of it)."""
        service = challenge.params.get("service")
        if credentials is not None and credentials.identity_token:
            # OAuth2 refresh-token grant: how Docker uses an identity token (Azure, some Harbor set-ups).
            form = {"grant_type": "refresh_token", "refresh_token": credentials.identity_token, "client_id": "wsm"}
            form.update({"service": service} if service else {})
            form.update({"scope": " ".join(scopes)} if scopes else {})
            return self._http.send(self._http.build_request("POST", realm, data=form), stream=True)
        params: list[tuple[str, str]] = [("service", service)] if service else []
        params += [("scope", scope) for scope in scopes]
        auth: httpx.BasicAuth | None = None
        if credentials is not None and credentials.username:
            params.append(("account", credentials.username))
            auth = httpx.BasicAuth(credentials.username, credentials.password)
        request = self._http.build_request("GET", realm, params=tuple(params))
        return self._http.send(request, auth=auth, stream=True)


def basic_header(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def _token_from(data: bytes, what: str) -> _Token:
    try:
        body: object = json.loads(data)
        if not isinstance(body, dict):
            raise TypeError("not a JSON object")
        value = body.get("token") or body.get("access_token")
        lifetime = float(body.get("expires_in") or _DEFAULT_TOKEN_LIFETIME)
    except (ValueError, AttributeError, TypeError):
        raise RegistryError(f"{what}: answered with something that is not a token (JSON with `token`)") from None
    if not value:
        raise RegistryError(f"{what}: answer holds no `token` or `access_token`")
    margin = min(_EXPIRY_MARGIN, lifetime / 2)
    return _Token(header=f"Bearer {value}", expires_at=time.monotonic() + lifetime - margin)


# Both are raised with `hint=Hint.CREDENTIALS`, which says how to give credentials.


def _missing(host: str, registry: str) -> str:
    return f"registry {host} requires credentials{_for(host, registry)}"


def _refused(host: str, registry: str, credentials: Credentials | None) -> str:
    who = credentials.describe() if credentials else "anonymous access"
    return f"registry {host} refused {who}{_for(host, registry)}"


def _for(host: str, registry: str) -> str:
    """The name credentials are stored under, when it is not the host asked (Docker Hub's API host)."""
    return "" if host == registry else f" for {registry}"
