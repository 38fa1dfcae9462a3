"""Where each source image lands in the internal registry.

The rule is predictable: drop the source registry host, keep the path, put it under the target registry and
its optional prefix (a Harbor project): `docker.io/wandb/local` -> `registry.corp/wandb/local`,
`quay.io/prometheus/prometheus` -> `registry.corp/prefix/prometheus/prometheus`. A mapping file can name
targets explicitly. Two sources landing on one target would overwrite each other: that is refused.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from . import _yaml
from ._exceptions import Hint, InvalidReference, WsmError
from ._reference import Reference


@dataclass(frozen=True)
class TargetRegistry:
    """`registry.corp` or `registry.corp/prefix/path`."""

    host: str
    prefix: str = ""

    @classmethod
    def parse(cls, text: str) -> TargetRegistry:
        text = text.strip().removeprefix("https://").removeprefix("http://").rstrip("/")
        host, _, prefix = text.partition("/")
        try:
            Reference.parse(f"{host}/{prefix + '/' if prefix else ''}probe:1")
        except InvalidReference:
            raise WsmError(
                f"registry {text!r} is not a registry host with an optional path prefix "
                "(e.g. registry.corp or registry.corp:5000/project)"
            ) from None
        if "." not in host and ":" not in host and host != "localhost":
            raise WsmError(f"registry {text!r}: {host!r} does not look like a registry host (add the domain or port)")
        return cls(host, prefix)

    @property
    def base(self) -> str:
        return f"{self.host}/{self.prefix}" if self.prefix else self.host

    def repository_for(self, source: Reference) -> str:
        return f"{self.prefix}/{source.repository}" if self.prefix else source.repository


def load_mapping(path: Path) -> dict[str, str]:
    """A YAML mapping `source name -> target name`, both `registry/path` without tag."""
    try:
        text = _yaml.read_document(path, f"mapping file {path}", WsmError)
    except FileNotFoundError:
        raise WsmError(f"mapping file {path} does not exist") from None
    except OSError as error:
        raise WsmError(f"mapping file {path} cannot be read ({error.strerror})") from None
    data = _yaml.load_mapping(text, f"mapping file {path}", WsmError)
    names = {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)}
    if len(names) != len(data):
        raise WsmError(f"mapping file {path}: expected a mapping of source image names to target image names")
    return {_name(k, path): _name(v, path) for k, v in names.items()}


def _name(text: str, path: Path) -> str:
    try:
        return Reference.parse(text).name
    except InvalidReference as error:
        raise WsmError(f"mapping file {path}: {error}") from None


def plan_targets(
    sources: Iterable[Reference], registry: TargetRegistry, mapping: Mapping[str, str] | None = None
) -> dict[Reference, Reference]:
    """Target reference (same tag and digest) for each source; refuse two names that collide."""
    mapping = mapping or {}
    targets: dict[Reference, Reference] = {}
    owners: dict[str, str] = {}
    for source in sources:
        if source.name in mapping:
            target = Reference.parse(mapping[source.name] + ":x").with_tag(source.tag).with_digest(source.digest)
        else:
            target = source.with_name(registry.host, registry.repository_for(source))
        owner = owners.setdefault(target.name, source.name)
        if owner != source.name:
            raise WsmError(f"{owner} and {source.name} would both be pushed to {target.name}", hint=Hint.MAPPING)
        targets[source] = target
    return targets
