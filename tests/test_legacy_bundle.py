"""A bundle written by the wsm before the typed bundle lock (commit b3f4673) still verifies and pushes.

The bundles under tests/fixtures were made by that commit's `wsm download` (see make_legacy_bundles.py): a
release with a subset index, an index kept as-is and single-platform images; and a `--chart` bundle (no release
manifest in its lock) whose image is one platform of an index. Sites carry bundles for months: a newer wsm on
the offline side must take them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from servers import run_helm
from support import sha256, skopeo, wsm
from wsm._reference import Reference
from wsm._render import images_in_manifests

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.mark.parametrize("name", ["legacy-release", "legacy-chart"])
def test_an_old_bundle_verifies_and_pushes(name, registry, helm_repo, helm_home, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(FIXTURES / name, bundle)
    lock = json.loads((bundle / "wsm.lock.json").read_text())

    verified = wsm("verify", str(bundle))
    assert verified.returncode == 0, verified.stderr
    assert f"{len(lock['images'])} images" in verified.stdout and "every digest matches" in verified.stdout

    prefix = f"{registry.host}/{name}"
    repo = f"{helm_repo.url}/{name}"
    pushed = wsm("push", "--bundle", str(bundle), "--registry", prefix, "--helm-repo", repo, "--plain-http",
                 "-o", "json", cwd=tmp_path)
    assert pushed.returncode == 0, pushed.stderr
    report = json.loads(pushed.stdout)
    assert sorted(job["source"] for job in report["images"]) == sorted(image["image"] for image in lock["images"])
    assert {job["result"] for job in report["images"]} == {"sent"}

    # The registry serves each image under its target name with the digest the old lock recorded.
    for image in lock["images"]:
        source = Reference.parse(image["image"])
        where = f":{source.tag}" if source.tag else f"@{source.digest}"
        raw = skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{prefix}/{source.repository}{where}")
        assert sha256(raw) == image["top"]["digest"], image["image"]

    # Each chart, rendered from the internal repository's archive with the values push wrote, uses only
    # images under the internal prefix.
    for chart in lock["charts"]:
        archive = Path(helm_repo.root, name, Path(chart["file"]).name)
        assert sha256(archive.read_bytes()) == chart["digest"]
        rendered = run_helm(helm_home, "template", "x", str(archive), "-f", str(_values(bundle, chart["name"])))
        images = {found.reference.canonical for found in images_in_manifests(rendered.stdout)}
        assert images and all(image.startswith(prefix + "/") for image in images), images


def _values(bundle: Path, chart: str) -> Path:
    """The values file push wrote for `chart`, or the values of the custom resource it wrote for it."""
    plain = bundle / "values" / f"{chart}.yaml"
    if plain.exists():
        return plain
    resource = yaml.safe_load((bundle / "values" / f"{chart}-cr.yaml").read_text())
    extracted = bundle / f"{chart}-from-cr.yaml"
    extracted.write_text(yaml.safe_dump(resource["spec"]["values"]))
    return extracted
