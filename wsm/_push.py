"""The offline half: a verified bundle into the site's registry and Helm repository.

Images go up byte for byte (manifests too, so digests in the internal registry equal the upstream ones),
children of an index before the index. A blob the target already has is not sent again; one that another
repository of the same registry has is mounted. A tag that exists with another digest is a policy decision
(`fail`, `skip`, `overwrite`), never a silent overwrite. A rerun sends only what is missing.
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import Any

from ._bundle import Bundle, read_regular_file, require_regular_file
from ._chart import Chart, chart_from_archive
from ._chartrepo import MAX_CHART_BYTES, ChartRepository, RepoAuth, open_repository
from ._delta import base_blobs_expected, lender_repositories, mount_base_blobs, plan_base_blobs
from ._exceptions import BundleError, DigestMismatch, Hint, ProofFailed, StorageError, TagConflict, WsmError
from ._files import write_atomically
from ._http import TransportOptions
from ._install import (ChartLocation, InstallFile, chart_overrides, install_file_path, pull_secret_values,
                       write_install_files)
from ._layout import blob_member, tar_members
from ._lock import BaseRecord, BundleChart, BundleImage, FilePart
from ._manifest import ChartEntry, ReleaseManifest
from ._model import ResolvedImage
from ._nodefiles import NodeFiles, node_files, write_node_files
from ._overrides import belongs_to, rewrite_values_file
from ._progress import NO_PROGRESS, Progress
from ._proof import helm_available, installed_values, proof_summary, prove_install
from ._pullsecret import PullSecretReport, RenderTarget, check_rendered, validate_secret_name
from ._pushed import PushRecord
from ._redact import redact_url, strip_userinfo, url_username
from ._referrers import ReferrerPush, push_referrers
from ._reference import Reference
from ._parts import opener_for, segments
from ._remote import Descriptor, FileSegment, Manifest, RegistryClient, SegmentChain, compute_digest
from ._render import Renderings
from ._runbook import CheckCommand, MovedChart, MovedImage, PullSecretSteps, runbook, tool_program
from ._target import TargetRegistry, load_mapping, plan_targets
from ._values import Values, get_path, load_values_file, merge
from ._verify import check_before_push

RUNBOOK_FILE = "RUNBOOK.md"
Describe = Callable[[WsmError], str]


class OnExisting(str, Enum):
    """What to do with a tag the target already has at another digest."""

    FAIL = "fail"
    SKIP = "skip"
    OVERWRITE = "overwrite"


class PushResult(str, Enum):
    """What happened to one image; the values are what reports and the runbook print."""

    SENT = "sent"
    PRESENT = "present"  # the target already had this digest under the tag
    # Another digest is under the tag and the policy said skip: the tag is left alone, the carried image is
    # pushed by digest, and the values pin that digest.
    SKIPPED = "skipped tag (pinned by digest)"
    WOULD_SEND = "would send"  # a dry run
    FAILED = "failed"


@dataclass
class ImagePush:
    source: Reference
    target: Reference
    digest: str  # of what goes under the tag: the bundle's top manifest or index
    result: PushResult = PushResult.FAILED
    bytes_sent: int = 0
    blobs_sent: int = 0
    blobs_present: int = 0
    blobs_mounted: int = 0
    error: WsmError | None = None  # why it failed or was skipped

    def moved(self) -> MovedImage:
        return MovedImage(self.source.canonical, self.digest, self.target.canonical, self.result.value, self.bytes_sent,
                          pinned=self.result is PushResult.SKIPPED)

    def to_dict(self, describe: Describe = str) -> dict[str, Any]:
        data: dict[str, Any] = {
            "source": self.source.canonical, "target": self.target.canonical, "digest": self.digest,
            "result": self.result.value, "bytes_sent": self.bytes_sent, "blobs_sent": self.blobs_sent,
            "blobs_present": self.blobs_present, "blobs_mounted": self.blobs_mounted,
        }
        if self.result is PushResult.SKIPPED:
            data["pinned"] = self.target.with_digest(self.digest).canonical  # what the values point at
        if self.error is not None:
            data["error"] = describe(self.error)
        return data


@dataclass
class _Mounts:
    """Which repository of the target registry already holds a blob (pushed or found in this run)."""

    where: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def source_for(self, digest: str, repository: str) -> str | None:
        with self.lock:
            other = self.where.get(digest)
        return other if other and other != repository else None

    def record(self, digest: str, repository: str) -> None:
        with self.lock:
            self.where.setdefault(digest, repository)


def push_images(
    bundle: Bundle,
    targets: Mapping[Reference, Reference],
    client: RegistryClient,
    *,
    on_existing: OnExisting = OnExisting.FAIL,
    concurrency: int = 4,
    dry_run: bool = False,
    progress: Progress = NO_PROGRESS,
) -> list[ImagePush]:
    """Push the images of the bundle's release; one failing does not stop the others (its error is recorded)."""
    pusher = _ImagePusher(client, on_existing, dry_run, progress,
                          base_layers=frozenset(base_blobs_expected(bundle.lock)))

    def one(entry: BundleImage) -> ImagePush:
        job = ImagePush(entry.reference, targets[entry.reference], entry.top.digest)
        try:
            pusher.push(bundle.path(entry), entry, job)
        except WsmError as error:
            job.result, job.error = PushResult.FAILED, error
        return job

    entries = bundle.lock.release_images()
    progress.expect(sum(blob.size for entry in entries for blob in entry.blobs))
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        return list(pool.map(one, entries))


