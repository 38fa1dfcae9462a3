"""How wsm writes figures, times and names for people and for files: one way each, everywhere."""

from __future__ import annotations

from datetime import datetime, timezone

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def human_bytes(count: float) -> str:
    """`1.5 MiB`: binary units, as `du -h` and `ls -lh` count, one decimal; whole bytes below a KiB."""
    for unit in _UNITS:
        if abs(count) < 1024 or unit == _UNITS[-1]:
            return f"{int(count)} B" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def utc_now() -> str:
    """The current time as RFC 3339 UTC to the second (`2025-01-01T00:00:00Z`), as lock files record it."""
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def one_line(text: str) -> str:
    """`text` with every newline and other control character shown as `\\xNN`: a name from upstream content
    cannot start a new line (a Markdown code block in the runbook, a key after a YAML comment)."""
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)
