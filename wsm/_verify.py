"""`verify`: is the bundle on this side what left the other side?

Every file is re-hashed against SHA256SUMS, every image tarball also against the lock's `file_sha256`, and,
in the same single read of each tarball, every blob inside it against its digest and the lock (nothing is
extracted). Anything that is not a regular file (a link, a FIFO, a device) is refused without being opened.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ._bundle import LOCK_FILE, Bundle, parse_checksums, read_checksums_file, read_regular_file, root_digest_of
from ._delta import DeltaBase, base_blobs_expected, base_problems
from ._exceptions import BundleError, CorruptBundle, DigestMismatch, TarballError, WsmError
from ._layout import Opener, TarScan, blob_member, hash_file, scan_image_tar
from ._lock import MAX_LOCK_BYTES, BundleChart, BundleImage, BundleTool, Failure, FilePart, referrer_file
from ._parts import PartsOpener
from ._progress import NO_PROGRESS, Progress
from ._remote import is_sha256_digest


@dataclass(frozen=True)
class Problem:
    file: str
    detail: str
    blob: str | None = None

    def __str__(self) -> str:
        where = f"{self.file} (blob {self.blob})" if self.blob else self.file
        return f"{where}: {self.detail}"


@dataclass
class VerifyReport:
    bundle: Path
    root_digest: str = ""  # sha256 of SHA256SUMS
    files_checked: int = 0
    bytes_checked: int = 0
    images_checked: int = 0
    blobs_checked: int = 0
    charts_checked: int = 0
    tool_checked: bool = False  # tools/wsm.pyz, against SHA256SUMS and the lock
    signature_checked: bool = False  # SHA256SUMS.sig against SHA256SUMS, with the key given
    problems: list[Problem] = field(default_factory=list)  # broken files and blobs, in SHA256SUMS order
    missing: list[str] = field(default_factory=list)  # listed in SHA256SUMS, not on disk
    unlisted: list[str] = field(default_factory=list)  # on disk, not in SHA256SUMS (not an error)
    failures: list[Failure] = field(default_factory=list)  # what the last download could not fetch
    base: str | None = None  # a delta bundle's base (its digest): the layers in `from_base` are there
    from_base: list[str] = field(default_factory=list)  # layers the delta's tarballs leave to the base
    base_checked: bool = False  # the base bundle was verified and holds each of them

    @property
    def ok(self) -> bool:
        return not self.problems and not self.missing

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["bundle"] = str(self.bundle)
        data["failures"] = [{"kind": f.kind.value, "name": f.name, "reason": f.reason} for f in self.failures]
        data["ok"] = self.ok
        return data


def verify(
    bundle: Bundle, *, progress: Progress = NO_PROGRESS, allow_incomplete: bool = False, workers: int | None = None,
    expect: str | None = None, base: DeltaBase | None = None, key: Path | None = None,
) -> VerifyReport:
    """Check every file and blob of an opened bundle; with `expect` (`sha256:<hex>`), first that the bundle's
    root digest is that one; with `key` (a PEM public key), first that SHA256SUMS.sig signs SHA256SUMS. A delta
    bundle's layers left to its base are listed (`from_base`); with `base` (the base bundle's directory, read),
    that base is verified too and must hold each of them.

    Raises DigestMismatch naming both root digests; SignatureError; CorruptBundle (with `.report`) naming the
    first broken or
    missing file; BundleError when the last download left images or charts out, unless `allow_incomplete`.
    """
    sums, present, report = _start(bundle, expect, key)
    checks = _file_checks(bundle, sums, present)
    report.problems += _unlisted_lock_entries(bundle, sums)
    report.problems += _referrer_problems(bundle, sums)
    progress.expect(sum(_bytes_on_disk(bundle, name) for name in checks))
    with ThreadPoolExecutor(max_workers=workers or min(4, os.cpu_count() or 1)) as pool:
        outcomes = list(pool.map(lambda check: check(progress.advance), checks.values()))
    for outcome in outcomes:
        _merge(report, outcome)
    order = {name: position for position, name in enumerate(sums)}
    report.problems.sort(key=lambda problem: order.get(problem.file, len(order)))
    if base is not None:
        report.problems += _base_check(bundle, base, progress, workers)
        report.base_checked = not report.problems
    report.problems += _stale_report(bundle, report.root_digest)  # last: it follows from the lock, so a broken file is named first
    _raise_for(report, allow_incomplete)
    return report


def _base_check(bundle: Bundle, base: DeltaBase, progress: Progress, workers: int | None) -> list[Problem]:
    """The base a delta names: the one given, verified in full, holding every layer the delta leaves to it."""
    if base.bundle is None:
        return [Problem(LOCK_FILE, "the base was given as a lock or an inventory, which holds no blobs to check; "
                                   "give the base bundle's directory")]
    problems = [Problem(LOCK_FILE, detail, blob=digest or None) for digest, detail in base_problems(bundle.lock, base)]
    if problems:
        return problems
    try:
        verify(base.bundle, progress=progress, allow_incomplete=True, workers=workers)
    except CorruptBundle as error:
        found = error.report.problems if error.report is not None else []
        return [Problem(f"base {base.bundle.root}", str(problem)) for problem in found] or [
            Problem(f"base {base.bundle.root}", error.message)]
    return []


def check_before_push(bundle: Bundle) -> VerifyReport:
    """What push checks before it sends anything, without reading the image tarballs' blobs: every file
    SHA256SUMS lists is there and regular, every file but the image tarballs (the lock, charts, the rest) is
    re-hashed, and each tarball has the size the lock records, under the sha256 SHA256SUMS and the lock agree
    on. Push itself hashes every blob it uploads and every manifest it reads; `verify` is the full pass.

    Raises as `verify` does (CorruptBundle naming the first problem; BundleError for an incomplete bundle).
    """
    sums, present, report = _start(bundle)
    report.problems += _unlisted_lock_entries(bundle, sums) + _referrer_problems(bundle, sums)
    images = {entry.file: entry for entry in bundle.lock.images.values()}
    for name, check in _file_checks(bundle, sums, present).items():
        image = images.get(name)
        if image is None:
            _merge(report, check(NO_PROGRESS.advance))
        elif image.parts:
            _merge(report, _check_part_sizes(bundle, image, sums))
        else:
            _merge(report, _check_size(bundle.root / name, name, sums[name], image))
    _raise_for(report, allow_incomplete=False)
    return report


def _start(
    bundle: Bundle, expect: str | None = None, key: Path | None = None
) -> tuple[dict[str, str], set[str], VerifyReport]:
    """SHA256SUMS, the files present, and a report with the root digest (compared with `expect` first, and
    SHA256SUMS checked against its signature with `key`) and what is missing and unlisted."""
    data = read_checksums_file(bundle.dir.sums_path)
    report = VerifyReport(bundle=bundle.root, root_digest=root_digest_of(data), failures=list(bundle.lock.failures))
    if bundle.lock.base is not None:
        report.base = bundle.lock.base.digest
        report.from_base = sorted(base_blobs_expected(bundle.lock))
    if expect is not None:
        _check_root(report, expect)
    if key is not None:
        from ._sign import check_signature

        check_signature(bundle.root, data, key)
        report.signature_checked = True
    sums = parse_checksums(data, bundle.dir.sums_path)
    present = set(bundle.dir.files())
    report.missing = [name for name in sums if name not in present]
    report.unlisted = sorted(present - set(sums))
    return sums, present, report


_NOT_REGULAR = "is not a regular file (a link, a FIFO or a device); copy the real file"


def _check_size(path: Path, name: str, expected: str, image: BundleImage) -> _Outcome:
    """An image tarball, by what can be known without reading it."""
    problem = _unread_problem(path, name, expected, image.file_size, image.file_sha256)
    return _Outcome(image=True, problems=[problem] if problem else [])


def _check_part_sizes(bundle: Bundle, image: BundleImage, sums: Mapping[str, str]) -> _Outcome:
    """An image tarball stored in parts, by what can be known without reading them."""
    problems = [_unread_problem(bundle.root / part.file, part.file, sums[part.file], part.size, part.sha256)
                for part in image.parts]
    return _Outcome(image=True, problems=[problem for problem in problems if problem])


def _unread_problem(path: Path, name: str, listed_sha256: str, size: int, locked_sha256: str) -> Problem | None:
    """What can be wrong with a file without reading it: not a regular file, another size than the lock's, or
    SHA256SUMS and the lock disagreeing on its sum."""
    status = os.lstat(path)
    if not stat.S_ISREG(status.st_mode):
        return Problem(name, _NOT_REGULAR)
    if status.st_size != size:
        return Problem(name, f"{status.st_size} bytes, the lock says {size}")
    if listed_sha256 != locked_sha256:
        return Problem(name, f"SHA256SUMS says {listed_sha256}, the lock says {locked_sha256}")
    return None


def _bytes_on_disk(bundle: Bundle, name: str) -> int:
    """What checking `name` reads: the file, or the parts of a tarball stored in parts."""
    path = bundle.root / name
    if os.path.lexists(path):
        return os.lstat(path).st_size
    return sum(os.lstat(bundle.root / part.file).st_size for entry in bundle.lock.images.values()
               if entry.file == name for part in entry.parts)


def _check_root(report: VerifyReport, expect: str) -> None:
    """SHA256SUMS covers every file and the lock, so one digest compared here covers the whole bundle."""
    expected = expect.strip().lower()
    if not is_sha256_digest(expected):
        raise WsmError(f"expected root digest {expect!r} is not sha256: followed by 64 hex digits")
    if report.root_digest != expected:
        raise DigestMismatch(
            f"bundle {report.bundle}: root digest is {report.root_digest}, expected {expected}; this is not the bundle "
            "that left the connected side (copy it again, or check the digest you were given)",
            expected=expected, actual=report.root_digest,
        )


@dataclass
class _Outcome:
    bytes: int = 0
    image: bool = False
    chart: bool = False
    tool: bool = False
    blobs: int = 0
    problems: list[Problem] = field(default_factory=list)


def _merge(report: VerifyReport, outcome: _Outcome) -> None:
    report.files_checked += 1
    report.bytes_checked += outcome.bytes
    report.images_checked += outcome.image
    report.charts_checked += outcome.chart
    report.blobs_checked += outcome.blobs
    report.tool_checked |= outcome.tool
    report.problems += outcome.problems


Tick = Callable[[int], None]
Check = Callable[[Tick], _Outcome]


def _file_checks(bundle: Bundle, sums: Mapping[str, str], present: set[str]) -> dict[str, Check]:
    images = {entry.file: entry for entry in bundle.lock.images.values()}
    charts = {entry.file: entry for entry in bundle.lock.charts.values()}
    image_parts = {part.file: entry for entry in images.values() for part in entry.parts}
    chart_parts = {part.file: part for entry in charts.values() for part in entry.parts}
    tool = bundle.lock.tool
    checks: dict[str, Check] = {}
    for name, expected in sums.items():
        if name not in present or name in image_parts:  # a tarball's parts are read as the tarball, below
            continue
        path = bundle.root / name
        locked = _Locked(chart=charts.get(name), tool=tool if tool is not None and tool.file == name else None,
                         part=chart_parts.get(name))
        checks[name] = _check_for(path, name, expected, images.get(name), locked)
    for image in dict.fromkeys(image_parts.values()):
        if all(part.file in present and part.file in sums for part in image.parts):
            checks[image.file] = _check_parted_image(bundle, image, sums)
    return checks


@dataclass(frozen=True)
class _Locked:
    """What the lock says of a file that is not an image tarball, when it says anything."""

    chart: BundleChart | None = None
    tool: BundleTool | None = None
    part: FilePart | None = None  # a part of a chart stored in parts

    @property
    def sha256(self) -> str | None:
        if self.chart is not None:
            return self.chart.digest.removeprefix("sha256:")
        if self.part is not None:
            return self.part.sha256
        return self.tool.sha256 if self.tool is not None else None


def _check_for(path: Path, name: str, expected: str, image: BundleImage | None, locked: _Locked) -> Check:
    def check(tick: Tick) -> _Outcome:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return _Outcome(image=image is not None, chart=locked.chart is not None, tool=locked.tool is not None,
                            problems=[Problem(name, _NOT_REGULAR)])
        if image is not None:
            return _check_image(path, name, expected, image, tick)
        return _check_file(path, name, expected, locked, tick)

    return check


def _check_file(path: Path, name: str, expected: str, locked: _Locked, tick: Tick) -> _Outcome:
    digest = hash_file(path, tick)
    outcome = _Outcome(bytes=digest.size, chart=locked.chart is not None, tool=locked.tool is not None)
    if digest.sha256 != expected:
        outcome.problems.append(Problem(name, f"sha256 is {digest.sha256}, SHA256SUMS says {expected}"))
    elif locked.sha256 is not None and locked.sha256 != digest.sha256:
        outcome.problems.append(Problem(name, f"sha256 is {digest.sha256}, the lock says {locked.sha256}"))
    return outcome


def _check_parted_image(bundle: Bundle, image: BundleImage, sums: Mapping[str, str]) -> Check:
    """A tarball stored in parts, read across them in one pass: blobs and the whole file against the lock, and
    each part (hashed in the same pass) against SHA256SUMS and the lock."""

    def check(tick: Tick) -> _Outcome:
        for part in image.parts:
            if not stat.S_ISREG(os.lstat(bundle.root / part.file).st_mode):
                return _Outcome(image=True, problems=[Problem(part.file, _NOT_REGULAR)])
        opener = PartsOpener(bundle.root, image.parts)
        try:
            outcome = _check_image(bundle.path(image), image.file, image.file_sha256, image, tick, opener)
        except BundleError as error:  # a part shorter than the lock says
            return _Outcome(image=True, problems=[Problem(image.file, error.message)])
        digests = opener.last.part_sha256s() if opener.last is not None else []
        part_problems = []
        for part, actual in zip(image.parts, digests):
            if actual != sums[part.file]:
                part_problems.append(Problem(part.file, f"sha256 is {actual}, SHA256SUMS says {sums[part.file]}"))
            elif actual != part.sha256:
                part_problems.append(Problem(part.file, f"sha256 is {actual}, the lock says {part.sha256}"))
        outcome.problems[:0] = part_problems
        return outcome

    return check


def _check_image(
    path: Path, name: str, expected: str, image: BundleImage, tick: Tick, opener: Opener | None = None
) -> _Outcome:
    try:
        scan = scan_image_tar(path, tick, opener)
    except TarballError as error:
        return _Outcome(bytes=image.file_size, image=True, problems=[Problem(name, error.detail)])
    outcome = _Outcome(bytes=scan.size, image=True, blobs=len(scan.blobs))
    # Blob problems first: they say which part of the file is damaged, which the whole-file sum cannot.
    outcome.problems += _blob_problems(name, scan, image)
    if scan.sha256 != expected:
        outcome.problems.append(Problem(name, f"sha256 is {scan.sha256}, SHA256SUMS says {expected}"))
    elif scan.sha256 != image.file_sha256:
        # SHA256SUMS can be rewritten by anyone who edits a tarball; the lock records what the download wrote.
        outcome.problems.append(Problem(name, f"sha256 is {scan.sha256}, the lock says {image.file_sha256}"))
    if not outcome.problems:
        outcome.problems += _layout_problems(name, scan, image)
    return outcome


def _blob_problems(name: str, scan: TarScan, image: BundleImage) -> list[Problem]:
    problems = []
    expected = {blob.digest: blob.size for blob in image.blobs}
    for digest, (size, actual) in scan.blobs.items():
        if actual != digest:
            problems.append(Problem(name, f"content hashes to {actual}", blob=digest))
        elif digest not in expected:
            problems.append(Problem(name, "not in the lock file", blob=digest))
        elif size != expected[digest]:
            problems.append(Problem(name, f"{size} bytes, the lock says {expected[digest]}", blob=digest))
    for digest in expected:
        if digest not in scan.blobs:
            problems.append(Problem(name, "missing from the tarball", blob=digest))
    return problems


def _layout_problems(name: str, scan: TarScan, image: BundleImage) -> list[Problem]:
    try:
        entries = scan.json("index.json")["manifests"]
        docker = scan.json("manifest.json")[0]
    except (KeyError, IndexError, TypeError) as error:
        return [Problem(name, f"index.json or manifest.json is malformed ({error})")]
    except TarballError as error:
        return [Problem(name, error.detail)]
    if len(entries) != 1 or entries[0].get("digest") != image.top.digest:
        return [Problem(name, f"index.json does not point at {image.top.digest} as the lock says")]
    members = {blob_member(digest) for digest in scan.blobs} | {blob_member(b.digest) for b in image.from_base}
    for member in [docker.get("Config"), *docker.get("Layers", [])]:
        if member not in members:
            return [Problem(name, f"manifest.json names {member}, which the tarball does not hold")]
    return []


def _referrer_problems(bundle: Bundle, sums: Mapping[str, str]) -> list[Problem]:
    """Every manifest and blob of a carried referrer is a file `referrers/<hex>` that SHA256SUMS lists under its
    own digest (the files themselves are re-hashed against SHA256SUMS with the rest)."""
    problems = []
    for image in bundle.lock.images.values():
        for referrer in image.referrers:
            for digest in referrer.digests:
                file = referrer_file(digest)
                if not digest.startswith("sha256:") or sums.get(file) != digest.removeprefix("sha256:"):
                    problems.append(Problem(file, f"referrer {referrer.manifest.digest} of {image.key}: "
                                                  f"{digest} is not in SHA256SUMS under its digest"))
    return problems


def _stale_report(bundle: Bundle, root_digest: str) -> list[Problem]:
    """REPORT.md is outside SHA256SUMS (it names the root digest): it must say what the lock and the root
    digest say, which `wsm report` would write again (`root_digest`: the one this run computed)."""
    from ._report import REPORT_FILE, bundle_report, render_markdown

    path = bundle.root / REPORT_FILE
    if not path.exists():
        return []
    if read_regular_file(path, MAX_LOCK_BYTES) != render_markdown(bundle_report(bundle.lock, root_digest)).encode():
        return [Problem(REPORT_FILE, "does not match the lock and the root digest (edited, or from another bundle)")]
    return []


def _unlisted_lock_entries(bundle: Bundle, sums: Mapping[str, str]) -> list[Problem]:
    lock = bundle.lock
    entries: list[BundleImage | BundleChart] = [*lock.images.values(), *lock.charts.values()]
    files = [part.file for entry in entries for part in entry.parts] + [e.file for e in entries if not e.parts]
    files += [lock.tool.file] if lock.tool is not None else []
    unlisted = [file for file in sorted(files) if file not in sums]
    problems = [Problem(file, "listed in the lock file but not in SHA256SUMS") for file in unlisted]
    if LOCK_FILE not in sums:  # else SHA256SUMS, and so the root digest, would not cover what the lock says
        problems.append(Problem(LOCK_FILE, "not listed in SHA256SUMS"))
    return problems


def _raise_for(report: VerifyReport, allow_incomplete: bool) -> None:
    where = report.bundle
    if report.problems:
        first = report.problems[0]
        more = len(report.problems) - 1 + len(report.missing)
        extra = f" ({more} more problem{'s' if more != 1 else ''})" if more else ""
        raise CorruptBundle(
            f"bundle {where}: {first}{extra}; copy that file again from the connected side "
            "(or rerun wsm download there)",
            report,
            path=where / first.file,
        )
    if report.missing:
        more = len(report.missing) - 1
        extra = f" ({more} more missing)" if more else ""
        raise CorruptBundle(
            f"bundle {where}: {report.missing[0]} is listed in SHA256SUMS but missing{extra}; copy the whole "
            "bundle directory",
            report,
            path=where / report.missing[0],
        )
    if report.failures and not allow_incomplete:
        failure = report.failures[0]
        more = len(report.failures) - 1
        extra = f" and {more} more" if more else ""
        raise BundleError(
            f"bundle {where} is incomplete: the download could not fetch {failure.name}{extra} ({failure.reason}); "
            "rerun wsm download on the connected side",
            path=where,
        )
