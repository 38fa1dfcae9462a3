"""How long-running library calls report progress: the caller passes a `Progress`, the CLI draws it.

The library never draws anything itself: `wsm download`, `verify` and `push` report bytes through this
interface, and the CLI renders it as a tqdm bar on a terminal (and not at all in a log or a pipe).
"""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    """Bytes of a long operation. Calls may come from several threads at once."""

    def expect(self, count: int) -> None:
        """`count` more bytes are to be done (called as the work becomes known)."""

    def advance(self, count: int) -> None:
        """`count` bytes are done; a negative count takes back bytes that will be done again (a restart)."""


class NoProgress:
    """Progress that nobody watches."""

    def expect(self, count: int) -> None:
        pass

    def advance(self, count: int) -> None:
        pass


NO_PROGRESS: Progress = NoProgress()
