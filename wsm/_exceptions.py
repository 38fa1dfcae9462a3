"""The one exception hierarchy of wsm.

Every error that a user can cause (bad input, an unreachable server, a broken bundle) is a `WsmError`.
Its message is one line that names the thing at fault and what to do; the CLI prints it as it is, without a
traceback, and exits non-zero. Anything else escaping the library is a bug in wsm.
"""

from __future__ import annotations


class WsmError(Exception):
    """Base class: `str(error)` is the one-line message for the user."""

    exit_code = 1


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


class RegistryError(WsmError):
    """A registry or repository answered with an error, or could not be reached."""


class AuthError(RegistryError):
    """Credentials were refused or are missing."""


class NotFound(RegistryError):
    """A repository, tag, manifest or blob that the server does not have."""


class DigestMismatch(WsmError):
    """Content whose sha256 is not the digest it should have."""


class BundleError(WsmError):
    """A bundle that is missing, incomplete or corrupted."""


class CorruptBundle(BundleError):
    """A bundle whose files do not match its SHA256SUMS or lock file; `report` holds every problem found."""

    def __init__(self, message: str, report: object = None):
        super().__init__(message)
        self.report = report
