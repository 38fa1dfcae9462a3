"""Delta bundles: a bundle that carries only the layers its base does not hold.

The base is what the site already has: an earlier bundle (its directory, or only its `wsm.lock.json`) or
`wsm inventory`'s record of the site's registry. A delta's tarball holds its index, manifests and configs
(small, and what push and verify read) and only the layers the base lacks; the lock records the base
(`BaseRecord`) and, per image, the layers left out (`BundleImage.from_base`).

Which blobs a base holds: for a bundle, what its tarballs hold (a delta base's own `from_base` layers are not
in it); for an inventory, every blob the site's registry listed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from ._bundle import LOCK_FILE, SUMS_FILE, Bundle, read_regular_file, root_digest_of
from ._exceptions import BundleError, WsmError
from ._inventory import MAX_INVENTORY_BYTES, Inventory
from ._lock import MAX_LOCK_BYTES, BaseKind, BaseRecord, BaseRelease, BundleImage, BundleLock
from ._plan import ImagePlan
from ._reference import Reference
from ._remote import Descriptor, RegistryClient, compute_digest


class MissingBaseBlobs(WsmError):
    """The target registry lacks layers a delta bundle leaves to its base."""

    def __init__(self, message: str, missing: Sequence[str], base: str) -> None:
        super().__init__(message)
        self.missing = tuple(missing)
        self.base = base


@dataclass(frozen=True)
class DeltaBase:
    """A base, read: what it is (`record`), the blobs it holds (digest -> size), and the bundle when given one."""

    record: BaseRecord
    blobs: Mapping[str, int]
    bundle: Bundle | None = None  # the base bundle's directory, when OLD was one
    lock_digest: str | None = None  # sha256 of the base's wsm.lock.json (also when OLD was its directory)

    def matches(self, recorded: BaseRecord) -> bool:
        """Whether this is the base a delta was made against (by its root digest, or its lock's sha256)."""
        return recorded.digest in {self.record.digest, self.lock_digest}


def read_base(path: Path) -> DeltaBase:
    """OLD as `--since` and `--base` take it: a bundle directory, its wsm.lock.json, or an inventory file."""
    if path.is_dir():
        bundle = Bundle.open(path)
        sums = bundle.dir.sums_path
        if not sums.is_file():
            raise BundleError(f"base bundle {path} has no {SUMS_FILE}: its download did not finish; finish it or "
                              "give another base", path=path)
        digest = root_digest_of(read_regular_file(sums, MAX_LOCK_BYTES))
        lock_digest = compute_digest(read_regular_file(bundle.dir.lock_path, MAX_LOCK_BYTES))
        record = BaseRecord(digest, BaseKind.BUNDLE, _image_names(bundle.lock), release=BaseRelease.of(bundle.lock))
        return DeltaBase(record, held_blobs(bundle.lock), bundle, lock_digest)
    if not path.is_file():
        raise BundleError(f"base {path} does not exist; give a bundle directory, its {LOCK_FILE} or an inventory "
                          "file", path=path)
    raw = read_regular_file(path, max(MAX_LOCK_BYTES, MAX_INVENTORY_BYTES))
    digest = compute_digest(raw)
    if Inventory.looks_like(raw):
        inventory = Inventory.from_json(raw, path)
        record = BaseRecord(digest, BaseKind.INVENTORY, registry=inventory.registry,
                            repositories=tuple(repo.name for repo in inventory.repositories),
                            release=BaseRelease(images=None, charts=None))  # its tags are not release references
        return DeltaBase(record, inventory.blobs())
    lock = BundleLock.from_json(raw, path)
    record = BaseRecord(digest, BaseKind.LOCK, _image_names(lock), release=BaseRelease.of(lock))
    return DeltaBase(record, held_blobs(lock), lock_digest=digest)


def _image_names(lock: BundleLock) -> tuple[str, ...]:
    return tuple(sorted(lock.images))


def held_blobs(lock: BundleLock) -> dict[str, int]:
    """Every blob a bundle's tarballs hold (digest -> size): what its lock lists them as holding."""
    return {blob.digest: blob.size for image in lock.images.values() for blob in image.blobs}


def leave_out_base(plan: ImagePlan, base: DeltaBase) -> ImagePlan:
    """`plan` without the layers `base` holds (same digest and size); configs and manifests always stay."""
    configs = {manifest.config().digest for manifest in plan.manifests}
    left_out = tuple(blob for blob in plan.fetch
                     if blob.digest not in configs and base.blobs.get(blob.digest) == blob.size)
    if not left_out:
        return plan
    gone = {blob.digest for blob in left_out}
    return replace(plan, fetch=tuple(blob for blob in plan.fetch if blob.digest not in gone), from_base=left_out)


def check_same_base(lock: BundleLock, base: DeltaBase | None, where: Path) -> None:
    """A bundle is made against one base: a rerun with another one (or none, or a first one) would mix them."""
    if not lock.images:
        return
    before = lock.base.digest if lock.base else None
    now = base.record.digest if base else None
    if before != now:
        raise BundleError(
            f"bundle {where} was made against {_base_words(before)}, this run against {_base_words(now)}; write "
            "it into a new bundle directory", path=where)


def _base_words(digest: str | None) -> str:
    return f"base {digest}" if digest else "no base (a full bundle)"


# --------------------------------------------------------------------------------------------------- verify


def base_blobs_expected(lock: BundleLock) -> dict[str, int]:
    """The layers a delta bundle leaves to its base (digest -> size), over all its images."""
    return {blob.digest: blob.size for image in lock.images.values() for blob in image.from_base}


def base_problems(lock: BundleLock, base: DeltaBase) -> list[tuple[str, str]]:
    """(blob, problem) for each layer the delta expects that `base` does not hold as the lock describes it.

    `base` must be the recorded base (else one problem says so); its tarballs are checked by the caller."""
    if lock.base is None:
        return [("", "the bundle is not a delta bundle: it has no base")]
    if not base.matches(lock.base):
        return [("", f"the base given has digest {base.record.digest}, the bundle was made against "
                     f"{lock.base.digest}")]
    problems = []
    for digest, size in base_blobs_expected(lock).items():
        held = base.blobs.get(digest)
        if held is None:
            problems.append((digest, "not in the base bundle"))
        elif held != size:
            problems.append((digest, f"{held} bytes in the base, the delta expects {size}"))
    return problems


def base_tarball_of(base: Bundle, digest: str) -> BundleImage | None:
    """The base image whose tarball holds `digest`."""
    for image in base.lock.images.values():
        if any(blob.digest == digest for blob in image.blobs):
            return image
    return None


# ----------------------------------------------------------------------------------------------------- push


@dataclass(frozen=True)
class BaseBlobPlan:
    """How each base layer reaches a delta's target repositories: already there, or mounted from another."""

    present: int
    mounts: tuple[tuple[Reference, str, str], ...]  # (target, digest, from repository)


def plan_base_blobs(
    entries: Sequence[BundleImage], targets: Mapping[Reference, Reference], lenders: Sequence[Reference],
    base: BaseRecord, client: RegistryClient,
) -> BaseBlobPlan:
    """Find, with HEAD requests only (nothing is written), every base layer each image of a delta needs: in its
    target repository, else in one of `lenders` (the repositories of the registry that the base's images went
    to) to be mounted from there. Raises MissingBaseBlobs naming the layers found nowhere and the base."""
    present = 0
    mounts: list[tuple[Reference, str, str]] = []
    missing: dict[str, None] = {}
    for entry in entries:
        target = targets[entry.reference]
        for blob in entry.from_base:
            if client.has_blob(target, blob.digest):
                present += 1
                continue
            lender = next((repo for repo in lenders if repo.registry == target.registry and
                           repo.repository != target.repository and client.has_blob(repo, blob.digest)), None)
            if lender is None:
                missing[blob.digest] = None
            else:
                mounts.append((target, blob.digest, lender.repository))
    if missing:
        names = sorted(missing)
        more = f" and {len(names) - 3} more" if len(names) > 3 else ""
        registry = next(iter(targets.values())).registry if targets else "the registry"
        raise MissingBaseBlobs(
            f"{registry} lacks {len(names)} layer(s) this delta bundle leaves to its base ({', '.join(names[:3])}"
            f"{more}); push the base bundle {base.digest} ({base.kind.value}) first, then this one",
            names, base.digest)
    return BaseBlobPlan(present, tuple(mounts))


def mount_base_blobs(plan: BaseBlobPlan, client: RegistryClient) -> None:
    """Link every base layer into the target repository that needs it (the plan found each one)."""
    for target, digest, lender in plan.mounts:
        if not client.mount_blob(target, digest, lender):
            raise MissingBaseBlobs(f"{target.registry} refused to mount layer {digest} from {lender} into "
                                   f"{target.repository}; push the base bundle into {target.repository}'s registry",
                                   [digest], "")


def lender_repositories(base: BaseRecord, base_targets: Sequence[Reference], registry_host: str) -> list[Reference]:
    """The repositories of the target registry that may hold the base's layers: where the base's images went
    (`base_targets`, planned as this push plans its own), or, for an inventory, the repositories it listed."""
    lenders = list(base_targets)
    if base.registry is not None and base.registry.split("/", 1)[0] == registry_host:
        lenders += [Reference.parse(f"{registry_host}/{name}:inventory") for name in base.repositories]
    return lenders


def describe_base(record: BaseRecord) -> str:
    of = {BaseKind.BUNDLE: "root digest", BaseKind.LOCK: "sha256 of its wsm.lock.json",
          BaseKind.INVENTORY: "sha256 of the inventory file"}[record.kind]
    return f"{record.digest} ({of})"

