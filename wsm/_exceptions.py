"""The one exception hierarchy of wsm.

Every error that a user can cause (bad input, an unreachable server, a broken bundle) is a `WsmError`.
`str(error)` is one line that names the thing at fault and what to do; the CLI prints it without a traceback
and exits non-zero. Anything else escaping the library is a bug in wsm.

Errors carry what code needs as fields (`status`, `path`, `errno`, `expected`/`actual` digests), so no caller
ever parses a message. A remedy that is a user input (a CA file, another bundle directory, credentials) is a
`Hint`: the library words it plainly, and the CLI words it with its own option names (`_cli.HINTS`).
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

from ._redact import redact_url

if TYPE_CHECKING:
    from ._verify import VerifyReport


class Hint(Enum):
    """A remedy that names an input the caller gives; the value is its wording for library users."""

    BUNDLE = "use another bundle directory"
    CA_FILE = "trust the site's CA (a PEM file), or turn TLS verification off explicitly"
    CA_FILE_FORMAT = "give the CA certificate as PEM"
    PLAIN_HTTP = "use plain HTTP if the server is meant to speak it"
    CREDENTIALS = "log in with `docker login`, or give a username and password"
    MAPPING = "name one of the targets explicitly in a mapping"
    ON_EXISTING = "choose to skip or overwrite existing tags if that is intended"
    HELM = "install helm, or give the path of the helm binary (WSM_HELM)"
    RESOLVE = "resolve the release from its charts instead"
    CHART_REPO = "for a chart in a classic repository, give the repository's URL"
    BASE = "give the base bundle's directory as the delta's base"


class WsmError(Exception):
    """Base class: `str(error)` is the one-line message; `message` is it without the hint. A password in a URL
    of the message is masked here, once for every error: messages name URLs as the user gave them."""

    exit_code = 1

    def __init__(self, message: str, *, hint: Hint | None = None) -> None:
        message = redact_url(message)
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}; {self.hint.value}" if self.hint else self.message


class InvalidReference(WsmError):
    """An image reference that does not parse."""


class InvalidPlatform(WsmError):
    """A platform string (os/architecture[/variant]) that does not parse."""


class ManifestError(WsmError):
    """A release manifest that is missing, malformed or invalid (names the file and the key)."""


class ValuesError(WsmError):
    """A values file or a --set expression that cannot be used."""


class ChartError(WsmError):
    """A chart that cannot be found, fetched or read."""


class UnsafeArchive(ChartError):
    """An archive member that would escape the extraction directory or inflate past the limit."""


class RenderError(WsmError):
    """`helm template` failed or is not available."""


class ProofFailed(RenderError):
    """Rendering a chart with the values wsm wrote shows an image that is not the expected internal one."""


class RegistryError(WsmError):
    """A registry or repository answered with an error, or could not be reached; `status` is the HTTP status
    of the answer (None when there was none)."""

    def __init__(self, message: str, *, status: int | None = None, hint: Hint | None = None) -> None:
        super().__init__(message, hint=hint)
        self.status = status


class AuthError(RegistryError):
    """Credentials were refused or are missing."""


class NotFound(RegistryError):
    """A repository, tag, manifest or blob that the server does not have."""


class TagConflict(RegistryError):
    """A tag that already points at another digest in the target registry."""


class DigestMismatch(WsmError):
    """Content whose digest is not the one it should have (`expected`, `actual`; None where unknown)."""

    def __init__(self, message: str, *, expected: str | None = None, actual: str | None = None) -> None:
        super().__init__(message)
        self.expected = expected
        self.actual = actual


class StorageError(WsmError):
    """A local file that could not be read or written; `errno` says why (ENOSPC: the disk is full)."""

    def __init__(self, message: str, *, path: Path | str | None, errno: int | None, hint: Hint | None = None):
        super().__init__(message, hint=hint)
        self.path = path
        self.errno = errno


class BundleError(WsmError):
    """A bundle that is missing, incomplete or corrupted; `path` is the file or directory at fault."""

    def __init__(self, message: str, *, path: Path | str | None = None, hint: Hint | None = None) -> None:
        super().__init__(message, hint=hint)
        self.path = path


class TarballError(BundleError):
    """An image tarball that cannot be read as one; `detail` is the problem without the file's name."""

    def __init__(self, path: Path, detail: str) -> None:
        super().__init__(f"{path.name}: {detail}", path=path)
        self.detail = detail


class CorruptBundle(BundleError):
    """A bundle whose files do not match its SHA256SUMS or lock file; `report` holds every problem found."""

    def __init__(self, message: str, report: VerifyReport | None = None, *, path: Path | str | None = None):
        super().__init__(message, path=path)
        self.report = report


class SignatureError(BundleError):
    """A bundle signature (SHA256SUMS.sig) or key that is missing, unreadable or does not verify."""
