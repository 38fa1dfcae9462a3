"""The bundle lock, `wsm.lock.json`: what a bundle holds and where each piece came from, as typed objects.

The lock is the bundle's table of contents: `verify`, `load` and the pusher read it, never the directory. JSON
exists only in `to_dict`/`from_dict` here; everything else passes `BundleLock`, `BundleImage` and `BundleChart`,
whose fields are references, descriptors, platforms and the resolver's `ResolvedImage`.

The file format is the one README.md documents (format 1): a lock written by any earlier wsm reads here, and
what is written here reads in those. Parsing is strict about types and names: a lock that was edited by hand
or damaged fails in one line naming the entry and the key, and no path in it may leave the bundle.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import Any, NoReturn

from . import __version__
from . import _names
from ._exceptions import BundleError, InvalidPlatform, InvalidReference, WsmError
from ._format import utc_now
from ._model import ResolvedImage
from ._reference import Reference
from ._remote import Descriptor, Platform

LOCK_FORMAT = 2  # 2: a delta bundle (`base`, `from_base`); a lock without a base is still written as format 1
_FULL_FORMAT = 1
IMAGES_DIR = "images"
CHARTS_DIR = "charts"
TOOLS_DIR = "tools"
REFERRERS_DIR = "referrers"  # referrers' manifests and blobs, one file per digest: referrers/<hex>
MAX_LOCK_BYTES = 256 * 1024 * 1024  # a lock lists blobs, not bytes: far above any real release


class Kept(str, Enum):
    """What an image tarball holds of the upstream image."""

    AS_IS = "as-is"  # the upstream manifest or index, byte for byte: top digest == upstream digest
    PLATFORM = "platform"  # one platform manifest of the upstream index: top is that manifest
    SUBSET_INDEX = "subset-index"  # an index written by wsm over the kept platforms of the upstream index


class FailureKind(str, Enum):
    IMAGE = "image"
    CHART = "chart"


@dataclass(frozen=True)
class Failure:
    """Something the last download could not fetch."""

    kind: FailureKind
    name: str
    reason: str  # one line


class ReferrerScheme(str, Enum):
    """How a referrer was found upstream, and so how push writes it to the internal registry."""

    API = "referrers-api"  # OCI 1.1 `GET /v2/<name>/referrers/<digest>`: pushed by digest (it names its subject)
    TAG_INDEX = "tag-index"  # the 1.1 fallback: tag `sha256-<hex>` holding an index of the referrers
    COSIGN = "cosign-tag"  # cosign's tags `sha256-<hex>.sig`, `.att`, `.sbom`


@dataclass(frozen=True)
class BundleReferrer:
    """Something that refers to an image (a signature, an SBOM, an attestation), carried in referrers/."""

    subject: str  # the digest it refers to: the image's, or one of its kept platform manifests'
    scheme: ReferrerScheme
    manifest: Descriptor  # its manifest; for a tag index, the index under the tag
    artifact_type: str | None
    tag: str | None  # the tag it was found under (tag index, cosign); None for the referrers API
    blobs: tuple[Descriptor, ...]  # what else it carries: configs and layers, and a tag index's manifests

    @property
    def digests(self) -> list[str]:
        return [self.manifest.digest, *(blob.digest for blob in self.blobs)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "subject": self.subject, "scheme": self.scheme.value, "manifest": self.manifest.to_dict(),
            "artifactType": self.artifact_type, "tag": self.tag, "blobs": [blob.to_dict() for blob in self.blobs],
        }

    @classmethod
    def from_dict(cls, data: object, where: str) -> BundleReferrer:
        read = _Reader(data, where)
        tag = read.optional_string("tag")
        if tag is not None and not _REFERRER_TAG.fullmatch(tag):
            read.fail("tag", f"{tag!r} is not a referrer tag (sha256-<hex>[.sig|.att|.sbom])")
        return cls(
            subject=read.digest("subject"), scheme=read.choice("scheme", ReferrerScheme),
            manifest=read.descriptor("manifest"), artifact_type=read.optional_string("artifactType"), tag=tag,
            blobs=tuple(read.descriptors("blobs")),
        )


_REFERRER_TAG = re.compile(r"sha256-[0-9a-f]{64}(\.sig|\.att|\.sbom)?")


def referrer_file(digest: str) -> str:
    """Where a referrer's manifest or blob lies in the bundle (the digest was checked by the lock's reader)."""
    return f"{REFERRERS_DIR}/{digest.partition(':')[2]}"


@dataclass(frozen=True)
class FilePart:
    """One part of a file stored in parts (`NAME.part-000`, ...) to fit a medium's file-size limit."""

    file: str  # relative to the bundle, beside where the whole file would be
    size: int
    sha256: str  # hex

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "size": self.size, "sha256": self.sha256}

    @classmethod
    def from_dict(cls, data: object, where: str, directory: str) -> FilePart:
        read = _Reader(data, where)
        return cls(file=read.file("file", directory), size=read.integer("size"), sha256=read.string("sha256"))


