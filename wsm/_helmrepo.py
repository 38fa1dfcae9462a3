"""Classic (HTTP, index.yaml) Helm repositories: find a chart version and fetch its archive, verified.

The repository format: `<repo>/index.yaml` lists `entries: {name: [{version, urls: [...], digest}, ...]}`;
each URL is absolute or relative to the repository URL, and `digest` is the sha256 of the .tgz.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

import httpx
import yaml

from ._exceptions import ChartError, NotFound, RegistryError
from ._http import TransportOptions, make_client, raise_for_retry, with_retries
from ._versions import highest_matching, is_exact, parse_version


@dataclass(frozen=True)
class RepoAuth:
    username: str | None = None
    password: str | None = None

    def httpx_auth(self) -> httpx.BasicAuth | None:
        return httpx.BasicAuth(self.username, self.password or "") if self.username else None


def fetch_index(repo_url: str, options: TransportOptions, auth: RepoAuth = RepoAuth()) -> dict[str, Any]:
    """The repository's index.yaml, parsed."""
    url = index_url(repo_url)
    data = _get(url, options, auth, f"Helm repository {repo_url}").content
    try:
        index = yaml.safe_load(data)
    except yaml.YAMLError:
        raise ChartError(f"Helm repository {repo_url}: index.yaml is not valid YAML") from None
    if not isinstance(index, dict) or not isinstance(index.get("entries", {}), dict):
        raise ChartError(f"Helm repository {repo_url}: index.yaml has no `entries` mapping; is this a Helm repository?")
    return index


def select_entry(index: dict[str, Any], repo_url: str, name: str, constraint: str) -> dict[str, Any]:
    """The index entry of `name` at the highest version that satisfies `constraint`."""
    entries = (index.get("entries") or {}).get(name)
    if not entries:
        raise NotFound(f"chart {name!r} is not in Helm repository {repo_url}; check the chart name")
    by_version = {str(entry.get("version")): entry for entry in entries if isinstance(entry, dict)}
    if is_exact(constraint) and constraint in by_version:
        return by_version[constraint]
    try:
        version = highest_matching(constraint, by_version)
    except ValueError as error:
        raise ChartError(f"chart {name!r}: version {constraint!r} is not a valid version or range ({error})") from None
    if version is None:
        newest = sorted(by_version, key=_sort_key)[-5:]
        raise NotFound(
            f"chart {name!r} has no version matching {constraint!r} in {repo_url} (newest: {', '.join(newest)})"
        )
    return by_version[version]


def fetch_archive(
    repo_url: str, entry: dict[str, Any], options: TransportOptions, auth: RepoAuth = RepoAuth()
) -> bytes:
    """Download the entry's .tgz, checked against the index's digest when the index gives one."""
    urls = entry.get("urls") or []
    if not urls:
        raise ChartError(f"chart {entry.get('name')} {entry.get('version')}: the index entry has no download URL")
    url = urljoin(repo_url.rstrip("/") + "/", urls[0])
    data = _get(url, options, auth, f"chart {entry.get('name')} {entry.get('version')} from {url}").content
    expected = entry.get("digest")
    actual = hashlib.sha256(data).hexdigest()
    if expected and expected.removeprefix("sha256:") != actual:
        raise ChartError(
            f"chart {entry.get('name')} {entry.get('version')} from {url}: sha256 {actual} does not match the "
            f"index's digest {expected}; the repository or a proxy altered it"
        )
    return data


def index_url(repo_url: str) -> str:
    return repo_url.rstrip("/") + "/index.yaml"


def _get(url: str, options: TransportOptions, auth: RepoAuth, what: str) -> httpx.Response:
    with make_client(options) as client:

        def attempt() -> httpx.Response:
            return raise_for_retry(client.get(url, auth=auth.httpx_auth()))

        response = with_retries(options, what, attempt)
    if response.status_code == 404:
        raise NotFound(f"{what}: {url} not found (404); check the URL")
    if response.status_code in (401, 403):
        raise RegistryError(f"{what}: access refused ({response.status_code}); check the username and password")
    if response.status_code >= 400:
        raise RegistryError(f"{what}: server answered {response.status_code}")
    return response


def _sort_key(version: str):
    parsed = parse_version(version)
    return (parsed is not None, parsed or version)