class _Tarball:
    """An image tarball of the bundle, read in place: blobs are segments of the file (or of its parts, when it is
    stored in parts), never extracted."""

    def __init__(self, path: Path, parts: Sequence[FilePart] = ()):
        self.path = path
        self.root = path.parent.parent  # the lock keeps every image file directly under images/
        self.parts = tuple(parts)
        self.opener = opener_for(self.root, self.parts)
        for file in [self.root / part.file for part in self.parts] or [path]:
            require_regular_file(file)  # a FIFO or a link to /dev/zero is refused before it is opened
        self.members = tar_members(path, self.opener)

    def segment(self, descriptor: Descriptor) -> FileSegment | SegmentChain:
        name = blob_member(descriptor.digest)
        if name not in self.members:
            raise BundleError(f"{self.path.name}: blob {descriptor.digest} is missing; run wsm verify, then download "
                              "again", path=self.path)
        offset, size = self.members[name]
        if size != descriptor.size:
            raise BundleError(f"{self.path.name}: blob {descriptor.digest} holds {size} bytes, not {descriptor.size}",
                              path=self.path)
        if self.parts:
            return segments(self.root, self.parts, offset, size)
        return FileSegment(self.path, offset, size)

    def manifest(self, descriptor: Descriptor) -> Manifest:
        """A manifest or index of the tarball, checked against its digest (push reads no blob twice, and
        these are read before any blob is sent)."""
        self.segment(descriptor)  # there, at its size
        offset, size = self.members[blob_member(descriptor.digest)]
        with self.opener() if self.opener is not None else open(self.path, "rb") as handle:
            handle.seek(offset)
            raw = handle.read(size)
        actual = compute_digest(raw)
        if actual != descriptor.digest:  # blobs the registry checks as they arrive; what push parses, it checks
            raise DigestMismatch(f"{self.path.name}: manifest {descriptor.digest} hashes to {actual}; run wsm verify",
                                 expected=descriptor.digest, actual=actual)
        return Manifest.from_bytes(raw, descriptor.media_type)


