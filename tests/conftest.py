"""Shared fixtures: real servers started once per session (or per test where state matters)."""

from __future__ import annotations

from pathlib import Path

import pytest

from servers import HelmRepo, Registry, helm_binary


@pytest.fixture(scope="session")
def registry(tmp_path_factory) -> Registry:
    """A plain-HTTP Distribution registry shared by the session: use unique repository names per test."""
    with Registry(tmp_path_factory.mktemp("registry")) as server:
        yield server


@pytest.fixture(scope="session")
def helm_repo(tmp_path_factory) -> HelmRepo:
    """An nginx classic Helm repository (PUT without auth) shared by the session: use unique paths per test."""
    with HelmRepo(tmp_path_factory.mktemp("helmrepo")) as server:
        yield server


@pytest.fixture
def helm_home(tmp_path) -> Path:
    if helm_binary() is None:
        pytest.fail("helm is not installed: run scripts/test-prereqs.sh")
    return tmp_path / "helm-home"
