"""A client for the OCI distribution API (Docker Registry HTTP API v2), modelled on go-containerregistry.

One `RegistryClient` serves many registries and threads: it keeps one httpx connection pool, the credentials
found per registry, and Bearer tokens per (host, scope). Every call retries with backoff on dropped
connections, 429 and 5xx (see `wsm._http.with_retries`); a blob download resumes where it broke off.
Credentials are scoped by host and port; everything read into memory is capped (`MAX_*_BYTES`).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from .._exceptions import AuthError, DigestMismatch, Hint, NotFound, RegistryError
from .._http import (
    RetryableStatus,
    TransportOptions,
    make_client,
    raise_for_retry,
    read_capped,
    read_prefix,
    with_retries,
)
from .._reference import DOCKER_HUB, Reference
from ._auth import Authenticator, merge_scopes, repository_scope
from ._blobs import CHUNK, BlobStorage, PartialDownload, PartialFile, Progress, Source, UploadSource
from ._credentials import CredentialStore, normalize_host
from ._types import (
    ALL_MANIFEST_TYPES,
    Descriptor,
    Manifest,
    compute_digest,
    verify_digest,
)

MAX_MANIFEST_BYTES = 4 * 1024 * 1024  # Distribution's own limit: a registry cannot serve a larger one
MAX_TAG_LIST_BYTES = 64 * 1024 * 1024
# A blob read into memory (a chart archive, a config): larger ones are streamed to disk with `fetch_blob`.
MAX_BLOB_IN_MEMORY_BYTES = 256 * 1024 * 1024
MAX_ERROR_BYTES = 8 * 1024  # of an error answer's body: enough for the registry's message
# Requests per call answering 401s: anonymous, a token, a wider token, and one move to a redirect target.
_AUTH_ROUNDS = 4
_ACCEPT = ", ".join(ALL_MANIFEST_TYPES)
# Answers by which a registry says it will not take a blob in one PUT: upload it in PATCH chunks instead.
_MONOLITHIC_REFUSED = frozenset({405, 411, 413, 501})
_MIN_CHUNK = 256 * 1024
_MAX_RETRY_ROUNDS = 20  # rounds of `TransportOptions.retries` attempts, for a download that keeps progressing
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


@dataclass(frozen=True)
class RegistryOptions:
    transport: TransportOptions = TransportOptions()
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    # Hosts the explicit username/password are for; empty: every registry a reference names (never a host
    # wsm is only redirected or sent to). A download talks to public registries too, and a site's password
    # must not reach them.
    credential_hosts: tuple[str, ...] = ()
    docker_config: Path | None = None  # default $DOCKER_CONFIG/config.json, else ~/.docker/config.json
    helm_registry_config: Path | None = None  # default $HELM_REGISTRY_CONFIG, else Helm's config home
    # {"docker.io": "artifactory.corp/dockerhub"}: pull from the mirror, keep the original name.
    mirrors: Mapping[str, str] = field(default_factory=dict, hash=False)
    concurrency: int = 4
    upload_chunk_size: int = 8 * 1024 * 1024  # for registries that refuse a blob in one PUT


@dataclass(frozen=True)
class _Target:
    """Where a reference's requests go: the host and repository there (a mirror's, for pulls)."""

    registry: str  # whose credentials to use
    host: str
    repository: str
    label: str  # the reference as the user knows it
    via: str = ""  # " (mirror of docker.io)"

    def what(self, action: str) -> str:
        """`action`, naming the registry host unless the reference in it already does."""
        return action if f"{self.host}/" in action else f"{action} at {self.host}{self.via}"


class RegistryClient:
    """Pull from and push to OCI registries. Thread-safe; use as a context manager or call `close()`."""

    def __init__(self, options: RegistryOptions = RegistryOptions()) -> None:
        self._options = options
        self._transport = options.transport
        pool = max(10, options.concurrency * 2)
        limits = httpx.Limits(max_connections=pool, max_keepalive_connections=pool)
        self._http = make_client(options.transport, limits=limits)
        self._credentials = CredentialStore(
            options.username, options.password, options.docker_config, options.helm_registry_config,
            options.credential_hosts,
        )
        self._auth = Authenticator(self._http, options.transport, self._credentials)
        self._mirrors = {normalize_host(key): _strip_scheme(value) for key, value in options.mirrors.items()}
        self._chunked_hosts: set[str] = set()  # registries seen refusing monolithic uploads
        self._chunk_sizes: dict[str, int] = {}  # per registry, once a proxy refused larger upload pieces

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- manifests ---------------------------------------------------------------------------------------

    def get_manifest(self, ref: Reference) -> Manifest:
        """The manifest or index `ref` names (by digest when it has one), verified against that digest."""
        target = self._pull_target(ref)
        what = target.what(f"manifest {target.label}")

        def attempt() -> tuple[bytes, httpx.Headers]:
            response = self._request("GET", target, f"manifests/{ref.identifier}", _pull(target), what,
                                     headers={"Accept": _ACCEPT})
            _raise_for_status(response, what)
            return read_capped(response, MAX_MANIFEST_BYTES, what), response.headers

        raw, headers = with_retries(self._transport, what, attempt)
        manifest = Manifest.from_bytes(raw, _media_type(headers))
        if manifest.media_type not in ALL_MANIFEST_TYPES:
            raise RegistryError(
                f"{what}: served as {manifest.media_type or 'an unknown type'!r}, which wsm cannot carry "
                "(it needs a Docker v2 or OCI manifest or index)"
            )
        if ref.digest:
            verify_digest(raw, ref.digest, what)
        elif headers.get("Docker-Content-Digest", manifest.digest) != manifest.digest:
            raise DigestMismatch(
                f"{what}: content has digest {manifest.digest} but the registry says "
                f"{headers['Docker-Content-Digest']}; a proxy altered it",
                expected=headers["Docker-Content-Digest"], actual=manifest.digest,
            )
        return manifest

    def head_manifest(self, ref: Reference) -> Descriptor | None:
        """Media type, digest and size of what `ref` names, without its body; None when it does not exist."""
        target = self._pull_target(ref)
        what = target.what(f"manifest {target.label}")

        def attempt() -> httpx.Response | None:
            response = self._request("HEAD", target, f"manifests/{ref.identifier}", _pull(target), what,
                                     headers={"Accept": _ACCEPT})
            response.close()
            if response.status_code == 404:
                return None
            _raise_for_status(response, what)
            return response

        response = with_retries(self._transport, what, attempt)
        if response is None:
            return None
        digest = response.headers.get("Docker-Content-Digest")
        length = response.headers.get("Content-Length", "")
        if not digest or not length.isdigit():
            # Some registries leave the digest out of HEAD answers: the body tells.
            return self.get_manifest(ref).descriptor()
        if ref.digest and digest != ref.digest:
            raise DigestMismatch(
                f"{what}: the registry answered with digest {digest}", expected=ref.digest, actual=digest
            )
        return Descriptor(media_type=_media_type(response.headers), digest=digest, size=int(length))

    def put_manifest(self, ref: Reference, raw: bytes, media_type: str) -> str:
        """Store `raw` under `ref.tag` (else `ref.digest`); returns its digest, checked against the registry's."""
        target = self._push_target(ref)
        digest = compute_digest(raw)
        what = target.what(f"push of manifest {target.label}")
        if ref.digest:
            verify_digest(raw, ref.digest, what)

        def attempt() -> httpx.Response:
            response = self._request("PUT", target, f"manifests/{ref.tag or digest}", _push(target), what,
                                     headers={"Content-Type": media_type}, body=raw)
            _raise_for_status(response, what)
            response.close()
            return response

        response = with_retries(self._transport, what, attempt)
        stored = response.headers.get("Docker-Content-Digest")
        if stored and stored != digest:
            raise DigestMismatch(
                f"{what}: the registry stored it as {stored}, not {digest}; it altered the manifest",
                expected=digest, actual=stored,
            )
        return digest

    def referrers(self, ref: Reference, digest: str) -> Manifest | None:
        """The OCI 1.1 referrers index of `digest` in `ref`'s repository (what names it as `subject`); None when
        the registry has no referrers API (404, 400 or 405: Distribution 2.8 and older), so the caller falls back
        to the `sha256-<hex>` tag."""
        target = self._pull_target(ref)
        what = target.what(f"referrers of {target.repository}@{digest}")

        def attempt() -> Manifest | None:
            response = self._request("GET", target, f"referrers/{digest}", _pull(target), what,
                                     headers={"Accept": "application/vnd.oci.image.index.v1+json"})
            if response.status_code in (400, 404, 405):
                response.close()
                return None
            _raise_for_status(response, what)
            return Manifest.from_bytes(read_capped(response, MAX_MANIFEST_BYTES, what), _media_type(response.headers))

        index = with_retries(self._transport, what, attempt)
        if index is not None and not index.is_index:
            raise RegistryError(f"{what}: the registry answered with something that is not an index")
        return index

    def list_tags(self, ref: Reference) -> list[str]:
        """Every tag of `ref`'s repository, following `Link` pages."""
        target = self._pull_target(ref)
        what = target.what(f"tags of {target.repository}")
        return self._list_names(target, self._url(target, "tags/list"), "tags", _pull(target), what)

    def list_repositories(self, registry: str, page: int = 1000) -> list[str]:
        """Every repository the registry's `_catalog` lists (to these credentials), following `Link` pages."""
        target = self._push_target(Reference(registry, "_catalog"))
        url = f"{self._transport.scheme(target.host)}://{target.host}/v2/_catalog?n={page}"
        return self._list_names(target, url, "repositories", ("registry:catalog:*",),
                                target.what(f"the repository catalog of {registry}"))

    def _list_names(self, target: _Target, url: str, key: str, scopes: tuple[str, ...], what: str) -> list[str]:
        names: list[str] = []
        following: str | None = url
        seen: set[str] = set()
        while following and following not in seen:
            seen.add(following)
            page, following = with_retries(
                self._transport, what, functools.partial(self._name_page, target, following, key, scopes, what))
            names.extend(page)
        return names

    def _name_page(self, target: _Target, url: str, key: str, scopes: tuple[str, ...],
                   what: str) -> tuple[list[str], str | None]:
        response = self._request("GET", target, url, scopes, what)
        _raise_for_status(response, what)
        body = _json(read_capped(response, MAX_TAG_LIST_BYTES, what), what)
        names = body.get(key) or []
        if not isinstance(names, list):
            raise RegistryError(f"{what}: the registry answered with `{key}` that is not a list")
        following = response.links.get("next", {}).get("url")
        return [str(name) for name in names], str(response.url.join(following)) if following else None

    # -- blobs -------------------------------------------------------------------------------------------

    def fetch_blob(
        self, ref: Reference, descriptor: Descriptor, dest: Path | BlobStorage, progress: Progress | None = None
    ) -> None:
        """Download a blob into `dest` (a `.partial` path, or a `BlobStorage` such as a tarball member),
        resuming what `dest` already holds; verified.

        On a digest mismatch what `dest` holds is dropped and `DigestMismatch` raised. `progress(n)` hears bytes as they
        land in `dest` (a resumed prefix included); when the download has to start over it hears a negative n.
        """
        target = self._pull_target(ref)
        what = target.what(f"blob {descriptor.digest} of {target.label}")
        storage = PartialFile(dest) if isinstance(dest, Path) else dest
        try:
            partial = PartialDownload(storage, descriptor, progress)
            partial.load_prefix()
            rounds = 0
            while not partial.complete:
                start = partial.offset
                try:
                    with_retries(self._transport, what, lambda: self._download(target, descriptor, partial, what))
                except RegistryError:
                    # A link that keeps dropping but moves data along gets a fresh retry budget: a large layer
                    # over a flaky proxy should finish, not fail after a fixed number of cuts.
                    rounds += 1
                    if partial.offset <= start or rounds >= _MAX_RETRY_ROUNDS:
                        raise  # `dest` keeps what arrived: the next run resumes from there
            partial.finish(what)
        finally:
            storage.close()

    def _download(self, target: _Target, descriptor: Descriptor, partial: PartialDownload, what: str) -> None:
        response = self._blob_response(target, descriptor, partial, what)
        try:
            _raise_for_status(response, what)
            if partial.offset and _range_start(response) != partial.offset:
                partial.restart()  # the registry ignored the Range header and sends it all
            # Pieces as they arrive (at most 64 KiB each): a re-chunking buffer would lose them when the link drops.
            partial.append(response.iter_bytes(), what)
        finally:
            response.close()
        if not partial.complete:
            raise httpx.ReadError("the registry ended the blob early")  # retried, resuming

    def _blob_response(
        self, target: _Target, descriptor: Descriptor, partial: PartialDownload, what: str
    ) -> httpx.Response:
        """The blob's answer from `partial.offset` on; a 416 to a resume starts over once, never more."""
        while True:
            ranged = partial.offset > 0
            headers = {"Range": f"bytes={partial.offset}-"} if ranged else {}
            response = self._request("GET", target, f"blobs/{descriptor.digest}", _pull(target), what,
                                     headers=headers)
            if response.status_code != 416:
                return response
            response.close()
            if not ranged:
                raise RegistryError(f"{what}: the registry answered 416 (range not satisfiable) to a request for "
                                    "the whole blob; it is broken", status=416)
            partial.restart()  # our prefix is no prefix of what the registry has: ask for the whole blob

    def read_blob(self, ref: Reference, descriptor: Descriptor) -> bytes:
        """A small blob (a config, a chart archive) in memory, verified against its digest."""
        target = self._pull_target(ref)
        what = target.what(f"blob {descriptor.digest} of {target.label}")
        if descriptor.size > MAX_BLOB_IN_MEMORY_BYTES:
            raise RegistryError(f"{what}: {descriptor.size} bytes is more than wsm reads into memory "
                                f"({MAX_BLOB_IN_MEMORY_BYTES // 2**20} MiB)")

        def attempt() -> bytes:
            response = self._request("GET", target, f"blobs/{descriptor.digest}", _pull(target), what)
            _raise_for_status(response, what)
            return _read_limited(response, descriptor.size, what)

        data = with_retries(self._transport, what, attempt)
        verify_digest(data, descriptor.digest, what)
        return data

    def has_blob(self, ref: Reference, digest: str) -> bool:
        target = self._push_target(ref)
        return self._has_blob(target, digest, _pull(target))

    def _has_blob(self, target: _Target, digest: str, scopes: tuple[str, ...]) -> bool:
        what = target.what(f"blob {digest} in {target.repository}")

        def attempt() -> bool:
            response = self._request("HEAD", target, f"blobs/{digest}", scopes, what)
            response.close()
            if response.status_code == 404:
                return False
            _raise_for_status(response, what)  # a HEAD answer has no body to read an error code from
            return True

        return with_retries(self._transport, what, attempt)

    def mount_blob(self, ref: Reference, digest: str, from_repository: str) -> bool:
        """Ask the registry to link a blob from another of its repositories; True if it did (201)."""
        target = self._push_target(ref)
        scopes = merge_scopes(_push(target), (repository_scope(from_repository, "pull"),))
        what = target.what(f"mount of blob {digest} from {from_repository} into {target.repository}")

        def attempt() -> bool:
            response = self._request("POST", target, "blobs/uploads/", scopes, what,
                                     params={"mount": digest, "from": from_repository})
            _raise_for_status(response, what)
            response.close()
            if response.status_code == 201:
                return True
            if response.headers.get("Location"):  # it opened an upload session instead
                self._cancel_upload(target, _location(response, what), scopes)
            return False

        return with_retries(self._transport, what, attempt)

    def push_blob(
        self, ref: Reference, descriptor: Descriptor, source: Source, progress: Progress | None = None,
        known_missing: bool = False,
    ) -> None:
        """Upload a blob from a file or bytes unless the repository has it (`known_missing`: the caller just
        asked); `progress` hears bytes sent. The bytes are hashed as they are read: a source that does not
        hash to the digest fails the upload (`DigestMismatch`) before the registry can accept it."""
        target = self._push_target(ref)
        scopes = _push(target)
        what = target.what(f"upload of blob {descriptor.digest} to {target.repository}")
        upload = UploadSource(source, descriptor, progress)
        if not known_missing and self._has_blob(target, descriptor.digest, scopes):
            upload.progress(descriptor.size)
            return

        def attempt() -> None:
            upload.rewind()  # a retry starts a new upload session from the first byte
            if target.host not in self._chunked_hosts and self._upload_monolithic(target, upload, scopes, what):
                return
            upload.rewind()
            self._upload_chunked(target, upload, scopes, what)

        with_retries(self._transport, what, attempt)

    def _upload_monolithic(self, target: _Target, upload: UploadSource, scopes: tuple[str, ...], what: str) -> bool:
        """One POST, one PUT with the whole blob; False if the registry refuses that."""
        location, _ = self._start_upload(target, scopes, what)
        response = self._request(
            "PUT", target, location, scopes, what,
            params={"digest": upload.descriptor.digest},
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(upload.descriptor.size)},
            body=upload.read,
        )
        if response.status_code in _MONOLITHIC_REFUSED:
            response.close()
            self._chunked_hosts.add(target.host)
            self._cancel_upload(target, location, scopes)
            return False
        _raise_for_upload_status(response, what)
        response.close()
        return True

    def _upload_chunked(self, target: _Target, upload: UploadSource, scopes: tuple[str, ...], what: str) -> None:
        """Upload in PATCH pieces; pieces too large for a proxy in front of the registry (413) are halved."""
        while True:
            chunk_size = self._chunk_sizes.get(target.host, self._options.upload_chunk_size)
            if self._upload_in_chunks(target, upload, scopes, what, chunk_size):
                return
            if chunk_size <= _MIN_CHUNK:
                raise RegistryError(
                    f"{what}: the registry refuses even {chunk_size}-byte pieces (413); raise the body size limit "
                    "of the proxy in front of it (nginx: client_max_body_size)"
                )
            self._chunk_sizes[target.host] = max(_MIN_CHUNK, chunk_size // 2)
            upload.rewind()

    def _upload_in_chunks(
        self, target: _Target, upload: UploadSource, scopes: tuple[str, ...], what: str, chunk_size: int
    ) -> bool:
        """POST, PATCH pieces with Content-Range, PUT with the digest; False if a piece was too large (413)."""
        location, minimum = self._start_upload(target, scopes, what)
        chunk_size = max(chunk_size, minimum)
        size = upload.descriptor.size
        for start in range(0, size, chunk_size):
            length = min(chunk_size, size - start)
            response = self._request(
                "PATCH", target, location, scopes, what,
                headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Length": str(length),
                    "Content-Range": f"{start}-{start + length - 1}",
                },
                body=functools.partial(upload.read, start, length),
            )
            if response.status_code == 413 and chunk_size > minimum:
                response.close()
                self._cancel_upload(target, location, scopes)
                return False
            _raise_for_upload_status(response, what)
            response.close()
            location = _location(response, what)
        response = self._request("PUT", target, location, scopes, what, params={"digest": upload.descriptor.digest},
                                 headers={"Content-Length": "0"})
        _raise_for_upload_status(response, what)
        response.close()
        return True

    def _start_upload(self, target: _Target, scopes: tuple[str, ...], what: str) -> tuple[str, int]:
        """Open an upload session: its URL, and the smallest chunk the registry accepts."""
        response = self._request("POST", target, "blobs/uploads/", scopes, what, headers={"Content-Length": "0"})
        _raise_for_status(response, what)
        response.close()
        minimum = response.headers.get("OCI-Chunk-Min-Length", "0")
        return _location(response, what), int(minimum) if minimum.isdigit() else 0

    def _cancel_upload(self, target: _Target, location: str, scopes: tuple[str, ...]) -> None:
        """Best effort: an abandoned session would otherwise linger until the registry purges it."""
        try:
            self._request("DELETE", target, location, scopes, "").close()
        except (RegistryError, RetryableStatus, httpx.HTTPError):
            pass

    # -- requests ----------------------------------------------------------------------------------------

    def _request(
        self,
        method: str,
        target: _Target,
        path: str,
        scopes: tuple[str, ...],
        what: str,
        *,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
        body: bytes | Callable[[], Iterable[bytes]] | None = None,
    ) -> httpx.Response:
        """Send one request with authentication (answering 401 challenges); the response is streamed.

        A retryable status raises `RetryableStatus` for `with_retries`. `body` may be a factory, so that a
        request refused for authentication can be sent again with a fresh stream. Authentication follows the
        URL's host and port: `target`'s own credentials for its host, a URL elsewhere (a redirect target, an
        upload Location) only that host's.
        """
        url = httpx.URL(path if "://" in path else self._url(target, path))
        # Merged by hand: httpx would replace an upload URL's own query (its `_state`) with `params`.
        url = url.copy_merge_params(params) if params else url
        scope = _scope_of(url, target)
        sent = self._auth.header(scope.host, scope.registry, scopes)
        for attempt in range(_AUTH_ROUNDS):
            request = self._http.build_request(
                method, url, content=body() if callable(body) else body,
                headers={**(headers or {}), **({"Authorization": sent} if sent else {})},
            )
            response = self._send(request, target)
            if response.status_code != 401:
                return raise_for_retry(response)
            response.close()
            challenger = _scope_of(response.url, target)
            if challenger != scope:
                # A redirect target challenged (httpx dropped our Authorization on the way there): it is
                # answered for its own host, never with the origin's credentials, and asked directly.
                url, scope, sent = response.url, challenger, None
                if response.request.method != method:  # a 303 turned the request into a GET
                    method, body = response.request.method, None
            if attempt < _AUTH_ROUNDS - 1:
                sent = self._auth.answer(scope.host, scope.registry, scopes, response, sent)
        raise AuthError(self._auth.refused(scope.host, scope.registry, what), status=401, hint=Hint.CREDENTIALS)

    def _send(self, request: httpx.Request, target: _Target) -> httpx.Response:
        try:
            return self._http.send(request, stream=True)
        except httpx.ConnectError as error:
            if self._transport.plain_http or "wrong version number" not in str(error).lower():
                raise
            raise RegistryError(f"registry {target.host} does not speak TLS", hint=Hint.PLAIN_HTTP) from None

    def _url(self, target: _Target, path: str) -> str:
        return f"{self._transport.scheme(target.host)}://{target.host}/v2/{target.repository}/{path}"

    def _pull_target(self, ref: Reference) -> _Target:
        mirror = self._mirrors.get(normalize_host(ref.registry))
        if not mirror:
            return self._push_target(ref)
        host, _, prefix = mirror.partition("/")
        repository = f"{prefix.strip('/')}/{ref.repository}" if prefix.strip("/") else ref.repository
        self._credentials.address(host)
        return _Target(host, host, repository, ref.familiar, via=f" (mirror of {ref.registry})")

    def _push_target(self, ref: Reference) -> _Target:
        self._credentials.address(ref.registry)
        return _Target(ref.registry, _api_host(ref.registry), ref.repository, ref.familiar)


