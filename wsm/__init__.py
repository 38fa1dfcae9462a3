"""wsm: carry a chart-based Kubernetes release (images, Helm charts, values) across an air gap."""

__version__ = "0.1.0"

from ._exceptions import (  # noqa: E402
    AuthError,
    BundleError,
    ChartError,
    CorruptBundle,
    DigestMismatch,
    Hint,
    InvalidPlatform,
    InvalidReference,
    ManifestError,
    NotFound,
    RegistryError,
    ProofFailed,
    RenderError,
    StorageError,
    TagConflict,
    TarballError,
    UnsafeArchive,
    ValuesError,
    WsmError,
)
from ._reference import Reference  # noqa: E402

__all__ = [
    "AuthError",
    "BundleError",
    "ChartError",
    "CorruptBundle",
    "DigestMismatch",
    "Hint",
    "InvalidPlatform",
    "InvalidReference",
    "ManifestError",
    "NotFound",
    "Reference",
    "RegistryError",
    "ProofFailed",
    "RenderError",
    "StorageError",
    "TagConflict",
    "TarballError",
    "UnsafeArchive",
    "ValuesError",
    "WsmError",
]
