"""The HTTP layer every server wsm talks to shares: TLS choices, timeouts, and retries with backoff.

Registries and Helm repositories differ in protocol, not in how a connection is made or retried, so both
build their `httpx.Client` here.

Retry policy: a timeout, a dropped connection, 429 and 5xx are retried `retries` times with backoff (a server
that is there but busy). A connection that is refused, or a name that does not resolve, is retried once only:
nobody is there, and waiting will not change that. Redirects are followed up to `MAX_REDIRECTS` hops.
"""

from __future__ import annotations

import email.utils
import random
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

from . import __version__
from ._exceptions import Hint, RegistryError
from ._format import human_bytes

USER_AGENT = f"wsm/{__version__}"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_REDIRECTS = 10  # registries redirect blobs once (to storage); a longer chain is a loop or an attack
# Nobody listening, or no such name: one more try covers a server restarting, more only makes offline runs slow.
CONNECT_FAILURE_ATTEMPTS = 2
_T = TypeVar("_T")


@dataclass(frozen=True)
class TransportOptions:
    """How to reach a server. TLS is verified unless `insecure` is said explicitly."""

    ca_file: str | None = None
    insecure: bool = False
    plain_http: bool = False
    timeout: float = 60.0
    retries: int = 5
    backoff: float = 0.5
    max_backoff: float = 20.0

    def scheme(self, host: str) -> str:
        return "http" if self.plain_http else "https"


def make_client(options: TransportOptions, **kwargs: Any) -> httpx.Client:
    """An httpx client honouring the TLS choices; the caller closes it."""
    verify: bool | ssl.SSLContext = False if options.insecure else (_ca_context(options.ca_file) or True)
    return httpx.Client(
        verify=verify,
        timeout=httpx.Timeout(options.timeout, connect=min(options.timeout, 15.0)),
        headers={"User-Agent": USER_AGENT},
        follow_redirects=True,
        max_redirects=MAX_REDIRECTS,
        **kwargs,
    )


def _ca_context(ca_file: str | None) -> ssl.SSLContext | None:
    """Trust only `ca_file` (PEM), the site's CA, as httpx did with `verify=<path>` (now deprecated)."""
    if not ca_file:
        return None
    try:
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as error:
        reason = error.strerror or error
        raise RegistryError(f"CA file {ca_file}: cannot use it ({reason})", hint=Hint.CA_FILE_FORMAT) from None


def backoff_delay(attempt: int, options: TransportOptions, retry_after: str | None = None) -> float:
    """Exponential backoff with full jitter; a server's Retry-After (seconds or an HTTP date) wins."""
    if retry_after:
        delay = _parse_retry_after(retry_after)
        if delay is not None:
            return min(delay, options.max_backoff * 3)
    return random.uniform(0, min(options.max_backoff, options.backoff * (2**attempt)))


def _parse_retry_after(value: str) -> float | None:
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def with_retries(options: TransportOptions, what: str, attempt_once: Callable[[], _T]) -> _T:
    """Run `attempt_once`, retrying on connection errors and retryable statuses.

    `attempt_once` raises `RetryableStatus` for a status worth retrying; any other exception goes through.
    A refused connection or an unknown name ends the run after `CONNECT_FAILURE_ATTEMPTS` attempts.
    """
    attempts = options.retries + 1
    for attempt in range(attempts):
        try:
            return attempt_once()
        except RetryableStatus as error:
            if attempt == options.retries:
                raise RegistryError(
                    f"{what}: server answered {error.status} {attempts} times; try later", status=error.status
                )
            time.sleep(backoff_delay(attempt, options, error.retry_after))
        except httpx.TooManyRedirects:
            raise RegistryError(f"{what}: more than {MAX_REDIRECTS} redirects (a redirect loop); check the URL") from None
        except httpx.TransportError as error:
            if isinstance(error, httpx.ConnectError) and _is_tls_failure(error):
                message = f"{what}: TLS certificate not trusted ({_short(error)})"
                raise RegistryError(message, hint=Hint.CA_FILE) from None
            last = min(attempts, CONNECT_FAILURE_ATTEMPTS) if isinstance(error, httpx.ConnectError) else attempts
            if attempt + 1 >= last:
                raise RegistryError(f"{what}: {_short(error)} (after {attempt + 1} attempts)") from None
            time.sleep(backoff_delay(attempt, options))
    raise AssertionError("unreachable")


def read_capped(response: httpx.Response, limit: int, what: str) -> bytes:
    """The whole body of a streamed `response`, refusing more than `limit` bytes; the response is closed.

    A declared Content-Length over the limit is refused before reading; a body that runs on (chunked, or
    lying about its length) is cut off at the limit. Either way: a one-line `RegistryError`.
    """
    try:
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > limit:
            raise _too_large(response, limit, what)
        body, more = read_up_to(response, limit)
        if more:
            raise _too_large(response, limit, what)
    finally:
        response.close()  # an unread rest closes the connection instead of returning it to the pool
    return body


def read_up_to(response: httpx.Response, limit: int) -> tuple[bytes, bool]:
    """At most `limit` bytes of a streamed body; True when there was more (the rest is not read)."""
    parts: list[bytes] = []
    total = 0
    for chunk in response.iter_bytes():
        parts.append(chunk)
        total += len(chunk)
        if total > limit:
            return b"".join(parts)[:limit], True
    return b"".join(parts), False


def read_prefix(response: httpx.Response, limit: int) -> bytes:
    """At most `limit` bytes of a streamed body (enough for an error message); the rest is never read."""
    parts: list[bytes] = []
    total = 0
    try:
        for chunk in response.iter_bytes():
            parts.append(chunk)
            total += len(chunk)
            if total >= limit:
                break
    except httpx.HTTPError:
        pass  # a message is a courtesy: a broken body leaves it out
    finally:
        response.close()
    return b"".join(parts)[:limit]


def safe_url(url: httpx.URL | str) -> str:
    """`url` for messages: without user information or query (upload URLs carry session state there)."""
    parsed = httpx.URL(str(url))
    return str(parsed.copy_with(username=None, password=None, query=None, fragment=None))


def _too_large(response: httpx.Response, limit: int, what: str) -> RegistryError:
    return RegistryError(
        f"{what}: the answer from {safe_url(response.url)} is larger than {human_bytes(limit)}, wsm's limit; "
        "the server is broken or hostile", status=response.status_code,
    )


class RetryableStatus(Exception):
    def __init__(self, response: httpx.Response) -> None:
        super().__init__(response.status_code)
        self.status: int = response.status_code
        self.retry_after: str | None = response.headers.get("Retry-After")


def raise_for_retry(response: httpx.Response) -> httpx.Response:
    """Turn a retryable status into `RetryableStatus` (after releasing the connection)."""
    if response.status_code in RETRY_STATUSES:
        response.close()
        raise RetryableStatus(response)
    return response


def _is_tls_failure(error: Exception) -> bool:
    text = str(error).lower()
    return "certificate" in text or "ssl" in text or "tls" in text


def _short(error: Exception) -> str:
    text = str(error) or type(error).__name__
    return text.splitlines()[0][:300]
