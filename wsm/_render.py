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


def helm_if_any(explicit: str | None = None) -> str | None:
    """The helm binary as `find_helm` finds it, or None when none was named and PATH has none: for the steps
    that render whenever helm is there (a helm that was named but is not there is still an error)."""
    if explicit or os.environ.get("WSM_HELM") or shutil.which("helm"):
        return find_helm(explicit)
    return None


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


def helm_template(chart: Path, values: dict[str, Any], *, release: str, namespace: str, helm: str | None = None
                  ) -> str:
    """The text `helm template` prints for `chart` with `values` (a user layer over the chart's defaults)."""
    return _helm_template(find_helm(helm), chart, values, release, namespace)


class Renderings:
    """`helm template` outputs of one run, by chart file, values, release and namespace: a check that renders what
    another already rendered (push's proof, then its pull-secret check, of the same written values) reads the
    text again instead of running helm again. A render that failed fails the same way for each caller."""

    def __init__(self, helm: str | None = None) -> None:
        self.helm = helm
        self._outputs: dict[tuple[str, str, str, str], str | RenderError] = {}

    def template(self, chart: Path, values: dict[str, Any], *, release: str, namespace: str) -> str:
        key = (str(chart), yaml.safe_dump(values), release, namespace)
        if key not in self._outputs:
            try:
                self._outputs[key] = helm_template(chart, values, release=release, namespace=namespace, helm=self.helm)
            except RenderError as error:
                self._outputs[key] = error
        output = self._outputs[key]
        if isinstance(output, RenderError):
            raise output
        return output

    def documents(self, chart: Path, values: dict[str, Any], *, release: str, namespace: str
                  ) -> list[tuple[str, object]]:
        """`template`'s documents, each with the `# Source:` template it came from."""
        return list(_documents(self.template(chart, values, release=release, namespace=namespace)))


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
        try:
            result = subprocess.run(argv, capture_output=True, text=True, env=env)
        except OSError as error:
            raise RenderError(f"cannot run helm ({binary}): {error.strerror}", hint=Hint.HELM) from None
    if result.returncode != 0:
        message = " ".join(result.stderr.split())[:400]
        raise RenderError(f"helm template {chart.name} failed: {message}")
    return result.stdout


def images_in_manifests(text: str) -> list[RenderedImage]:
    """Every container image (any kind, any nesting: CronJobs, custom resources) and every `image:` string."""
    found: list[RenderedImage] = []
    for source, kind, document in _mappings(text):
        for image in _images_in(document):
            found.append(RenderedImage(Reference.parse(image), source, kind))
    return found


def _mappings(text: str) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(template, kind, document) of every rendered document that is a mapping."""
    for source, document in _documents(text):
        if isinstance(document, dict):
            yield source, str(document.get("kind", "?")), document


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


# --- every string that can carry an image reference, by where it sits -----------------------------------------

_NOT_IMAGES = ("imagepullpolicy", "imagepullsecrets")
_CORE_API = ("v1", "apps/v1", "batch/v1", "batch/v1beta1")


@dataclass(frozen=True)
class RenderedString:
    """A string of the rendered output that may hold an image reference.

    `location` names it stably across renders of the same chart: `<template> | <kind>/<name> | <field path>`;
    `field` says what it is: container (an `image` of a container of any kind, hooks included), custom-resource
    (an image-named string of a custom resource), args, command, env (a value), configmap (a data value).
    """

    location: str
    field: str
    text: str
    template: str
    kind: str


def rendered_strings(text: str) -> list[RenderedString]:
    """Every string of the output that can hold an image reference (see RenderedString), in order."""
    found: list[RenderedString] = []
    for source, kind, document in _mappings(text):
        metadata = document.get("metadata")
        name = str(metadata.get("name", "?")) if isinstance(metadata, dict) else "?"
        custom = str(document.get("apiVersion", "")) not in _CORE_API or kind not in _CORE_KINDS
        for path, field, value in _strings_in(document, "", custom, kind == "ConfigMap"):
            found.append(RenderedString(f"{source} | {kind}/{name} | {path}", field, value, source, kind))
    return found


_CORE_KINDS = ("Pod", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "ConfigMap",
               "ReplicationController")


def _strings_in(node: object, path: str, custom: bool, configmap: bool) -> Iterator[tuple[str, str, str]]:
    if isinstance(node, dict):
        for key, value in node.items():
            child = f"{path}.{key}" if path else str(key)
            if isinstance(value, str):
                field = _field_of(str(key), path, custom, configmap)
                if field:
                    yield child, field, value
            elif key == "env" and isinstance(value, list):
                for index, item in enumerate(value):
                    if isinstance(item, dict) and isinstance(item.get("value"), str):
                        yield f"{child}[{index}].value", "env", item["value"]
            elif key in ("args", "command") and isinstance(value, list):
                for index, item in enumerate(value):
                    if isinstance(item, str):
                        yield f"{child}[{index}]", str(key), item
            else:
                yield from _strings_in(value, child, custom, configmap)
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from _strings_in(item, f"{path}[{index}]", custom, configmap)


def _field_of(key: str, path: str, custom: bool, configmap: bool) -> str | None:
    if configmap and (path == "data"):
        return "configmap"
    lowered = key.lower()
    if key == "image" and any(part in path for part in CONTAINER_LISTS):
        return "container"
    if custom and "image" in lowered and lowered not in _NOT_IMAGES:
        return "custom-resource"
    return None