@dataclass
class _ImagePusher:
    client: RegistryClient
    on_existing: OnExisting
    dry_run: bool
    progress: Progress
    mounts: _Mounts = field(default_factory=_Mounts)
    base_layers: frozenset[str] = frozenset()  # a delta's layers left to its base: found or mounted up front

    def push(self, path: Path, entry: BundleImage, job: ImagePush) -> None:
        target = job.target
        # The tag first: an image already there at the same digest costs one HEAD, and its tarball is not opened.
        tag = self._tag_plan(target, entry.top, job)
        if tag is None:
            self.progress.advance(sum(blob.size for blob in entry.blobs))
            return
        tarball = _Tarball(path, entry.parts)
        top_manifest = tarball.manifest(entry.top)
        children = [tarball.manifest(child) for child in top_manifest.children()]
        for manifest in children + [top_manifest]:  # an index only after every manifest it names
            for blob in [] if manifest.is_index else [manifest.config(), *manifest.layers()]:
                self._blob(tarball, blob, target, job)
            if not self.dry_run:
                # Children go by digest; the top under the tag (or by digest when the source named none, or
                # when the tag holds another image that is to stay).
                by_digest = target.with_tag(None).with_digest(manifest.digest)
                where = target.with_digest(None) if manifest is top_manifest and tag else by_digest
                self.client.put_manifest(where, manifest.raw, manifest.media_type)
        if self.dry_run:
            job.result = PushResult.WOULD_SEND
        elif job.result is not PushResult.SKIPPED:
            job.result = PushResult.SENT

    def _tag_plan(self, target: Reference, top: Descriptor, job: ImagePush) -> bool | None:
        """Whether the top goes under the tag (True) or by digest only (False, the tag policy said skip);
        None when there is nothing to do (the same digest is there)."""
        existing = self.client.head_manifest(target)
        if existing is None or (self.on_existing is OnExisting.OVERWRITE and existing.digest != top.digest):
            return bool(target.tag)
        if existing.digest == top.digest:
            job.result = PushResult.PRESENT
            return None
        conflict = TagConflict(
            f"{target.canonical} already exists with digest {existing.digest}, the bundle has {top.digest}",
            hint=Hint.ON_EXISTING,
        )
        if self.on_existing is OnExisting.SKIP:
            job.result, job.error = PushResult.SKIPPED, conflict
            # Pushed by digest on an earlier run: nothing to send, and the tarball stays unopened.
            there = self.client.head_manifest(target.with_tag(None).with_digest(top.digest))
            return None if there is not None and there.digest == top.digest else False
        raise conflict

    def _blob(self, tarball: _Tarball, blob: Descriptor, target: Reference, job: ImagePush) -> None:
        if self.dry_run and blob.digest in self.base_layers:  # found up front; a dry run mounts nothing
            job.blobs_mounted += 1
        elif self.client.has_blob(target, blob.digest):
            job.blobs_present += 1
            self.progress.advance(blob.size)
        elif self.dry_run:
            job.blobs_sent += 1
            job.bytes_sent += blob.size
        elif self._mounted(blob, target):
            job.blobs_mounted += 1
            self.progress.advance(blob.size)
        else:
            self.client.push_blob(target, blob, tarball.segment(blob), self.progress.advance, known_missing=True)
            job.blobs_sent += 1
            job.bytes_sent += blob.size
        self.mounts.record(blob.digest, target.repository)

    def _mounted(self, blob: Descriptor, target: Reference) -> bool:
        other = self.mounts.source_for(blob.digest, target.repository)
        return other is not None and self.client.mount_blob(target, blob.digest, other)


def image_totals(jobs: Sequence[ImagePush]) -> dict[str, int]:
    return {
        "images": len(jobs),
        "sent": sum(1 for j in jobs if j.result is PushResult.SENT),
        "failed": sum(1 for j in jobs if j.result is PushResult.FAILED),
        "bytes_sent": sum(j.bytes_sent for j in jobs),
        "blobs_sent": sum(j.blobs_sent for j in jobs),
        "blobs_present": sum(j.blobs_present for j in jobs),
        "blobs_mounted": sum(j.blobs_mounted for j in jobs),
    }


# --- the whole push: verify, images, charts, install files, runbook ------------------------------------------------


