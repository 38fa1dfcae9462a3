"""Pull secrets in values: found per chart shape (helm-create `imagePullSecrets`, `global.imagePullSecrets`,
bitnami's strings, `image.pullSecrets`), and checked by rendering with the real helm."""

from __future__ import annotations

import pytest

from charts import build_operator_chart, build_platform_chart, write_chart
from wsm._chart import load_chart
from wsm._discover import images_in_values
from wsm._exceptions import WsmError
from wsm._install import pull_secret_values
from wsm._manifest import ReleaseManifest
from wsm._pullsecret import pod_spec_gaps, validate_secret_name
from wsm._render import render_documents
from wsm._resolve import resolve_release
from wsm._values import merge
from servers import helm_binary


def resolved(chart_dir):
    return resolve_release(ReleaseManifest.single_chart(str(chart_dir))).images


@pytest.mark.parametrize("name", ["regcred", "site.pull-1", "a" * 253])
def test_valid_secret_names(name):
    assert validate_secret_name(name) == name


@pytest.mark.parametrize("name", ["", "RegCred", "-x", "x-", "a_b", "a..b", "a b", "x;rm", "a" * 254])
def test_invalid_secret_names_are_refused_in_one_line(name):
    with pytest.raises(WsmError, match="not a Kubernetes secret name"):
        validate_secret_name(name)


def test_each_key_the_platform_chart_takes_gets_the_secret_in_its_shape(tmp_path):
    chart_dir = build_platform_chart(tmp_path)
    name = chart_dir.name
    values, keys = pull_secret_values(resolved(chart_dir), name, load_chart(chart_dir), {}, "regcred")
    # svc under each alias: its own list of {name} maps (weave is off, a secret there does no harm)
    for alias in ("app", "console", "weave"):
        assert values[alias]["imagePullSecrets"] == [{"name": "regcred"}]
    # the platform's own global list is read as maps; bitnami's redis reads maps or strings: maps win
    assert values["global"]["imagePullSecrets"] == [{"name": "regcred"}]
    # bitnami's image.pullSecrets are strings
    assert values["redis"]["image"]["pullSecrets"] == ["regcred"]
    assert "extras.imagePullSecrets" not in keys and "tool.image.pullSecrets" not in keys
    assert sorted(keys) == sorted(["app.imagePullSecrets", "console.imagePullSecrets", "weave.imagePullSecrets",
                                   "global.imagePullSecrets", "redis.image.pullSecrets"])


def test_operator_chart_takes_it_beside_its_image(tmp_path):
    chart_dir = build_operator_chart(tmp_path)
    values, keys = pull_secret_values(resolved(chart_dir), "operator", load_chart(chart_dir), {}, "regcred")
    assert values == {"image": {"pullSecrets": ["regcred"]}}  # names, as W&B's operator template reads them
    assert keys == ["image.pullSecrets"]


def test_a_bitnami_chart_alone_gets_strings_in_global(tmp_path):
    chart_dir = write_chart(
        tmp_path / "cache", {"apiVersion": "v2", "name": "cache", "version": "1.0.0"},
        {"global": {"imageRegistry": "", "imagePullSecrets": []},
         "image": {"registry": "docker.io", "repository": "bitnami/redis", "tag": "7"}},
    )
    values, _ = pull_secret_values(resolved(chart_dir), "cache", load_chart(chart_dir), {}, "regcred")
    assert values == {"global": {"imagePullSecrets": ["regcred"]}}


def test_the_shape_the_values_show_wins_and_their_secrets_stay(tmp_path):
    chart_dir = write_chart(
        tmp_path / "app", {"apiVersion": "v2", "name": "app", "version": "1.0.0"},
        {"imagePullSecrets": ["chart-default"], "image": {"repository": "acme/app", "tag": "1"}},
    )
    images = resolved(chart_dir)
    user = {"imagePullSecrets": ["site-one"]}
    values, _ = pull_secret_values(images, "app", load_chart(chart_dir), user, "regcred")
    assert values == {"imagePullSecrets": ["site-one", "regcred"]}
    values, _ = pull_secret_values(images, "app", load_chart(chart_dir), {"imagePullSecrets": ["regcred"]}, "regcred")
    assert values == {"imagePullSecrets": ["regcred"]}  # named once


def test_a_chart_without_any_key_gets_none(tmp_path):
    chart_dir = write_chart(tmp_path / "plain", {"apiVersion": "v2", "name": "plain", "version": "1.0.0"},
                            {"image": {"repository": "acme/plain", "tag": "1"}})
    assert pull_secret_values(resolved(chart_dir), "plain", load_chart(chart_dir), {}, "regcred") == ({}, [])


def test_secret_lists_are_not_taken_for_images(tmp_path):
    chart = load_chart(build_operator_chart(tmp_path))
    values = {"imagePullSecrets": [{"name": "regcred"}], "image": {"repository": "acme/x", "tag": "1",
                                                                   "pullSecrets": [{"name": "regcred"}]}}
    found = images_in_values(values, chart, "operator", "", set()).found
    assert [item.reference.canonical for item in found] == ["docker.io/acme/x:1"]


