"""Helpers shared by the registry-client tests (tests/test_remote*.py)."""

from __future__ import annotations

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