@dataclass(frozen=True)
class PushOptions:
    registry: str  # registry.corp[/prefix]
    helm_repo: str | None = None  # oci://... or https://...
    helm_repo_type: str = "auto"
    mapping: Path | None = None
    on_existing: OnExisting = OnExisting.FAIL
    concurrency: int = 4
    dry_run: bool = False
    site_values: Mapping[str, Values] = field(default_factory=dict)  # by chart name
    user_values_files: Mapping[str, Path] = field(default_factory=dict)  # by chart name: rewritten in place
    repo_auth: RepoAuth = field(default_factory=RepoAuth)
    pull_secret: str | None = None  # the Kubernetes secret every written values file names for pulling
    helm: str | None = None  # the helm binary for the proof and the pull-secret check (default: $WSM_HELM, PATH)


@dataclass(frozen=True)
class WithheldChart:
    """A chart of the release that was not published (no values file, no runbook lines), and why."""

    name: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"chart": self.name, "reason": self.reason}


@dataclass
class PushReport:
    registry: str
    helm_repo: str | None
    images: list[ImagePush]
    charts: list[MovedChart]
    files: list[str]
    runbook: str | None
    dry_run: bool
    withheld: list[WithheldChart] = field(default_factory=list)
    root_digest: str | None = None
    pull_secret: PullSecretReport | None = None
    proof: str | None = None  # what rendering with the written values proved, or why it was skipped
    referrers: list[ReferrerPush] = field(default_factory=list)  # signatures, SBOMs, ... the bundle carried

    @property
    def failures(self) -> list[ImagePush]:
        return [job for job in self.images if job.result is PushResult.FAILED]

    @property
    def referrer_failures(self) -> list[ReferrerPush]:
        return [referrer for referrer in self.referrers if referrer.error is not None]

    @property
    def pinned(self) -> list[ImagePush]:
        """Images whose tag holds another image: the values pin the carried digest instead."""
        return [job for job in self.images if job.result is PushResult.SKIPPED]

    @property
    def ok(self) -> bool:
        return not self.failures and not self.withheld and not self.referrer_failures

    def to_dict(self, describe: Describe = str) -> dict[str, Any]:
        """As data; `describe` words the errors (the CLI words their remedies with its options)."""
        return {
            "registry": self.registry,
            "helm_repo": self.helm_repo,
            "dry_run": self.dry_run,
            "totals": image_totals(self.images),
            "images": [job.to_dict(describe) for job in self.images],
            "charts": [chart.to_dict() for chart in self.charts],
            "files": self.files,
            "withheld": [chart.to_dict() for chart in self.withheld],
            "root_digest": self.root_digest,
            **({"pull_secret": self.pull_secret.to_dict()} if self.pull_secret else {}),
            "proof": self.proof,
            **({"referrers": [referrer.to_dict() for referrer in self.referrers]} if self.referrers else {}),
        }


