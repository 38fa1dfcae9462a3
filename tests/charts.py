"""Small synthetic charts made by the tests, shaped like the real W&B platform chart.

`platform` (0.3.0, appVersion 2.0.0) depends on:
- `svc` three times under aliases `app`, `console`, `weave`, each switched by `<alias>.install`
  (weave is off by default), with `{repository, tag}` images and a hard-coded initContainer in the template;
- `redis` (a vendored .tgz, bitnami style `{registry, repository, tag}`, honouring `global.imageRegistry`,
  with a `helm.sh/images` annotation) which itself vendors `metrics` as a nested .tgz (tag from appVersion);
- `extras`, enabled only by `tags.extras`;
and renders a CronJob whose image is hard-coded in the template (found only with --render), plus a `tool`
image pinned by digest.

Pull secrets, in each shape charts take them: `svc` reads its own `imagePullSecrets` ({name} maps), `redis`
and `metrics` merge `global.imagePullSecrets` and `image.pullSecrets` as bitnami's helper does (strings or
maps), the `tool` Job reads `global.imagePullSecrets` ({name} maps), and the operator chart its
`image.pullSecrets` as names (`- name: {{ . }}`, as W&B's operator chart does).
"""

from __future__ import annotations

import io
import tarfile
import textwrap
from pathlib import Path

import yaml

TOOL_DIGEST = "sha256:" + "ab" * 32

SVC_DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: {{ .Release.Name }}-{{ .Chart.Name }}-{{ .Values.component }}}
spec:
  selector: {matchLabels: {app: {{ .Values.component }}}}
  template:
    metadata: {labels: {app: {{ .Values.component }}}}
    spec:
      {{- with .Values.imagePullSecrets }}
      imagePullSecrets: {{- toYaml . | nindent 8 }}
      {{- end }}
      initContainers:
        - name: wait
          image: docker.io/library/busybox:1.36
      containers:
        - name: main
          image: "{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}"
"""

# Pull secrets as bitnami's common.images.renderPullSecrets reads them: global and image lists, strings or maps.
BITNAMI_PULL_SECRETS = """\
      {{- $secrets := list }}
      {{- range ((.Values.global).imagePullSecrets) }}{{ if kindIs "map" . }}{{ $secrets = append $secrets .name }}{{ else }}{{ $secrets = append $secrets . }}{{ end }}{{ end }}
      {{- range ((.Values.image).pullSecrets) }}{{ if kindIs "map" . }}{{ $secrets = append $secrets .name }}{{ else }}{{ $secrets = append $secrets . }}{{ end }}{{ end }}
      {{- if $secrets }}
      imagePullSecrets:
        {{- range ($secrets | uniq) }}
        - name: {{ . }}
        {{- end }}
      {{- end }}
"""

REDIS_STATEFULSET = """\
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: {{ .Release.Name }}-redis}
spec:
  serviceName: redis
  selector: {matchLabels: {app: redis}}
  template:
    metadata: {labels: {app: redis}}
    spec:
""" + BITNAMI_PULL_SECRETS + """\
      containers:
        - name: redis
          image: {{ printf "%s/%s:%s" (.Values.global.imageRegistry | default .Values.image.registry) .Values.image.repository .Values.image.tag }}
"""

METRICS_DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: {{ .Release.Name }}-metrics}
spec:
  selector: {matchLabels: {app: metrics}}
  template:
    metadata: {labels: {app: metrics}}
    spec:
""" + BITNAMI_PULL_SECRETS + """\
      containers:
        - name: exporter
          image: "{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}"
"""

PLATFORM_TEMPLATES = {
    "cronjob.yaml": """\
apiVersion: batch/v1
kind: CronJob
metadata: {name: {{ .Release.Name }}-cleanup}
spec:
  schedule: "0 3 * * *"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          containers:
            - name: cleanup
              image: docker.io/library/alpine:3.19
""",
    "tool.yaml": """\
apiVersion: batch/v1
kind: Job
metadata:
  name: {{ .Release.Name }}-tool
  annotations: {"helm.sh/hook": post-install}
spec:
  template:
    spec:
      restartPolicy: Never
      {{- with .Values.global.imagePullSecrets }}
      imagePullSecrets: {{- toYaml . | nindent 8 }}
      {{- end }}
      containers:
        - name: tool
          image: "{{ .Values.tool.image.repository }}@{{ .Values.tool.image.digest }}"
""",
}


def write_chart(root: Path, chart_yaml: dict, values: dict, templates: dict[str, str] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "Chart.yaml").write_text(yaml.safe_dump(chart_yaml, sort_keys=False))
    (root / "values.yaml").write_text(yaml.safe_dump(values, sort_keys=False))
    for name, text in (templates or {}).items():
        (root / "templates").mkdir(exist_ok=True)
        (root / "templates" / name).write_text(text)
    return root


