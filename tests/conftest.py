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


@pytest.fixture(scope="session")
def plain_client():
    """A wsm RegistryClient (thread-safe) for the plain-HTTP test registries and fault proxies, retrying quickly."""
    from wsm._http import TransportOptions
    from wsm._remote import RegistryClient, RegistryOptions

    transport = TransportOptions(plain_http=True, retries=6, backoff=0.01, max_backoff=0.05)
    with RegistryClient(RegistryOptions(transport=transport)) as client:
        yield client


@pytest.fixture(scope="session")
def docker_engine(tmp_path_factory):
    """A dockerd of our own (vfs, no networking); it takes seconds to start, so one per session."""
    from servers import DockerEngine

    import shutil
    import tempfile

    # The socket path must stay under the 108-byte limit of unix socket names: keep the directory short.
    workdir = Path(tempfile.mkdtemp(prefix="wsm-dockerd-"))
    try:
        with DockerEngine(workdir) as engine:
            yield engine
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