@dataclass(frozen=True)
class _Scope:
    """Whose challenge and credentials a request's URL falls under: `host` (with its port), stored as `registry`."""

    host: str
    registry: str


def _scope_of(url: httpx.URL, target: _Target) -> _Scope:
    """The target's own scope for its host; any other host (a redirect, an upload Location) is its own."""
    host = url.netloc.decode("ascii").lower()
    if host == httpx.URL(f"{url.scheme}://{target.host}/").netloc.decode("ascii").lower():
        return _Scope(target.host, target.registry)
    return _Scope(host, host)


def _api_host(registry: str) -> str:
    # Docker Hub's name is docker.io; its API lives elsewhere.
    return "registry-1.docker.io" if registry == DOCKER_HUB else registry


def _strip_scheme(value: str) -> str:
    return value.strip().removeprefix("https://").removeprefix("http://").rstrip("/")


def _pull(target: _Target) -> tuple[str, ...]:
    return (repository_scope(target.repository, "pull"),)


def _push(target: _Target) -> tuple[str, ...]:
    return (repository_scope(target.repository, "pull,push"),)


def _media_type(headers: httpx.Headers) -> str:
    return str(headers.get("Content-Type", "")).split(";")[0].strip()


def _range_start(response: httpx.Response) -> int | None:
    if response.status_code != 206:
        return None
    match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
    return int(match.group(1)) if match else None


