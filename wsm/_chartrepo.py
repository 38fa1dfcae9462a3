"""Chart repositories behind one interface: a classic Helm repository, an OCI registry, or a chart on disk.

Modelled on regclient's `scheme` package: one `ChartRepository` protocol, one implementation per kind of place,
and one factory (`open_repository`) that picks the kind once, from the location the user gave. Callers fetch
and publish without knowing which kind they hold.

- `ClassicRepository`: `<url>/index.yaml` lists `entries: {name: [{version, urls: [...], digest}, ...]}`; each
  URL is absolute or relative to the repository URL, and `digest` is the sha256 of the .tgz. Publishing speaks
  the two protocols sites run: ChartMuseum's API (`POST /api/charts`, also Harbor's legacy chart repository)
  and plain HTTP PUT of the .tgz followed by a merged index.yaml (nginx/Apache WebDAV, Artifactory and Nexus
  raw repositories). One HTTP client (one connection pool) serves every request of one repository object.
- `OciRepository`: Helm charts as OCI artifacts, as `helm push` and `helm pull oci://` handle them. The
  manifest is an OCI image manifest whose config (`application/vnd.cncf.helm.config.v1+json`) is Chart.yaml as
  JSON and whose one layer (`application/vnd.cncf.helm.chart.content.v1.tar+gzip`) is the .tgz itself, byte for
  byte. Helm tags version `1.2.3+build` as `1.2.3_build`, since `+` is not allowed in a tag.
- `LocalRepository`: a chart directory or a .tgz file; it can only be read.

Archives are kept byte for byte as served (and checked against the digest the repository gives), so that a
bundle holds exactly what upstream published. Every read from a server is bounded (`MAX_INDEX_BYTES`,
`MAX_CHART_BYTES`, `MAX_ANSWER_BYTES`): a broken or hostile server cannot fill memory.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import quote, urljoin

import httpx
import yaml

from ._archive import MAX_INFLATED_BYTES
from ._chart import Chart, chart_from_archive, load_chart
from ._exceptions import AuthError, ChartError, DigestMismatch, NotFound, RegistryError
from ._format import utc_now
from ._http import TransportOptions, make_client, raise_for_retry, read_up_to, with_retries
from ._reference import Reference
from ._remote import (
    HELM_CHART_CONFIG,
    HELM_CHART_LAYER,
    OCI_MANIFEST,
    Descriptor,
    RegistryClient,
    RegistryOptions,
    compute_digest,
)
from ._versions import highest_matching, is_exact, parse_version
from ._yaml import INDEX, load_yaml

# The largest index.yaml read: public indexes with thousands of charts reach tens of MiB; more than this is a
# misconfigured or hostile server. Enforced while the body streams in.
MAX_INDEX_BYTES = INDEX.max_bytes  # the index budget of _yaml: the download stops where parsing would
# The largest chart archive read: an archive larger than what `_archive` lets a chart inflate to is refused
# there anyway, so it is not worth holding in memory first.
MAX_CHART_BYTES = MAX_INFLATED_BYTES
# ChartMuseum's answers and error bodies: only a status line's worth of them is ever used.
MAX_ANSWER_BYTES = 4 * 1024

REPO_TYPES = ("auto", "chartmuseum", "put")
_ENTRIES_SHOWN = 5  # newest versions or tags named when none matches


# --- the interface ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RepoAuth:
    """Basic-auth credentials for a classic repository (OCI registries use `RegistryOptions`' credentials)."""

    username: str | None = None
    password: str | None = None

    def httpx_auth(self) -> httpx.BasicAuth | None:
        return httpx.BasicAuth(self.username, self.password or "") if self.username else None


@dataclass(frozen=True)
class FetchedChart:
    """A chart as its repository served it, read (safely) into a `Chart`."""

    chart: Chart  # `chart.archive` is the .tgz byte for byte as served (None for a chart directory)
    version: str  # the version the repository chose: the index entry's, the tag's, or Chart.yaml's
    origin: str  # where it came from, for messages: "platform-0.3.0 from https://charts.corp"

    @property
    def name(self) -> str:
        return self.chart.name

    @property
    def archive(self) -> bytes | None:
        return self.chart.archive


@dataclass(frozen=True)
class Published:
    name: str
    version: str
    url: str
    sent: bool  # False: the repository already held this exact archive


class ChartRepository(Protocol):
    """A place charts live. Use as a context manager, or call `close()`."""

    location: str  # the URL or path as the user gave it

    def fetch(self, name: str, constraint: str | None) -> FetchedChart:
        """Chart `name` at the highest version matching `constraint` (a Helm range; None: any release)."""
        ...

    def publish(self, archive: bytes, metadata: Mapping[str, Any]) -> Published:
        """Store `archive` byte for byte as `metadata`'s name and version; a version there already is kept.

        The same archive there already: `sent=False`. Another archive under that version: `ChartError`.
        """
        ...

    def close(self) -> None: ...

    def __enter__(self) -> ChartRepository: ...

    def __exit__(self, *exc: object) -> None: ...


def open_repository(
    location: str,
    *,
    transport: TransportOptions = TransportOptions(),
    auth: RepoAuth = RepoAuth(),
    registry_options: RegistryOptions | None = None,
    registry_client: RegistryClient | None = None,
    repo_type: str = "auto",
) -> ChartRepository:
    """The repository at `location`: `oci://...` an OCI registry, `http(s)://...` a classic one, else a path.

    `registry_client` (reused, not closed) or `registry_options` serve an OCI repository; without either, one
    is made from `transport` and `auth`. `repo_type` says how to publish to a classic repository.
    """
    if location.startswith("oci://"):
        if registry_client is None and registry_options is None:
            host = location.removeprefix("oci://").split("/", 1)[0]
            registry_options = RegistryOptions(
                transport=transport, username=auth.username, password=auth.password, credential_hosts=(host,)
            )
        return OciRepository(location, client=registry_client, options=registry_options)
    if location.startswith(("http://", "https://")):
        return ClassicRepository(location, transport=transport, auth=auth, repo_type=repo_type)
    return LocalRepository(Path(location))


_Self = TypeVar("_Self", bound="_Closing")


class _Closing:
    """Context-manager support for the implementations."""

    def close(self) -> None:
        pass

    def __enter__(self: _Self) -> _Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- classic repositories (index.yaml) --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Answer:
    status: int
    headers: httpx.Headers
    body: bytes
    complete: bool  # False: the body was longer than asked for, and the rest was left unread


class ClassicRepository(_Closing):
    """A classic Helm repository at an http(s) URL; one connection pool for every request it makes."""

    def __init__(
        self,
        url: str,
        *,
        transport: TransportOptions = TransportOptions(),
        auth: RepoAuth = RepoAuth(),
        repo_type: str = "auto",
    ) -> None:
        if repo_type not in REPO_TYPES:
            raise ChartError(f"Helm repository type {repo_type!r} is not one of {', '.join(REPO_TYPES)}")
        self.location = url
        self._base = url.rstrip("/")
        self._origin = httpx.URL(self._base + "/")
        self._transport = transport
        self._auth = auth.httpx_auth()
        self._protocol = None if repo_type == "auto" else repo_type  # detected at the first publish
        self._http = make_client(transport)

    def close(self) -> None:
        self._http.close()

    # -- fetching --------------------------------------------------------------------------------------------

    def fetch(self, name: str, constraint: str | None) -> FetchedChart:
        entry = self._select(self._index(), name, constraint or "*")
        version = str(entry.get("version"))
        urls = entry.get("urls")
        if not isinstance(urls, list) or not urls or not isinstance(urls[0], str):
            raise ChartError(f"chart {name} {version} in Helm repository {self.location}: the index entry has no "
                             "download URL")
        url = urljoin(self._base + "/", urls[0])
        what = f"chart {name} {version} from {url}"
        answer = self._request("GET", url, what, limit=MAX_CHART_BYTES)
        if not answer.complete:
            raise ChartError(f"{what}: larger than {MAX_CHART_BYTES // 2**20} MiB; refusing to read it")
        expected = str(entry.get("digest") or "")
        actual = hashlib.sha256(answer.body).hexdigest()
        if expected and expected.removeprefix("sha256:") != actual:
            raise DigestMismatch(
                f"{what}: sha256 {actual} does not match the index's digest {expected}; the repository or a proxy "
                "altered it",
                expected="sha256:" + expected.removeprefix("sha256:"), actual="sha256:" + actual,
            )
        origin = f"{name}-{version} from {self.location}"
        return FetchedChart(chart_from_archive(answer.body, origin), version, origin)

    def _index(self) -> dict[str, Any]:
        """index.yaml, parsed; raise NotFound when the repository has none."""
        what = f"Helm repository {self.location}"
        answer = self._request("GET", self._index_url, what, limit=MAX_INDEX_BYTES)
        if not answer.complete:
            raise ChartError(f"{what}: index.yaml is larger than {MAX_INDEX_BYTES // 2**20} MiB; refusing to read it")
        index = load_yaml(answer.body, f"{what}: index.yaml", ChartError, INDEX)
        if isinstance(index, dict) and index.get("entries") is None:
            index["entries"] = {}  # a repository with no chart yet
        if not isinstance(index, dict) or not isinstance(index["entries"], dict):
            raise ChartError(f"{what}: index.yaml has no `entries` mapping; is this a Helm repository?")
        return index

    def _select(self, index: dict[str, Any], name: str, constraint: str) -> dict[str, Any]:
        """The index entry of `name` at the highest version that satisfies `constraint`."""
        entries = index["entries"].get(name)
        if not entries or not isinstance(entries, list):
            raise NotFound(f"chart {name!r} is not in Helm repository {self.location}; check the chart name")
        by_version = {str(entry.get("version")): entry for entry in entries if isinstance(entry, dict)}
        if is_exact(constraint) and constraint in by_version:
            return by_version[constraint]
        version = _highest(repr(name), constraint, by_version)
        if version is None:
            raise NotFound(
                f"chart {name!r} has no version matching {constraint!r} in {self.location} "
                f"(newest: {', '.join(_newest(by_version))})"
            )
        return by_version[version]

    # -- publishing ------------------------------------------------------------------------------------------

    def publish(self, archive: bytes, metadata: Mapping[str, Any]) -> Published:
        name, version = str(metadata["name"]), str(metadata["version"])
        digest = hashlib.sha256(archive).hexdigest()
        filename = f"{name}-{version}.tgz"
        url = f"{self._base}/{quote(filename, safe='')}"  # names are validated; encoding keeps the URL one path
        index = self._index_or_empty()
        existing = _entry(index, name, version)
        if existing is not None:
            if str(existing.get("digest", "")).removeprefix("sha256:") == digest:
                return Published(name, version, url, sent=False)
            raise ChartError(
                f"Helm repository {self.location} already has {name} {version} with digest {existing.get('digest')}, "
                f"not sha256:{digest}; a chart version is immutable: remove it there or bump the version"
            )
        what = f"upload of {filename} to {self.location}"
        if self._publishing_protocol() == "chartmuseum":
            self._request("POST", f"{self._base}/api/charts", what, content=archive)
        else:
            self._request("PUT", url, what, content=archive)
            self._put_index(metadata, filename, digest)
        return Published(name, version, url, sent=True)

    def _publishing_protocol(self) -> str:
        """ChartMuseum answers `GET /api/charts` with JSON; anything else is taken as a PUT repository."""
        if self._protocol is None:
            answer = self._request("GET", f"{self._base}/api/charts", f"Helm repository {self.location}",
                                   allow=(401, 403, 404, 405))
            is_json = answer.headers.get("content-type", "").startswith("application/json")
            self._protocol = "chartmuseum" if answer.status == 200 and is_json else "put"
        return self._protocol

    def _put_index(self, metadata: Mapping[str, Any], filename: str, digest: str) -> None:
        # Read the index again right before writing it, to keep entries another publisher added meanwhile.
        index = self._index_or_empty()
        now = utc_now()
        entry = {key: value for key, value in metadata.items() if key != "dependencies"}
        entry.update({"apiVersion": metadata.get("apiVersion", "v2"), "urls": [filename], "digest": digest,
                      "created": now})
        if metadata.get("dependencies"):
            entry["dependencies"] = metadata["dependencies"]
        name, version = str(entry["name"]), str(entry["version"])
        kept = [e for e in index["entries"].get(name) or [] if isinstance(e, dict) and str(e.get("version")) != version]
        index["entries"][name] = [entry, *kept]
        index["generated"] = now
        body = yaml.safe_dump(index, sort_keys=False).encode()
        self._request("PUT", self._index_url, f"upload of index.yaml to {self.location}", content=body)

    def _index_or_empty(self) -> dict[str, Any]:
        try:
            return self._index()
        except NotFound:
            return {"apiVersion": "v1", "entries": {}}

    # -- HTTP ------------------------------------------------------------------------------------------------

    @property
    def _index_url(self) -> str:
        return f"{self._base}/index.yaml"

    def _request(
        self, method: str, url: str, what: str, *, content: bytes | None = None, limit: int = MAX_ANSWER_BYTES,
        allow: tuple[int, ...] = (),
    ) -> _Answer:
        """Send one request (retried), reading at most `limit` bytes of the answer; error statuses raise.

        Credentials go only to URLs of the repository's own origin, as Helm does: an index may point anywhere.
        """
        auth = self._auth if _same_origin(httpx.URL(url), self._origin) else None

        def attempt() -> _Answer:
            request = self._http.build_request(method, url, content=content)
            response = raise_for_retry(self._http.send(request, auth=auth, stream=True))
            try:
                if response.status_code >= 400 and response.status_code not in allow:
                    body, _ = read_up_to(response, MAX_ANSWER_BYTES)
                    raise _status_error(response, body, url, what)
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > limit:
                    return _Answer(response.status_code, response.headers, b"", complete=False)
                body, more = read_up_to(response, limit)
                return _Answer(response.status_code, response.headers, body, complete=not more)
            finally:
                response.close()  # an unread rest closes the connection instead of returning it to the pool

        return with_retries(self._transport, what, attempt)


def _status_error(response: httpx.Response, body: bytes, url: str, what: str) -> RegistryError:
    status = response.status_code
    if status == 404:
        return NotFound(f"{what}: {url} not found (404); check the URL", status=status)
    if status in (401, 403):
        return AuthError(f"{what}: access refused ({status}); check the username and password", status=status)
    detail = _detail(body, response.headers.get("content-type", ""))
    return RegistryError(f"{what}: server answered {status}{f' ({detail})' if detail else ''}", status=status)


def _detail(body: bytes, content_type: str) -> str:
    """The server's reason from an error body: ChartMuseum's `{"error": ...}`, or a short plain-text line."""
    text = body.decode("utf-8", "replace")
    if content_type.startswith("application/json"):
        try:
            data = json.loads(text)
        except ValueError:
            return ""
        reason = (data.get("error") or data.get("message")) if isinstance(data, dict) else None
        text = str(reason or "")
    elif not content_type.startswith("text/plain"):
        return ""  # an HTML error page says no more than the status
    return " ".join(text.split())[:200]


def _same_origin(url: httpx.URL, origin: httpx.URL) -> bool:
    return (url.scheme, url.host, url.port) == (origin.scheme, origin.host, origin.port)


def _entry(index: dict[str, Any], name: str, version: str) -> dict[str, Any] | None:
    for entry in index["entries"].get(name) or []:
        if isinstance(entry, dict) and str(entry.get("version")) == version:
            return entry
    return None


# --- OCI registries ---------------------------------------------------------------------------------------------


class OciRepository(_Closing):
    """Helm charts as OCI artifacts under `oci://host/path`: chart `name` is `host/path/name:<version>`."""

    def __init__(
        self, location: str, *, client: RegistryClient | None = None, options: RegistryOptions | None = None
    ) -> None:
        base = location.removeprefix("oci://").rstrip("/")
        if not location.startswith("oci://") or not base:
            raise ChartError(f"{location!r} is not an OCI repository; give it as oci://host/path")
        self.location = location
        self._base = base
        self._owns_client = client is None
        self._client = client if client is not None else RegistryClient(options or RegistryOptions())

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    def fetch(self, name: str, constraint: str | None) -> FetchedChart:
        base = self._reference(name, "latest")
        tag = self._tag_for(base, name, constraint)
        manifest = self._client.get_manifest(base.with_tag(tag))  # checked against the digest the registry gives
        origin = f"{self.location.rstrip('/')}/{name}:{tag}"
        layers = [layer for layer in manifest.layers() if layer.media_type == HELM_CHART_LAYER]
        if not layers:
            raise ChartError(f"{origin} is not a Helm chart (no {HELM_CHART_LAYER} layer)")
        if layers[0].size > MAX_CHART_BYTES:
            raise ChartError(f"{origin}: the chart is larger than {MAX_CHART_BYTES // 2**20} MiB; refusing to read it")
        archive = self._client.read_blob(base, layers[0])  # checked against the manifest's layer digest
        return FetchedChart(chart_from_archive(archive, origin), tag.replace("_", "+"), origin)

    def publish(self, archive: bytes, metadata: Mapping[str, Any]) -> Published:
        name, version = str(metadata["name"]), str(metadata["version"])
        target = self._reference(name, version.replace("+", "_"))
        config = json.dumps({k: v for k, v in metadata.items() if v is not None}, separators=(",", ":")).encode()
        layer = Descriptor(HELM_CHART_LAYER, compute_digest(archive), len(archive))
        config_descriptor = Descriptor(HELM_CHART_CONFIG, compute_digest(config), len(config))
        manifest = json.dumps({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config_descriptor.to_dict(),
            "layers": [layer.to_dict()],
            "annotations": {"org.opencontainers.image.title": name, "org.opencontainers.image.version": version},
        }, separators=(",", ":")).encode()
        url = f"oci://{target.name}:{target.tag}"
        existing = self._client.head_manifest(target)
        if existing is not None and self._holds_layer(target, existing, layer.digest):
            return Published(name, version, url, sent=False)
        if existing is not None:
            raise ChartError(f"{url} already holds another archive for {name} {version}; a chart version is immutable")
        self._client.push_blob(target, layer, archive)
        self._client.push_blob(target, config_descriptor, config)
        self._client.put_manifest(target, manifest, OCI_MANIFEST)
        return Published(name, version, url, sent=True)

    def _reference(self, name: str, tag: str) -> Reference:
        return Reference.parse(f"{self._base}/{name}:{tag}")

    def _holds_layer(self, target: Reference, existing: Descriptor, layer_digest: str) -> bool:
        manifest = self._client.get_manifest(target.with_digest(existing.digest))
        return any(layer.digest == layer_digest for layer in manifest.layers())

    def _tag_for(self, base: Reference, name: str, constraint: str | None) -> str:
        if constraint and is_exact(constraint):
            return constraint.replace("+", "_")
        chart = f"{self.location.rstrip('/')}/{name}"
        tags = self._client.list_tags(base)
        versions = {tag.replace("_", "+"): tag for tag in tags}
        best = _highest(chart, constraint or "*", versions)
        if best is None:
            raise NotFound(f"chart {chart} has no version matching {constraint or '*'!r} "
                           f"(newest: {', '.join(_newest(versions)) or 'none'})")
        return versions[best]


# --- a chart on disk --------------------------------------------------------------------------------------------


class LocalRepository(_Closing):
    """One chart on disk, a directory or a .tgz file. It holds that chart only, so `fetch` does not check
    `name` (a release manifest may call a local chart anything); it cannot be published to."""

    def __init__(self, path: Path) -> None:
        self.location = str(path)
        self._path = path

    def fetch(self, name: str, constraint: str | None) -> FetchedChart:
        if self._path.is_file() and self._path.stat().st_size > MAX_CHART_BYTES:
            raise ChartError(f"chart {self._path} is larger than {MAX_CHART_BYTES // 2**20} MiB; refusing to read it")
        chart = load_chart(self._path)
        if constraint and _highest(str(self._path), constraint, [chart.version]) is None:
            raise ChartError(f"chart {self._path} is version {chart.version}, which does not match {constraint!r}")
        return FetchedChart(chart, chart.version, self.location)

    def publish(self, archive: bytes, metadata: Mapping[str, Any]) -> Published:
        raise ChartError(
            f"{self.location} is a local path, not a chart repository: charts cannot be published to it; "
            "give an http(s):// or oci:// repository"
        )


# --- versions ---------------------------------------------------------------------------------------------------


def _highest(what: str, constraint: str, versions: Mapping[str, Any] | list[str]) -> str | None:
    try:
        return highest_matching(constraint, versions)
    except ValueError as error:
        raise ChartError(f"chart {what}: version {constraint!r} is not a valid version or range ({error})") from None


def _newest(versions: Mapping[str, Any]) -> list[str]:
    """The newest few of `versions` (semver order; anything unparsable sorts first), oldest first."""
    parsed = sorted((v, text) for text in versions if (v := parse_version(text)) is not None)
    others = sorted(text for text in versions if parse_version(text) is None)
    return (others + [text for _, text in parsed])[-_ENTRIES_SHOWN:]
