"""What the resolver hands to everything downstream: images with their provenance, and charts.

The provenance (chart, values path, how it was found) travels with each image into the bundle's lock file and
on to the pusher, which rewrites exactly those values paths to point at the internal registry.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from ._reference import Reference


class Method(str, Enum):
    """How an image was found."""

    VALUES = "values"  # an image-shaped node in the merged values
    ANNOTATION = "annotation"  # the chart's `helm.sh/images` annotation
    RENDER = "render"  # a container image in `helm template` output
    MANIFEST = "manifest"  # listed by the release manifest as an extra image
    LOCK = "lock"  # taken from the release manifest's lock section, not re-derived


class Shape(str, Enum):
    """How an image is written in values: the pusher rewrites each shape differently."""

    REPOSITORY = "repository"  # {repository: docker.io/wandb/local, tag: x} (repository may hold the registry)
    REGISTRY = "registry"  # {registry: docker.io, repository: bitnami/redis, tag: x} (bitnami style)
    STRING = "string"  # image: wandb/local:0.62.2


@dataclass(frozen=True)
class ImageSource:
    """One place an image was found. `path` is a dotted values path from the release chart's root."""

    chart: str
    method: Method
    path: str | None = None
    shape: Shape | None = None
    template: str | None = None
    note: str | None = None
    # A values path elsewhere that decides this image's registry (bitnami's `global.imageRegistry`).
    registry_path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"chart": self.chart, "method": self.method.value}
        for key in ("path", "template", "note", "registry_path"):
            if getattr(self, key):
                data[key] = getattr(self, key)
        if self.shape:
            data["shape"] = self.shape.value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImageSource:
        return cls(
            chart=data["chart"],
            method=Method(data["method"]),
            path=data.get("path"),
            shape=Shape(data["shape"]) if data.get("shape") else None,
            template=data.get("template"),
            note=data.get("note"),
            registry_path=data.get("registry_path"),
        )


@dataclass(frozen=True)
class ResolvedImage:
    """An image the release needs, with every place it was found."""

    reference: Reference
    group: str
    sources: tuple[ImageSource, ...] = field(default_factory=tuple)

    @property
    def methods(self) -> set[Method]:
        return {source.method for source in self.sources}

    def to_dict(self) -> dict[str, Any]:
        return {
            "image": self.reference.canonical,
            "group": self.group,
            "sources": [source.to_dict() for source in self.sources],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ResolvedImage:
        return cls(
            reference=Reference.parse(data["image"]),
            group=data["group"],
            sources=tuple(ImageSource.from_dict(s) for s in data.get("sources", ())),
        )


def merge_images(images: Iterable[ResolvedImage]) -> list[ResolvedImage]:
    """One entry per reference, in the order first seen: the places an image was found are merged, and the
    first group it was found in stays its group."""
    merged: dict[Reference, ResolvedImage] = {}
    for image in images:
        first = merged.get(image.reference)
        if first is None:
            merged[image.reference] = image
        else:
            sources = first.sources + tuple(s for s in image.sources if s not in first.sources)
            merged[image.reference] = ResolvedImage(first.reference, first.group, sources)
    return list(merged.values())


@dataclass(frozen=True)
class ResolvedChart:
    """A chart of the release: `archive` is the .tgz exactly as its repository served it (None when the chart
    came from a directory and has not been packaged)."""

    name: str
    version: str
    source: str  # "https://charts.wandb.ai", "oci://host/path", or a local path
    group: str
    archive: Path | None = None
    digest: str | None = None  # sha256 of the archive bytes
    release: str | None = None  # the Helm release name the runbook installs it as

    def to_dict(self) -> dict[str, Any]:
        data = {"name": self.name, "version": self.version, "source": self.source, "group": self.group}
        if self.digest:
            data["digest"] = self.digest
        if self.release:
            data["release"] = self.release
        return data