def _parts(read: _Reader, directory: str) -> tuple[FilePart, ...]:
    return tuple(FilePart.from_dict(item, f"{read.where}.parts[{i}]", directory)
                 for i, item in enumerate(read.items("parts")))


@dataclass(frozen=True)
class BundleImage:
    """One image tarball in the bundle and where it came from."""

    reference: Reference  # the source reference (what the release asked for)
    digest: str  # the upstream digest of what that reference resolved to (an index or a manifest)
    media_type: str  # of that upstream manifest or index
    file: str  # relative to the bundle: images/<name>.tar
    file_size: int
    file_sha256: str  # hex
    top: Descriptor  # what index.json points at: what the pusher pushes under the tag
    kept: Kept
    manifests: tuple[Descriptor, ...]  # the manifests kept (images and attestations), with their platforms
    platforms: tuple[Platform, ...]  # platforms kept
    requested_platforms: tuple[Platform, ...] | None  # what the download asked for; None = all platforms
    blobs: tuple[Descriptor, ...]  # every blob in the tarball
    resolved: ResolvedImage  # where the resolver found the image: the pusher rewrites those values paths
    in_release: bool = True  # asked for by the last download run (False: kept from an earlier run)
    downloaded: str = ""
    note: str | None = None  # set when the top is not the upstream image as is
    # A delta bundle's layers that the tarball leaves out because its base holds them (never configs/manifests).
    from_base: tuple[Descriptor, ...] = ()
    parts: tuple[FilePart, ...] = ()  # when stored in parts: `file` itself is absent, these hold its bytes
    referrers: tuple[BundleReferrer, ...] = ()  # with --with-referrers: signatures, SBOMs, attestations

    @property
    def key(self) -> str:
        return self.reference.canonical

    @property
    def names(self) -> set[str]:
        """The names an operator may use for this image: reference (canonical, familiar) or tarball."""
        return {self.key, self.reference.familiar, self.file, posixpath.basename(self.file)}

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "image": self.key,
            "digest": self.digest,
            "media_type": self.media_type,
            "file": self.file,
            "file_size": self.file_size,
            "file_sha256": self.file_sha256,
            "top": self.top.to_dict(),
            "kept": self.kept.value,
            "manifests": [_manifest_entry(descriptor) for descriptor in self.manifests],
            "platforms": [str(platform) for platform in self.platforms],
            "requested_platforms": platform_names(self.requested_platforms),
            "blobs": [{"digest": b.digest, "size": b.size, "mediaType": b.media_type} for b in self.blobs],
            "resolved": self.resolved.to_dict(),
            "in_release": self.in_release,
            "downloaded": self.downloaded,
        }
        if self.note is not None:
            data["note"] = self.note
        if self.from_base:
            data["from_base"] = [{"digest": b.digest, "size": b.size, "mediaType": b.media_type}
                                 for b in self.from_base]
        if self.parts:
            data["parts"] = [part.to_dict() for part in self.parts]
        if self.referrers:  # absent otherwise: locks stay as older wsm wrote and read them
            data["referrers"] = [referrer.to_dict() for referrer in self.referrers]
        return data

    @classmethod
    def from_dict(cls, data: object, where: str) -> BundleImage:
        read = _Reader(data, where)
        reference = read.reference("image")
        return cls(
            reference=reference,
            digest=read.digest("digest"),
            media_type=read.string("media_type"),
            file=read.file("file", IMAGES_DIR),
            file_size=read.integer("file_size"),
            file_sha256=read.string("file_sha256"),
            top=read.descriptor("top"),
            kept=read.choice("kept", Kept),
            manifests=tuple(read.descriptors("manifests", platform_as_text=True)),
            platforms=read.platforms("platforms") or (),
            requested_platforms=read.platforms("requested_platforms"),
            blobs=tuple(read.descriptors("blobs")),
            resolved=read.resolved("resolved", reference),
            in_release=read.boolean("in_release", True),
            downloaded=read.string("downloaded", ""),
            note=read.optional_string("note"),
            from_base=tuple(read.descriptors("from_base")),
            parts=_parts(read, IMAGES_DIR),
            referrers=tuple(BundleReferrer.from_dict(item, f"{where}.referrers[{i}]")
                            for i, item in enumerate(read.items("referrers"))),
        )


