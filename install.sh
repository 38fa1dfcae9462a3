#!/usr/bin/env bash
# Installs wsm into its own virtual environment and puts `wsm` on PATH.
#
#   ./install.sh                     install from this checkout (needs PyPI for the dependencies)
#   ./install.sh --wheels DIR        install offline from a directory of wheels (no index is contacted)
#   ./install.sh --make-wheels DIR   on a connected machine: build wsm's wheel and fetch every dependency's
#                                    wheel into DIR, to carry across the gap with the bundle
#
# PREFIX (default /usr/local as root, ~/.local otherwise): the venv goes to PREFIX/lib/wsm, the command to
# PREFIX/bin/wsm. PYTHON picks the interpreter (default python3, >= 3.10).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
PYTHON=${PYTHON:-python3}
if [ "$(id -u)" -eq 0 ]; then PREFIX=${PREFIX:-/usr/local}; else PREFIX=${PREFIX:-$HOME/.local}; fi

die() { echo "install.sh: $*" >&2; exit 1; }

wheels=""
case "${1:-}" in
  "") ;;
  --wheels) [ -n "${2:-}" ] || die "--wheels needs a directory of wheels"; wheels=$(cd "$2" && pwd) || die "no directory $2" ;;
  --make-wheels)
    [ -n "${2:-}" ] || die "--make-wheels needs a directory to write wheels to"
    mkdir -p "$2"
    "$PYTHON" -m pip wheel --quiet --disable-pip-version-check --wheel-dir "$2" "$here"
    echo "install.sh: wheels for wsm and its dependencies are in $2; offline: ./install.sh --wheels $2"
    exit 0 ;;
  -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
  *) die "unknown option $1 (see --help)" ;;
esac

"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || die "$PYTHON is older than 3.10"
venv="$PREFIX/lib/wsm"
"$PYTHON" -m venv --clear "$venv" || die "could not create a virtual environment in $venv (python3-venv installed?)"
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)
if [ -n "$wheels" ]; then
  "${pip[@]}" --no-index --find-links "$wheels" wsm || die "the wheels in $wheels do not hold wsm and all it needs"
else
  "${pip[@]}" "$here"
fi
mkdir -p "$PREFIX/bin"
ln -sf "$venv/bin/wsm" "$PREFIX/bin/wsm"
echo "install.sh: installed $("$venv/bin/wsm" --version) as $PREFIX/bin/wsm"
case ":$PATH:" in *":$PREFIX/bin:"*) ;; *) echo "install.sh: add $PREFIX/bin to PATH" ;; esac
