"""Helpers shared by the registry-client tests (tests/test_remote*.py)."""

from __future__ import annotations

import os
import stat
import uuid
from pathlib import Path

import pytest

from wsm import Reference
from wsm._http import TransportOptions
from wsm._remote import RegistryClient, RegistryOptions

# Short backoffs: the tests inject failures on purpose and should not sleep through them.
FAST = dict(backoff=0.01, max_backoff=0.05)


def transport(**overrides) -> TransportOptions:
    return TransportOptions(**{"plain_http": True, **FAST, **overrides})


def client(**options) -> RegistryClient:
    """A client for the plain-HTTP test registries (pass `transport=` for TLS ones)."""
    options.setdefault("transport", transport())
    return RegistryClient(RegistryOptions(**options))


def unique(name: str) -> str:
    """A repository name no other test uses (the session registry is shared)."""
    return f"{name}-{uuid.uuid4().hex[:8]}"


def ref(host: str, repository: str, tag: str = "1.0") -> Reference:
    return Reference.parse(f"{host}/{repository}:{tag}")


@pytest.fixture(autouse=True)
def isolated_credentials(monkeypatch, tmp_path: Path) -> Path:
    """Keep the machine's own docker and helm logins out of the tests; returns the DOCKER_CONFIG dir."""
    home = tmp_path / "credentials-home"
    home.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(home / "docker"))
    monkeypatch.setenv("HELM_REGISTRY_CONFIG", str(home / "helm" / "config.json"))
    return home / "docker"


def install_helper(directory: Path, host: str, monkeypatch, user: str, password: str) -> Path:
    """`docker-credential-test` on PATH (docker's credential-helper protocol: `get`, the server on stdin, JSON
    out): knows `user`/`password` for `host` only, logs what it was asked for."""
    directory.mkdir(parents=True, exist_ok=True)
    script = directory / "docker-credential-test"
    asked = directory / "asked.log"
    script.write_text(
        "#!/bin/sh\n"
        f'[ "$1" = get ] || exit 2\n'
        "read server\n"
        f'echo "$server" >> {asked}\n'
        f'if [ "$server" = "{host}" ]; then\n'
        f'  echo \'{{"ServerURL": "{host}", "Username": "{user}", "Secret": "{password}"}}\'\n'
        "else\n"
        "  echo 'credentials not found in native keychain'; exit 1\n"
        "fi\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{directory}{os.pathsep}{os.environ['PATH']}")
    return asked
