"""What push writes and prints, against real servers (Distribution, nginx) and checked with helm and skopeo:
- no silent outcomes: a chart whose images did not all arrive is not published and gets no values or runbook
  lines; `--on-existing skip` with another image at the tag pins the carried digest (helm template shows it),
  or withholds the chart where no values path can pin it;
- credentials in URLs never appear in the bundle or in any output;
- the runbook of a release with hostile release names and namespaces runs exactly the expected commands;
- the root digest: printed by download, checked by verify --expect, written into the runbook.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import yaml

from charts import package, write_chart
from images import make_image
from runbook_run import command_lines, nothing_else_ran, run_lines, snapshot
from servers import HelmRepo, Registry, run_helm
from support import one_line_error, skopeo, wsm

ALPHA_TEMPLATE = """\
apiVersion: v1
kind: Pod
metadata: {name: alpha}
spec:
  containers:
    - name: app
      image: "{{ .Values.image.repository }}:{{ .Values.image.tag }}{{ with .Values.image.digest }}@{{ . }}{{ end }}"
    - name: side
      image: "{{ .Values.sidecar.image }}"
"""
BETA_TEMPLATE = """\
apiVersion: v1
kind: Pod
metadata: {name: beta}
spec:
  containers:
    - {name: app, image: "{{ .Values.image.repository }}:{{ .Values.image.tag }}"}
    - {name: hard, image: "%s"}
"""
MANIFEST = """\
apiVersion: wsm/v1
kind: Release
name: sec
charts:
  - name: alpha
    repo: {repo}
    version: 0.1.0
    release: {release}
    namespace: {namespace}
  - name: beta
    repo: {repo}
    version: 0.1.0
