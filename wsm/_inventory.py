"""`inventory`: what a site's registry holds, for the connected side to make a delta of only what it lacks.

Read-only: the registry's `_catalog` (paged) under a prefix, each repository's tags (paged), each tag's
manifest (and an index's platform manifests) for the digests of its manifests, configs and layers. The file
(`inventory.json`) is what `wsm download --since` takes as a base:

    {"inventory": 1, "registry": "registry.corp/prefix", "created": "...",
     "repositories": [{"name": "prefix/app", "tags": {"1.0": "sha256:..."}, "manifests": ["sha256:..."],
                       "blobs": [{"digest": "sha256:...", "size": 1}]}]}
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._exceptions import BundleError, InvalidReference, NotFound, WsmError
from ._format import utc_now
from ._reference import Reference
from ._remote import Manifest, RegistryClient, is_sha256_digest
from ._target import TargetRegistry

INVENTORY_FORMAT = 1
MAX_INVENTORY_BYTES = 256 * 1024 * 1024
_MARK = b'"inventory"'


@dataclass(frozen=True)
class InventoryRepository:
    name: str  # the repository path in the registry, prefix included
    tags: dict[str, str] = field(default_factory=dict)  # tag -> digest of what it points at
    manifests: tuple[str, ...] = ()  # every manifest and index digest the tags reach
    blobs: dict[str, int] = field(default_factory=dict)  # config and layer digest -> size

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "tags": dict(sorted(self.tags.items())), "manifests": list(self.manifests),
                "blobs": [{"digest": digest, "size": size} for digest, size in sorted(self.blobs.items())]}


@dataclass(frozen=True)
class Inventory:
    registry: str  # host[/prefix], as given
    repositories: tuple[InventoryRepository, ...]
    created: str = field(default_factory=utc_now)
    skipped: tuple[str, ...] = ()  # repositories or tags that could not be read, with why (not in the file)

    def blobs(self) -> dict[str, int]:
        """Every config and layer the registry holds (digest -> size)."""
        return {digest: size for repo in self.repositories for digest, size in repo.blobs.items()}

    def to_json(self) -> bytes:
        data = {"inventory": INVENTORY_FORMAT, "registry": self.registry, "created": self.created,
                "repositories": [repo.to_dict() for repo in self.repositories]}
        return (json.dumps(data, indent=2) + "\n").encode()

    @staticmethod
    def looks_like(raw: bytes) -> bool:
        """An inventory file rather than a lock (the lock never has a top-level `inventory` key)."""
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, ValueError):
            return False
        return isinstance(data, dict) and "inventory" in data

    @classmethod
    def from_json(cls, raw: bytes, origin: Path | str) -> Inventory:
        try:
            data = json.loads(raw)
            if not isinstance(data, dict) or not isinstance(data.get("repositories"), list):
                raise ValueError("no repositories")
            if int(data["inventory"]) > INVENTORY_FORMAT:
                raise BundleError(f"{origin}: written by a newer wsm (inventory format {data['inventory']}); "
                                  "upgrade wsm", path=origin)
            return cls(str(data["registry"]), tuple(_repository(item) for item in data["repositories"]),
                       str(data.get("created", "")))
        except (KeyError, TypeError, ValueError, InvalidReference) as error:
            raise BundleError(f"{origin}: not a wsm inventory file ({error}); write it again with wsm inventory",
                              path=origin) from None


def _repository(data: Any) -> InventoryRepository:
    name = str(data["name"])
    Reference.parse(f"inventory.invalid/{name}")  # a name that does not parse is not one wsm wrote
    tags = {str(tag): _digest(digest) for tag, digest in dict(data["tags"]).items()}
    blobs = {_digest(blob["digest"]): int(blob["size"]) for blob in data["blobs"]}
    return InventoryRepository(name, tags, tuple(_digest(d) for d in data["manifests"]), blobs)


def _digest(value: Any) -> str:
    text = str(value)
    if not is_sha256_digest(text):
        raise ValueError(f"{text!r} is not a sha256 digest")
    return text


def take_inventory(registry: str, client: RegistryClient, note: Callable[[str], None] = lambda _: None) -> Inventory:
    """Everything `registry` (host[/prefix]) holds under its prefix: a repository or tag that cannot be read
    is left out and `note`d, not fatal (the connected side then carries those blobs again)."""
    target = TargetRegistry.parse(registry)
    prefix = f"{target.prefix}/" if target.prefix else ""
    repositories: list[InventoryRepository] = []
    skipped: list[str] = []
    for name in sorted(client.list_repositories(target.host)):
        if not name.startswith(prefix):
            continue
        try:
            reference = Reference.parse(f"{target.host}/{name}")
        except InvalidReference as error:
            skipped.append(f"{name}: {error}")
            note(skipped[-1])
            continue
        repositories.append(_read_repository(reference, client, skipped, note))
    return Inventory(registry, tuple(repositories), skipped=tuple(skipped))


def _read_repository(reference: Reference, client: RegistryClient, skipped: list[str],
                     note: Callable[[str], None]) -> InventoryRepository:
    tags: dict[str, str] = {}
    manifests: dict[str, None] = {}
    blobs: dict[str, int] = {}
    for tag in sorted(client.list_tags(reference)):
        try:
            tagged = Reference.parse(f"{reference.name}:{tag}")  # a hostile tag never becomes a URL path
            top = client.get_manifest(tagged)
            documents = [top] + [client.get_manifest(reference.with_digest(child.digest)) for child in top.children()]
        except (InvalidReference, NotFound) as error:
            skipped.append(f"{reference.repository}:{tag}: {error}")
            note(skipped[-1])
            continue
        except WsmError as error:
            raise WsmError(f"{reference.name}:{tag}: {error}") from None
        tags[tag] = top.digest
        for document in documents:
            manifests.setdefault(document.digest, None)
            blobs.update(_blobs_of(document))
    return InventoryRepository(reference.repository, tags, tuple(manifests), blobs)


def _blobs_of(manifest: Manifest) -> dict[str, int]:
    if manifest.is_index:
        return {}
    return {blob.digest: blob.size for blob in [manifest.config(), *manifest.layers()]}