def push_release(
    bundle: Bundle, options: PushOptions, client: RegistryClient, *,
    progress: Progress = NO_PROGRESS, transport: TransportOptions | None = None,
) -> PushReport:
    """Check the bundle, push its images and charts, write values, custom resources and the runbook.

    The check up front covers the lock, SHA256SUMS and every file but the image tarballs (their sizes only);
    a tarball's blobs are hashed as they are read for upload, its manifests when read (`wsm verify` is the
    full pass)."""
    if options.pull_secret is not None:
        validate_secret_name(options.pull_secret)
    checked = check_before_push(bundle)
    release = bundle.release
    registry = TargetRegistry.parse(options.registry)
    mapping = load_mapping(options.mapping) if options.mapping else None
    entries = bundle.lock.release_images()
    images = [entry.resolved for entry in entries]
    targets = release_targets(entries, registry, mapping)
    if bundle.lock.base is not None:  # before anything is sent: the base's layers must be there, or mountable
        _reach_base_blobs(bundle.lock.base, entries, targets, registry, mapping, client, options.dry_run)
    jobs = push_images(bundle, targets, client, on_existing=options.on_existing, concurrency=options.concurrency,
                       dry_run=options.dry_run, progress=progress)
    if not options.dry_run:
        check_pinned(entries, targets, jobs, client)
    # After their images: a referrer's subject must be in the registry (a 1.1 registry checks it).
    failed = {job.source for job in jobs if job.result is PushResult.FAILED}
    pushed_referrers = push_referrers(bundle, [entry for entry in entries if entry.reference not in failed], targets,
                                      client, dry_run=options.dry_run)
    withheld = [] if options.dry_run else withheld_charts(release, images, jobs)
    # A chart goes out only when every image of it is in the registry as carried: else the cluster would run
    # something else, or nothing. Its old install files go too, so nothing left looks complete.
    publishable = replace(release, charts=tuple(e for e in release.charts if e.name not in {w.name for w in withheld}))
    _remove_install_files(bundle, [release.chart(w.name) for w in withheld])
    transport = transport or TransportOptions()
    charts, moved, locations = _push_charts(bundle, publishable, options, client, transport)
    report = PushReport(options.registry, redact_url(options.helm_repo) if options.helm_repo else None, jobs, moved,
                        [], None, options.dry_run, withheld, checked.root_digest, referrers=pushed_referrers)
    if options.dry_run:
        return report
    pinned = pinned_targets(targets, jobs)
    held = {job.source for job in jobs if job.result is not PushResult.FAILED}
    scheme = "http" if transport.plain_http else "https"
    if not options.helm_repo or not publishable.charts:
        if withheld:
            (bundle.root / RUNBOOK_FILE).unlink(missing_ok=True)
        record = PushRecord.planned(bundle, options.registry, pinned, None, held=held, scheme=scheme)
        report.files = _record_push(bundle, record, transport)[0]
        return report
    files = write_install_files(bundle.root, publishable, images, pinned, charts, locations, options.site_values,
                                options.pull_secret)
    user_files = {name: path for name, path in options.user_values_files.items() if name in locations}
    rewritten = [_rewrite_user_values(path, name, images, pinned, charts, options.pull_secret)
                 for name, path in user_files.items()]
    # One helm output per chart and values for both renders of the written files: the proof, then the pull secret.
    renderings = Renderings(options.helm)
    with tempfile.TemporaryDirectory(prefix="wsm-render-") as work:
        archives = _chart_files(bundle, publishable, Path(work))
        report.proof = _prove(publishable, files, archives, images, pinned, renderings, user_files)
        record = PushRecord.planned(bundle, options.registry, pinned, options.helm_repo,
                                    [str(f.path.relative_to(bundle.root)) for f in files], held=held, scheme=scheme)
        recorded, nodes = _record_push(bundle, record, transport)
        secret_steps = None
        if options.pull_secret is not None:
            report.pull_secret = _check_pull_secret(publishable, files, archives, registry.host, options.pull_secret,
                                                    renderings)
            secret_steps = _secret_steps(publishable, registry.host, report.pull_secret)
    report.runbook = runbook(publishable, bundle.root, registry.base, locations, files, [job.moved() for job in jobs],
                             moved, root_digest=report.root_digest, withheld=[(w.name, w.reason) for w in withheld],
                             check=_check_command(bundle, options, transport), pull_secret=secret_steps,
                             repinned=repinned(entries, targets), nodes=nodes, tool=_tool_file(bundle),
                             proof=report.proof)
    write_atomically(bundle.root / RUNBOOK_FILE, report.runbook.encode())
    report.files = [str(f.path) for f in files] + [str(bundle.root / RUNBOOK_FILE)] + rewritten + recorded
    return report


def _reach_base_blobs(base: BaseRecord, entries: Sequence[BundleImage], targets: Mapping[Reference, Reference],
                      registry: TargetRegistry, mapping: Mapping[str, str] | None, client: RegistryClient,
                      dry_run: bool) -> None:
    """A delta's layers left to its base: found in each target repository, or in a repository the base's images
    were pushed to (planned as this push plans its own), and mounted from there. Raises MissingBaseBlobs, before
    anything is written, when a layer is nowhere in the registry."""
    base_sources = [Reference.parse(name) for name in base.images]
    lent = list(plan_targets(base_sources, registry, mapping).values())
    plan = plan_base_blobs(entries, targets, lender_repositories(base, lent, registry.host), base, client)
    if not dry_run:
        mount_base_blobs(plan, client)


