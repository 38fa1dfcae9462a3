"""`load`: put a bundle's images into a local Docker engine (the single-host `docker run wandb/local` install).

The tarballs are streamed to the engine's `/images/load` through the docker SDK; the engine checks every
layer against the image config's diff_ids itself.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import BinaryIO

import docker
import docker.errors
import requests

from ._bundle import Bundle
from ._delta import DeltaBase
from ._exceptions import BundleError, CorruptBundle, WsmError
from ._joined import joined_stream
from ._layout import hash_file
from ._lock import BundleImage
from ._parts import open_stored, opener_for, stored_whole

DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"


def load(
    bundle: Bundle, *, docker_host: str | None = None, images: Sequence[str] | None = None, check: bool = True,
    base: DeltaBase | None = None,
) -> list[str]:
    """Load the bundle's images (those of the last download's release, or the ones named in `images`:
    source reference, familiar name or tarball name) into the Docker engine; return the names loaded.
    A delta bundle's image is streamed joined with the layers it leaves to `base` (the base bundle, read).

    `check`: hash each tarball against the lock first. Docker checks the layers it imports, but skips the
    ones it already has, so a damaged tarball could otherwise load without a word.
    """
    entries = bundle.lock.release_images() if images is None else bundle.lock.select(images)
    client = connect(docker_host)
    try:
        return [name for entry in entries for name in _load_one(client, bundle, entry, check, base)]
    finally:
        client.close()


def connect(docker_host: str | None) -> docker.DockerClient:
    """A client for the engine at `docker_host` (else DOCKER_HOST, else the default socket) that answers."""
    where = docker_host or os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST
    try:
        client = docker.DockerClient(base_url=docker_host) if docker_host else docker.from_env()
        client.ping()
    except docker.errors.DockerException:
        raise WsmError(f"no Docker engine answers at {where}; start dockerd or set DOCKER_HOST") from None
    return client


def _load_one(client: docker.DockerClient, bundle: Bundle, entry: BundleImage, check: bool,
              base: DeltaBase | None) -> list[str]:
    path = bundle.path(entry)
    if not stored_whole(bundle.root, entry.file, entry.file_size, entry.parts):
        missing = entry.file if not entry.parts else f"{entry.file} (in {len(entry.parts)} parts)"
        raise BundleError(f"{missing} is missing from bundle {bundle.root} or not the size the lock says; "
                          "run wsm verify", path=path)
    loaded: list[str] = []
    try:
        # The archive first: a delta's base is found (or refused) before the whole tarball is read to hash it.
        with _archive(bundle, entry, base) as data:  # parts are read as the one file
            if check and hash_file(path, opener=opener_for(bundle.root, entry.parts)).sha256 != entry.file_sha256:
                raise CorruptBundle(f"{entry.file} does not match the bundle's lock file: it is damaged; run wsm "
                                    "verify", path=path)
            # The low-level call: the high-level `images.load` ignores an error status of the engine.
            # types-docker leaves `load_image` unannotated: it yields the engine's JSON messages as dicts.
            events: Iterable[dict[str, str]] = client.api.load_image(data, quiet=True)  # type: ignore[no-untyped-call]
            for event in events:
                problem = event.get("error") or (event.get("message") if "stream" not in event else None)
                if problem:
                    raise WsmError(f"docker refused {entry.file}: {_one_line(problem)}; run wsm verify on the bundle")
                stream = event.get("stream", "")
                for prefix in ("Loaded image: ", "Loaded image ID: "):
                    if stream.startswith(prefix):
                        loaded.append(stream[len(prefix) :].strip())
    except docker.errors.APIError as error:
        detail = _one_line(str(error.explanation or error))
        raise WsmError(f"docker refused {entry.file}: {detail}; run wsm verify on the bundle") from None
    except (docker.errors.DockerException, requests.RequestException) as error:
        raise WsmError(f"loading {entry.file} into docker failed: {_one_line(str(error))}") from None
    if not loaded:
        raise WsmError(f"docker loaded nothing from {entry.file}; run wsm verify on the bundle")
    return loaded


@contextmanager
def _archive(bundle: Bundle, entry: BundleImage, base: DeltaBase | None) -> Iterator[BinaryIO | Iterator[bytes]]:
    """What docker reads: the tarball itself, or a delta's tarball joined with its base's layers."""
    if entry.from_base:
        yield joined_stream(bundle, entry, base)
        return
    with open_stored(bundle.root, entry.file, entry.parts) as handle:
        yield handle


def _one_line(text: str, limit: int = 300) -> str:
    """Docker's messages can span lines (a failed layer import quotes a tool's stderr)."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."
