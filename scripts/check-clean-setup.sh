#!/usr/bin/env bash
# CI: README's two commands on a stock machine, in a fresh clone of this checkout's HEAD, with a PATH of the
# system directories only (no pyenv, no venv, no wsm) and so Debian's own /usr/bin/python3:
#   1. `./install.sh && wsm list`, with PREFIX in a temporary directory (nothing lands in /usr/local);
#   2. README's test command: test-prereqs.sh makes .venv from the system python3, then mypy, then pytest on
#      a quick part of the suite (the full suite runs in .ci/run's step before this one, on the same code;
#      test_tool.py runs the bundle's tools/wsm.pyz on the system python3 too; test_cli_list.py once caught
#      a failure only Debian's python3 showed).
# It also checks that the system interpreter's packages are the same afterwards. Needs the package index
# (PyPI), as the set-up itself does; apt packages and helm already installed are reused.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
system_path=/usr/sbin:/usr/bin:/sbin:/bin
work=$(mktemp -d /tmp/wsm-clean-setup.XXXXXX)
trap 'rm -rf "$work"' EXIT
clean() { env -i PATH="$system_path" HOME="$HOME" LANG=C.UTF-8 "$@"; }
say() { echo "check-clean-setup: $*"; }
system_packages() {
  /usr/bin/python3 -c 'import sys, site; print(sys.version); print(site.getsitepackages())'
  find /usr/lib/python3/dist-packages /usr/local/lib/python3* -maxdepth 2 2>/dev/null | sort
}

[ "$(clean bash -c 'command -v python3')" = /usr/bin/python3 ] || { say "python3 on $system_path is not /usr/bin/python3"; exit 1; }
before=$(system_packages)
git clone --quiet --no-hardlinks "$here" "$work/wsm"
if [ -x "$here/.tools/bin/helm" ]; then  # what test-prereqs.sh fetches; fetching it again proves nothing new
  mkdir -p "$work/wsm/.tools/bin" && cp "$here/.tools/bin/helm" "$work/wsm/.tools/bin/helm"
fi
cd "$work/wsm"

say "./install.sh && wsm list (PREFIX=$work/prefix)"
env -i PATH="$work/prefix/bin:$system_path" HOME="$HOME" LANG=C.UTF-8 PREFIX="$work/prefix" \
  bash -c './install.sh && wsm list' >"$work/install.log" 2>&1 || { cat "$work/install.log"; exit 1; }
grep -q "^7 images, charts: " "$work/install.log" || { cat "$work/install.log"; say "wsm list printed no release"; exit 1; }
[ "$(readlink -f "$work/prefix/lib/wsm/bin/python3")" = "$(readlink -f /usr/bin/python3)" ] \
  || { say "install.sh's venv is not made from /usr/bin/python3"; exit 1; }

say "bash scripts/test-prereqs.sh && .venv/bin/python -m mypy && .venv/bin/python -m pytest -q (quick part)"
clean bash scripts/test-prereqs.sh
grep -qx "home = /usr/bin" .venv/pyvenv.cfg || { say ".venv is not made from /usr/bin/python3"; cat .venv/pyvenv.cfg; exit 1; }
clean .venv/bin/python -m mypy
clean .venv/bin/python -m pytest -q -p no:cacheprovider tests/test_tool.py tests/test_cli_truth.py tests/test_cli_list.py

[ "$(system_packages)" = "$before" ] || { say "the system interpreter's packages changed"; exit 1; }
say "ok: a fresh clone sets up and tests with the system's python3 and PATH only"
