"""Differential rendering on synthetic charts, judged by a real `helm template`: every rendered image bound to
the values paths that make it, the overrides solved from the binding rendering exactly the internal images with
the upstream tags, unused and hard-coded images marked, and the bundle set equal to the rendered set."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from charts import build_bind_chart, build_platform_chart
from servers import helm_binary, run_helm
from support import sha256, wsm
from wsm import ChartError, ProofFailed
from wsm._install import chart_overrides
from wsm._manifest import parse_manifest
from wsm._model import Binding, BoundPath, ResolvedImage, Role
from wsm._proof import prove_mapping
from wsm._reference import Reference
from wsm._resolve import Resolution, ResolveOptions, resolve_release
from wsm._target import TargetRegistry, plan_targets
from wsm._values import merge

pytestmark = pytest.mark.helm

SITE = "registry.corp:5000/site"
HARDCODED = "docker.io/library/busybox:1.36"
# What `helm template` renders for the stack chart with its defaults, in the form it renders it.
RENDERED = {
    "quay.io/prometheus/node-exporter:v1.6.1": "quay.io/prometheus/node-exporter:v1.6.1",
    "registry.k8s.io/kube-state-metrics/kube-state-metrics:v2.10.0":
        "registry.k8s.io/kube-state-metrics/kube-state-metrics:v2.10.0",
    "docker.io/bitnami/postgresql:16.1.0": "docker.io/bitnami/postgresql:16.1.0",
    "docker.io/acme/app:9.9.9": "acme/app:9.9.9",
    "docker.io/acme/sidecar:3.1": "acme/sidecar:3.1",
    "docker.io/acme/helper:2.0": "acme/helper:2.0",
    "ghcr.io/acme/cm:1.2": "ghcr.io/acme/cm:1.2",
    "quay.io/prometheus/prometheus:v2.48.0": "quay.io/prometheus/prometheus:v2.48.0",
    "docker.io/acme/tester:0.1": "acme/tester:0.1",
    HARDCODED: "busybox:1.36",
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Path:
    return build_bind_chart(tmp_path_factory.mktemp("bind"))


def release(chart: Path, values: str = "{}"):
    text = f"apiVersion: wsm/v1\nkind: Release\nname: s\ncharts:\n  - {{name: stack, group: Stack, path: {chart}, " \
           f"namespace: ns, values: {values}}}\n"
    return parse_manifest(text, "s.yaml", base=None)


def resolved(chart: Path, values: str = "{}") -> Resolution:
    return resolve_release(release(chart, values), ResolveOptions(helm=helm_binary()))


def site_values(chart: Path, resolution: Resolution, values: str = "{}") -> tuple[dict, dict[Reference, Reference]]:
    """What push writes for the chart: the release's values and the overrides solved from the binding."""
    images = resolution.to_download()
    targets = plan_targets([image.reference for image in images], TargetRegistry.parse(SITE))
    overrides, _ = chart_overrides(images, targets, "stack", None)
    return merge(yaml.safe_load(values), overrides), targets


def helm_template(chart: Path, values: dict, home: Path) -> str:
    values_file = home / "values.yaml"
    home.mkdir(parents=True, exist_ok=True)
    values_file.write_text(yaml.safe_dump(values))
    return run_helm(home, "template", "r", str(chart), "-n", "ns", "-f", str(values_file)).stdout


def occurs(text: str, output: str) -> bool:
    """`text` stands on its own in `output` (not as the tail of a longer, internal name)."""
    return re.search(rf"(?<![\w./:-]){re.escape(text)}(?![\w./:@-])", output) is not None


