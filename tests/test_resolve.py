"""The resolver on a synthetic chart shaped like W&B's: exactly the enabled images, each with its values path,
and `--render` (a real `helm template`) agreeing with it."""

from pathlib import Path

import pytest

from charts import TOOL_DIGEST, build_platform_chart
from servers import helm_binary
from wsm import ChartError
from wsm._manifest import parse_manifest
from wsm._resolve import ResolveOptions, resolve_release

DEFAULT_IMAGES = {
    "docker.io/acme/app:latest": ["app.image"],
    "docker.io/acme/console:4.5.6": ["console.image"],
    "docker.io/bitnami/redis:7.2.4-debian-12-r9": ["redis.image"],  # and the annotation
    "docker.io/oliver006/redis_exporter:0.15.1": ["redis.metrics.image"],
    f"docker.io/acme/tool@{TOOL_DIGEST}": ["tool.image"],
}


# The values method alone, whether or not helm is on PATH: what these tests check.
VALUES_ONLY = ResolveOptions(render=False)


@pytest.fixture(scope="module")
def platform_dir(tmp_path_factory) -> Path:
    return build_platform_chart(tmp_path_factory.mktemp("charts"))


def release(chart: Path, values: str = "{}", extra: str = ""):
    text = f"""
apiVersion: wsm/v1
kind: Release
name: demo
charts:
  - name: platform
    group: Platform
    path: {chart}
    values: {values}
{extra}
"""
    return parse_manifest(text, "demo.yaml", base=None)


def paths(resolution):
    return {
        image.reference.canonical: [s.path for s in image.sources if s.method.value == "values"]
        for image in resolution.images
    }


def test_lists_exactly_the_enabled_images_with_their_values_paths(platform_dir):
    resolution = resolve_release(release(platform_dir), VALUES_ONLY)
    assert paths(resolution) == DEFAULT_IMAGES
    redis = resolution.image("docker.io/bitnami/redis:7.2.4-debian-12-r9")
    assert {s.method.value for s in redis.sources} == {"values", "annotation"}
    assert {s.shape.value for s in redis.sources if s.shape} == {"registry"}
    exporter = resolution.image("oliver006/redis_exporter:0.15.1")
    assert exporter.sources[0].note == "tag from the chart's appVersion"
    assert exporter.sources[0].chart == "platform/redis/metrics"  # nested .tgz inside a vendored .tgz
    skipped = {s.chart: s.reason for s in resolution.skipped}
    assert skipped == {"platform/weave": "condition weave.install is false", "platform/extras": "tags extras are false"}


def test_pinned_values_conditions_tags_and_global_registry(platform_dir):
    values = "{weave: {install: true}, tags: {extras: true}, global: {imageRegistry: mirror.corp}, app: {image: {tag: 9.9.9}}, redis: {metrics: {enabled: false}}}"
    resolution = resolve_release(release(platform_dir, values), VALUES_ONLY)
    found = paths(resolution)
    assert found["docker.io/acme/weave:7.7.7"] == ["weave.image"]
    assert found["docker.io/acme/extras:3.3.3"] == ["extras.image"]  # appVersion tag, enabled by tag
    assert found["docker.io/acme/app:9.9.9"] == ["app.image"]
    assert found["mirror.corp/bitnami/redis:7.2.4-debian-12-r9"] == ["redis.image"]  # bitnami honours global
    redis = resolution.image("mirror.corp/bitnami/redis:7.2.4-debian-12-r9")
    assert redis.sources[0].registry_path == "global.imageRegistry"
    assert resolution.image("docker.io/acme/weave:7.7.7").sources[0].registry_path is None
    assert "docker.io/acme/app:latest" not in found
    assert not any("redis_exporter" in ref for ref in found)


def test_user_values_override_the_manifest(platform_dir, tmp_path):
    pinned = "{console: {install: true}, app: {image: {tag: 9.9.9}}}"
    options = ResolveOptions(user_values={"platform": {"console": {"install": False}, "app": {"image": {"tag": "1.2"}}}},
                             render=False)
    found = paths(resolve_release(release(platform_dir, pinned), options))
    expected = {ref: where for ref, where in DEFAULT_IMAGES.items() if "acme/console" not in ref and "acme/app" not in ref}
    assert found == {**expected, "docker.io/acme/app:1.2": ["app.image"]}