def _record_push(bundle: Bundle, record: PushRecord, transport: TransportOptions) -> tuple[list[str], NodeFiles]:
    """Write `pushed.json` (the internal names of what the registry now holds) and the node files."""
    nodes = node_files(record, _read_ca(transport.ca_file))
    return [str(record.write(bundle.root)), str(write_node_files(bundle.root, nodes))], nodes


_MAX_CA_BYTES = 1024 * 1024


def _read_ca(ca_file: str | None) -> bytes | None:
    """The site CA for the node files; one larger than any CA bundle is refused, never copied cut short."""
    if not ca_file:
        return None
    try:
        with open(ca_file, "rb") as handle:
            data = handle.read(_MAX_CA_BYTES + 1)
    except OSError as error:
        raise StorageError(f"cannot read the CA file {ca_file}: {error.strerror}", path=ca_file,
                           errno=error.errno) from None
    if len(data) > _MAX_CA_BYTES:
        raise StorageError(f"the CA file {ca_file} is larger than {_MAX_CA_BYTES} bytes: not a CA bundle; give the "
                           "PEM file of the site's CA", path=ca_file, errno=None)
    return data


def withheld_charts(release: ReleaseManifest, images: Sequence[ResolvedImage],
                    jobs: Sequence[ImagePush]) -> list[WithheldChart]:
    """The charts of `release` that must not be published: an image of theirs failed to arrive, or its tag holds
    another image and no values path of the chart can pin the carried digest."""
    by_source = {job.source: job for job in jobs}
    withheld = []
    for entry in release.charts:
        failed, unpinnable = [], []
        for image in images:
            sources = [source for source in image.sources if belongs_to(source, entry.name)]
            job = by_source.get(image.reference)
            if not sources or job is None:
                continue
            if job.result is PushResult.FAILED:
                failed.append(image.reference.canonical)
            elif job.result is PushResult.SKIPPED and not any(s.path and s.shape for s in sources):
                unpinnable.append(image.reference.canonical)
        reasons = []
        if failed:
            reasons.append(f"{', '.join(failed)} did not arrive in the internal registry")
        if unpinnable:
            reasons.append(f"the tag of {', '.join(unpinnable)} holds another image and no values path of the chart "
                           "can pin the carried digest")
        if reasons:
            withheld.append(WithheldChart(entry.name, "; ".join(reasons)))
    return withheld


def pinned_targets(targets: Mapping[Reference, Reference], jobs: Sequence[ImagePush]) -> dict[Reference, Reference]:
    """The targets the values point at: a tag that holds another image is pinned to the carried digest."""
    pinned = dict(targets)
    for job in jobs:
        if job.result is PushResult.SKIPPED:
            pinned[job.source] = job.target.with_digest(job.digest)
    return pinned


def _remove_install_files(bundle: Bundle, entries: Sequence[ChartEntry]) -> None:
    for entry in entries:
        install_file_path(bundle.root, entry).unlink(missing_ok=True)


def _check_command(bundle: Bundle, options: PushOptions, transport: TransportOptions | None) -> CheckCommand:
    """`wsm check` as this push reached the servers (the CA file by its absolute path)."""
    transport = transport or TransportOptions()
    ca_file = str(Path(transport.ca_file).resolve()) if transport.ca_file else None
    repo = options.helm_repo
    return CheckCommand(bundle.root.name, options.registry, strip_userinfo(repo) if repo else None, ca_file,
                        transport.insecure, transport.plain_http,
                        options.repo_auth.username or (url_username(repo) if repo else None),
                        tool_program(bundle.root, _tool_file(bundle)))


def _tool_file(bundle: Bundle) -> str | None:
    """The bundle's own wsm (its path in the bundle), for the runbook's commands; None in older bundles."""
    return bundle.lock.tool.file if bundle.lock.tool is not None else None


