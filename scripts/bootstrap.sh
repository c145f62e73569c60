#!/usr/bin/env bash
# Installs what tminus itself needs on a fresh Debian machine: uv, then the locked Python
# dependencies in .venv. Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
export UV_PYTHON_DOWNLOADS=never
export PATH="$HOME/.local/bin:$PATH"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v python3 >/dev/null 2>&1; then
  echo "bootstrap: installing python3 (Debian)" >&2
  as_root apt-get update -qq && as_root apt-get install -y -qq python3 python3-venv python3-pip
fi
if ! command -v uv >/dev/null 2>&1; then
  echo "bootstrap: installing uv from PyPI" >&2
  if ! python3 -m pip --version >/dev/null 2>&1; then
    as_root apt-get update -qq && as_root apt-get install -y -qq python3-pip python3-venv
  fi
  python3 -m pip install --user --quiet uv 2>/dev/null \
    || python3 -m pip install --user --quiet --break-system-packages uv
fi
# Bytecode compiled at install, not on the first call of each command: the venv's packages
# (--compile-bytecode; a no-op when already compiled) and tminus's own sources (an editable
# install, which uv leaves alone). With PYTHONDONTWRITEBYTECODE=1 nothing else would ever write
# the .pyc files and every call would recompile (~4 s). See "Start-up" in docs/architecture.md.
uv sync --frozen --quiet --compile-bytecode
.venv/bin/python -m compileall -q -j 0 src/tminus
