"""Values overrides per shape, and rewriting a user's own values file without losing anything."""

import yaml

from wsm._model import ImageSource, Method, ResolvedImage, Shape
from wsm._overrides import image_overrides, rewrite_values_file
from wsm._reference import Reference
from wsm._target import TargetRegistry, plan_targets

DIGEST = "sha256:" + "c" * 64


def image(text, chart, path, shape):
    return ResolvedImage(Reference.parse(text), "g", (ImageSource(chart, Method.VALUES, path, shape),))


IMAGES = [
    image("wandb/local:0.62.2", "platform/app", "app.image", Shape.REPOSITORY),
    image("docker.io/bitnami/redis:7.2.4", "platform/redis", "redis.image", Shape.REGISTRY),
    image(f"quay.io/acme/tool:1@{DIGEST}", "platform", "jobs[0].image", Shape.STRING),
    ResolvedImage(Reference.parse("alpine:3.19"), "g", (ImageSource("platform", Method.RENDER, template="t.yaml"),)),
]


def test_each_shape_points_at_the_internal_registry():
    targets = plan_targets([i.reference for i in IMAGES], TargetRegistry.parse("registry.corp:5000/proj"))
    values, unredirected = image_overrides(IMAGES, targets, "platform")
    assert values == {
        "app": {"image": {"repository": "registry.corp:5000/proj/wandb/local", "tag": "0.62.2"}},
        "redis": {"image": {"registry": "registry.corp:5000", "repository": "proj/bitnami/redis", "tag": "7.2.4"}},
        "jobs": [{"image": f"registry.corp:5000/proj/acme/tool:1@{DIGEST}"}],
    }
    assert unredirected == ["docker.io/library/alpine:3.19"]


def test_a_registry_decided_by_global_image_registry_is_set_there_too():
    source = ImageSource("platform/redis", Method.VALUES, "redis.image", Shape.REGISTRY,
                         registry_path="global.imageRegistry")
    redis = ResolvedImage(Reference.parse("mirror.corp/bitnami/redis:7"), "g", (source,))
    targets = plan_targets([redis.reference], TargetRegistry.parse("registry.corp"))
    values, _ = image_overrides([redis], targets, "platform")
    assert values == {
        "redis": {"image": {"registry": "registry.corp", "repository": "bitnami/redis", "tag": "7"}},
        "global": {"imageRegistry": "registry.corp"},
    }


def test_other_charts_are_not_touched():
    targets = plan_targets([i.reference for i in IMAGES], TargetRegistry.parse("registry.corp"))
    assert image_overrides(IMAGES, targets, "operator") == ({}, [])


def test_user_file_keeps_comments_order_and_other_keys(tmp_path):
    path = tmp_path / "site.yaml"
    original = """# Site values for prod (ticket CHG-1234)
global:
  host: https://wandb.corp   # the public URL
  license: "xxxx"
app:
  replicas: 3   # sized for 200 users
  image:
    repository: wandb/local
    tag: 0.62.2
ingress:
  class: nginx
"""
    path.write_text(original)
    backup = rewrite_values_file(path, {"airgapped": True, "app": {"image": {"repository": "registry.corp/wandb/local"}}})
    text = path.read_text()
    assert backup.read_text() == original
    assert "# Site values for prod (ticket CHG-1234)" in text
    assert "# the public URL" in text and "# sized for 200 users" in text and 'license: "xxxx"' in text
    data = yaml.safe_load(text)
    assert list(data) == ["global", "app", "ingress", "airgapped"]
    assert data["app"] == {"replicas": 3, "image": {"repository": "registry.corp/wandb/local", "tag": "0.62.2"}}
    assert data["airgapped"] is True
    second = rewrite_values_file(path, {"airgapped": True})
    assert second.name == "site.yaml.bak.1" and backup.read_text() == original


def test_target_names_prefix_mapping_and_collisions(tmp_path):
    import pytest

    from wsm import WsmError
    from wsm._target import load_mapping

    sources = [Reference.parse("wandb/local:1"), Reference.parse("quay.io/prometheus/prometheus:v2")]
    targets = plan_targets(sources, TargetRegistry.parse("https://registry.corp:8443/proj/"))
    assert [t.canonical for t in targets.values()] == [
        "registry.corp:8443/proj/wandb/local:1", "registry.corp:8443/proj/prometheus/prometheus:v2"]
    clash = [Reference.parse("docker.io/acme/app:1"), Reference.parse("quay.io/acme/app:2")]
    with pytest.raises(WsmError, match="docker.io/acme/app and quay.io/acme/app would both be pushed to registry.corp/acme/app"):
        plan_targets(clash, TargetRegistry.parse("registry.corp"))
    mapping_file = tmp_path / "mapping.yaml"
    mapping_file.write_text("# quay's copy gets its own name\nquay.io/acme/app: registry.corp/quay/acme-app\n")
    mapping = load_mapping(mapping_file)
    resolved = plan_targets(clash, TargetRegistry.parse("registry.corp"), mapping)
    assert resolved[clash[1]].canonical == "registry.corp/quay/acme-app:2"
    mapping_file.write_text("[not, a, mapping]\n")
    with pytest.raises(WsmError, match="expected a mapping"):
        load_mapping(mapping_file)
    with pytest.raises(WsmError, match="does not look like a registry host"):
        TargetRegistry.parse("corp")