@dataclass(frozen=True)
class BundleChart:
    """One chart archive in the bundle, byte for byte as its repository served it."""

    name: str
    version: str
    source: str  # the repository URL, oci:// reference or path it came from
    group: str
    file: str  # relative to the bundle: charts/<name>-<version>.tgz
    digest: str  # sha256:<hex> of the archive
    size: int
    release: str | None = None  # the Helm release name the runbook installs it as
    in_release: bool = True
    parts: tuple[FilePart, ...] = ()  # when stored in parts: `file` itself is absent, these hold its bytes

    @property
    def key(self) -> str:
        return chart_key(self.source, self.name, self.version)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.name, "version": self.version, "source": self.source, "group": self.group,
            "file": self.file, "digest": self.digest, "size": self.size,
        }
        if self.release is not None:
            data["release"] = self.release
        data["in_release"] = self.in_release
        if self.parts:
            data["parts"] = [part.to_dict() for part in self.parts]
        return data

    @classmethod
    def from_dict(cls, data: object, where: str) -> BundleChart:
        read = _Reader(data, where)
        return cls(
            name=read.checked("name", _names.chart_name),
            version=read.checked("version", _names.chart_version),
            source=read.string("source"),
            group=read.string("group"),
            file=read.file("file", CHARTS_DIR),
            digest=read.digest("digest"),
            size=read.integer("size"),
            release=read.optional_string("release") and read.checked("release", _names.release_name),
            in_release=read.boolean("in_release", True),
            parts=_parts(read, CHARTS_DIR),
        )


@dataclass(frozen=True)
class BundleTool:
    """The bundle's own wsm (`tools/wsm.pyz`), which runs the offline side with nothing installed."""

    file: str  # relative to the bundle: tools/wsm.pyz
    sha256: str  # hex
    size: int
    wsm_version: str  # of the wsm inside it

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "sha256": self.sha256, "size": self.size, "wsm_version": self.wsm_version}

    @classmethod
    def from_dict(cls, data: object, where: str) -> BundleTool:
        read = _Reader(data, where)
        return cls(file=read.file("file", TOOLS_DIR), sha256=read.string("sha256"), size=read.integer("size"),
                   wsm_version=read.string("wsm_version", ""))


class BaseKind(str, Enum):
    """What a delta bundle's base was given as, and so what its digest is the sha256 of."""

    BUNDLE = "bundle"  # a bundle directory: its root digest (sha256 of its SHA256SUMS)
    LOCK = "lock"  # a wsm.lock.json alone: the sha256 of that file
    INVENTORY = "inventory"  # `wsm inventory`'s file of what a site's registry holds: the sha256 of that file


@dataclass(frozen=True)
class BaseRecord:
    """The base a delta bundle was made against: the blobs its tarballs leave out are there."""

    digest: str  # sha256:<hex>, of what `kind` says
    kind: BaseKind
    images: tuple[str, ...] = ()  # the base's image references (its pushed repositories may lend blobs)
    registry: str | None = None  # an inventory's registry (host[/prefix]) ...
    repositories: tuple[str, ...] = ()  # ... and the repositories it holds there
    release: BaseRelease | None = None  # what the report compares with; None in locks written before it

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"digest": self.digest, "kind": self.kind.value, "images": list(self.images)}
        if self.registry is not None:
            data["registry"] = self.registry
            data["repositories"] = list(self.repositories)
        if self.release is not None:
            data["release"] = self.release.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: object, where: str) -> BaseRecord:
        read = _Reader(data, where)
        release = read.value("release", dict, None)
        return cls(digest=read.digest("digest"), kind=read.choice("kind", BaseKind),
                   images=tuple(str(item) for item in read.items("images")),
                   registry=read.optional_string("registry"),
                   repositories=tuple(str(item) for item in read.items("repositories")),
                   release=BaseRelease.from_dict(release, f"{where}.release") if release is not None else None)