def image_fields(node):
    """Every string under an `image` key in parsed helm output."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "image" and isinstance(value, str):
                yield value
            else:
                yield from image_fields(value)
    elif isinstance(node, (list, tuple)) or hasattr(node, "__next__"):
        for item in node:
            yield from image_fields(item)


def test_each_rendered_image_is_bound_to_the_values_that_make_it(stack):
    resolution = resolved(stack)
    bindings = {image.reference.canonical: image.bindings for image in resolution.images}
    transformations = {name: [(b.field, b.transformation) for b in found] for name, found in bindings.items()}
    assert transformations["quay.io/prometheus/node-exporter:v1.6.1"] == [
        ("container", "<node-exporter.image.registry>/<node-exporter.image.repository>:<node-exporter.image.tag>")]
    assert transformations["registry.k8s.io/kube-state-metrics/kube-state-metrics:v2.10.0"] == [
        ("container", "<ksm.image.repository>:v<ksm.image.tag>")]
    assert transformations["docker.io/bitnami/postgresql:16.1.0"] == [
        ("container", "<primary.image.registry>/<primary.image.repository>:<primary.image.tag>")]
    assert transformations["docker.io/acme/app:9.9.9"] == [("container", "<app.image.repository>:<app.image.tag>")]
    assert transformations["docker.io/acme/sidecar:3.1"] == [("args", "<sidecar.image.repository>:<sidecar.image.tag>")]
    assert transformations["docker.io/acme/helper:2.0"] == [("env", "<helper.image>")]
    assert transformations["ghcr.io/acme/cm:1.2"] == [("configmap", "<cm.image.registry>/<cm.image.repository>:<cm.image.tag>")]
    assert transformations["quay.io/prometheus/prometheus:v2.48.0"] == [
        ("custom-resource", "<prom.image.registry>/<prom.image.repository>:<prom.image.tag>")]
    assert transformations["docker.io/acme/tester:0.1"] == [("container", "<test.image>")]
    tester = resolution.image("docker.io/acme/tester:0.1")
    assert tester is not None and "templates/test-hook.yaml" in tester.bindings[0].location
    # How each was found: the values walk guessed node-exporter's tag without the "v"; rendering corrected it.
    node_exporter = resolution.image("quay.io/prometheus/node-exporter:v1.6.1")
    assert node_exporter is not None and node_exporter.found_by.value == "both"
    assert "the values alone read quay.io/prometheus/node-exporter:1.6.1" in node_exporter.sources[0].note
    assert resolution.image("docker.io/acme/app:9.9.9").found_by.value == "render"  # a tpl tag: values cannot read it
    # A handful of renders for all candidate paths: the baseline and one with every sentinel.
    assert "2 helm renders for 22 candidate values paths" in " ".join(resolution.notes)


def test_unused_and_hardcoded_images_are_marked_and_the_bundle_holds_the_rendered_set(stack):
    resolution = resolved(stack)
    unused = {image.reference.canonical for image in resolution.images if image.unused}
    hardcoded = {image.reference.canonical for image in resolution.images if image.hardcoded}
    assert unused == {"docker.io/acme/exporter:1.0"}  # `exporters.install` true, its template tests `.enabled`
    assert hardcoded == {HARDCODED}
    assert {image.reference.canonical for image in resolution.to_download()} == set(RENDERED)
    # Helm itself renders exactly that set.
    output = helm_template(stack, {}, stack.parent / "helm-defaults")
    assert all(occurs(text, output) for text in RENDERED.values())
    assert not occurs("acme/exporter:1.0", output)


def test_helm_renders_only_internal_images_with_the_upstream_tags(stack, tmp_path):
    resolution = resolved(stack)
    values, targets = site_values(stack, resolution)
    # "v" + value: the tag is written without its "v", so that helm renders the upstream tag.
    assert values["ksm"]["image"]["tag"] == "2.10.0"
    assert values["node-exporter"]["image"] == {"registry": "registry.corp:5000", "repository":
                                                "site/prometheus/node-exporter", "tag": "v1.6.1"}
    output = helm_template(stack, values, tmp_path)
    for source, rendered_text in RENDERED.items():
        target = targets[Reference.parse(source)].canonical
        if source == HARDCODED:
            assert occurs(rendered_text, output) and not occurs(target, output)
        else:
            assert occurs(target, output), target
            assert not occurs(rendered_text, output), rendered_text
    # Every image field helm renders (containers of any kind, the custom resource) is internal, but the hard-coded.
    fields = set(image_fields(yaml.safe_load_all(output)))
    assert fields and {f for f in fields if not f.startswith(SITE + "/")} == {"busybox:1.36"}
    prove_mapping(release(stack), resolution.charts, resolution.to_download(), {}, helm_binary(), ["stack"])


def test_the_platform_chart_renders_internal_images_from_its_binding(tmp_path):
    chart = build_platform_chart(tmp_path / "charts")
    pinned = "{global: {imageRegistry: mirror.corp}, weave: {install: true}}"
    resolution = resolved(chart, pinned)
    redis = resolution.image("mirror.corp/bitnami/redis:7.2.4-debian-12-r9")
    assert redis is not None and [p.path for p in redis.bindings[0].paths] == [
        "global.imageRegistry", "redis.image.repository", "redis.image.tag"]
    values, targets = site_values(chart, resolution, pinned)
    output = helm_template(chart, values, tmp_path / "helm")
    for image in resolution.to_download():
        if not image.hardcoded:
            assert occurs(targets[image.reference].canonical, output), image.reference.canonical


def test_a_binding_that_cannot_reach_the_internal_name_fails_the_proof(stack):
    resolution = resolved(stack)
    images = resolution.to_download()
    # As if the registry were written into the template: no value can move it.
    literal = Binding("stack", "x", "container", "quay.io/{0}:{1}", (BoundPath("prom.image.repository", Role.REPOSITORY),
                                                                      BoundPath("prom.image.tag", Role.TAG)))
    broken = [ResolvedImage(i.reference, i.group, i.sources, (literal,)) if "prometheus/prometheus" in
              i.reference.repository else i for i in images]
    with pytest.raises(ProofFailed, match=r"renders quay.io/prometheus/prometheus:v2.48.0, not an internal image"):
        prove_mapping(release(stack), resolution.charts, broken, {}, helm_binary(), ["stack"])


def test_a_disabled_nested_dependency_not_vendored_is_skipped_an_enabled_one_is_an_error(stack):
    resolution = resolved(stack)
    assert [s.chart for s in resolution.skipped] == ["stack/primary/instance"]
    assert "stack > primary > instance (prometheus 24.*.*) is disabled" in " ".join(resolution.notes)
    with pytest.raises(ChartError, match=r"^stack > primary > instance \(prometheus 24\.\*\.\*\): dependency "
                                         r"'prometheus' is enabled but not vendored.*instance.install false"):
        resolved(stack, "{primary: {instance: {install: true}}}")
    result = wsm("list", "--chart", str(stack), "--set", "primary.instance.install=true")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "stack > primary > instance (prometheus 24.*.*)" in result.stderr


def test_list_shows_paths_transformation_how_found_and_marks(stack):
    helm = ("--helm", helm_binary())
    text = wsm("list", "--chart", str(stack), *helm)
    assert text.returncode == 0, text.stderr
    lines = {line.split()[0]: line for line in text.stdout.splitlines() if line.startswith("  ")}
    assert "stack: <ksm.image.repository>:v<ksm.image.tag> (found by both)" in \
        lines["registry.k8s.io/kube-state-metrics/kube-state-metrics:v2.10.0"]
    assert "(found by render) [hard-coded: no values path moves it]" in lines[HARDCODED]
    assert "stack: exporters.image (found by values) [unused: never rendered, not downloaded]" in \
        lines["docker.io/acme/exporter:1.0"]
    assert "2 helm renders" in text.stderr

    data = json.loads(wsm("list", "--chart", str(stack), *helm, "-o", "json").stdout)
    by_image = {image["image"]: image for image in data["images"]}
    ksm = by_image["registry.k8s.io/kube-state-metrics/kube-state-metrics:v2.10.0"]
    assert ksm["found_by"] == "both" and ksm["values_paths"] == ["ksm.image.repository", "ksm.image.tag"]
    assert ksm["bindings"][0]["transformation"] == "<ksm.image.repository>:v<ksm.image.tag>"
    assert ksm["bindings"][0]["paths"] == [{"path": "ksm.image.repository", "role": "repository"},
                                           {"path": "ksm.image.tag", "role": "tag"}]
    assert ksm["hardcoded"] is False and ksm["unused"] is False
    assert by_image[HARDCODED]["hardcoded"] is True and by_image["docker.io/acme/exporter:1.0"]["unused"] is True

    plain = wsm("list", "--chart", str(stack), *helm, "-o", "plain").stdout.split()
    assert set(plain) == set(RENDERED)  # what the bundle will hold: the unused image is not in it
    why = wsm("list", "--chart", str(stack), *helm, "--why", "quay.io/prometheus/node-exporter:v1.6.1").stdout
    assert "rendered as <node-exporter.image.registry>/<node-exporter.image.repository>:<node-exporter.image.tag>" \
        " (container at stack/charts/node-exporter/templates/daemonset.yaml" in why
    assert "found by both" in why
    why_json = json.loads(wsm("list", "--chart", str(stack), *helm, "--why", HARDCODED, "-o", "json").stdout)
    assert why_json["hardcoded"] is True and why_json["found_by"] == "render"


def test_download_proves_the_mapping_before_fetching_anything(tmp_path):
    """A registry written into the template: no value can move the image, and download says so first."""
    from charts import write_chart

    template = """\
