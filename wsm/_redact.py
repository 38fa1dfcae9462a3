"""Credentials in URLs (`https://user:PASSWORD@host`) never leave wsm: what it prints or writes shows `***`.

A URL given with its userinfo is used as given to reach the server; everything else (messages, reports, the
runbook, values files, the bundle's lock) gets the redacted form, or the address without userinfo where the
text is meant to be used again (a command line, a custom resource).
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

MASK = "***"
# scheme://userinfo@ — the userinfo runs to the last `@` before the path, so a raw `@` in a password is
# covered too.
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^\s/?#@]*(?:@[^\s/?#@]*)*)@")


def redact_url(text: str) -> str:
    """A URL, or any text holding URLs, with each password replaced by `***` (a user name without a password
    may be a token: it is masked whole)."""
    return _USERINFO.sub(_masked, text)


def strip_userinfo(url: str) -> str:
    """`url` without user and password: the address to print in a command or write into a file."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def url_username(url: str) -> str | None:
    """The user name a URL carries, if it has a password beside it (else None)."""
    parts = urlsplit(url)
    return parts.username if parts.password is not None else None


def _masked(match: re.Match[str]) -> str:
    user, colon, _ = match["userinfo"].partition(":")
    shown = f"{user}:{MASK}" if colon else MASK
    return f"{match['scheme']}{shown}@"
