"""Image references parse and normalise as Docker does."""

import pytest

from wsm import InvalidReference, Reference

DIGEST = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    "text,canonical,familiar",
    [
        ("redis", "docker.io/library/redis:latest", "redis:latest"),
        ("redis:7", "docker.io/library/redis:7", "redis:7"),
        ("library/redis:7", "docker.io/library/redis:7", "redis:7"),
        ("wandb/local:0.62.2", "docker.io/wandb/local:0.62.2", "wandb/local:0.62.2"),
        ("docker.io/bitnami/redis:7.2.4-debian-12-r9", "docker.io/bitnami/redis:7.2.4-debian-12-r9",
         "bitnami/redis:7.2.4-debian-12-r9"),
        ("index.docker.io/wandb/console:2.13.1", "docker.io/wandb/console:2.13.1", "wandb/console:2.13.1"),
        ("quay.io/prometheus/prometheus:v2.47.0", "quay.io/prometheus/prometheus:v2.47.0",
         "quay.io/prometheus/prometheus:v2.47.0"),
        ("localhost/app", "localhost/app:latest", "localhost/app:latest"),
        ("localhost:5000/team/app:1", "localhost:5000/team/app:1", "localhost:5000/team/app:1"),
        ("registry.corp:8443/a/b/c:1.0", "registry.corp:8443/a/b/c:1.0", "registry.corp:8443/a/b/c:1.0"),
        (f"acme/tool@{DIGEST}", f"docker.io/acme/tool@{DIGEST}", f"acme/tool@{DIGEST}"),
        (f"nginx:1.25@{DIGEST}", f"docker.io/library/nginx:1.25@{DIGEST}", f"nginx:1.25@{DIGEST}"),
        ("[::1]:5000/app:2", "[::1]:5000/app:2", "[::1]:5000/app:2"),
    ],
)
def test_parse_normalises(text, canonical, familiar):
    reference = Reference.parse(text)
    assert reference.canonical == canonical
    assert reference.familiar == familiar
    assert Reference.parse(reference.canonical) == reference


def test_parts_and_identifier():
    reference = Reference.parse(f"localhost:5000/team/app:1@{DIGEST}")
    assert (reference.registry, reference.repository, reference.tag, reference.digest) == (
        "localhost:5000", "team/app", "1", DIGEST)
    assert reference.identifier == DIGEST
    assert Reference.parse("app:2").identifier == "2"


@pytest.mark.parametrize(
    "text,fault",
    [
        ("", "empty"),
        ("Redis", "lower-case"),
        ("acme//app", "not a valid repository path"),
        ("acme/app:-bad", "tag"),
        ("acme/app@sha256:123", "not a digest"),
        ("acme/app@sha256:" + "A" * 64, "64 lower-case hex"),
        ("acme/app@sha256:" + "a" * 63 + "z", "64 lower-case hex"),
        ("bad_host!.io/app:1", "not a valid registry host"),
        ("a" * 260, "longer than"),
    ],
)
def test_invalid_references_say_why(text, fault):
    with pytest.raises(InvalidReference) as caught:
        Reference.parse(text)
    message = str(caught.value)
    assert fault in message and "\n" not in message