@dataclass(frozen=True)
class BaseRelease:
    """The base's release by name, so a delta's report can say what changed without the base at hand.

    `images` and `charts` are None for an inventory base (a registry's tags are not the release's references):
    then the report compares by blobs only."""

    images: dict[str, str] | None  # image reference -> digest
    charts: dict[str, tuple[str, str]] | None  # "source#name" -> (version, digest)

    def to_dict(self) -> dict[str, Any]:
        charts = None if self.charts is None else {
            name: {"version": version, "digest": digest} for name, (version, digest) in sorted(self.charts.items())}
        return {"images": None if self.images is None else dict(sorted(self.images.items())), "charts": charts}

    @classmethod
    def of(cls, lock: BundleLock) -> BaseRelease:
        """The images and charts of the lock's last release."""
        return cls(images={image.key: image.digest for image in lock.release_images()},
                   charts={chart_name(c): (c.version, c.digest) for c in lock.release_charts()})

    @classmethod
    def from_dict(cls, data: object, where: str) -> BaseRelease:
        read = _Reader(data, where)
        images = read.value("images", dict, None)
        charts = read.value("charts", dict, None)
        return cls(
            images=None if images is None else {str(key): _Reader(images, f"{where}.images").digest(key)
                                                for key in images},
            charts=None if charts is None else {str(key): _chart_state(charts[key], f"{where}.charts.{key}")
                                                for key in charts})


def _chart_state(data: object, where: str) -> tuple[str, str]:
    read = _Reader(data, where)
    return read.string("version"), read.digest("digest")


def chart_name(chart: BundleChart) -> str:
    """A chart across releases (its version may change): where it comes from and its name."""
    return f"{chart.source}#{chart.name}"


def chart_key(source: str, name: str, version: str) -> str:
    return f"{source}#{name}-{version}"


