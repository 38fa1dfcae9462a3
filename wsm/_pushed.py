"""What a push put into the internal registry: `bundle/pushed.json`, the one record of internal names.

`wsm rewrite` and the node files read it, so that every internal name they write is the name push created
(prefix and `--mapping` targets included), never a name worked out again by another rule. Only images the
registry now holds under their tag at the bundle's digest are recorded (sent, or already there); an image
that failed, or whose tag was left at another digest, is not.

    {"format": 1, "registry": "registry.corp/wandb", "scheme": "https",
     "images": [{"source": "docker.io/acme/app:1.0", "target": "registry.corp/wandb/acme/app:1.0",
                 "digest": "sha256:..."}]}
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._exceptions import BundleError, Hint, InvalidReference
from ._files import write_atomically
from ._reference import Reference
from ._target import TargetRegistry

PUSHED_FILE = "pushed.json"
_FORMAT = 1
_MAX_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class PushedImage:
    source: Reference
    target: Reference
    digest: str  # what the target's tag points at

    def to_dict(self) -> dict[str, str]:
        return {"source": self.source.canonical, "target": self.target.canonical, "digest": self.digest}


@dataclass(frozen=True)
class PushedRecord:
    registry: TargetRegistry
    images: tuple[PushedImage, ...]
    scheme: str = "https"  # how the nodes reach the registry: "http" when push spoke plain HTTP

    def to_json(self) -> bytes:
        data: dict[str, Any] = {"format": _FORMAT, "registry": self.registry.base, "scheme": self.scheme,
                                "images": [image.to_dict() for image in self.images]}
        return (json.dumps(data, indent=2) + "\n").encode()

    def write(self, bundle_root: Path) -> Path:
        path = bundle_root / PUSHED_FILE
        write_atomically(path, self.to_json())
        return path

    @classmethod
    def load(cls, bundle_root: Path) -> PushedRecord:
        path = bundle_root / PUSHED_FILE
        try:
            with open(path, "rb") as handle:
                raw = handle.read(_MAX_BYTES + 1)
        except FileNotFoundError:
            raise BundleError(f"{path} does not exist: the bundle has not been pushed yet; push it first, or give "
                              "a mapping of source to target names", path=path, hint=Hint.BUNDLE) from None
        if len(raw) > _MAX_BYTES:
            raise BundleError(f"{path} is larger than {_MAX_BYTES} bytes: not a push record", path=path)
        return cls.from_dict(_json(raw, path), path)

    @classmethod
    def from_dict(cls, data: object, path: Path) -> PushedRecord:
        if not isinstance(data, dict) or data.get("format") != _FORMAT or not isinstance(data.get("images"), list):
            raise BundleError(f"{path}: not a push record of format {_FORMAT}; push the bundle again", path=path)
        registry, scheme = data.get("registry"), data.get("scheme", "https")
        if not isinstance(registry, str) or scheme not in ("http", "https"):
            raise BundleError(f"{path}: the registry or scheme is missing or wrong; push the bundle again", path=path)
        images = tuple(_image(item, path) for item in data["images"])
        return cls(TargetRegistry.parse(registry), images, scheme)


def _json(raw: bytes, path: Path) -> object:
    try:
        return json.loads(raw)
    except ValueError as error:
        raise BundleError(f"{path}: not JSON ({error}); push the bundle again", path=path) from None


def _image(item: object, path: Path) -> PushedImage:
    fields = item if isinstance(item, dict) else {}
    texts = [fields.get(key) for key in ("source", "target", "digest")]
    if not all(isinstance(text, str) for text in texts):
        raise BundleError(f"{path}: an image entry lacks source, target or digest; push the bundle again", path=path)
    source, target, digest = (str(text) for text in texts)
    try:
        return PushedImage(Reference.parse(source), Reference.parse(target), digest)
    except InvalidReference as error:
        raise BundleError(f"{path}: {error}", path=path) from None


def record_of(registry: TargetRegistry, scheme: str, images: Sequence[PushedImage]) -> PushedRecord:
    return PushedRecord(registry, tuple(sorted(images, key=lambda image: image.source.canonical)), scheme)