def _location(response: httpx.Response, what: str) -> str:
    location = response.headers.get("Location")
    if not location:
        raise RegistryError(f"{what}: the registry opened an upload without saying where (no Location header)")
    return str(response.url.join(location))


def _read_limited(response: httpx.Response, limit: int, what: str) -> bytes:
    """The whole body of a blob of `limit` bytes: more is not the blob the manifest names."""
    try:
        return read_capped(response, limit, what)
    except RegistryError:
        raise DigestMismatch(f"{what}: the registry sent more than the expected {limit} bytes") from None


def _json(data: bytes, what: str) -> dict[str, object]:
    try:
        body: object = json.loads(data)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise RegistryError(f"{what}: the registry answered with something that is not a JSON object")
    return {str(key): value for key, value in body.items()}


def _raise_for_upload_status(response: httpx.Response, what: str) -> None:
    if response.status_code < 400:
        return
    error = _first_error(response)
    if response.status_code == 400 and error.get("code") == "DIGEST_INVALID":
        # No `expected`/`actual`: the registry does not say which digest it computed.
        raise DigestMismatch(
            f"{what}: the registry computed another digest for the uploaded bytes; the source is damaged"
        )
    _raise_for_status(response, what, error)


def _raise_for_status(response: httpx.Response, what: str, error: dict[str, str] | None = None) -> None:
    """Turn an error status into a one-line WsmError using the registry's error code (`error`, if read)."""
    status = response.status_code
    if status < 400:
        return
    error = _first_error(response) if error is None else error
    code, message = error.get("code", ""), " ".join(error.get("message", "").split())[:200]
    detail = f" ({code}: {message})" if code else (f" ({message})" if message else "")
    if status == 404:
        remedy = "check the repository name" if code == "NAME_UNKNOWN" else "check the name, tag and digest"
        raise NotFound(f"{what}: not found{detail}; {remedy}", status=status)
    if status == 403:
        raise AuthError(
            f"{what}: access denied (403){detail}; check that these credentials may use this repository", status=status
        )
    raise RegistryError(f"{what}: the registry answered {status}{detail}", status=status)


def _first_error(response: httpx.Response) -> dict[str, str]:
    """The first entry of the distribution error body `{"errors": [{"code", "message", "detail"}]}`.

    Only the first `MAX_ERROR_BYTES` are read (an error body can be endless). A body that is not such JSON
    but short text (a proxy's or a TLS port's complaint) becomes the message.
    """
    try:
        text = read_prefix(response, MAX_ERROR_BYTES).decode("utf-8", "replace")
    except (httpx.HTTPError, RuntimeError):
        return {}
    try:
        errors = json.loads(text).get("errors") or [{}]
        return {key: str(value) for key, value in errors[0].items() if key in ("code", "message")}
    except (ValueError, AttributeError, TypeError, IndexError):
        short = text.strip()
        return {"message": short} if short and len(short) <= 200 and "<" not in short else {}
