"""Chart versions and Helm's version constraints (Masterminds semver syntax) on top of the `semver` library.

`semver` compares versions; Helm's range language (`^1.2`, `~1.2.3`, `1.2.x`, `>=1.0 <2.0`, `1.2 - 1.4`, `||`)
is not part of it, so this module turns each constraint into bounds that `semver` checks.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

import semver

_WILDCARDS = {"x", "X", "*"}
_OPERATOR = re.compile(r"^(>=|<=|!=|~>|=>|=<|>|<|=|\^|~)?\s*v?(.*)$")

Predicate = Callable[[semver.Version], bool]


def parse_version(text: str) -> semver.Version | None:
    """A chart version as Helm reads it (`v` prefix and missing minor/patch allowed); None if not semver."""
    try:
        return semver.Version.parse(str(text).strip().lstrip("v"), optional_minor_and_patch=True)
    except (ValueError, TypeError):
        return None


def is_exact(text: str) -> bool:
    """True when `text` names one version (no operator, no wildcard, all three parts)."""
    return bool(re.fullmatch(r"v?\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.+-]+)?", str(text).strip()))


def highest_matching(constraint: str, versions: Iterable[str]) -> str | None:
    """The highest of `versions` that satisfies `constraint`; pre-releases only if the constraint names one."""
    accepts = parse_constraint(constraint)
    allow_pre = "-" in constraint.replace(" - ", " ")
    best: tuple[semver.Version, str] | None = None
    for text in versions:
        version = parse_version(text)
        if version is None or (version.prerelease and not allow_pre) or not accepts(version):
            continue
        if best is None or version > best[0]:
            best = (version, text)
    return best[1] if best else None


def parse_constraint(text: str) -> Predicate:
    """Compile a Helm constraint into a predicate; raise ValueError with the offending part."""
    alternatives = [_parse_group(group) for group in str(text).split("||")]
    return lambda version: any(group(version) for group in alternatives)


def _parse_group(group: str) -> Predicate:
    group = re.sub(r"(\d|x|X|\*)\s+-\s+(v?\d)", r"\1 - \2", group.strip())
    tokens = [t for t in re.split(r"[\s,]+", group) if t]
    predicates: list[Predicate] = []
    i = 0
    while i < len(tokens):
        if i + 2 < len(tokens) and tokens[i + 1] == "-":  # hyphen range: 1.2 - 1.4.5
            predicates.append(_hyphen_range(_bounds(tokens[i])[0], _bounds(tokens[i + 2])))
            i += 3
            continue
        predicates.append(_parse_one(tokens[i]))
        i += 1
    if not predicates:
        return lambda version: True
    return lambda version: all(p(version) for p in predicates)


def _hyphen_range(low: semver.Version, high: tuple[semver.Version, semver.Version | None]) -> Predicate:
    return lambda version: version >= low and _below_upper(version, high)


def _below_upper(version: semver.Version, bounds: tuple[semver.Version, semver.Version | None]) -> bool:
    exact, upper = bounds
    return version < upper if upper is not None else version <= exact


def _parse_one(token: str) -> Predicate:
    match = _OPERATOR.match(token)
    if match is None:
        raise ValueError(f"{token!r} is not a version constraint")
    operator, rest = (match.group(1) or "="), match.group(2)
    low, upper = _bounds(rest)
    if operator in ("=", "=="):
        return (lambda v: low <= v < upper) if upper is not None else (lambda v: v == low)
    if operator == "!=":
        return (lambda v: not (low <= v < upper)) if upper is not None else (lambda v: v != low)
    if operator in (">=", "=>"):
        return lambda v: v >= low
    if operator == ">":
        return (lambda v: v >= upper) if upper is not None else (lambda v: v > low)
    if operator in ("<=", "=<"):
        return (lambda v: v < upper) if upper is not None else (lambda v: v <= low)
    if operator == "<":
        return lambda v: v < low
    if operator in ("~", "~>"):
        return _tilde(rest, low)
    return _caret(rest, low)


_UNBOUNDED = semver.Version(1 << 62, 0, 0)


def _bounds(text: str) -> tuple[semver.Version, semver.Version | None]:
    """(lowest version, exclusive upper bound when the text is partial or has a wildcard, else None)."""
    text = text.strip().lstrip("v")
    match = re.match(r"([^-+]*)([-+]?)(.*)", text)
    if match is None:
        raise ValueError(f"{text!r} is not a version")
    core, sep, extra = match.groups()
    if not core or core in _WILDCARDS:
        return semver.Version(0, 0, 0), _UNBOUNDED
    parts = core.split(".")
    if len(parts) > 3 or any(not p.isdigit() and p not in _WILDCARDS for p in parts):
        raise ValueError(f"{text!r} is not a version")
    numbers: list[int] = []
    for part in parts:
        if part in _WILDCARDS:
            break
        numbers.append(int(part))
    low = semver.Version(*(numbers + [0] * (3 - len(numbers))))
    if sep:
        low = semver.Version.parse(f"{low}{sep}{extra}")
    if len(numbers) == 3:
        return low, None
    return low, low.bump_major() if len(numbers) == 1 else low.bump_minor()


def _tilde(rest: str, low: semver.Version) -> Predicate:
    parts = [p for p in rest.split("-")[0].split(".") if p not in _WILDCARDS]
    upper = low.bump_major() if len(parts) <= 1 else low.bump_minor()
    return lambda v: low <= v < upper


def _caret(rest: str, low: semver.Version) -> Predicate:
    parts = [p for p in rest.split("-")[0].split(".") if p not in _WILDCARDS]
    if low.major > 0 or len(parts) == 1:
        upper = low.bump_major()
    elif low.minor > 0 or len(parts) == 2:
        upper = low.bump_minor()
    else:
        upper = low.bump_patch()
    return lambda v: low <= v < upper