"""
PASSWORD = "Pa55-w0rd-XyZ"


@pytest.fixture(scope="module")
def upstream(registry, tmp_path_factory):
    """Two charts in an nginx Helm repository: alpha (a digest-aware map image and a string image), beta (a map
    image and one only its helm.sh/images annotation names); their images in the session registry."""
    work = tmp_path_factory.mktemp("outcomes")
    host = registry.host
    built = {name: make_image(registry, f"sec/{name}", work, tag=tag)
             for name, tag in (("alpha", "1.0"), ("side", "0.1"), ("beta", "1.0"), ("hard", "1.0"))}
    charts = HelmRepo(work / "charts")
    alpha = write_chart(work / "src" / "alpha", {"apiVersion": "v2", "name": "alpha", "version": "0.1.0"},
                        {"image": {"repository": f"{host}/sec/alpha", "tag": "1.0"},
                         "sidecar": {"image": f"{host}/sec/side:0.1"}}, {"pod.yaml": ALPHA_TEMPLATE})
    annotation = yaml.safe_dump([{"name": "hard", "image": f"{host}/sec/hard:1.0"}])
    beta = write_chart(work / "src" / "beta", {"apiVersion": "v2", "name": "beta", "version": "0.1.0",
                                               "annotations": {"helm.sh/images": annotation}},
                       {"image": {"repository": f"{host}/sec/beta", "tag": "1.0"}},
                       {"pod.yaml": BETA_TEMPLATE % f"{host}/sec/hard:1.0"})
    for chart in (alpha, beta):
        package(chart, charts.root)
    run_helm(work / "helm", "repo", "index", str(charts.root))
    try:
        yield {"work": work, "charts": charts, "built": built, "registry": registry}
    finally:
        charts.stop()


def download(upstream, name: str, release: str = "alpha", namespace: str = "apps", *extra: str):
    work = upstream["work"] / name
    work.mkdir()
    manifest = work / "release.yaml"
    manifest.write_text(MANIFEST.format(repo=upstream["charts"].url, release=json.dumps(release),
                                        namespace=json.dumps(namespace)))
    result = wsm("download", "--manifest", str(manifest), "--bundle", str(work / "bundle"), "--plain-http", *extra,
                 cwd=work)
    return work, result


@pytest.fixture(scope="module")
def clean(upstream):
    work, result = download(upstream, "clean")
    assert result.returncode == 0, result.stdout + result.stderr
    return {"work": work, "bundle": work / "bundle", "output": result}


@pytest.fixture
def internal(tmp_path):
    with Registry(tmp_path / "internal") as server:
        yield server


def fresh_copy(bundle: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    return copy


def push(bundle: Path, internal: Registry, *extra: str, helm_repo: str | None = None):
    return wsm("push", "--bundle", str(bundle), "--registry", f"{internal.host}/site", "--plain-http",
               "--helm-repo", helm_repo or f"oci://{internal.host}/charts", *extra, cwd=bundle.parent)


def seed(internal: Registry, name: str, tag: str, tmp_path: Path) -> str:
    """Put another image under the target tag of sec/<name>: what a site registry might already hold."""
    other = make_image(internal, f"elsewhere/{name}", tmp_path, tag=tag)
    skopeo("copy", "--quiet", "--all", "--src-tls-verify=false", "--dest-tls-verify=false",
           f"docker://{internal.host}/elsewhere/{name}:{tag}", f"docker://{internal.host}/site/sec/{name}:{tag}")
    return other.digest


def digest_at(reference: str) -> str:
    raw = skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{reference}")
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def has_chart(internal: Registry, name: str) -> bool:
    result = run_helm(internal.workdir / "helm", "show", "chart", f"oci://{internal.host}/charts/{name}",
                      "--version", "0.1.0", "--plain-http", check=False)
    return result.returncode == 0


# --- no silent outcomes ------------------------------------------------------------------------------------------


def test_a_chart_whose_image_did_not_arrive_is_not_published(upstream, clean, internal, tmp_path):
    bundle = fresh_copy(clean["bundle"], tmp_path)
    seed(internal, "beta", "1.0", tmp_path)  # --on-existing fail (default): beta's image is refused
    (bundle / "values").mkdir()
    (bundle / "values" / "beta.yaml").write_text("# left by an earlier push\n")
    outside = tmp_path / "outside.txt"
    outside.write_text("untouched\n")
    (bundle / "values" / "alpha.yaml").symlink_to(outside)  # planted in a copied bundle: never written through
    result = push(bundle, internal)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "NOT PUBLISHED chart beta:" in result.stdout and "sec/beta:1.0 did not arrive" in result.stdout
    assert "Traceback" not in result.stderr
    assert not (bundle / "values" / "beta.yaml").exists()
    runbook = (bundle / "RUNBOOK.md").read_text()
    assert "NOT PUBLISHED: beta:" in runbook
    assert not [line for line in command_lines(runbook) if "beta" in line]
    assert not has_chart(internal, "beta")
    # alpha had everything it needs: published, with its values and its runbook line.
    assert has_chart(internal, "alpha") and not (bundle / "values" / "alpha.yaml").is_symlink()
    assert yaml.safe_load((bundle / "values" / "alpha.yaml").read_text())["image"]["tag"] == "1.0"
    assert outside.read_text() == "untouched\n"
    assert any("alpha" in line for line in command_lines(runbook))


def test_skip_pins_the_carried_digest_and_helm_renders_it(upstream, clean, internal, tmp_path):
    bundle = fresh_copy(clean["bundle"], tmp_path)
    others = {name: seed(internal, name, tag, tmp_path) for name, tag in (("alpha", "1.0"), ("side", "0.1"))}
    built = upstream["built"]
    result = push(bundle, internal, "--on-existing", "skip")
    assert result.returncode == 0, result.stdout + result.stderr
    site = f"{internal.host}/site/sec"
    for name, tag in (("alpha", "1.0"), ("side", "0.1")):
        assert digest_at(f"{site}/{name}:{tag}") == others[name]  # the tag was left alone
        assert digest_at(f"{site}/{name}@{built[name].digest}") == built[name].digest  # the carried image is there
        assert f"note: {site}/{name}:{tag} holds another image" in result.stdout
    values = yaml.safe_load((bundle / "values" / "alpha.yaml").read_text())
    assert values["image"]["digest"] == built["alpha"].digest
    assert values["sidecar"]["image"] == f"{site}/side:0.1@{built['side'].digest}"
    rendered = run_helm(tmp_path / "helm", "template", "x", str(next((bundle / "charts").glob("alpha-*.tgz"))),
                        "-f", str(bundle / "values" / "alpha.yaml")).stdout
    images = {container["name"]: container["image"] for container in yaml.safe_load(rendered)["spec"]["containers"]}
    assert images == {"app": f"{site}/alpha:1.0@{built['alpha'].digest}",
                      "side": f"{site}/side:0.1@{built['side'].digest}"}
    runbook = (bundle / "RUNBOOK.md").read_text()
    assert f"the values pin the carried digest `{built['alpha'].digest}`" in runbook

    # An image that only the annotation names has no values path to pin it: its chart is withheld, by name.
    seed(internal, "hard", "1.0", tmp_path)
    refused = push(bundle, internal, "--on-existing", "skip")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "NOT PUBLISHED chart beta: the tag of" in refused.stdout and "sec/hard:1.0" in refused.stdout
    assert "can pin the carried digest" in refused.stdout
    assert not (bundle / "values" / "beta.yaml").exists()


# --- credentials in URLs ------------------------------------------------------------------------------------------


def every_file_text(directory: Path) -> str:
    return "".join(path.read_bytes().decode("latin-1") for path in directory.rglob("*") if path.is_file())


def test_a_password_in_a_url_is_never_printed_or_written(upstream, clean, internal, tmp_path):
    with HelmRepo(tmp_path / "site-charts", auth=("pusher", PASSWORD)) as site_charts:
        bundle = fresh_copy(clean["bundle"], tmp_path)
        secret_url = f"http://pusher:{PASSWORD}@{site_charts.host}"
        text = push(bundle, internal, helm_repo=secret_url)
        data = push(bundle, internal, "-o", "json", helm_repo=secret_url)
        dry = push(bundle, internal, "--dry-run", "-o", "json", helm_repo=secret_url)
        wrong = push(bundle, internal, helm_repo=f"http://pusher:WRONG-{PASSWORD}@{site_charts.host}/other")
        assert text.returncode == 0, text.stdout + text.stderr
        assert data.returncode == 0 and dry.returncode == 0, data.stderr + dry.stderr
        index = yaml.safe_load((site_charts.root / "index.yaml").read_text())
        assert set(index["entries"]) == {"alpha", "beta"}  # the URL's credentials were used to publish
    one_line_error(wrong, "access refused (401)", f"http://pusher:***@{site_charts.host}/other")
    outputs = "".join(r.stdout + r.stderr for r in (text, data, dry, wrong))
    assert PASSWORD not in outputs
    assert PASSWORD not in every_file_text(bundle)
    assert json.loads(data.stdout)["helm_repo"] == f"http://pusher:***@{site_charts.host}"
    assert f"helm repo add internal http://{site_charts.host} --username pusher" in text.stdout


def test_a_password_in_a_chart_repository_url_stays_out_of_the_bundle(upstream, tmp_path):
    repo = upstream["charts"].url.replace("http://", f"http://reader:{PASSWORD}@")
    result = wsm("download", "--chart", "alpha", "--repo", repo, "--bundle", str(tmp_path / "bundle"),
                 "--plain-http", "-o", "json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert PASSWORD not in result.stdout + result.stderr
    assert PASSWORD not in every_file_text(tmp_path / "bundle")
    lock = json.loads((tmp_path / "bundle" / "wsm.lock.json").read_text())
    assert lock["charts"][0]["source"] == upstream["charts"].url.replace("http://", "http://reader:***@")


# --- hostile names from the manifest, end to end --------------------------------------------------------------------


def test_hostile_release_and_namespace_run_exactly_the_expected_commands(upstream, internal, tmp_path):
    release, namespace = "r$(touch pwned-release)", "ns;touch pwned-ns;#"
    work, downloaded = download(upstream, "hostile", release, namespace)
    if downloaded.returncode != 0:  # refused as invalid names when the manifest is read: safe too
        one_line_error(downloaded, "release")
        return
    result = push(work / "bundle", internal)
    if result.returncode != 0:
        one_line_error(result, "release")
        return
    before = snapshot(work)
    ran = run_lines(command_lines((work / "bundle" / "RUNBOOK.md").read_text()), work)
    assert [["helm", "upgrade", "--install", release, f"oci://{internal.host}/charts/alpha", "--version", "0.1.0",
             "-n", namespace, "--create-namespace", "-f", "bundle/values/alpha.yaml"]] in ran
    assert all(len(commands) == 1 for commands in ran), ran
    assert nothing_else_ran(work, before) == []


# --- the root digest ------------------------------------------------------------------------------------------------


def test_root_digest_is_printed_checked_and_in_the_runbook(upstream, clean, internal, tmp_path):
    bundle = fresh_copy(clean["bundle"], tmp_path)
    root = "sha256:" + hashlib.sha256((bundle / "SHA256SUMS").read_bytes()).hexdigest()
    assert f"root digest {root}" in clean["output"].stdout
    rerun = wsm("download", "--manifest", str(clean["work"] / "release.yaml"), "--bundle", str(bundle),
                "--plain-http", "-o", "json", cwd=tmp_path)
    root = "sha256:" + hashlib.sha256((bundle / "SHA256SUMS").read_bytes()).hexdigest()  # the lock was updated
    assert json.loads(rerun.stdout)["root_digest"] == root
    good = wsm("verify", str(bundle), "--expect", root)
    assert good.returncode == 0 and f"root digest {root} (as expected)" in good.stdout
    other = "sha256:" + "0" * 64
    bad = wsm("verify", str(bundle), "--expect", other)
    one_line_error(bad, root, other)
    assert len(bad.stderr.strip().splitlines()) == 1
    one_line_error(wsm("verify", str(bundle), "--expect", "abc"), "64 hex digits")
    pushed = push(bundle, internal)
    assert pushed.returncode == 0, pushed.stdout + pushed.stderr
    assert f"`{root}`" in (bundle / "RUNBOOK.md").read_text()
    assert json.loads(push(bundle, internal, "-o", "json").stdout)["root_digest"] == root
