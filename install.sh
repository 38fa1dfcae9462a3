#!/usr/bin/env bash
# Installs wsm into its own virtual environment and puts `wsm` on PATH.
#
#   ./install.sh                     install from this checkout (needs PyPI for the dependencies)
#   ./install.sh --wheels DIR        install offline from a directory of wheels (no index is contacted)
#   ./install.sh --make-wheels DIR [--python-version X.Y] [--platform TAG]...
#                                    on a connected machine: wsm's wheel and every dependency's wheel in DIR,
#                                    to carry across the gap with the bundle. Without the two options the
#                                    wheels fit this machine's interpreter; with them they fit the target's,
#                                    e.g. --python-version 3.12 --platform manylinux2014_x86_64 (Ubuntu 24.04),
#                                    --python-version 3.10 --platform manylinux2014_aarch64 (as
#                                    `pip download --python-version --platform --only-binary=:all:`).
#
# PREFIX (default /usr/local as root, ~/.local otherwise): the venv goes to PREFIX/lib/wsm, the command to
# PREFIX/bin/wsm. PYTHON picks the interpreter (default python3, >= 3.10).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
PYTHON=${PYTHON:-python3}
if [ "$(id -u)" -eq 0 ]; then PREFIX=${PREFIX:-/usr/local}; else PREFIX=${PREFIX:-$HOME/.local}; fi

die() { echo "install.sh: $*" >&2; exit 1; }

usage_lines=$(grep -n '^set -euo' "$0" | cut -d: -f1)
mode=install wheels="" target_python="" platforms=()
while [ $# -gt 0 ]; do
  case "$1" in
    --wheels) [ -n "${2:-}" ] || die "--wheels needs a directory of wheels"
      mode=offline; wheels=$(cd "$2" && pwd) || die "no directory $2"; shift ;;
    --make-wheels) [ -n "${2:-}" ] || die "--make-wheels needs a directory to write wheels to"
      mode=make; wheels=$2; shift ;;
    --python-version) [[ "${2:-}" =~ ^3\.(1[0-9]|[2-9][0-9])$ ]] || die "--python-version needs a version like 3.12 (wsm needs 3.10 or newer)"
      target_python=$2; shift ;;
    --platform) [ -n "${2:-}" ] || die "--platform needs a wheel platform tag, e.g. manylinux2014_x86_64"
      platforms+=("$2"); shift ;;
    -h|--help) sed -n "2,$((usage_lines - 1))p" "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
  shift
done
if [ "$mode" != make ] && { [ -n "$target_python" ] || ((${#platforms[@]})); }; then
  die "--python-version and --platform go with --make-wheels DIR"
fi

if [ "$mode" = make ]; then
  mkdir -p "$wheels"
  pip=("$PYTHON" -m pip --quiet --disable-pip-version-check)
  if [ -z "$target_python" ] && ! ((${#platforms[@]})); then
    "${pip[@]}" wheel --wheel-dir "$wheels" "$here"
  else
    # wsm itself is pure Python; its dependencies come as the target's binary wheels (pip cannot build
    # for another interpreter or platform).
    "${pip[@]}" wheel --no-deps --wheel-dir "$wheels" "$here"
    target=(--only-binary=:all: --dest "$wheels")
    [ -z "$target_python" ] || target+=(--python-version "$target_python")
    for platform in ${platforms[@]+"${platforms[@]}"}; do target+=(--platform "$platform"); done
    "${pip[@]}" download "${target[@]}" "$wheels"/wsm-*.whl \
      || die "no wheels of wsm's dependencies for Python ${target_python:-(this one)} on ${platforms[*]:-this platform}"
  fi
  echo "install.sh: wheels for wsm and its dependencies are in $wheels; offline: ./install.sh --wheels $wheels"
  exit 0
fi

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
