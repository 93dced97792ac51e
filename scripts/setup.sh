#!/usr/bin/env bash
# Set up twincell on a fresh Debian machine: system libraries, a virtualenv in .venv, the
# package and its dev tools. Safe to rerun; it only installs what is missing.
#
#   bash scripts/setup.sh                    # what the simulator, detectors and tests need:
#                                            # torch 2.13.0 (CPU) for the learned detectors,
#                                            # open3d (+ Debian's libusb) for the 3D detector,
#                                            # ray for `twincell study --executor ray`
#
# `--extras torch,3d` (or TWINCELL_EXTRAS) is still accepted; both are always installed.
set -euo pipefail
cd "$(dirname "$0")/.."

EXTRAS="${TWINCELL_EXTRAS:-}"
while [ $# -gt 0 ]; do
  case "$1" in
    --extras) EXTRAS="${2:?--extras needs a list, e.g. torch,3d}"; shift 2 ;;
    --extras=*) EXTRAS="${1#--extras=}"; shift ;;
    *) echo "setup.sh: unknown option $1 (allowed: --extras torch,3d)" >&2; exit 2 ;;
  esac
done
want_3d=1  # open3d: COSARAD (the 3D detector) and its tests need it
IFS=',' read -ra _extras <<< "$EXTRAS"
for e in "${_extras[@]}"; do
  case "$e" in
    torch) ;;  # always installed now
    3d) want_3d=1 ;;
    "") ;;
    *) echo "setup.sh: unknown extra '$e' (allowed: torch, 3d)" >&2; exit 2 ;;
  esac
done

PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
if ! "$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  echo "twincell needs Python 3.11 (bpy, the Blender backend, is built for it); found $("$PY" --version 2>&1)." >&2
  echo "Set PYTHON=/path/to/python3.11 and rerun." >&2
  exit 1
fi

# Headless rendering: pyrender uses EGL from Mesa (software rasteriser, no GPU needed).
DEB_PKGS=(libegl1 libegl-mesa0 libgl1 libgl1-mesa-dri libglib2.0-0)
# bpy (Blender as a module, the photoreal backend) links against these X11 client libraries
# even when it renders headless with Cycles on the CPU.
DEB_PKGS+=(libx11-6 libxrender1 libxfixes3 libxi6 libxkbcommon0 libsm6 libice6 libxext6 libxxf86vm1)
# open3d's wheel links against libusb.
((want_3d)) && DEB_PKGS+=(libusb-1.0-0)
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
  .venv/bin/python -m pip install -q -e ".[dev,blender]"
  touch "$stamp"
fi
# The learned detectors' backbones (detectors/backbones/). Exactly this spelling: it takes
# the local CPU build; a looser one can pull CUDA wheels.
if ! .venv/bin/python -c 'import torch' 2>/dev/null; then
  .venv/bin/python -m pip install -q "torch==2.13.0"
fi
if ((want_3d)) && ! .venv/bin/python -c 'import open3d' 2>/dev/null; then
  .venv/bin/python -m pip install -q -e ".[dev,blender,3d]"
fi
# Ray: `twincell study --executor ray` and its tests (a local Ray instance).
if ! .venv/bin/python -c 'import ray' 2>/dev/null; then
  .venv/bin/python -m pip install -q -e ".[dev,blender,ray]"
fi
echo "twincell is set up in .venv"
