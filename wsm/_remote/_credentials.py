"""Where credentials for a registry come from, in this order:

1. a username and password given to wsm;
2. Docker's config.json `auths` (base64 `auth`, or `username`/`password`, or `identitytoken`);
3. Docker's `credHelpers[host]`, else `credsStore`, run as `docker-credential-<name> get`;
4. Helm's registry config (the same format, written by `helm registry login`).

Secrets are held in memory only: never printed, logged, or written anywhere by wsm.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .._exceptions import AuthError, RegistryError
from .._reference import DOCKER_HUB

log = logging.getLogger("wsm.remote")

# docker login stores Docker Hub under this key, and passes it to credential helpers.
DOCKER_HUB_SERVER = "https://index.docker.io/v1/"
_HUB_ALIASES = {"index.docker.io", "registry-1.docker.io", "registry.hub.docker.com", DOCKER_HUB}
# A helper's answer with this user name carries an identity (refresh) token, not a password.
_TOKEN_USERNAME = "<token>"
# `Credentials.source` of a username and password given to wsm (by the CLI's options, or a library caller).
EXPLICIT_SOURCE = "the credentials given"


@dataclass(frozen=True)
class Credentials:
    username: str = ""
    password: str = field(default="", repr=False)
    identity_token: str = field(default="", repr=False)
    source: str = ""  # where they came from, for messages: never holds a secret

    def describe(self) -> str:
        who = f"user {self.username!r}" if self.username and self.username != _TOKEN_USERNAME else "identity token"
        return f"{who} from {self.source}"


def normalize_host(key: str) -> str:
    """`https://index.docker.io/v1/` -> `docker.io`, `https://host:5000/` -> `host:5000`."""
    host = key.strip().lower()
    for scheme in ("https://", "http://"):
        host = host.removeprefix(scheme)
    host = host.split("/", 1)[0]
    return DOCKER_HUB if host in _HUB_ALIASES else host


def default_docker_config() -> Path:
    directory = os.environ.get("DOCKER_CONFIG")
    return Path(directory) / "config.json" if directory else Path.home() / ".docker" / "config.json"


def default_helm_registry_config() -> Path:
    if os.environ.get("HELM_REGISTRY_CONFIG"):
        return Path(os.environ["HELM_REGISTRY_CONFIG"])
    config_home = os.environ.get("HELM_CONFIG_HOME")
    if config_home:
        return Path(config_home) / "registry" / "config.json"
    xdg = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(xdg) / "helm" / "registry" / "config.json"


class CredentialStore:
    """Looks credentials up per registry once, then remembers them (thread-safe)."""

    def __init__(
        self,
        username: str | None,
        password: str | None,
        docker_config: Path | None,
        helm_registry_config: Path | None,
        explicit_hosts: tuple[str, ...] = (),
    ) -> None:
        self._explicit = (
            Credentials(username, password or "", source=EXPLICIT_SOURCE) if username else None
        )
        self._explicit_hosts = {normalize_host(host) for host in explicit_hosts}
        self._addressed: set[str] = set()  # registries named by a reference: unbound explicit credentials' scope
        self._docker_config = docker_config or default_docker_config()
        self._helm_config = helm_registry_config or default_helm_registry_config()
        self._cache: dict[str, Credentials | None] = {}
        self._lock = threading.Lock()

    def address(self, registry: str) -> None:
        """`registry` is named by a reference the caller works on (not a host it was redirected to)."""
        with self._lock:
            self._addressed.add(normalize_host(registry))

    def lookup(self, registry: str) -> Credentials | None:
        """Credentials for `registry` (a host with its port, `docker.io` for Docker Hub), or None to go
        anonymous. Explicit credentials are for their hosts, or without any for the registries addressed."""
        host = normalize_host(registry)
        with self._lock:
            bound = host in (self._explicit_hosts or self._addressed)
        if self._explicit is not None and bound:
            return self._explicit
        with self._lock:
            if host not in self._cache:
                self._cache[host] = self._resolve(host)
            return self._cache[host]

    def _resolve(self, host: str) -> Credentials | None:
        for path in (self._docker_config, self._helm_config):
            found = _from_config_file(path, host)
            if found is not None:
                return found
        return None


def _from_config_file(path: Path, host: str) -> Credentials | None:
    config = _read_config(path)
    if not config:
        return None
    found = _from_auths(config.get("auths"), host, path)
    if found is not None:
        return found
    helpers: object = config.get("credHelpers")
    helper: object = None
    if isinstance(helpers, dict):
        helper = next((name for key, name in helpers.items() if normalize_host(str(key)) == host), None)
    helper = helper or config.get("credsStore")
    return _from_helper(str(helper), host) if helper else None


def _read_config(path: Path) -> dict[str, object] | None:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise RegistryError(f"cannot read registry credentials file {path}: {error.strerror}") from None
    try:
        config: object = json.loads(text) if text.strip() else {}
    except ValueError as error:
        raise RegistryError(f"registry credentials file {path} is not valid JSON ({error}); fix or remove it") from None
    if not isinstance(config, dict):
        raise RegistryError(f"registry credentials file {path} is not a JSON object; fix or remove it")
    return {str(key): value for key, value in config.items()}


def _from_auths(auths: object, host: str, path: Path) -> Credentials | None:
    if not isinstance(auths, dict):
        return None
    for key, entry in auths.items():
        if not isinstance(key, str) or normalize_host(key) != host or not isinstance(entry, dict):
            continue
        source = f"{path} (auths.{key})"
        if entry.get("identitytoken"):
            username = str(entry.get("username") or "")
            return Credentials(username, identity_token=str(entry["identitytoken"]), source=source)
        if entry.get("auth"):
            username, password = _decode_auth(str(entry["auth"]), source)
            return Credentials(username, password, source=source)
        if entry.get("username"):
            return Credentials(str(entry["username"]), str(entry.get("password") or ""), source=source)
        # An empty entry is what `docker login` leaves when a credsStore holds the secret.
    return None


def _decode_auth(value: str, source: str) -> tuple[str, str]:
    try:
        username, colon, password = base64.b64decode(value, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        colon = ""
    if not colon:
        raise AuthError(f"{source}: `auth` is not base64 of user:password; run `docker login` again")
    return username, password


def _from_helper(name: str, host: str) -> Credentials | None:
    program = f"docker-credential-{name}"
    server = DOCKER_HUB_SERVER if host == DOCKER_HUB else host
    try:
        result = subprocess.run([program, "get"], input=server, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        log.warning("credential helper %s is not installed; trying %s without credentials", program, host)
        return None
    except subprocess.TimeoutExpired:
        raise AuthError(f"credential helper {program} did not answer for {host} within 60s") from None
    if result.returncode != 0:
        message = (result.stdout + result.stderr).strip()
        if "credentials not found" in message.lower():
            return None
        first_line = next(iter(_lines(message)), f"exit status {result.returncode}")
        raise AuthError(f"credential helper {program} failed for {host}: {first_line}")
    return _parse_helper_answer(result.stdout, program, host)


def _parse_helper_answer(text: str, program: str, host: str) -> Credentials | None:
    try:
        answer: object = json.loads(text)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise AuthError(f"credential helper {program} answered for {host} with something that is not JSON")
    username, secret = str(answer.get("Username") or ""), str(answer.get("Secret") or "")
    source = f"credential helper {program}"
    if username == _TOKEN_USERNAME:
        return Credentials(username, identity_token=secret, source=source)
    return Credentials(username, secret, source=source) if username or secret else None


def _lines(text: str) -> Iterator[str]:
    return (line.strip()[:200] for line in text.splitlines() if line.strip())
