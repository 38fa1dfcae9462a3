"""Classic (HTTP, index.yaml) Helm repositories: find and fetch a chart (verified), and publish one.

The repository format: `<repo>/index.yaml` lists `entries: {name: [{version, urls: [...], digest}, ...]}`;
each URL is absolute or relative to the repository URL, and `digest` is the sha256 of the .tgz.
Publishing speaks the two protocols sites run: ChartMuseum's API (`POST /api/charts`, also Harbor's legacy
chart repository) and plain HTTP PUT of the .tgz followed by a merged index.yaml (nginx/Apache WebDAV,
Artifactory and Nexus raw repositories).
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
    return _request("GET", url, options, auth, what)


def _request(
    method: str, url: str, options: TransportOptions, auth: RepoAuth, what: str, *, content: bytes | None = None,
    allow: tuple[int, ...] = (),
) -> httpx.Response:
    with make_client(options) as client:

        def attempt() -> httpx.Response:
            return raise_for_retry(client.request(method, url, content=content, auth=auth.httpx_auth()))

        response = with_retries(options, what, attempt)
    if response.status_code in allow:
        return response
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


# --- publishing --------------------------------------------------------------------------------------------------

REPO_TYPES = ("auto", "chartmuseum", "put")


@dataclass(frozen=True)
class Published:
    name: str
    version: str
    url: str
    sent: bool  # False: the repository already held this exact archive


def detect_repo_type(repo_url: str, options: TransportOptions, auth: RepoAuth) -> str:
    """ChartMuseum answers `GET /api/charts` with JSON; anything else is taken as a PUT repository."""
    response = _request("GET", f"{repo_url.rstrip('/')}/api/charts", options, auth, f"Helm repository {repo_url}",
                        allow=(200, 401, 403, 404, 405))
    is_json = response.headers.get("content-type", "").startswith("application/json")
    return "chartmuseum" if response.status_code == 200 and is_json else "put"


def publish_chart(
    repo_url: str, archive: bytes, metadata: dict[str, Any], options: TransportOptions, auth: RepoAuth = RepoAuth(),
    repo_type: str = "auto",
) -> Published:
    """Publish a chart archive byte for byte; skip it when the index already lists the same digest."""
    name, version = str(metadata["name"]), str(metadata["version"])
    digest = hashlib.sha256(archive).hexdigest()
    index = _index_or_empty(repo_url, options, auth)
    existing = _entry(index, name, version)
    filename = f"{name}-{version}.tgz"
    if existing is not None:
        if str(existing.get("digest", "")).removeprefix("sha256:") == digest:
            return Published(name, version, urljoin(repo_url.rstrip("/") + "/", filename), sent=False)
        raise ChartError(
            f"Helm repository {repo_url} already has {name} {version} with digest {existing.get('digest')}, not "
            f"sha256:{digest}; a chart version is immutable: remove it there or bump the version"
        )
    if repo_type == "auto":
        repo_type = detect_repo_type(repo_url, options, auth)
    if repo_type == "chartmuseum":
        _request("POST", f"{repo_url.rstrip('/')}/api/charts", options, auth, f"upload of {filename} to {repo_url}",
                 content=archive)
    else:
        _put_with_index(repo_url, filename, archive, metadata, digest, index, options, auth)
    return Published(name, version, urljoin(repo_url.rstrip("/") + "/", filename), sent=True)


def _put_with_index(
    repo_url: str, filename: str, archive: bytes, metadata: dict[str, Any], digest: str, index: dict[str, Any],
    options: TransportOptions, auth: RepoAuth,
) -> None:
    base = repo_url.rstrip("/")
    _request("PUT", f"{base}/{filename}", options, auth, f"upload of {filename} to {repo_url}", content=archive)
    # Read the index again right before writing it, to keep entries another publisher added meanwhile.
    index = _index_or_empty(repo_url, options, auth)
    entry = {key: value for key, value in metadata.items() if key not in ("dependencies",)}
    entry.update({
        "apiVersion": metadata.get("apiVersion", "v2"),
        "urls": [filename],
        "digest": digest,
        "created": _now(),
    })
    if metadata.get("dependencies"):
        entry["dependencies"] = metadata["dependencies"]
    versions = [e for e in index["entries"].get(entry["name"], []) if str(e.get("version")) != entry["version"]]
    index["entries"][entry["name"]] = [entry] + versions
    index["generated"] = _now()
    body = yaml.safe_dump(index, sort_keys=False).encode()
    _request("PUT", index_url(repo_url), options, auth, f"upload of index.yaml to {repo_url}", content=body)


def _index_or_empty(repo_url: str, options: TransportOptions, auth: RepoAuth) -> dict[str, Any]:
    try:
        index = fetch_index(repo_url, options, auth)
    except NotFound:
        return {"apiVersion": "v1", "entries": {}}
    index.setdefault("entries", {})
    if index["entries"] is None:
        index["entries"] = {}
    return index


def _entry(index: dict[str, Any], name: str, version: str) -> dict[str, Any] | None:
    for entry in (index.get("entries") or {}).get(name) or []:
        if str(entry.get("version")) == version:
            return entry
    return None


def _now() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat()