def test_rendering_names_every_pod_spec_that_pulls_without_the_secret(tmp_path):
    """helm renders the platform chart with the secret values: every pod spec names it except the CronJob's,
    whose template takes no pull secret at all (and the check says so)."""
    assert helm_binary(), "helm is not installed: run scripts/test-prereqs.sh"
    chart_dir = build_platform_chart(tmp_path)  # with the hard-coded CronJob and init containers
    secrets, _ = pull_secret_values(resolved(chart_dir), "platform", load_chart(chart_dir), {}, "regcred")
    documents = render_documents(chart_dir, merge({"weave": {"install": True}}, secrets), release="demo",
                                 namespace="demo", helm=helm_binary())
    checked, gaps = pod_spec_gaps(documents, "platform", "docker.io", "regcred")
    assert checked == 7  # app, console, weave, redis, metrics, tool, cleanup
    assert [(gap.kind, gap.name, gap.images) for gap in gaps] == [
        ("CronJob", "demo-cleanup", ("docker.io/library/alpine:3.19",))]
    _, without = pod_spec_gaps(render_documents(chart_dir, {}, release="demo", namespace="demo",
                                                helm=helm_binary()), "platform", "docker.io", "regcred")
    assert len(without) == 6  # no secret in the values: every pod spec is named


def test_the_runbook_step_quotes_every_argument_and_names_what_rendering_found(tmp_path):
    from wsm._install import ChartLocation, InstallFile
    from wsm._manifest import parse_manifest
    from wsm._runbook import PullSecretSteps, runbook

    manifest = parse_manifest("apiVersion: wsm/v1\nkind: Release\nname: demo\ncharts:\n"
                              "  - {name: app, repo: 'https://charts.example.com', version: 1.0.0}\n", "m.yaml", None)
    location = ChartLocation("https://charts.corp", "app", "1.0.0")
    files = [InstallFile("app", tmp_path / "bundle" / "values" / "app.yaml", "values")]
    steps = PullSecretSteps("regcred", "registry.corp:5000", ("team a;rm -rf ~",), without_keys=("app",),
                            gaps=("app: Deployment web (app/templates/web.yaml) pulls registry.corp:5000/x:1",),
                            notes=("app: pod specs not checked (helm is missing)",))
    text = runbook(manifest, tmp_path / "bundle", "registry.corp:5000", {"app": location}, files, [], [],
                   pull_secret=steps)
    assert "## 1. Create the pull secret `regcred`" in text
    assert "kubectl create secret generic regcred --type=kubernetes.io/dockerconfigjson -n 'team a;rm -rf ~'" in text
    assert "kubectl get namespace 'team a;rm -rf ~' >/dev/null 2>&1 || kubectl create namespace 'team a;rm -rf ~'" \
        in text
    assert "the values of `app` take no pull secret" in text
    assert "- app: Deployment web (app/templates/web.yaml) pulls registry.corp:5000/x:1" in text
    assert "Note: app: pod specs not checked (helm is missing)" in text


def test_rendering_catches_a_shape_the_templates_do_not_read(tmp_path):
    """A chart that wants `{name: X}` beside its image but shows an empty list gets names by convention:
    the rendered pod spec then holds no `{name: regcred}`, and the check names it."""
    template = ("apiVersion: v1\nkind: Pod\nmetadata: {name: odd}\nspec:\n"
                "  imagePullSecrets: {{- toYaml .Values.image.pullSecrets | nindent 4 }}\n"
                "  containers:\n    - {name: main, image: \"{{ .Values.image.repository }}:{{ .Values.image.tag }}\"}\n")
    chart_dir = write_chart(tmp_path / "odd", {"apiVersion": "v2", "name": "odd", "version": "1.0.0"},
                            {"image": {"repository": "registry.corp/acme/odd", "tag": "1", "pullSecrets": []}},
                            {"pod.yaml": template})
    secrets, keys = pull_secret_values(resolved(chart_dir), "odd", load_chart(chart_dir), {}, "regcred")
    assert keys == ["image.pullSecrets"]
    documents = render_documents(chart_dir, secrets, release="r", namespace="n", helm=helm_binary())
    checked, gaps = pod_spec_gaps(documents, "odd", "registry.corp", "regcred")
    assert checked == 1 and [(gap.kind, gap.name) for gap in gaps] == [("Pod", "odd")]


def test_without_helm_the_pod_specs_are_noted_unchecked(tmp_path):
    from wsm._pullsecret import RenderTarget, check_rendered

    target = RenderTarget("operator", build_operator_chart(tmp_path), {}, "operator", "demo")
    report = check_rendered("regcred", "registry.corp", [target], helm=str(tmp_path / "no-helm"))
    assert report.pod_specs_checked == 0 and report.gaps == []
    assert report.notes and report.notes[0].startswith("operator: pod specs not checked (helm ")
    assert "is not an executable file" in report.notes[0]


def test_the_proof_and_the_pull_secret_check_share_one_helm_render_per_chart(tmp_path):
    """push renders each written values file for its proof and again for the pull secret: helm runs once."""
    import stat

    from wsm._bind import prove
    from wsm._pullsecret import RenderTarget, check_rendered
    from wsm._render import Renderings

    log = tmp_path / "helm.log"
    counting = tmp_path / "helm"
    counting.write_text(f"#!/bin/sh\necho run >> {log}\nexec {helm_binary()} \"$@\"\n")
    counting.chmod(counting.stat().st_mode | stat.S_IEXEC)
    chart_dir = build_operator_chart(tmp_path)
    renderings = Renderings(str(counting))
    prove(chart_dir, {}, chart="operator", release="op", namespace="ops", images=[], targets={},
          renderings=renderings)
    report = check_rendered("regcred", "registry.corp", [RenderTarget("operator", chart_dir, {}, "op", "ops")],
                            renderings=renderings)
    assert report.notes == [] and log.read_text().splitlines() == ["run"]
    renderings.template(chart_dir, {}, release="op", namespace="other")  # another namespace renders anew
    assert len(log.read_text().splitlines()) == 2
