"""A small Docker token service (the protocol Docker Hub, quay.io, Harbor and GHCR use), for token-auth tests.

`TokenServer(workdir, users={"alice": "pw"})` listens on 127.0.0.1; give `server.registry_config()` to
`servers.Registry(..., token=...)`. Tokens are ES256 JWTs with the signing certificate in `x5c`, which
Distribution checks against `rootcertbundle` (see shared/docs/test-infra.md).

Policy: known users with the right password get every action they ask for; anonymous callers get only
`anonymous_actions`; a wrong password is answered 401. `requests` records every token request granted,
`authorizations` the Authorization header (or None) of every request, granted or not.
"""

from __future__ import annotations

import base64
import datetime
import json
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from servers import InProcessServer


@dataclass
class TokenRequest:
    method: str
    account: str | None  # the authenticated user, None when anonymous
    scopes: list[str]
    granted: list[dict]


class TokenServer(InProcessServer):
    def __init__(
        self,
        workdir: Path,
        *,
        users: dict[str, str] | None = None,
        refresh_tokens: dict[str, str] | None = None,  # identity token -> user
        anonymous_actions: tuple[str, ...] = ("pull",),
        service: str = "wsm-test-registry",
        issuer: str = "wsm-test-issuer",
        lifetime: int = 300,
    ) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.users = dict(users or {})
        self.refresh_tokens = dict(refresh_tokens or {})
        self.anonymous_actions = anonymous_actions
        self.service, self.issuer, self.lifetime = service, issuer, lifetime
        self.requests: list[TokenRequest] = []
        self.authorizations: list[str | None] = []
        self._lock = threading.Lock()
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._certificate = _self_signed(self._key, issuer)
        self.cert_path = self.workdir / "token.crt"
        self.cert_path.write_bytes(self._certificate.public_bytes(serialization.Encoding.PEM))
        self._serve(_handler_for(self))
        self.realm = f"http://127.0.0.1:{self.port}/token"

    def registry_config(self) -> dict:
        """The `auth.token` section of a Distribution config that trusts this service."""
        return {
            "realm": self.realm,
            "service": self.service,
            "issuer": self.issuer,
            "rootcertbundle": str(self.cert_path),
        }

    def issue(self, account: str | None, scopes: list[str]) -> tuple[str, list[dict]]:
        allowed = None if account else set(self.anonymous_actions)
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            granted = [a for a in actions.split(",") if a and (allowed is None or a in allowed)]
            if granted:
                access.append({"type": kind, "name": name, "actions": granted})
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": account or "",
            "aud": self.service,  # Distribution 2.8 refuses a list here
            "exp": now + self.lifetime,
            "nbf": now - 10,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        chain = [base64.b64encode(self._certificate.public_bytes(serialization.Encoding.DER)).decode()]
        token = jwt.encode(claims, self._key, algorithm="ES256", headers={"x5c": chain})
        return token, access

    def record(self, request: TokenRequest) -> None:
        with self._lock:
            self.requests.append(request)


def _self_signed(key: ec.EllipticCurvePrivateKey, common_name: str) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .sign(key, hashes.SHA256())
    )


def _handler_for(server: TokenServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep test output clean
            pass

        def do_GET(self) -> None:
            server.authorizations.append(self.headers.get("Authorization"))
            query = parse_qs(urlparse(self.path).query)
            account = self._basic_user()
            if account is False:
                return self._answer(401, {"details": "invalid username or password"})
            self._grant("GET", account or None, query.get("scope", []))

        def do_POST(self) -> None:
            server.authorizations.append(self.headers.get("Authorization"))
            length = int(self.headers.get("Content-Length") or 0)
            form = parse_qs(self.rfile.read(length).decode())
            account = server.refresh_tokens.get(form.get("refresh_token", [""])[0])
            if form.get("grant_type") != ["refresh_token"] or account is None:
                return self._answer(401, {"error": "invalid_grant"})
            scopes = " ".join(form.get("scope", [])).split()
            self._grant("POST", account, scopes, key="access_token")

        def _grant(self, method: str, account: str | None, scopes: list[str], key: str = "token") -> None:
            token, access = server.issue(account, scopes)
            server.record(TokenRequest(method, account, scopes, access))
            self._answer(200, {key: token, "expires_in": server.lifetime})

        def _basic_user(self) -> str | bool:
            """The user name if the Basic credentials are right, "" if none were sent, False if wrong."""
            header = self.headers.get("Authorization", "")
            if not header.startswith("Basic "):
                return ""
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            return user if user in server.users and server.users[user] == password else False

        def _answer(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler
