"""A bundle directory: where things go, their portable names, the lock file, SHA256SUMS, and `verify`.

    bundle/
      images/<portable name>.tar   one image tarball each (see _layout)
      charts/<name>-<version>.tgz  chart archives, byte for byte
      wsm.lock.json                what is in the bundle and where it came from
      SHA256SUMS                   every other file, `sha256sum -c` format, written last
      .wsm-partial/                download work area (partial blobs); not part of the bundle

The lock is the bundle's table of contents: `verify`, `load` and the pusher read it, never the directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tqdm import tqdm

from . import __version__
from ._exceptions import BundleError, CorruptBundle, WsmError
from ._layout import FileDigest, TarScan, blob_member, hash_file, scan_image_tar
from ._reference import Reference

LOCK_FILE = "wsm.lock.json"
SUMS_FILE = "SHA256SUMS"
IMAGES_DIR = "images"
CHARTS_DIR = "charts"
WORK_DIR = ".wsm-partial"
LOCK_FORMAT = 1
_SAFE_CHARACTER = re.compile(r"[^A-Za-z0-9._-]")  # what exFAT, NTFS/Windows, ext4 and macOS all accept
_MAX_STEM = 180  # leaves room under the 255-character limit for a hash suffix and the extension


def utc_now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


# ----------------------------------------------------------------------------------------------- names


def portable_stem(text: str) -> str:
    """`text` with every character that some filesystem refuses (`/`, `:`, `@`, ...) replaced by `_`."""
    stem = _SAFE_CHARACTER.sub("_", text).strip("._") or "_"
    if len(stem) > _MAX_STEM:
        stem = stem[:_MAX_STEM].rstrip("._") + "-" + short_hash(text)
    return stem


def short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def image_stem(reference: Reference) -> str:
    """`registry_repo_path_tag`; a digest-only reference ends in `_sha256-<first 12 hex>`."""
    if reference.tag:
        suffix = reference.tag
    else:
        algorithm, _, hex_part = (reference.digest or "").partition(":")
        suffix = f"{algorithm}-{hex_part[:12]}"
    return portable_stem(f"{reference.name}_{suffix}".replace("/", "_").replace(":", "_"))


def chart_stem(name: str, version: str) -> str:
    return portable_stem(f"{name}-{version}")


def assign_names(wanted: Sequence[tuple[str, str]], kept: Mapping[str, str], extension: str) -> dict[str, str]:
    """File names for `wanted` (key, stem) pairs that never collide, also on case-insensitive media.

    Keys that already have a file (`kept`, from the lock) keep it, so reruns resume instead of renaming.
    Of the others, the first (in key order) gets the plain name and any later clash gets a short hash of its
    key appended: readable, and stable from run to run.
    """
    names: dict[str, str] = {}
    taken = {name.lower(): key for key, name in kept.items()}
    for key, _ in wanted:
        if key in kept:
            names[key] = kept[key]
    for key, stem in sorted(wanted):
        if key in names:
            continue
        name = stem + extension
        if taken.get(name.lower(), key) != key:
            name = f"{stem}-{short_hash(key)}{extension}"
        taken[name.lower()] = key
        names[key] = name
    return names


# ------------------------------------------------------------------------------------------------ lock


@dataclass
class LockedImage:
    """One image tarball in the bundle and where it came from."""

    image: str  # the source reference, canonical (what the release asked for)
    digest: str  # the upstream digest of what that reference resolved to (an index or a manifest)
    media_type: str  # of that upstream manifest or index
    file: str  # relative to the bundle: images/<name>.tar
    file_size: int
    file_sha256: str
    top: dict[str, Any]  # the descriptor index.json points at (what the pusher pushes under the tag)
    kept: str  # "as-is" | "platform" | "subset-index": see KEPT_* below
    manifests: list[dict[str, Any]]  # the platform manifests kept: digest, mediaType, size, platform
    platforms: list[str]  # platforms kept
    requested_platforms: list[str] | None  # what the download asked for; None = all platforms
    blobs: list[dict[str, Any]]  # every blob in the tarball: digest, size, mediaType
    resolved: dict[str, Any]  # ResolvedImage.to_dict(): where the resolver found the image
    in_release: bool = True  # asked for by the last download run (False: kept from an earlier run)
    downloaded: str = ""
    note: str | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LockedImage:
        return _from_dict(cls, data)

    def to_dict(self) -> dict[str, Any]:
        return _without_empty(asdict(self), "note")


KEPT_AS_IS = "as-is"  # the upstream manifest or index, byte for byte: top digest == upstream digest
KEPT_PLATFORM = "platform"  # one platform manifest of the upstream index: top is that manifest
KEPT_SUBSET_INDEX = "subset-index"  # an index written by wsm over the kept platforms of the upstream index


@dataclass
class LockedChart:
    name: str
    version: str
    source: str
    group: str
    file: str  # relative to the bundle: charts/<name>-<version>.tgz
    digest: str  # sha256:<hex> of the archive
    size: int
    release: str | None = None
    in_release: bool = True

    @property
    def key(self) -> str:
        return chart_key(self.source, self.name, self.version)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LockedChart:
        return _from_dict(cls, data)

    def to_dict(self) -> dict[str, Any]:
        return _without_empty(asdict(self), "release")


def chart_key(source: str, name: str, version: str) -> str:
    return f"{source}#{name}-{version}"


def _without_empty(data: dict[str, Any], *optional: str) -> dict[str, Any]:
    return {key: value for key, value in data.items() if value is not None or key not in optional}


def _from_dict(cls, data: Mapping[str, Any]):
    names = {f.name for f in fields(cls)}
    try:
        return cls(**{key: value for key, value in data.items() if key in names})
    except TypeError as error:
        raise BundleError(f"{LOCK_FILE}: an entry is incomplete ({error}); the lock file was edited or damaged")


@dataclass
class Lock:
    """wsm.lock.json. Images and charts from earlier runs stay (with in_release False) until removed."""

    created: str = field(default_factory=utc_now)
    updated: str = field(default_factory=utc_now)
    wsm_version: str = __version__
    manifest: str | None = None  # the release manifest (YAML text) of the last run
    platforms: list[str] | None = None  # what the last run asked for; None = all
    images: dict[str, LockedImage] = field(default_factory=dict)  # by canonical source reference
    charts: dict[str, LockedChart] = field(default_factory=dict)  # by chart_key
    failures: list[dict[str, str]] = field(default_factory=list)  # what the last run could not fetch

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": LOCK_FORMAT,
            "wsm_version": self.wsm_version,
            "created": self.created,
            "updated": self.updated,
            "platforms": self.platforms,
            "manifest": self.manifest,
            "images": [self.images[key].to_dict() for key in sorted(self.images)],
            "charts": [self.charts[key].to_dict() for key in sorted(self.charts)],
            "failures": self.failures,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], origin: Path) -> Lock:
        if not isinstance(data, dict) or "images" not in data:
            raise BundleError(f"{origin}: not a wsm lock file")
        if int(data.get("format", 0)) > LOCK_FORMAT:
            raise BundleError(f"{origin}: written by a newer wsm (lock format {data['format']}); upgrade wsm")
        images = [LockedImage.from_dict(entry) for entry in data.get("images") or []]
        charts = [LockedChart.from_dict(entry) for entry in data.get("charts") or []]
        return cls(
            created=data.get("created") or utc_now(),
            updated=data.get("updated") or utc_now(),
            wsm_version=data.get("wsm_version") or "",
            manifest=data.get("manifest"),
            platforms=data.get("platforms"),
            images={entry.image: entry for entry in images},
            charts={entry.key: entry for entry in charts},
            failures=list(data.get("failures") or []),
        )


# ---------------------------------------------------------------------------------------------- bundle


class Bundle:
    """Paths inside one bundle directory."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.images = self.root / IMAGES_DIR
        self.charts = self.root / CHARTS_DIR
        self.work = self.root / WORK_DIR
        self.blobs = self.work / "blobs"
        self.lock_path = self.root / LOCK_FILE
        self.sums_path = self.root / SUMS_FILE

    def prepare(self) -> None:
        """Create the directories a download writes into; one clear line if that is not possible."""
        if self.root.exists() and not self.root.is_dir():
            raise BundleError(f"bundle {self.root} is a file, not a directory; pick another --bundle")
        try:
            for directory in (self.images, self.charts, self.blobs):
                directory.mkdir(parents=True, exist_ok=True)
            probe = tempfile.NamedTemporaryFile(dir=self.work, prefix=".probe-")
            probe.close()
        except OSError as error:
            raise BundleError(f"bundle {self.root} is not writable ({error.strerror}); pick another --bundle")

    def relative(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def read_lock(self) -> Lock | None:
        if not self.lock_path.exists():
            return None
        try:
            data = json.loads(self.lock_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise BundleError(
                f"{self.lock_path}: unreadable ({error}); move it aside to start this bundle afresh"
            ) from None
        return Lock.from_dict(data, self.lock_path)

    def write_lock(self, lock: Lock) -> None:
        lock.updated = utc_now()
        write_atomically(self.lock_path, (json.dumps(lock.to_dict(), indent=2) + "\n").encode())

    def files(self) -> list[str]:
        """Every file of the bundle (relative, sorted), leaving out SHA256SUMS, the work area and partials."""
        found = []
        for directory, subdirectories, names in os.walk(self.root):
            subdirectories[:] = sorted(d for d in subdirectories if d != WORK_DIR)
            for name in names:
                relative = Path(directory, name).relative_to(self.root).as_posix()
                if relative != SUMS_FILE and not name.endswith(".partial"):
                    found.append(relative)
        return sorted(found)


def write_atomically(path: Path, data: bytes) -> None:
    """Write `path` so that it is either the old file or the complete new one, never half of it."""
    tmp = path.with_name(path.name + ".partial")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------- SHA256SUMS


def write_checksums(bundle_dir: Path) -> Path:
    """(Re)write SHA256SUMS over every file of the bundle.

    Image tarballs and charts take their sha256 from the lock (computed as they were written) when the size
    on disk still matches, so a multi-GB bundle is not read again; a tarball damaged since then keeps its
    original sum, and `verify` reports it. Any other file is hashed now. Call again after adding files.
    """
    bundle = Bundle(bundle_dir)
    known = _known_digests(bundle.read_lock())
    lines = []
    for relative in bundle.files():
        path = bundle.root / relative
        size = path.stat().st_size
        cached = known.get(relative)
        digest = cached.sha256 if cached and cached.size == size else hash_file(path).sha256
        lines.append(_sums_line(digest, relative))
    write_atomically(bundle.sums_path, "".join(lines).encode())
    return bundle.sums_path


def _known_digests(lock: Lock | None) -> dict[str, FileDigest]:
    known: dict[str, FileDigest] = {}
    if lock:
        for image in lock.images.values():
            known[image.file] = FileDigest(image.file_size, image.file_sha256)
        for chart in lock.charts.values():
            known[chart.file] = FileDigest(chart.size, chart.digest.removeprefix("sha256:"))
    return known


def _sums_line(digest: str, relative: str) -> str:
    # GNU sha256sum escapes names holding a backslash or a newline and marks the line with a leading '\'.
    if "\\" in relative or "\n" in relative:
        return "\\" + digest + "  " + relative.replace("\\", "\\\\").replace("\n", "\\n") + "\n"
    return f"{digest}  {relative}\n"


def read_checksums(path: Path) -> dict[str, str]:
    """{relative path: hex sha256} from a SHA256SUMS file, in its order."""
    sums: dict[str, str] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BundleError(
            f"{path} is missing: not a wsm bundle, or its download never finished; rerun wsm download"
        ) from None
    for number, line in enumerate(text.splitlines(), start=1):
        match = re.fullmatch(r"(\\?)([0-9a-f]{64}) [ *](.+)", line)
        if not match:
            raise BundleError(f"{path}, line {number}: not a `sha256sum` line; the file was edited or damaged")
        name = match.group(3)
        if match.group(1):
            name = name.replace("\\n", "\n").replace("\\\\", "\\")
        sums[name] = match.group(2)
    return sums


# ----------------------------------------------------------------------------------------------- verify


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
    files_checked: int = 0
    bytes_checked: int = 0
    images_checked: int = 0
    blobs_checked: int = 0
    charts_checked: int = 0
    problems: list[Problem] = field(default_factory=list)  # broken files and blobs, in SHA256SUMS order
    missing: list[str] = field(default_factory=list)  # listed in SHA256SUMS, not on disk
    unlisted: list[str] = field(default_factory=list)  # on disk, not in SHA256SUMS (not an error)
    failures: list[dict[str, str]] = field(default_factory=list)  # what the last download could not fetch

    @property
    def ok(self) -> bool:
        return not self.problems and not self.missing

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["bundle"] = str(self.bundle)
        data["problems"] = [asdict(problem) for problem in self.problems]
        data["ok"] = self.ok
        return data


def verify(
    bundle_dir: Path, *, progress: bool = False, allow_incomplete: bool = False, workers: int | None = None
) -> VerifyReport:
    """Re-hash every file against SHA256SUMS and every blob inside every tarball against the lock.

    Raises CorruptBundle (with `.report`) naming the first broken or missing file; raises BundleError when
    the last download left images or charts out, unless `allow_incomplete`.
    """
    bundle = Bundle(bundle_dir)
    if not bundle.root.is_dir():
        raise BundleError(f"bundle {bundle.root} does not exist; give the directory wsm download wrote")
    sums = read_checksums(bundle.sums_path)
    lock = bundle.read_lock()
    if lock is None:
        raise BundleError(f"{bundle.lock_path} is missing: not a wsm bundle; copy the whole bundle directory")
    report = VerifyReport(bundle=bundle.root, failures=list(lock.failures))
    present = set(bundle.files())
    report.missing = [name for name in sums if name not in present]
    report.unlisted = sorted(present - set(sums))
    checks = _file_checks(bundle, lock, sums, present)
    report.problems += _unlisted_lock_entries(lock, sums)
    total = sum((bundle.root / name).stat().st_size for name in checks)
    with tqdm(total=total, unit="B", unit_scale=True, disable=not progress, desc="verify", leave=False) as bar:
        with ThreadPoolExecutor(max_workers=workers or min(4, os.cpu_count() or 1)) as pool:
            outcomes = list(pool.map(lambda item: item[1](bar.update), checks.items()))
    for outcome in outcomes:
        _merge(report, outcome)
    order = {name: position for position, name in enumerate(sums)}
    report.problems.sort(key=lambda problem: order.get(problem.file, len(order)))
    _raise_for(report, allow_incomplete)
    return report


@dataclass
class _Outcome:
    bytes: int = 0
    image: bool = False
    chart: bool = False
    blobs: int = 0
    problems: list[Problem] = field(default_factory=list)


def _merge(report: VerifyReport, outcome: _Outcome) -> None:
    report.files_checked += 1
    report.bytes_checked += outcome.bytes
    report.images_checked += outcome.image
    report.charts_checked += outcome.chart
    report.blobs_checked += outcome.blobs
    report.problems += outcome.problems


Check = Callable[[Callable[[int], Any]], _Outcome]


def _file_checks(bundle: Bundle, lock: Lock, sums: Mapping[str, str], present: set[str]) -> dict[str, Check]:
    images = {entry.file: entry for entry in lock.images.values()}
    charts = {entry.file: entry for entry in lock.charts.values()}
    checks: dict[str, Check] = {}
    for name, expected in sums.items():
        if name not in present:
            continue
        path = bundle.root / name
        if name in images:
            checks[name] = lambda tick, p=path, n=name, e=expected, i=images[name]: _check_image(p, n, e, i, tick)
        else:
            checks[name] = lambda tick, p=path, n=name, e=expected, c=charts.get(name): _check_file(p, n, e, c, tick)
    return checks


def _check_file(path: Path, name: str, expected: str, chart: LockedChart | None, tick) -> _Outcome:
    digest = hash_file(path, tick)
    outcome = _Outcome(bytes=digest.size, chart=chart is not None)
    if digest.sha256 != expected:
        outcome.problems.append(Problem(name, f"sha256 is {digest.sha256}, SHA256SUMS says {expected}"))
    elif chart and chart.digest.removeprefix("sha256:") != digest.sha256:
        outcome.problems.append(Problem(name, f"sha256 is {digest.sha256}, the lock says {chart.digest}"))
    return outcome


def _check_image(path: Path, name: str, expected: str, image: LockedImage, tick) -> _Outcome:
    try:
        scan = scan_image_tar(path, tick)
    except WsmError as error:
        detail = str(error).removeprefix(f"{path.name}: ")
        return _Outcome(bytes=path.stat().st_size, image=True, problems=[Problem(name, detail)])
    outcome = _Outcome(bytes=scan.size, image=True, blobs=len(scan.blobs))
    # Blob problems first: they say which part of the file is damaged, which the whole-file sum cannot.
    outcome.problems += _blob_problems(name, scan, image)
    if scan.sha256 != expected:
        outcome.problems.append(Problem(name, f"sha256 is {scan.sha256}, SHA256SUMS says {expected}"))
    if not outcome.problems:
        outcome.problems += _layout_problems(name, scan, image)
    return outcome


def _blob_problems(name: str, scan: TarScan, image: LockedImage) -> list[Problem]:
    problems = []
    expected = {blob["digest"]: int(blob["size"]) for blob in image.blobs}
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


def _layout_problems(name: str, scan: TarScan, image: LockedImage) -> list[Problem]:
    try:
        entries = scan.json("index.json")["manifests"]
        docker = scan.json("manifest.json")[0]
    except (KeyError, IndexError, TypeError) as error:
        return [Problem(name, f"index.json or manifest.json is malformed ({error})")]
    except WsmError as error:
        return [Problem(name, str(error))]
    if len(entries) != 1 or entries[0].get("digest") != image.top["digest"]:
        return [Problem(name, f"index.json does not point at {image.top['digest']} as the lock says")]
    members = {blob_member(digest) for digest in scan.blobs}
    for member in [docker.get("Config"), *docker.get("Layers", [])]:
        if member not in members:
            return [Problem(name, f"manifest.json names {member}, which the tarball does not hold")]
    return []


def _unlisted_lock_entries(lock: Lock, sums: Mapping[str, str]) -> list[Problem]:
    files = [entry.file for entry in lock.images.values()] + [entry.file for entry in lock.charts.values()]
    unlisted = [file for file in sorted(files) if file not in sums]
    return [Problem(file, "listed in the lock file but not in SHA256SUMS") for file in unlisted]


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
        )
    if report.missing:
        more = len(report.missing) - 1
        extra = f" ({more} more missing)" if more else ""
        raise CorruptBundle(
            f"bundle {where}: {report.missing[0]} is listed in SHA256SUMS but missing{extra}; copy the whole "
            "bundle directory",
            report,
        )
    if report.failures and not allow_incomplete:
        first = report.failures[0]
        more = len(report.failures) - 1
        extra = f" and {more} more" if more else ""
        raise BundleError(
            f"bundle {where} is incomplete: the download could not fetch {first.get('name')}{extra} "
            f"({first.get('reason')}); rerun wsm download on the connected side"
        )


def iter_images(lock: Lock, selection: Iterable[str] | None = None) -> list[LockedImage]:
    """Lock entries in order, optionally only those named by source reference, familiar name or file."""
    entries = [lock.images[key] for key in sorted(lock.images)]
    if selection is None:
        return entries
    chosen = []
    for wanted in selection:
        match = [entry for entry in entries if wanted in _names(entry)]
        if not match:
            raise BundleError(f"image {wanted!r} is not in the bundle; `wsm verify` lists what is")
        chosen += [entry for entry in match if entry not in chosen]
    return chosen


def _names(entry: LockedImage) -> set[str]:
    names = {entry.image, entry.file, Path(entry.file).name}
    try:
        reference = Reference.parse(entry.image)
        names |= {reference.familiar, reference.canonical}
    except WsmError:
        pass
    return names