def _namespaces(release: ReleaseManifest) -> tuple[str, ...]:
    """Where the release's pods run, each namespace once."""
    return tuple(dict.fromkeys(_namespace(entry) for entry in release.charts))


def _namespace(entry: ChartEntry) -> str:
    """A Helm release's namespace; a custom resource's own, when its template names one."""
    declared = get_path(entry.resource.template, "metadata.namespace") if entry.resource else None
    return str(declared or entry.namespace)


def _check_pull_secret(release: ReleaseManifest, files: Sequence[InstallFile], archives: Mapping[str, Path],
                       registry_host: str, secret: str, renderings: Renderings) -> PullSecretReport:
    """Render every chart with the values just written; name the pod specs that would pull without the secret."""
    by_chart = {file.chart: file for file in files}
    targets = [RenderTarget(entry.name, archives[entry.name], installed_values(entry, by_chart[entry.name]),
                            entry.release or entry.name, _namespace(entry)) for entry in release.charts]
    report = check_rendered(secret, registry_host, targets, renderings.helm, renderings)
    report.without_keys = [file.chart for file in files if not file.pull_secret_keys]
    return report


def _secret_steps(release: ReleaseManifest, registry_host: str, report: PullSecretReport) -> PullSecretSteps:
    return PullSecretSteps(report.secret, registry_host, _namespaces(release), tuple(report.without_keys),
                           tuple(str(gap) for gap in report.gaps), tuple(report.notes))


def release_targets(entries: Sequence[BundleImage], registry: TargetRegistry,
                    mapping: Mapping[str, str] | None = None) -> dict[Reference, Reference]:
    """The internal name of every image of the bundle's release, as push names it (and `wsm check` expects it)."""
    return pin_what_was_kept(entries, plan_targets([entry.reference for entry in entries], registry, mapping))


def pin_what_was_kept(entries: Sequence[BundleImage], targets: Mapping[Reference, Reference]
                      ) -> dict[Reference, Reference]:
    """A reference pinned by digest names, inside, what the bundle kept: when a download kept only some platforms
    of a pinned index, the internal registry never gets the upstream index digest, so the values must pin the
    digest of the kept manifest (or wsm's index over the kept platforms)."""
    result = dict(targets)
    for entry in entries:
        target = result[entry.reference]
        if target.digest and target.digest != entry.top.digest:
            result[entry.reference] = target.with_digest(entry.top.digest)
    return result


def repinned(entries: Sequence[BundleImage], targets: Mapping[Reference, Reference]) -> list[tuple[str, str]]:
    """(source, internal reference) of each pinned image whose internal digest is not the upstream one."""
    return [(entry.reference.canonical, targets[entry.reference].canonical) for entry in entries
            if entry.reference.digest and targets[entry.reference].digest != entry.reference.digest]


def check_pinned(entries: Sequence[BundleImage], targets: Mapping[Reference, Reference], jobs: Sequence[ImagePush],
                 client: RegistryClient) -> None:
    """Every digest the values will pin, asked of the internal registry with a manifest request."""
    failed = {job.source for job in jobs if job.result is PushResult.FAILED}
    missing = []
    for entry in entries:
        target = targets[entry.reference]
        if target.digest and entry.reference not in failed:
            found = client.head_manifest(target.with_tag(None))
            if found is None or found.digest != target.digest:
                missing.append(target.canonical)
    if missing:
        raise ProofFailed(f"the internal registry does not serve {', '.join(missing)}, which the values pin")


def _prove(release: ReleaseManifest, files: Sequence[InstallFile], archives: Mapping[str, Path],
           images: Sequence[ResolvedImage], targets: Mapping[Reference, Reference], renderings: Renderings,
           user_files: Mapping[str, Path]) -> str:
    """Render each chart with the values just written (and the user's own files, rewritten, over them);
    ProofFailed names any image that is not internal."""
    if not helm_available(renderings.helm):
        return "skipped: helm was not found, so the written values were not rendered to prove them"
    proofs = prove_install(release, files, archives, images, targets, renderings.helm, user_files, renderings)
    return proof_summary(proofs)


