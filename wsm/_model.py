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


class FoundBy(str, Enum):
    """Which methods found an image: the values walk, rendering, or both."""

    VALUES = "values"
    RENDER = "render"
    BOTH = "both"


class Role(str, Enum):
    """What a values path holds for the reference it helps render."""

    REGISTRY = "registry"
    REPOSITORY = "repository"
    TAG = "tag"
    DIGEST = "digest"
    IMAGE = "image"  # a whole reference in one string


@dataclass(frozen=True)
class BoundPath:
    path: str  # dotted, from the release chart's root
    role: Role

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "role": self.role.value}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BoundPath:
        return cls(str(data["path"]), Role(data["role"]))


@dataclass(frozen=True)
class Binding:
    """How one rendered reference is made from values, as differential rendering observed it.

    `pattern` is the rendered text with a `{n}` hole where `paths[n]` went in (literal braces doubled, as
    `str.format` reads them): `{0}/{1}:v{2}` is registry, repository and "v" + tag.
    """

    chart: str  # the release chart's name
    location: str  # template source | kind/name | field path inside the document
    field: str  # container, custom-resource, args, command, env, configmap
    pattern: str
    paths: tuple[BoundPath, ...]

    @property
    def transformation(self) -> str:
        """The pattern with the values paths named: `<redis.image.registry>/<redis.image.repository>:v<...>`."""
        return self.pattern.format(*(f"<{bound.path}>" for bound in self.paths))

    def to_dict(self) -> dict[str, Any]:
        return {"chart": self.chart, "location": self.location, "field": self.field, "pattern": self.pattern,
                "paths": [bound.to_dict() for bound in self.paths], "transformation": self.transformation}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Binding:
        return cls(str(data["chart"]), str(data["location"]), str(data["field"]), str(data["pattern"]),
                   tuple(BoundPath.from_dict(p) for p in data.get("paths", ())))


@dataclass(frozen=True)
class ResolvedImage:
    """An image the release needs, with every place it was found.

    After differential rendering: `bindings` say which values paths make each rendered occurrence and how;
    `hardcoded` marks an image the templates render that no values path moves; `unused` an image found in
    values (or an annotation) that the templates never render (not downloaded).
    """

    reference: Reference
    group: str
    sources: tuple[ImageSource, ...] = field(default_factory=tuple)
    bindings: tuple[Binding, ...] = ()
    hardcoded: bool = False
    unused: bool = False

    @property
    def methods(self) -> set[Method]:
        return {source.method for source in self.sources}

    @property
    def found_by(self) -> FoundBy | None:
        by_values = bool(self.methods & {Method.VALUES, Method.ANNOTATION})
        by_render = bool(self.bindings) or self.hardcoded or Method.RENDER in self.methods
        if by_values and by_render:
            return FoundBy.BOTH
        return FoundBy.RENDER if by_render else FoundBy.VALUES if by_values else None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "image": self.reference.canonical,
            "group": self.group,
            "sources": [source.to_dict() for source in self.sources],
        }
        if self.bindings:
            data["bindings"] = [binding.to_dict() for binding in self.bindings]
        for flag in ("hardcoded", "unused"):
            if getattr(self, flag):
                data[flag] = True
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ResolvedImage:
        return cls(
            reference=Reference.parse(data["image"]),
            group=data["group"],
            sources=tuple(ImageSource.from_dict(s) for s in data.get("sources", ())),
            bindings=tuple(Binding.from_dict(b) for b in data.get("bindings", ())),
            hardcoded=bool(data.get("hardcoded", False)),
            unused=bool(data.get("unused", False)),
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
            bindings = first.bindings + tuple(b for b in image.bindings if b not in first.bindings)
            merged[image.reference] = ResolvedImage(
                first.reference, first.group, sources, bindings,
                hardcoded=first.hardcoded or image.hardcoded,
                unused=first.unused and image.unused,  # a manifest extra is used at run time whatever renders
            )
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