def package(chart_dir: Path, dest_dir: Path) -> Path:
    """A .tgz as `helm package` lays it out (one top directory named after the chart)."""
    meta = yaml.safe_load((chart_dir / "Chart.yaml").read_text())
    dest_dir.mkdir(parents=True, exist_ok=True)
    out = dest_dir / f"{meta['name']}-{meta['version']}.tgz"
    with tarfile.open(out, "w:gz") as tar:
        tar.add(chart_dir, arcname=meta["name"])
    return out


def build_platform_chart(workdir: Path, version: str = "0.3.0", *, hardcoded: bool = True) -> Path:
    """The platform chart as a directory under `workdir`; returns its path.

    `hardcoded=False` leaves out the images written into templates (the CronJob, the init container), for
    an end-to-end install that must pull from the internal registry only.
    """
    svc_deployment = SVC_DEPLOYMENT if hardcoded else SVC_DEPLOYMENT.replace(
        "      initContainers:\n        - name: wait\n          image: docker.io/library/busybox:1.36\n", "")
    svc = write_chart(
        workdir / "src" / "svc",
        {"apiVersion": "v2", "name": "svc", "version": "1.0.0", "appVersion": "1.0.0"},
        {"component": "svc", "image": {"repository": "acme/svc", "tag": "latest"}, "imagePullSecrets": []},
        {"deployment.yaml": svc_deployment},
    )
    metrics = write_chart(
        workdir / "src" / "metrics",
        {"apiVersion": "v2", "name": "metrics", "version": "0.1.0", "appVersion": "0.15.1"},
        {"image": {"repository": "oliver006/redis_exporter", "tag": ""}},
        {"deployment.yaml": METRICS_DEPLOYMENT},
    )
    redis = write_chart(
        workdir / "src" / "redis",
        {
            "apiVersion": "v2",
            "name": "redis",
            "version": "18.19.4",
            "appVersion": "7.2.4",
            "dependencies": [{"name": "metrics", "version": "0.1.0", "condition": "metrics.enabled"}],
            "annotations": {"helm.sh/images": "- name: redis\n  image: docker.io/bitnami/redis:7.2.4-debian-12-r9\n"},
        },
        {
            "global": {"imageRegistry": "", "imagePullSecrets": []},
            "image": {"registry": "docker.io", "repository": "bitnami/redis", "tag": "7.2.4-debian-12-r9",
                      "pullSecrets": []},
            "metrics": {"enabled": True},
        },
        {"statefulset.yaml": REDIS_STATEFULSET},
    )
    package(metrics, redis / "charts")
    extras = write_chart(
        workdir / "src" / "extras",
        {"apiVersion": "v2", "name": "extras", "version": "0.1.0", "appVersion": "3.3.3"},
        {"image": {"repository": "acme/extras"}},
        {"deployment.yaml": METRICS_DEPLOYMENT.replace("metrics", "extras")},
    )
    platform = write_chart(
        workdir / "platform",
        {
            "apiVersion": "v2",
            "name": "platform",
            "version": version,
            "appVersion": "2.0.0",
            "dependencies": [
                {"name": "svc", "alias": "app", "version": "1.0.0", "condition": "app.install"},
                {"name": "svc", "alias": "console", "version": "1.0.0", "condition": "console.install"},
                {"name": "svc", "alias": "weave", "version": "1.0.0", "condition": "weave.install,global.weave"},
                {"name": "redis", "version": "18.x", "condition": "redis.install"},
                {"name": "extras", "version": "0.1.0", "tags": ["extras"]},
            ],
        },
        {
            "global": {"imagePullSecrets": []},
            "tags": {"extras": False},
            "app": {"install": True, "component": "app", "image": {"repository": "acme/app", "tag": "latest"}},
            "console": {"install": True, "component": "console", "image": {"repository": "acme/console", "tag": "4.5.6"}},
            "weave": {"install": False, "component": "weave", "image": {"repository": "acme/weave", "tag": "7.7.7"}},
            "redis": {"install": True},
            "tool": {"image": {"repository": "acme/tool", "digest": TOOL_DIGEST}},
        },
        PLATFORM_TEMPLATES if hardcoded else {"tool.yaml": PLATFORM_TEMPLATES["tool.yaml"]},
    )
    package(svc, platform / "charts")
    package(redis, platform / "charts")
    package(extras, platform / "charts")
    return platform