def test_extra_images_of_the_manifest(platform_dir):
    extra = "images:\n  - {image: 'busybox:1.36', group: Tools, why: debug pod}"
    resolution = resolve_release(release(platform_dir, extra=extra), VALUES_ONLY)
    busybox = resolution.image("docker.io/library/busybox:1.36")
    assert busybox.group == "Tools" and busybox.sources[0].method.value == "manifest"


def test_packaged_chart_resolves_the_same(platform_dir, tmp_path):
    from charts import package

    archive = package(platform_dir, tmp_path)
    assert paths(resolve_release(release(archive), VALUES_ONLY)) == DEFAULT_IMAGES


def test_dependency_not_vendored_is_a_clear_error(platform_dir, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(platform_dir, broken)
    (broken / "charts" / "redis-18.19.4.tgz").unlink()
    with pytest.raises(ChartError, match=r"platform > redis \(redis 18.x\): dependency 'redis' is enabled but not vendored.*helm dependency build.*redis.install false"):
        resolve_release(release(broken), VALUES_ONLY)


@pytest.mark.helm
def test_render_agrees_with_helm_template(platform_dir):
    assert helm_binary(), "helm is not installed: run scripts/test-prereqs.sh"
    resolution = resolve_release(release(platform_dir), ResolveOptions(render=True, helm=helm_binary()))
    rendered = {
        image.reference.canonical
        for image in resolution.images
        if any(s.method.value == "render" for s in image.sources)
    }
    # Every image that values found is rendered, and the hard-coded ones appear only through rendering.
    assert set(DEFAULT_IMAGES) <= rendered
    assert rendered - set(DEFAULT_IMAGES) == {"docker.io/library/busybox:1.36", "docker.io/library/alpine:3.19"}
    cron = resolution.image("docker.io/library/alpine:3.19")
    assert cron.sources[0].template == "platform/templates/cronjob.yaml" and "CronJob" in cron.sources[0].note
    init = resolution.image("docker.io/library/busybox:1.36")
    assert {s.template for s in init.sources} == {"platform/charts/app/templates/deployment.yaml",
                                                   "platform/charts/console/templates/deployment.yaml"}
    hardcoded = [n for n in resolution.notes if "is hard-coded in the templates" in n]
    assert len(hardcoded) == 2
    assert {i.reference.canonical for i in resolution.images if i.hardcoded} == {
        "docker.io/library/busybox:1.36", "docker.io/library/alpine:3.19"}
    assert not [n for n in resolution.notes if "never render" in n]


@pytest.mark.helm
@pytest.mark.parametrize("pinned", ["{}", "{global: {imageRegistry: mirror.corp}, weave: {install: true}}"])
def test_overrides_make_helm_render_internal_images_only(platform_dir, tmp_path, pinned):
    """Every image the values method found, rewritten by its values path, is what helm then renders."""
    import yaml

    from wsm._overrides import image_overrides
    from wsm._render import render_images
    from wsm._target import TargetRegistry, plan_targets
    from wsm._values import merge

    manifest = release(platform_dir, pinned)
    resolution = resolve_release(manifest, VALUES_ONLY)
    targets = plan_targets([i.reference for i in resolution.images], TargetRegistry.parse("registry.corp/site"))
    overrides, unredirected = image_overrides(resolution.images, targets, "platform")
    values = merge(manifest.charts[0].values, overrides)
    rendered = render_images(platform_dir, values, release="r", namespace="ns", helm=helm_binary())
    outside = {i.reference.canonical for i in rendered if not i.reference.canonical.startswith("registry.corp/site/")}
    # Only the images written into templates stay outside; values cannot move them, and the resolver said so.
    assert outside == {"docker.io/library/busybox:1.36", "docker.io/library/alpine:3.19"}
    assert unredirected == []
    assert yaml.safe_dump(values)  # plain data, writable as a values file