@dataclass
class BundleLock:
    """wsm.lock.json. Images and charts from earlier runs stay (with `in_release` False) until removed."""

    created: str = field(default_factory=utc_now)
    updated: str = field(default_factory=utc_now)
    wsm_version: str = __version__
    manifest: str | None = None  # the release manifest (YAML text) of the last run; None for a --chart bundle
    platforms: tuple[Platform, ...] | None = None  # what the last run asked for; None = all
    images: dict[str, BundleImage] = field(default_factory=dict)  # by canonical source reference
    charts: dict[str, BundleChart] = field(default_factory=dict)  # by chart_key
    failures: tuple[Failure, ...] = ()  # what the last run could not fetch
    tool: BundleTool | None = None  # the bundle's own wsm; None in bundles from before it was carried
    base: BaseRecord | None = None  # set for a delta bundle: what holds the layers its tarballs leave out

    def release_images(self) -> list[BundleImage]:
        """The images the last download's release asked for, in reference order."""
        return [self.images[key] for key in sorted(self.images) if self.images[key].in_release]

    def release_charts(self) -> list[BundleChart]:
        return [self.charts[key] for key in sorted(self.charts) if self.charts[key].in_release]

    def select(self, wanted: Iterable[str]) -> list[BundleImage]:
        """The images named in `wanted` (reference, familiar name or tarball name), in the order named."""
        entries = [self.images[key] for key in sorted(self.images)]
        chosen: list[BundleImage] = []
        for name in wanted:
            key = _normal_reference(name)
            match = [entry for entry in entries if name in entry.names or entry.key == key]
            if not match:
                raise BundleError(f"image {name!r} is not in the bundle; `wsm verify` lists what is")
            chosen += [entry for entry in match if entry not in chosen]
        return chosen

    def mark_release(self, image_keys: set[str], chart_keys: set[str]) -> None:
        """Record which entries the last run asked for: the others stay, flagged as kept from earlier."""
        for key, image in self.images.items():
            self.images[key] = replace(image, in_release=key in image_keys)
        for key, chart in self.charts.items():
            self.charts[key] = replace(chart, in_release=key in chart_keys)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": LOCK_FORMAT if self.base is not None else _FULL_FORMAT,  # an older wsm refuses a delta
            "wsm_version": self.wsm_version,
            "created": self.created,
            "updated": self.updated,
            "platforms": platform_names(self.platforms),
            "manifest": self.manifest,
            "images": [self.images[key].to_dict() for key in sorted(self.images)],
            "charts": [self.charts[key].to_dict() for key in sorted(self.charts)],
            "failures": [{"kind": f.kind.value, "name": f.name, "reason": f.reason} for f in self.failures],
            **({"tool": self.tool.to_dict()} if self.tool else {}),
            **({"base": self.base.to_dict()} if self.base else {}),
        }

    def to_json(self) -> bytes:
        return (json.dumps(self.to_dict(), indent=2) + "\n").encode()

    @classmethod
    def from_dict(cls, data: object, origin: Path | str) -> BundleLock:
        if not isinstance(data, dict) or not isinstance(data.get("images"), list):
            raise BundleError(f"{origin}: not a wsm lock file", path=origin)
        read = _Reader(data, str(origin))
        if read.integer("format", 0) > LOCK_FORMAT:
            raise BundleError(f"{origin}: written by a newer wsm (lock format {data['format']}); upgrade wsm",
                              path=origin)
        images = [BundleImage.from_dict(item, f"{origin}: images[{i}]") for i, item in enumerate(read.items("images"))]
        charts = [BundleChart.from_dict(item, f"{origin}: charts[{i}]") for i, item in enumerate(read.items("charts"))]
        return cls(
            created=read.string("created", "") or utc_now(),
            updated=read.string("updated", "") or utc_now(),
            wsm_version=read.string("wsm_version", ""),
            manifest=read.optional_string("manifest"),
            platforms=read.platforms("platforms"),
            images={image.key: image for image in images},
            charts={chart.key: chart for chart in charts},
            failures=tuple(_failure(item, f"{origin}: failures[{i}]") for i, item in enumerate(read.items("failures"))),
            tool=BundleTool.from_dict(data["tool"], f"{origin}: tool") if data.get("tool") is not None else None,
            base=BaseRecord.from_dict(data["base"], f"{origin}: base") if data.get("base") is not None else None,
        )

    @classmethod
    def from_json(cls, raw: bytes, origin: Path | str) -> BundleLock:
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, ValueError) as error:
            raise BundleError(f"{origin}: unreadable, not JSON ({error}); move it aside to start this bundle afresh",
                              path=origin) from None
        return cls.from_dict(data, origin)


def platform_names(platforms: Iterable[Platform] | None) -> list[str] | None:
    """Platforms as the lock writes them: sorted, unique text; None stays None (all platforms)."""
    return None if platforms is None else sorted({str(platform) for platform in platforms})


def _manifest_entry(descriptor: Descriptor) -> dict[str, Any]:
    """A kept manifest as the lock lists it: its platform as text (`linux/amd64`), or null."""
    return {
        "mediaType": descriptor.media_type, "digest": descriptor.digest, "size": descriptor.size,
        "platform": str(descriptor.platform) if descriptor.platform else None,
    }


def _failure(data: object, where: str) -> Failure:
    read = _Reader(data, where)
    return Failure(read.choice("kind", FailureKind), read.string("name"), read.string("reason", ""))


def _normal_reference(text: str) -> str | None:
    try:
        return Reference.parse(text).canonical
    except InvalidReference:
        return None