def malicious_tgz(path: Path, member: str, *, link_target: str | None = None, size: int = 10) -> Path:
    """A chart-like archive with one hostile member (a path, or a symlink to `link_target`)."""
    with tarfile.open(path, "w:gz") as tar:
        chart = yaml.safe_dump({"apiVersion": "v2", "name": "evil", "version": "1.0.0"}).encode()
        info = tarfile.TarInfo("evil/Chart.yaml")
        info.size = len(chart)
        tar.addfile(info, io.BytesIO(chart))
        info = tarfile.TarInfo(member)
        if link_target is not None:
            info.type, info.linkname = tarfile.SYMTYPE, link_target
            tar.addfile(info)
        else:
            info.size = size
            tar.addfile(info, io.BytesIO(b"\0" * size))
    return path


def dedent(text: str) -> str:
    return textwrap.dedent(text).lstrip()


OPERATOR_DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: {{ .Release.Name }}-controller}
spec:
  selector: {matchLabels: {app: controller}}
  template:
    metadata: {labels: {app: controller}}
    spec:
      imagePullSecrets:
        {{- range .Values.image.pullSecrets }}
        - name: {{ . }}
        {{- end }}
      containers:
        - name: manager
          image: "{{ .Values.image.repository }}:{{ .Values.image.tag }}"
          env:
            - {name: AIRGAPPED, value: {{ .Values.airgapped | quote }}}
"""


def build_operator_chart(workdir: Path) -> Path:
    """An operator chart like W&B's: one controller image and an `airgapped` switch, off by default."""
    return write_chart(
        workdir / "operator",
        {"apiVersion": "v2", "name": "operator", "version": "1.3.8", "appVersion": "1.0.0"},
        {"image": {"repository": "acme/controller", "tag": "latest", "pullSecrets": []}, "airgapped": False},
        {"deployment.yaml": OPERATOR_DEPLOYMENT},
    )


# --- a chart of the patterns differential rendering must bind (tests/test_bind.py) --------------------------------

NODE_EXPORTER_HELPERS = """\
{{- define "ne.image" -}}
{{- $tag := .Values.image.tag | default (printf "v%s" .Chart.AppVersion) -}}
{{ printf "%s/%s:%s" .Values.image.registry .Values.image.repository $tag }}
{{- end -}}
"""

def workload(kind: str, name: str, image: str) -> str:
    """A one-container workload template of `kind` whose container image is the template text `image`."""
    return (
        f"apiVersion: apps/v1\nkind: {kind}\nmetadata: {{name: {{{{ .Release.Name }}}}-{name}}}\nspec:\n"
        f"  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n"
        f"    spec:\n      containers:\n        - name: {name}\n          image: {image}\n"
    )


def helm_test_pod(container: str, image: str) -> str:
    """A helm test hook: a Pod with one container whose image is the template text `image`."""
    return (
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {{ .Release.Name }}-test\n"
        '  annotations: {"helm.sh/hook": test}\nspec:\n  restartPolicy: Never\n  containers:\n'
        f"    - name: {container}\n      image: {image}\n"
    )


# A Deployment of the `{repository, tag}` image at `image`: a chart whose templates use its values image.
IMAGE_DEPLOYMENT = workload("Deployment", "main", '"{{ .Values.image.repository }}:{{ .Values.image.tag }}"')
DAEMONSET = workload("DaemonSet", "node-exporter", '{{ include "ne.image" . | quote }}')
KSM_DEPLOYMENT = workload("Deployment", "ksm",
                          '"{{ .Values.image.repository }}:v{{ .Values.image.tag | default .Chart.AppVersion }}"')
EXPORTER_DEPLOYMENT = "{{- if .Values.enabled }}\n" + workload(
    "Deployment", "exporter", '"{{ .Values.image.repository }}:{{ .Values.image.tag }}"') + "{{- end }}\n"
DB_STATEFULSET = workload(
    "StatefulSet", "db", '{{ .Values.global.imageRegistry | default .Values.image.registry | default "docker.io" }}'
    "/{{ .Values.image.repository }}:{{ .Values.image.tag }}")