apiVersion: v1
kind: Pod
metadata: {name: lit}
spec:
  containers:
    - name: lit
      image: "docker.io/{{ .Values.image.repository }}:{{ .Values.image.tag }}"
"""
    chart = write_chart(tmp_path / "lit", {"apiVersion": "v2", "name": "lit", "version": "0.1.0"},
                        {"image": {"repository": "acme/lit", "tag": "1"}}, {"pod.yaml": template})
    bundle = tmp_path / "bundle"
    result = wsm("download", "--chart", str(chart), "--helm", helm_binary(), "--bundle", str(bundle), offline=True)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "not every image is internal: lit: lit/templates/pod.yaml | Pod/lit | spec.containers[0].image" \
        in result.stderr
    assert "renders docker.io/acme/lit:1, not an internal image" in result.stderr
    assert not (bundle / "images").exists()


def test_a_pinned_multi_platform_image_with_one_platform_kept_is_pinned_to_what_was_kept(
        registry, helm_repo, tmp_path):
    from charts import write_chart
    from images import build_image, push_layout
    from support import skopeo

    built = build_image(tmp_path / "layout", "2.0", platforms=("linux/amd64", "linux/arm64"))
    push_layout(built, f"{registry.host}/pin-up/multi:2.0")
    template = ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n    - name: m\n"
                "      image: \"{{ .Values.image.repository }}@{{ .Values.image.digest }}\"\n")
    chart = write_chart(tmp_path / "pinned", {"apiVersion": "v2", "name": "pinned", "version": "0.1.0"},
                        {"image": {"repository": f"{registry.host}/pin-up/multi", "digest": built.digest}},
                        {"pod.yaml": template})
    bundle, helm = tmp_path / "bundle", ("--helm", helm_binary())
    downloaded = wsm("download", "--chart", str(chart), *helm, "--bundle", str(bundle), "--plain-http",
                     "--platform", "linux/amd64", cwd=tmp_path)
    assert downloaded.returncode == 0, downloaded.stderr
    assert "1 image references, all internal" in downloaded.stderr
    site = f"{registry.host}/pin-site"
    pushed = wsm("push", "--bundle", str(bundle), "--registry", site, "--helm-repo", f"{helm_repo.url}/pin",
                 "--plain-http", *helm, cwd=tmp_path)
    assert pushed.returncode == 0, pushed.stderr
    kept = built.manifests["linux/amd64"]
    internal = f"{site}/pin-up/multi@{kept}"
    assert f"`{registry.host}/pin-up/multi@{built.digest}` -> `{internal}`" in pushed.stdout  # the runbook says so
    values = yaml.safe_load((bundle / "values" / "pinned.yaml").read_text())
    assert values["image"] == {"repository": f"{site}/pin-up/multi", "digest": kept}
    assert occurs(internal, helm_template(chart, values, tmp_path / "helm"))
    assert sha256(skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{internal}")) == kept
    assert "proof: rendered 1 charts with the written values: 1 image references, all internal" in pushed.stdout
    # Where helm is absent, push says the proof was skipped (the pinned digest is still asked of the registry).
    without_helm = wsm("push", "--bundle", str(bundle), "--registry", site, "--helm-repo", f"{helm_repo.url}/pin",
                       "--plain-http", cwd=tmp_path, env={"WSM_HELM": "", "PATH": "/usr/bin:/bin"})
    assert without_helm.returncode == 0, without_helm.stderr
    assert "proof: skipped: helm was not found" in without_helm.stdout


def test_a_template_that_refuses_a_marker_costs_a_few_renders_and_is_named(tmp_path):
    """A chart that validates its tag: the batch is split until the one path that helm refuses is alone."""
    from charts import write_chart

    checked = ('{{- if not (regexMatch "^[0-9.]+$" (toString .Values.checked.image.tag)) }}'
               '{{ fail "checked.image.tag must be numeric" }}{{ end }}\n')
    pods = "".join(
        f"---\napiVersion: v1\nkind: Pod\nmetadata: {{name: p{n}}}\nspec:\n  containers:\n    - name: m\n"
        f"      image: \"{{{{ .Values.c{n}.image.repository }}}}:{{{{ .Values.c{n}.image.tag }}}}\"\n"
        for n in range(6)
    )
    checked_pod = ("---\napiVersion: v1\nkind: Pod\nmetadata: {name: checked}\nspec:\n  containers:\n    - name: m\n"
                   "      image: \"{{ .Values.checked.image.repository }}:{{ .Values.checked.image.tag }}\"\n")
    values = {f"c{n}": {"image": {"repository": f"acme/c{n}", "tag": f"{n}.0"}} for n in range(6)}
    values["checked"] = {"image": {"repository": "acme/checked", "tag": "1.2"}}
    chart = write_chart(tmp_path / "strict", {"apiVersion": "v2", "name": "strict", "version": "0.1.0"}, values,
                        {"pods.yaml": checked + pods + checked_pod})
    resolution = resolved(chart)
    notes = " ".join(resolution.notes)
    assert "setting checked.image.tag to a marker makes helm fail" in notes
    renders = int(re.search(r"(\d+) helm renders for 14 candidate", notes).group(1))
    assert renders <= 10, renders  # the baseline and a bisection over 7 images (then 2 fields), not one per path
    checked_image = resolution.image("docker.io/acme/checked:1.2")
    assert [b.transformation for b in checked_image.bindings] == ["<checked.image.repository>:1.2"]
    values_out, targets = site_values(chart, resolution)
    output = helm_template(chart, values_out, tmp_path / "helm")
    missing = [targets[i.reference].canonical for i in resolution.to_download() if not occurs(targets[i.reference].canonical, output)]
    assert not missing, (missing, output)


def test_a_chart_that_does_not_render_falls_back_to_the_values_unless_rendering_is_insisted_on(tmp_path):
    from charts import write_chart

    template = ("apiVersion: v1\nkind: Pod\nmetadata: {name: {{ required \"host is required\" .Values.host }}}\n"
                "spec:\n  containers:\n    - {name: m, image: \"{{ .Values.image.repository }}:{{ .Values.image.tag }}\"}\n")
    chart = write_chart(tmp_path / "needs", {"apiVersion": "v2", "name": "needs", "version": "0.1.0"},
                        {"image": {"repository": "acme/needs", "tag": "1"}}, {"pod.yaml": template})
    listed = wsm("list", "--chart", str(chart), "--helm", helm_binary(), "-o", "plain")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split() == ["docker.io/acme/needs:1"]
    assert "needs: not rendered, so images come from the values alone" in listed.stderr
    assert "host is required" in listed.stderr
    insisted = wsm("list", "--chart", str(chart), "--helm", helm_binary(), "--render")
    assert insisted.returncode == 1 and "host is required" in insisted.stderr and "Traceback" not in insisted.stderr
    rendered = wsm("list", "--chart", str(chart), "--helm", helm_binary(), "--set", "host=h", "-o", "json")
    assert json.loads(rendered.stdout)["images"][0]["bindings"]


def test_a_registry_in_a_sub_charts_own_global_defaults_is_moved_through_the_root_global(tmp_path):
    from charts import package, workload, write_chart

    cache = write_chart(tmp_path / "src" / "cache", {"apiVersion": "v2", "name": "cache", "version": "1.0.0"},
                        {"global": {"imageRegistry": "public.ecr.aws"}, "image": {"repository": "acme/cache",
                                                                                  "tag": "7"}},
                        {"sts.yaml": workload("StatefulSet", "cache", "{{ .Values.global.imageRegistry }}/"
                                              "{{ .Values.image.repository }}:{{ .Values.image.tag }}")})
    parent = write_chart(tmp_path / "top", {"apiVersion": "v2", "name": "top", "version": "1.0.0",
                                            "dependencies": [{"name": "cache", "version": "1.0.0"}]}, {})
    package(cache, parent / "charts")
    resolution = resolved(parent)
    image = resolution.image("public.ecr.aws/acme/cache:7")
    assert image is not None and image.bindings[0].transformation == \
        "<global.imageRegistry>/<cache.image.repository>:<cache.image.tag>"
    values, targets = site_values(parent, resolution)
    assert values["global"] == {"imageRegistry": "registry.corp:5000"}
    output = helm_template(parent, values, tmp_path / "helm")
    assert occurs(targets[image.reference].canonical, output)


def test_an_unused_image_the_manifest_lists_as_an_extra_is_carried(stack):
    extra = "images:\n  - {image: docker.io/acme/exporter:1.0, group: Stack, why: started by the operator}\n"
    text = f"apiVersion: wsm/v1\nkind: Release\nname: s\ncharts:\n  - {{name: stack, group: Stack, path: {stack}}}\n"
    resolution = resolve_release(parse_manifest(text + extra, "s.yaml", base=None), ResolveOptions(helm=helm_binary()))
    exporter = resolution.image("docker.io/acme/exporter:1.0")
    assert exporter is not None and not exporter.unused
    assert {i.reference.canonical for i in resolution.to_download()} == set(RENDERED) | {"docker.io/acme/exporter:1.0"}


def test_a_lock_from_before_differential_rendering_is_proved_with_its_render_only_images_as_hard_coded(tmp_path):
    """An old `--render` lock: images found only by rendering carry no binding; the proof takes them as
    hard-coded, and the values-path overrides of the others must still render internal."""
    from wsm._bind import prove
    from wsm._model import ImageSource, Method

    chart = build_platform_chart(tmp_path / "charts")
    values_only = resolve_release(release(chart), ResolveOptions(render=False)).images
    render_only = [ResolvedImage(Reference.parse(text), "g", (ImageSource("stack", Method.RENDER, template="t"),))
                   for text in ("busybox:1.36", "alpine:3.19")]
    images = values_only + render_only
    targets = plan_targets([image.reference for image in images], TargetRegistry.parse(SITE))
    overrides, _ = chart_overrides(images, targets, "stack", None)
    proof = prove(chart, overrides, chart="stack", release="r", namespace="ns", images=images, targets=targets,
                  helm=helm_binary())
    assert proof.problems == []
    assert set(proof.hardcoded) == {"docker.io/library/busybox:1.36", "docker.io/library/alpine:3.19"}
    assert proof.checked == 8  # app, console, redis, exporter, tool, twice busybox, alpine


def test_pull_secret_lists_are_no_candidate_values_paths():
    """`imagePullSecrets: [{name: regcred}]` looks like an image map under an image-ish key; like discovery's
    walk, the binding leaves secret lists alone (no sentinel is written into a secret's name)."""
    from wsm._bind import candidates

    view = {"imagePullSecrets": [{"name": "regcred"}], "global": {"imagePullSecrets": [{"name": "regcred"}]},
            "image": {"repository": "acme/app", "tag": "1.0", "pullSecrets": [{"name": "regcred"}]}}
    assert [(bound.path, bound.role.value) for bound in candidates(view)] == [
        ("image.repository", "repository"), ("image.tag", "tag")]