def _chart_files(bundle: Bundle, release: ReleaseManifest, work: Path) -> dict[str, Path]:
    """By release chart name, a path helm can read each chart from (see `_chart_file`)."""
    by_name = {c.name: c for c in bundle.lock.release_charts()}
    return {entry.name: _chart_file(bundle, by_name[entry.source.chart], work)
            for entry in release.charts if entry.source.chart in by_name}


def _chart_file(bundle: Bundle, locked: BundleChart, work: Path) -> Path:
    """A path helm can read the chart from: its file, or (stored in parts) a copy in `work`."""
    if not locked.parts:
        return bundle.path(locked)
    copy = work / Path(locked.file).name
    copy.write_bytes(_chart_archive(bundle, locked))
    return copy


def _rewrite_user_values(path: Path, chart: str, images: Sequence[ResolvedImage],
                         targets: Mapping[Reference, Reference], charts: Mapping[str, Chart],
                         pull_secret: str | None) -> str:
    overrides, _ = chart_overrides(images, targets, chart, charts.get(chart))
    secrets, _ = pull_secret_values(images, chart, charts.get(chart), load_values_file(path), pull_secret)
    backup = rewrite_values_file(path, merge(secrets, overrides))
    return f"{path} (backup {backup.name})"


def _push_charts(
    bundle: Bundle, manifest: ReleaseManifest, options: PushOptions, client: RegistryClient,
    transport: TransportOptions,
) -> tuple[dict[str, Chart], list[MovedChart], dict[str, ChartLocation]]:
    charts: dict[str, Chart] = {}
    moved: list[MovedChart] = []
    locations: dict[str, ChartLocation] = {}
    by_name = {c.name: c for c in bundle.lock.release_charts()}
    repository: ChartRepository | None = None  # opened once, at the first chart to publish
    try:
        for entry in manifest.charts:
            locked = by_name.get(entry.source.chart)
            if locked is None:
                raise BundleError(f"the bundle has no chart {entry.source.chart} for {entry.name}; download again",
                                  path=bundle.root)
            archive = _chart_archive(bundle, locked)
            chart = chart_from_archive(archive, locked.file)
            charts[entry.name] = chart
            if not options.helm_repo:
                continue
            # The address without its userinfo: it is written into commands and custom resources.
            locations[entry.name] = ChartLocation(strip_userinfo(options.helm_repo), chart.name, chart.version,
                                                  url_username(options.helm_repo))
            if options.dry_run:
                moved.append(MovedChart(chart.name, chart.version, redact_url(options.helm_repo), "would publish"))
                continue
            if repository is None:  # an OCI repository reuses the registry client of the images
                repository = open_repository(options.helm_repo, transport=transport, auth=options.repo_auth,
                                             registry_client=client, repo_type=options.helm_repo_type)
            published = repository.publish(archive, chart.metadata)
            moved.append(MovedChart(chart.name, chart.version, redact_url(published.url),
                                    "sent" if published.sent else "present"))
    finally:
        if repository is not None:
            repository.close()
    return charts, moved, locations


def _chart_archive(bundle: Bundle, locked: BundleChart) -> bytes:
    """The chart's archive, read only from a regular file and only when it is what the lock recorded."""
    # read_regular_file refuses links, FIFOs and devices; a chart in parts is small enough to join in memory.
    files = [bundle.root / part.file for part in locked.parts] or [bundle.path(locked)]
    archive = b"".join(read_regular_file(path, MAX_CHART_BYTES) for path in files)
    if len(archive) > MAX_CHART_BYTES:
        raise BundleError(f"{locked.file}: its parts hold more than {MAX_CHART_BYTES} bytes; it is not the chart "
                          "the lock records", path=bundle.path(locked))
    actual = compute_digest(archive)
    if actual != locked.digest:
        raise DigestMismatch(f"{locked.file}: sha256 is {actual}, the lock says {locked.digest}; run wsm verify",
                             expected=locked.digest, actual=actual)
    return archive