STACK_TEMPLATES = {
    "app.yaml": """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: {{ .Release.Name }}-app}
spec:
  template:
    spec:
      initContainers:
        - name: wait
          image: busybox:1.36
      containers:
        - name: app
          image: "{{ .Values.app.image.repository }}:{{ tpl .Values.app.image.tag . }}"
          args: ["--port=8080", "--sidecar-image={{ .Values.sidecar.image.repository }}:{{ .Values.sidecar.image.tag }}"]
          env:
            - {name: HELPER_IMAGE, value: {{ .Values.helper.image | quote }}}
            - {name: MODE, value: "fast"}
""",
    "configmap.yaml": """\
apiVersion: v1
kind: ConfigMap
metadata: {name: {{ .Release.Name }}-sidecars}
data:
  sidecars.yaml: |
    inject:
      image: {{ .Values.cm.image.registry }}/{{ .Values.cm.image.repository }}:{{ .Values.cm.image.tag }}
      url: https://example.com/docs
""",
    "prometheus.yaml": """\
apiVersion: monitoring.coreos.com/v1
kind: Prometheus
metadata: {name: {{ .Release.Name }}}
spec:
  image: {{ printf "%s/%s:%s" .Values.prom.image.registry .Values.prom.image.repository .Values.prom.image.tag }}
  replicas: 1
""",
    "test-hook.yaml": helm_test_pod("test", "{{ .Values.test.image }}"),
}


def build_bind_chart(workdir: Path) -> Path:
    """`stack` (appVersion 9.9.9): every pattern of issue 9 in one chart.

    - `node-exporter` (1.6.1): tag `"v" + appVersion` in an `include`d helper, registry/repository/tag printf-joined;
    - `ksm` (2.10.0): `:v{{ tag | default appVersion }}` in the template;
    - `exporters` (alias of `exporter`): condition `exporters.install` true, but its template tests `.enabled`
      (false): its image never renders;
    - `primary` (alias of `db`): a `global.imageRegistry | default registry | default "docker.io"` chain; it
      declares `instance` (prometheus 24.*.*, a remote dependency, not vendored) switched off by
      `instance.install`;
    - the root: a tag through `tpl`, an image in `args`, one in an `env` value, one in a ConfigMap, a custom
      resource's `spec.image`, a test hook, and a hard-coded initContainer (busybox:1.36).
    """
    instance = {"name": "prometheus", "alias": "instance", "version": "24.*.*", "condition": "instance.install",
                "repository": "https://prometheus-community.github.io/helm-charts"}
    subcharts = [  # name, version, appVersion, dependencies, values, templates
        ("node-exporter", "4.24.0", "1.6.1", [],
         {"image": {"registry": "quay.io", "repository": "prometheus/node-exporter", "tag": ""}},
         {"_helpers.tpl": NODE_EXPORTER_HELPERS, "daemonset.yaml": DAEMONSET}),
        ("ksm", "5.15.2", "2.10.0", [],
         {"image": {"repository": "registry.k8s.io/kube-state-metrics/kube-state-metrics", "tag": ""}},
         {"deployment.yaml": KSM_DEPLOYMENT}),
        ("exporter", "0.2.0", "1.0", [], {"enabled": False, "image": {"repository": "acme/exporter", "tag": "1.0"}},
         {"deployment.yaml": EXPORTER_DEPLOYMENT}),
        ("db", "13.2.0", "16.1.0", [instance],
         {"global": {"imageRegistry": ""}, "instance": {"install": False},
          "image": {"registry": "docker.io", "repository": "bitnami/postgresql", "tag": "16.1.0"}},
         {"statefulset.yaml": DB_STATEFULSET}),
    ]
    sources = [
        write_chart(workdir / "src" / name, {"apiVersion": "v2", "name": name, "version": version,
                                              "appVersion": app_version, "dependencies": dependencies},
                    values, templates)
        for name, version, app_version, dependencies, values, templates in subcharts
    ]
    stack = write_chart(
        workdir / "stack",
        {"apiVersion": "v2", "name": "stack", "version": "1.0.0", "appVersion": "9.9.9",
         "dependencies": [
             {"name": "node-exporter", "version": "4.x"},
             {"name": "ksm", "version": "5.x"},
             {"name": "exporter", "alias": "exporters", "version": "0.2.0", "condition": "exporters.install"},
             {"name": "db", "alias": "primary", "version": "13.x", "condition": "primary.enabled"},
         ]},
        {
            "global": {},
            "exporters": {"install": True},
            "primary": {"enabled": True},
            "app": {"image": {"repository": "acme/app", "tag": "{{ .Chart.AppVersion }}"}},
            "sidecar": {"image": {"repository": "acme/sidecar", "tag": "3.1"}},
            "helper": {"image": "acme/helper:2.0"},
            "cm": {"image": {"registry": "ghcr.io", "repository": "acme/cm", "tag": "1.2"}},
            "prom": {"image": {"registry": "quay.io", "repository": "prometheus/prometheus", "tag": "v2.48.0"}},
            "test": {"image": "acme/tester:0.1"},
        },
        STACK_TEMPLATES,
    )
    for sub in sources:
        package(sub, stack / "charts")
    return stack
