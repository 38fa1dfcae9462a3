"""A second opinion on a chart's images: `helm template` with the same values, read for every image.

Values discovery knows where an image is set (what the pusher needs); rendering knows what the templates
actually use, including references hard-coded in templates. Disagreements are reported, never dropped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ._exceptions import Hint, RenderError
from ._reference import Reference, looks_like_reference
from ._yaml import load_yaml

CONTAINER_LISTS = ("containers", "initContainers", "ephemeralContainers")


@dataclass(frozen=True)
class RenderedImage:
    reference: Reference
    template: str  # the `# Source:` path helm prints, e.g. "app/charts/db/templates/job.yaml"
    kind: str


def find_helm(explicit: str | None = None) -> str:
    """The helm binary: `explicit` (the caller's choice), else $WSM_HELM, else `helm` on PATH. A binary named
    by the first two that is not there is an error, not a reason to fall back to another helm."""
    for given, where in ((explicit, "as given"), (os.environ.get("WSM_HELM"), "from WSM_HELM")):
        if given:
            found = shutil.which(given)  # a path to an executable, or a name on PATH
            if found is None:
                raise RenderError(f"helm {given} ({where}) is not an executable file", hint=Hint.HELM)
            return found
    found = shutil.which("helm")
    if found is None:
        raise RenderError("rendering the charts needs helm: none was given, WSM_HELM is not set, and PATH has no "
                          "helm", hint=Hint.HELM)
    return found


def render_images(
    chart: Path, values: dict[str, Any], *, release: str, namespace: str, helm: str | None = None
) -> list[RenderedImage]:
    """Run `helm template` on `chart` (a .tgz or directory) with `values` and collect every image."""
    return images_in_manifests(_helm_template(find_helm(helm), chart, values, release, namespace))


def render_documents(
    chart: Path, values: dict[str, Any], *, release: str, namespace: str, helm: str | None = None
) -> list[tuple[str, object]]:
    """`helm template`'s documents, each with the `# Source:` template it came from."""
    return list(_documents(_helm_template(find_helm(helm), chart, values, release, namespace)))


def _helm_template(binary: str, chart: Path, values: dict[str, Any], release: str, namespace: str) -> str:
    with tempfile.TemporaryDirectory(prefix="wsm-render-") as scratch:
        values_file = Path(scratch) / "values.yaml"
        values_file.write_text(yaml.safe_dump(values))
        env = {
            **os.environ,
            "HELM_CONFIG_HOME": f"{scratch}/config",
            "HELM_CACHE_HOME": f"{scratch}/cache",
            "HELM_DATA_HOME": f"{scratch}/data",
        }
        argv = [binary, "template", release, str(chart), "--namespace", namespace, "-f", str(values_file)]
        result = subprocess.run(argv, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        message = " ".join(result.stderr.split())[:400]
        raise RenderError(f"helm template {chart.name} failed: {message}")
    return result.stdout


def images_in_manifests(text: str) -> list[RenderedImage]:
    """Every container image (any kind, any nesting: CronJobs, custom resources) and every `image:` string."""
    found: list[RenderedImage] = []
    for source, document in _documents(text):
        if not isinstance(document, dict):
            continue
        kind = str(document.get("kind", "?"))
        for image in _images_in(document):
            found.append(RenderedImage(Reference.parse(image), source, kind))
    return found


def _documents(text: str) -> Iterator[tuple[str, object]]:
    source = "?"
    for chunk in text.split("\n---"):
        for line in chunk.splitlines():
            if line.startswith("# Source: "):
                source = line.removeprefix("# Source: ").strip()
                break
        # Templates are upstream content too: their output gets the same budget as any document wsm reads.
        yield source, load_yaml(chunk, f"helm template output {source}", RenderError)


def _images_in(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in CONTAINER_LISTS and isinstance(value, list):
                for container in value:
                    image = container.get("image") if isinstance(container, dict) else None
                    if isinstance(image, str) and looks_like_reference(image):
                        yield image
            elif key == "image" and isinstance(value, str) and looks_like_reference(value):
                yield value
            else:
                yield from _images_in(value)
    elif isinstance(node, list):
        for item in node:
            yield from _images_in(item)
