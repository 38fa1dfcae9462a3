"""The download's blob store: how each config and layer gets into its tarball.

- A blob only one image of the run uses is downloaded straight into its place in that image's tarball
  (`filler`): each byte is written once, and a killed run's partial tarball is continued.
- A blob several images share is fetched at most once per run into `.wsm-partial/blobs/<hex>` (`get`) and
  copied into each tarball: the first image to ask starts the transfer, the others wait for the same future.
- A blob downloads into `<hex>.partial` and continues from there (HTTP Range) after an interruption; a
  complete `<hex>` left by an earlier run is hashed again before it is trusted.
- Images say up front which blobs they will use (`need`) and give them back once their tarball is written
  (`release`): a blob no image of the run still needs is deleted, so the work area holds the blobs of the
  images being assembled, not the whole release.

Bytes are reported to the caller's `Progress` as they land, and counted per blob for the report (only what
came over the network: a resumed prefix is not fetched again).
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import Executor, Future
from pathlib import Path

from ._files import partial_path
from ._layout import TarMember, hash_file
from ._progress import Progress
from ._reference import Reference
from ._remote import Descriptor, RegistryClient


class Stopped(Exception):
    """Raised inside a transfer to abort it when the run stops (an interrupt or a bundle-level error)."""


class BlobStore:
    """Blobs of one download run under `directory`; `get` is thread-safe, as are `need` and `release`."""

    def __init__(
        self,
        directory: Path,
        client: RegistryClient,
        pool: Executor,
        progress: Progress,
        stop: threading.Event,
    ) -> None:
        self.directory = directory
        self.client = client
        self.pool = pool
        self.progress = progress
        self.stop = stop
        self.fetched = 0  # bytes from registries in this run
        self._fetched_by_digest: Counter[str] = Counter()
        self._futures: dict[str, Future[Path]] = {}
        self._users: Counter[str] = Counter()
        self._lock = threading.Lock()

    def path(self, digest: str) -> Path:
        return self.directory / digest.partition(":")[2]

    def need(self, blobs: Iterable[Descriptor]) -> None:
        """One more image will use `blobs`; the progress learns how many bytes are still to fetch."""
        for descriptor in blobs:
            with self._lock:
                self._users[descriptor.digest] += 1
                first = self._users[descriptor.digest] == 1
            if first and not self.path(descriptor.digest).exists():
                self.progress.expect(descriptor.size)

    def shared(self, descriptor: Descriptor) -> bool:
        """Several images of this run use the blob (see `need`)."""
        with self._lock:
            return self._users[descriptor.digest] > 1

    def source(self, reference: Reference, descriptor: Descriptor) -> Future[Path] | Callable[[TarMember], None]:
        """Where an image's tarball gets the blob: the store's file when several images use it or an earlier run
        left it complete here (`need` counted no bytes to fetch for it), else a download straight into the
        tarball member."""
        if self.shared(descriptor) or self.path(descriptor.digest).exists():
            return self.get(reference, descriptor)
        return self.filler(reference, descriptor)

    def filler(self, reference: Reference, descriptor: Descriptor) -> Callable[[TarMember], None]:
        """What downloads the blob from `reference`'s repository straight into its tarball member."""

        def fill(member: TarMember) -> None:
            if self.stop.is_set():
                raise Stopped()
            progress = self._counter(descriptor.digest, member.stored())
            self.client.fetch_blob(reference, descriptor, member, progress=progress)

        return fill

    def get(self, reference: Reference, descriptor: Descriptor) -> Future[Path]:
        """The blob's file once it is complete and verified; fetched from `reference`'s repository if need be."""
        with self._lock:
            future = self._futures.get(descriptor.digest)
            if future is None:
                future = self.pool.submit(self._fetch, reference, descriptor)
                self._futures[descriptor.digest] = future
            return future

    def release(self, blobs: Iterable[Descriptor]) -> None:
        """An image that used `blobs` is written: delete those no other image of this run still needs."""
        for descriptor in blobs:
            with self._lock:
                self._users[descriptor.digest] -= 1
                unused = self._users[descriptor.digest] <= 0
            if unused:
                self.path(descriptor.digest).unlink(missing_ok=True)

    def fetched_for(self, blobs: Iterable[Descriptor]) -> int:
        """Bytes fetched in this run for `blobs` (a blob shared with other images counts in full)."""
        with self._lock:
            return sum(self._fetched_by_digest[descriptor.digest] for descriptor in blobs)

    def _fetch(self, reference: Reference, descriptor: Descriptor) -> Path:
        final = self.path(descriptor.digest)
        if final.exists():
            if _still_intact(final, descriptor):
                return final
            self.progress.expect(descriptor.size)
        partial = partial_path(final)
        resumed = partial.stat().st_size if partial.exists() else 0
        resumed = resumed if resumed <= descriptor.size else 0  # the client starts a longer file afresh
        self.client.fetch_blob(reference, descriptor, partial, progress=self._counter(descriptor.digest, resumed))
        os.replace(partial, final)  # a work file, hashed again before any later run uses it: no fsync
        return final

    def _counter(self, digest: str, resumed: int) -> Callable[[int], None]:
        """The client reports bytes as they land, a resumed prefix included, and takes back (negative counts)
        what a restart drops; the progress follows it all, the fetched count only the network's bytes."""
        with self._lock:
            self.fetched -= resumed
            self._fetched_by_digest[digest] -= resumed

        def advance(count: int) -> None:
            if self.stop.is_set():
                raise Stopped()
            if count > 0:
                with self._lock:
                    self.fetched += count
                    self._fetched_by_digest[digest] += count
            self.progress.advance(count)

        return advance


def _still_intact(path: Path, descriptor: Descriptor) -> bool:
    """A blob left complete by an earlier run: trust it only after hashing it again."""
    digest = hash_file(path)
    if digest.size == descriptor.size and "sha256:" + digest.sha256 == descriptor.digest:
        return True
    path.unlink(missing_ok=True)
    return False
