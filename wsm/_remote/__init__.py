"""The registry client: pull images and OCI Helm charts, push them to the site's registry.

Modelled on go-containerregistry's `remote` package; see `_client.py` for the protocol details.
"""

from ._blobs import FileSegment, SegmentChain
from ._client import RegistryClient, RegistryOptions
from ._credentials import Credentials
from ._types import (
    ALL_MANIFEST_TYPES,
    DOCKER_CONFIG,
    DOCKER_LAYER,
    DOCKER_LIST,
    DOCKER_MANIFEST,
    HELM_CHART_CONFIG,
    HELM_CHART_LAYER,
    INDEX_TYPES,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    OCI_MANIFEST,
    Descriptor,
    Manifest,
    Platform,
    compute_digest,
    is_sha256_digest,
)

__all__ = [
    "ALL_MANIFEST_TYPES",
    "DOCKER_CONFIG",
    "DOCKER_LAYER",
    "DOCKER_LIST",
    "DOCKER_MANIFEST",
    "HELM_CHART_CONFIG",
    "HELM_CHART_LAYER",
    "INDEX_TYPES",
    "OCI_CONFIG",
    "OCI_INDEX",
    "OCI_LAYER",
    "OCI_MANIFEST",
    "Credentials",
    "Descriptor",
    "FileSegment",
    "SegmentChain",
    "Manifest",
    "Platform",
    "RegistryClient",
    "RegistryOptions",
    "compute_digest",
    "is_sha256_digest",
]
