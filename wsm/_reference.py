"""Image references, parsed and normalised the way Docker does (distribution/reference).

`Reference.parse("redis:7")` is `docker.io/library/redis:7`: the registry is implicit `docker.io` unless the
first path component looks like a host (has a `.` or a `:`, is `localhost`, or has upper-case letters),
official images live under `library/`, and `index.docker.io` is `docker.io`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import TypeGuard

from ._exceptions import InvalidReference

DOCKER_HUB = "docker.io"
_LEGACY_HUB_NAMES = {"index.docker.io", "registry-1.docker.io"}
_MAX_NAME_LENGTH = 255

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PATH_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_HOST_LABEL = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_RE = re.compile(rf"(?:{_HOST_LABEL}(?:\.{_HOST_LABEL})*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?")
_TAG_RE = re.compile(r"[\w][\w.-]{0,127}")
_DIGEST_RE = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}")
_SHA256_HEX = re.compile(r"[a-f0-9]{64}")


@dataclass(frozen=True, order=True)
class Reference:
    """A normalised image reference: registry host, repository path, and a tag and/or a digest."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str) -> Reference:
        """Parse `text` as Docker does; raise `InvalidReference` naming the text and the fault."""
        if not isinstance(text, str) or not text.strip():
            raise InvalidReference(f"invalid image reference {text!r}: it is empty")
        text = text.strip()
        name, tag, digest = _split_name_tag_digest(text)
        registry, repository = _split_registry(name, text)
        if tag is None and digest is None:
            tag = "latest"  # as Docker does: a bare name means :latest
        if len(f"{registry}/{repository}") > _MAX_NAME_LENGTH:
            raise InvalidReference(f"invalid image reference {text!r}: name is longer than {_MAX_NAME_LENGTH}")
        return cls(registry=registry, repository=repository, tag=tag, digest=digest)

    @property
    def name(self) -> str:
        """`registry/repository`, with nothing after it."""
        return f"{self.registry}/{self.repository}"

    def __str__(self) -> str:
        return self.canonical

    @property
    def canonical(self) -> str:
        """The fully qualified form: `docker.io/library/redis:7` (`@digest` appended when known)."""
        return self.name + self._suffix()

    @property
    def familiar(self) -> str:
        """The short form people write: `redis:7`, `wandb/local:0.62.2`, `quay.io/prometheus/prometheus:v2`."""
        name = self.name
        first = self.repository.split("/", 1)[0]
        # `docker.io/0.0/x` stays whole: without the host, `0.0` would read as a registry (found by fuzzing).
        if self.registry == DOCKER_HUB and not (any(c in first for c in ".:") or first == "localhost"):
            name = self.repository.removeprefix("library/") if self.repository.count("/") == 1 else self.repository
        return name + self._suffix()

    @property
    def identifier(self) -> str:
        """What a registry is asked for: the digest when known (it pins the content), else the tag."""
        return self.digest or self.tag or "latest"

    def with_tag(self, tag: str | None) -> Reference:
        return replace(self, tag=tag)

    def with_digest(self, digest: str | None) -> Reference:
        return replace(self, digest=digest)

    def with_name(self, registry: str, repository: str) -> Reference:
        return replace(self, registry=registry, repository=repository)

    def _suffix(self) -> str:
        suffix = f":{self.tag}" if self.tag else ""
        return suffix + (f"@{self.digest}" if self.digest else "")


def _split_name_tag_digest(text: str) -> tuple[str, str | None, str | None]:
    name, at, digest = text.partition("@")
    if at:
        _check_digest(digest, text)
    # A tag follows the last ':' only if no '/' comes after it (else the ':' is a registry port).
    colon = name.rfind(":")
    tag = None
    if colon > name.rfind("/"):
        name, tag = name[:colon], name[colon + 1 :]
        if not _TAG_RE.fullmatch(tag):
            raise InvalidReference(
                f"invalid image reference {text!r}: tag {tag!r} must be letters, digits, '_', '.' or '-' "
                "(at most 128, not starting with '.' or '-')"
            )
    return name, tag, digest or None


def _check_digest(digest: str, text: str) -> None:
    if not _DIGEST_RE.fullmatch(digest):
        raise InvalidReference(f"invalid image reference {text!r}: {digest!r} is not a digest (algorithm:hex)")
    algorithm, _, hex_part = digest.partition(":")
    if algorithm == "sha256" and not _SHA256_HEX.fullmatch(hex_part):
        raise InvalidReference(f"invalid image reference {text!r}: a sha256 digest is 64 lower-case hex digits")


def _split_registry(name: str, text: str) -> tuple[str, str]:
    first, slash, rest = name.partition("/")
    looks_like_host = any(c in first for c in ".:") or first == "localhost" or first.lower() != first
    if slash and looks_like_host:
        registry, repository = first, rest
        if not _DOMAIN_RE.fullmatch(registry):
            raise InvalidReference(f"invalid image reference {text!r}: {registry!r} is not a valid registry host")
        if registry in _LEGACY_HUB_NAMES:
            registry = DOCKER_HUB
    else:
        registry, repository = DOCKER_HUB, name
    if registry == DOCKER_HUB and "/" not in repository:
        repository = f"library/{repository}"
    if not repository:
        raise InvalidReference(f"invalid image reference {text!r}: the repository name is missing")
    if repository.lower() != repository:
        raise InvalidReference(f"invalid image reference {text!r}: repository name must be lower-case")
    if not _PATH_RE.fullmatch(repository):
        raise InvalidReference(
            f"invalid image reference {text!r}: {repository!r} is not a valid repository path "
            "(lower-case letters, digits and single separators '.', '_', '__', '-' between '/')"
        )
    return registry, repository


def looks_like_reference(text: object) -> TypeGuard[str]:
    """True when `text` parses as an image reference (used to tell image strings from other values)."""
    if not isinstance(text, str) or not text or any(c.isspace() for c in text) or "{{" in text:
        return False
    try:
        Reference.parse(text)
    except InvalidReference:
        return False
    return True
