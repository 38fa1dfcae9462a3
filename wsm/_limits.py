"""Budgets for content from upstream (charts, values, manifests, index.yaml), in one place.

Everything a chart repository or a release manifest hands wsm is treated as hostile: these limits stop an alias
bomb, a deeply nested document, a compression bomb or a tower of sub-charts with a one-line error, long before
memory runs out. They are generous for real charts (W&B's and bitnami's values files are a few hundred KB with
a few thousand nodes; their sub-charts nest two or three levels) and are documented in README.
"""

from __future__ import annotations

# YAML documents: chart values.yaml and Chart.yaml, release manifests, `-f` files, mapping files, the user's
# values file wsm rewrites.
MAX_YAML_BYTES = 4 * 1024 * 1024
MAX_YAML_NODES = 250_000  # every node, aliases counted as often as they are used
MAX_YAML_DEPTH = 64  # nested mappings and sequences
MAX_ALIAS_NODES = 100_000  # nodes created through aliases (a billion-laughs bomb is a few hundred bytes)

# A repository's index.yaml lists thousands of charts: more bytes and nodes, the same alias and depth budget.
MAX_INDEX_YAML_BYTES = 64 * 1024 * 1024
MAX_INDEX_YAML_NODES = 8_000_000

# Values after merging (`--set a.b.c...` can nest without YAML).
MAX_VALUES_DEPTH = 100

# Chart trees: what one archive and the whole tree (a chart with all its nested sub-chart archives) may
# inflate to, and how deep sub-charts may nest.
MAX_ARCHIVE_INFLATED_BYTES = 256 * 1024 * 1024
MAX_TREE_INFLATED_BYTES = 256 * 1024 * 1024
MAX_ARCHIVE_MEMBERS = 20_000
MAX_SUBCHART_DEPTH = 10

# Names (Helm and Kubernetes rules; wsm's own cap for file names built from chart names).
MAX_CHART_NAME = 250  # Helm's own limit (`helm create`)
MAX_RELEASE_NAME = 53
MAX_SECRET_NAME = 253  # a Kubernetes object name: a DNS-1123 subdomain
MAX_NAMESPACE = 63
