"""What a registry serves: platforms, descriptors, and manifests kept byte for byte as served.

A manifest's digest is the sha256 of the exact bytes the registry returned, so `Manifest` keeps `raw` and
parses it only to read descriptors; nothing here re-serialises JSON (that would change the digest).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from .._exceptions import DigestMismatch, InvalidPlatform, RegistryError

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
ALL_MANIFEST_TYPES = (OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})

DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
HELM_CHART_CONFIG = "application/vnd.cncf.helm.config.v1+json"
HELM_CHART_LAYER = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"

# Names people and tools use for the same architecture (containerd's platforms.Normalize does the same).
_ARCH_ALIASES = {"x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64", "armhf": "arm", "i386": "386"}
_PLATFORM_PART = re.compile(r"[a-z0-9][a-z0-9._-]*")


@dataclass(frozen=True)
class Platform:
    """An image platform such as `linux/arm64/v8`."""

    os: str
    architecture: str
    variant: str | None = None

    @classmethod
    def parse(cls, text: str) -> Platform:
        """`os/architecture[/variant]`; raise `InvalidPlatform` on anything else."""
        parts = text.strip().lower().split("/") if isinstance(text, str) else []
        if len(parts) not in (2, 3) or not all(_PLATFORM_PART.fullmatch(part) for part in parts):
            raise InvalidPlatform(
                f"invalid platform {text!r}: expected os/architecture[/variant], e.g. linux/amd64 or linux/arm64/v8"
            )
        architecture = _ARCH_ALIASES.get(parts[1], parts[1])
        return cls(parts[0], architecture, parts[2] if len(parts) == 3 else None)

    @classmethod
    def from_dict(cls, data: Any) -> Platform | None:
        """The `platform` object of an index entry (None when absent or unusable)."""
        if not isinstance(data, dict) or not data.get("os") or not data.get("architecture"):
            return None
        return cls(str(data["os"]), str(data["architecture"]), data.get("variant") or None)

    def to_dict(self) -> dict[str, str]:
        data = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            data["variant"] = self.variant
        return data

    def __str__(self) -> str:
        return "/".join(part for part in (self.os, self.architecture, self.variant) if part)

    def matches(self, other: Platform) -> bool:
        """Same os and architecture; the variant only counts when this platform names one."""
        if (self.os, self.architecture) != (other.os, other.architecture):
            return False
        if self.variant is None:
            return True
        # arm64 images rarely state their variant; an unstated arm64 variant is v8.
        other_variant = other.variant or ("v8" if other.architecture == "arm64" else None)
        return self.variant == other_variant


@dataclass(frozen=True)
class Descriptor:
    """A pointer to content: media type, digest and size (plus platform for index entries)."""

    media_type: str
    digest: str
    size: int
    platform: Platform | None = None
    annotations: dict[str, str] | None = field(default=None, hash=False)

    @classmethod
    def from_dict(cls, data: Any, where: str) -> Descriptor:
        """Parse an OCI descriptor object; `where` names the document for the error message."""
        try:
            return cls(
                media_type=str(data.get("mediaType") or ""),
                digest=str(data["digest"]),
                size=int(data["size"]),
                platform=Platform.from_dict(data.get("platform")),
                annotations=dict(data["annotations"]) if data.get("annotations") else None,
            )
        except (AttributeError, KeyError, TypeError, ValueError):
            raise RegistryError(f"{where}: malformed descriptor {str(data)[:200]!r} (needs digest and size)") from None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.platform is not None:
            data["platform"] = self.platform.to_dict()
        if self.annotations:
            data["annotations"] = dict(self.annotations)
        return data


@dataclass(frozen=True)
class Manifest:
    """A manifest or index exactly as the registry served it; `digest` is the sha256 of `raw`."""

    raw: bytes
    media_type: str
    digest: str

    @classmethod
    def from_bytes(cls, raw: bytes, media_type: str | None = None) -> Manifest:
        """Wrap served bytes; the media type comes from the document, else from `media_type` (Content-Type)."""
        manifest = cls(raw=raw, media_type="", digest=compute_digest(raw))
        declared = manifest.document.get("mediaType")
        return cls(raw=raw, media_type=str(declared or media_type or ""), digest=manifest.digest)

    @cached_property
    def document(self) -> dict[str, Any]:
        try:
            document = json.loads(self.raw)
        except (UnicodeDecodeError, ValueError):
            document = None
        if not isinstance(document, dict):
            raise RegistryError(f"manifest {self.digest} is not a JSON object; the registry served something else")
        return document

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES or (not self.media_type and "manifests" in self.document)

    def children(self) -> list[Descriptor]:
        """The entries of an index (each with its platform); empty for an image manifest."""
        if not self.is_index:
            return []
        entries = self.document.get("manifests") or []
        return [Descriptor.from_dict(entry, f"index {self.digest}") for entry in entries]

    def child_for(self, platform: Platform) -> Descriptor | None:
        """The first index entry whose platform `platform` matches (None if there is none)."""
        for child in self.children():
            if child.platform is not None and platform.matches(child.platform):
                return child
        return None

    def config(self) -> Descriptor:
        self._require_image("config")
        return Descriptor.from_dict(self.document.get("config"), f"manifest {self.digest}")

    def layers(self) -> list[Descriptor]:
        self._require_image("layers")
        return [Descriptor.from_dict(layer, f"manifest {self.digest}") for layer in self.document.get("layers") or []]

    def descriptor(self) -> Descriptor:
        return Descriptor(media_type=self.media_type, digest=self.digest, size=len(self.raw))

    def subset(self, keep: Collection[str]) -> Manifest:
        """A new index over the entries of this one whose digest is in `keep`, in this index's order.

        Every other field of the document (media type, annotations, subject, unknown keys) and every field of
        each kept entry stays as it is; only the `manifests` list shrinks. The result is new bytes with a new
        digest, in this index's media type: not anything the registry served.
        """
        if not self.is_index:
            raise RegistryError(f"{self.digest} is an image manifest ({self.media_type}), not an index: it has no "
                                "entries to choose from")
        entries = self.document.get("manifests") or []
        document = {**self.document, "manifests": [entry for entry in entries if _entry_digest(entry) in keep]}
        return Manifest.from_bytes((json.dumps(document, indent=2) + "\n").encode(), self.media_type)

    def _require_image(self, what: str) -> None:
        if self.is_index:
            raise RegistryError(f"{self.digest} is an index ({self.media_type}): it has no {what}; pick a platform")


def _entry_digest(entry: Any) -> str | None:
    return str(entry["digest"]) if isinstance(entry, dict) and "digest" in entry else None


def compute_digest(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


_SHA256_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def is_sha256_digest(text: str) -> bool:
    """Whether `text` is exactly `sha256:` and 64 lower-case hex digits: the one digest form wsm carries and
    lets become a URL or a file name."""
    return _SHA256_DIGEST.fullmatch(text) is not None


def hasher_for(digest: str) -> Any:
    """A fresh hash object of the digest's algorithm (sha256, sha384 or sha512)."""
    algorithm = digest.partition(":")[0]
    if algorithm not in ("sha256", "sha384", "sha512"):
        raise DigestMismatch(f"digest {digest!r}: unsupported algorithm {algorithm!r} (sha256, sha384, sha512)")
    return hashlib.new(algorithm)


def verify_digest(data: bytes, expected: str, what: str) -> None:
    """Raise `DigestMismatch` when `data` does not hash to `expected`."""
    hasher = hasher_for(expected)
    hasher.update(data)
    actual = f"{hasher.name}:{hasher.hexdigest()}"
    if actual != expected:
        raise DigestMismatch(
            f"{what}: content has digest {actual}, expected {expected}; the registry or a proxy altered it"
        )
