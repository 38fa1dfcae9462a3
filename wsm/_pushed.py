"""`bundle/pushed.json`: what `wsm push` put where, the one record of internal names. `wsm check` confirms it
later from the bundle alone; `wsm rewrite` and the node files read it, so that every internal name they write
is the name push created (prefix and `--mapping` targets included), never one worked out again by another rule.
Only images the registry holds after the push are recorded (sent, already there, or pushed by digest beside a
tag that holds another image: then the target carries that digest); one that failed is not.

    {"format": 1, "pushed": "2025-01-01T00:00:00Z", "registry": "registry.corp/wandb", "scheme": "https",
     "helm_repo": "https://…",
     "images": [{"source": "docker.io/wandb/local:0.62.2", "target": "registry.corp/wandb/wandb/local:0.62.2",
                 "digest": "sha256:…"}],                   // what went under the tag: the bundle's top
     "charts": [{"name": "operator", "version": "1.3.8", "repo": "https://…", "digest": "sha256:…"}],
     "files": ["values/operator.yaml"]}                    // the values files and custom resources written

Written atomically after each push (a dry run writes none). No credentials are in it.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._bundle import Bundle, read_regular_file
from ._exceptions import BundleError, Hint, InvalidReference
from ._files import write_atomically
from ._format import utc_now
from ._redact import strip_userinfo
from ._reference import Reference
from ._remote import is_sha256_digest
from ._target import TargetRegistry

PUSHED_FILE = "pushed.json"
FORMAT = 1
_MAX_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class PushedImage:
    source: Reference
    target: Reference
    digest: str  # the bundle's top manifest or index: what the target tag must name

    def to_dict(self) -> dict[str, str]:
        return {"source": self.source.canonical, "target": self.target.canonical, "digest": self.digest}


@dataclass(frozen=True)
class PushedChart:
    name: str
    version: str
    repo: str  # the internal Helm repository: https://… or oci://…
    digest: str  # sha256 of the archive in the bundle

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version, "repo": self.repo, "digest": self.digest}


@dataclass(frozen=True)
class PushRecord:
    registry: str
    helm_repo: str | None
    images: tuple[PushedImage, ...]
    charts: tuple[PushedChart, ...]
    files: tuple[str, ...] = ()  # relative to the bundle
    pushed: str = field(default_factory=utc_now)
    scheme: str = "https"  # how the nodes reach the registry: "http" when push spoke plain HTTP

    @property
    def target_registry(self) -> TargetRegistry:
        return TargetRegistry.parse(self.registry)

    @classmethod
    def planned(
        cls, bundle: Bundle, registry: str, targets: Mapping[Reference, Reference], helm_repo: str | None,
        files: Sequence[str] = (), *, held: Collection[Reference] | None = None, scheme: str = "https",
    ) -> PushRecord:
        """What pushing the bundle's release to `targets` (and its charts to `helm_repo`) puts where (the
        repository's URL without user or password: the record stays in the bundle); `held`: the sources the
        registry now holds (default: all of them, for a check of a bundle never pushed)."""
        helm_repo = strip_userinfo(helm_repo) if helm_repo else None
        images = tuple(PushedImage(entry.reference, targets[entry.reference], entry.top.digest)
                       for entry in bundle.lock.release_images() if held is None or entry.reference in held)
        charts = tuple(PushedChart(chart.name, chart.version, helm_repo, chart.digest)
                       for chart in bundle.lock.release_charts()) if helm_repo else ()
        return cls(registry, helm_repo, images, charts, tuple(files), scheme=scheme)

    def to_json(self) -> bytes:
        data = {
            "format": FORMAT, "pushed": self.pushed, "registry": self.registry, "scheme": self.scheme,
            "helm_repo": self.helm_repo,
            "images": [image.to_dict() for image in self.images], "charts": [chart.to_dict() for chart in self.charts],
            "files": list(self.files),
        }
        return (json.dumps(data, indent=2) + "\n").encode()

    def write(self, bundle_root: Path) -> Path:
        path = bundle_root / PUSHED_FILE
        write_atomically(path, self.to_json())
        return path

    @classmethod
    def read(cls, bundle_root: Path) -> PushRecord | None:
        """The record of the last push into the bundle, or None when it was never pushed."""
        path = bundle_root / PUSHED_FILE
        if not path.exists():
            return None
        try:
            data = json.loads(read_regular_file(path, _MAX_BYTES))
            return cls._from_dict(data)
        except (ValueError, KeyError, TypeError, InvalidReference) as error:
            raise BundleError(f"{path} is not a push record wsm wrote ({error}); push again to rewrite it",
                              path=path) from None

    @classmethod
    def load(cls, bundle_root: Path) -> PushRecord:
        """The record of the last push; an error saying what to do when the bundle was never pushed."""
        record = cls.read(bundle_root)
        if record is None:
            raise BundleError(f"{bundle_root / PUSHED_FILE} does not exist: the bundle has not been pushed yet; push "
                              "it first, or give a mapping of source to target names", path=bundle_root / PUSHED_FILE,
                              hint=Hint.BUNDLE)
        return record

    @classmethod
    def _from_dict(cls, data: Any) -> PushRecord:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"format {FORMAT} expected")
        images = tuple(PushedImage(Reference.parse(_text(i, "source")), Reference.parse(_text(i, "target")),
                                   _digest(i)) for i in _list(data, "images"))
        charts = tuple(PushedChart(_text(c, "name"), _text(c, "version"), _text(c, "repo"), _digest(c))
                       for c in _list(data, "charts"))
        files = tuple(str(name) for name in _list(data, "files"))
        if any(name.startswith("/") or ".." in Path(name).parts for name in files):
            raise ValueError("a file outside the bundle")
        helm_repo, scheme = data.get("helm_repo"), data.get("scheme", "https")
        if scheme not in ("http", "https"):
            raise ValueError(f"scheme {scheme!r} is neither http nor https")
        TargetRegistry.parse(_text(data, "registry"))
        return cls(_text(data, "registry"), helm_repo if isinstance(helm_repo, str) else None, images, charts,
                   files, str(data.get("pushed", "")), str(scheme))


def _list(data: dict[str, Any], key: str) -> list[Any]:
    value = data.get(key, [])
    if not isinstance(value, list):
        raise ValueError(f"`{key}` is not a list")
    return value


def _text(data: object, key: str) -> str:
    if not isinstance(data, dict) or not isinstance(data.get(key), str):
        raise ValueError(f"`{key}` is missing")
    return str(data[key])


def _digest(data: object) -> str:
    digest = _text(data, "digest")
    if not is_sha256_digest(digest):
        raise ValueError(f"digest {digest!r} is not sha256:<64 hex>")
    return digest