class _Reader:
    """Typed reads of one JSON object of the lock, failing with `<where>.<key>: <what is wrong>`."""

    def __init__(self, data: object, where: str) -> None:
        self.where = where
        if not isinstance(data, dict):
            self.fail("", f"expected an object, found {type(data).__name__}")
        self.data: Mapping[str, Any] = data

    def checked(self, key: str, validator: Callable[[str, str, type[WsmError]], str]) -> str:
        """A string that `validator` (one of `_names`) accepts."""
        text = self.string(key)
        try:
            return validator(text, f"{self.where}.{key}", WsmError)
        except WsmError as error:
            return self.fail("", error.message)

    def fail(self, key: str, problem: str) -> NoReturn:
        place = f"{self.where}.{key}" if key else self.where
        raise BundleError(f"{place}: {problem}; the lock file was edited or damaged")

    def value(self, key: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
        if key not in self.data or self.data[key] is None:
            if default is ...:
                self.fail(key, "is missing")
            return default
        value = self.data[key]
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
            names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
            self.fail(key, f"expected {names}, found {type(value).__name__}")
        return value

    def string(self, key: str, default: str | Any = ...) -> str:
        return str(self.value(key, str, default))

    def optional_string(self, key: str) -> str | None:
        value = self.value(key, str, None)
        return None if value is None else str(value)

    def integer(self, key: str, default: int | Any = ...) -> int:
        return int(self.value(key, int, default))

    def boolean(self, key: str, default: bool) -> bool:
        return bool(self.value(key, bool, default))

    def items(self, key: str) -> list[Any]:
        return list(self.value(key, list, []))

    def choice(self, key: str, kind: type[Enum]) -> Any:
        text = self.string(key)
        try:
            return kind(text)
        except ValueError:
            return self.fail(key, f"{text!r} is not one of {', '.join(str(k.value) for k in kind)}")

    def digest(self, key: str) -> str:
        text = self.string(key)
        algorithm, _, hex_part = text.partition(":")
        if algorithm not in ("sha256", "sha384", "sha512") or not hex_part.isalnum():
            self.fail(key, f"{text!r} is not a digest")
        return text

    def reference(self, key: str) -> Reference:
        try:
            return Reference.parse(self.string(key))
        except InvalidReference as error:
            return self.fail(key, str(error))

    def file(self, key: str, directory: str) -> str:
        """A path relative to the bundle that stays inside `directory` (no `..`, not absolute)."""
        text = self.string(key)
        normal = posixpath.normpath(text)
        if text.startswith("/") or "\\" in text or posixpath.dirname(normal) != directory or normal != text:
            self.fail(key, f"{text!r} is not a file directly under {directory}/")
        return text

    def platforms(self, key: str) -> tuple[Platform, ...] | None:
        items = self.value(key, list, None)
        if items is None:
            return None
        try:
            return tuple(Platform.parse(str(item)) for item in items)
        except InvalidPlatform as error:
            return self.fail(key, str(error))

    def descriptors(self, key: str, *, platform_as_text: bool = False) -> list[Descriptor]:
        return [self._descriptor(item, f"{self.where}.{key}[{i}]", platform_as_text)
                for i, item in enumerate(self.items(key))]

    def descriptor(self, key: str) -> Descriptor:
        return self._descriptor(self.value(key, dict), f"{self.where}.{key}", False)

    def _descriptor(self, data: object, where: str, platform_as_text: bool) -> Descriptor:
        read = _Reader(data, where)
        platform: Platform | None = None
        if platform_as_text:
            text = read.optional_string("platform")
            platform = read.platform_text(text) if text else None
        elif isinstance(read.data.get("platform"), dict):
            platform = Platform.from_dict(read.data["platform"])
        annotations = read.value("annotations", dict, None)
        return Descriptor(
            media_type=read.string("mediaType", ""),
            digest=read.digest("digest"),
            size=read.integer("size"),
            platform=platform,
            annotations={str(k): str(v) for k, v in annotations.items()} if annotations else None,
        )

    def platform_text(self, text: str) -> Platform:
        try:
            return Platform.parse(text)
        except InvalidPlatform as error:
            return self.fail("platform", str(error))

    def resolved(self, key: str, reference: Reference) -> ResolvedImage:
        data = self.value(key, dict, None)
        if data is None:  # a lock entry without provenance: the image is still carried, nothing is rewritten
            return ResolvedImage(reference, "")
        try:
            return ResolvedImage.from_dict(data)
        except (KeyError, TypeError, ValueError, WsmError) as error:
            return self.fail(key, f"unreadable ({error})")
