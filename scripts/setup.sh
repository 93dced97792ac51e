#!/usr/bin/env bash
# Set up twincell on a fresh Debian machine: system libraries, a virtualenv in .venv, the
# package and its dev tools. Safe to rerun; it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
if ! "$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  echo "twincell needs Python 3.11 (bpy, next, needs it too); found $("$PY" --version 2>&1)." >&2
  echo "Set PYTHON=/path/to/python3.11 and rerun." >&2
  exit 1
fi

# Headless rendering: pyrender uses EGL from Mesa (software rasteriser, no GPU needed).
DEB_PKGS=(libegl1 libegl-mesa0 libgl1 libgl1-mesa-dri libglib2.0-0)
missing=()
for p in "${DEB_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" = 0 ]; then
    echo "installing system packages: ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "missing system packages: ${missing[*]}; run: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
fi

[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.twincell-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[dev]"
  touch "$stamp"
fi
echo "twincell is set up in .venv"
