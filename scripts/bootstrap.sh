#!/usr/bin/env bash
# Creates .venv with a Python >= 3.12 (jax 0.11+ needs it) and installs ddjax with its dev extra.
# Re-running is cheap: it reinstalls only when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}

ok() { "$1" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; }

if [ ! -x "$VENV/bin/python" ] || ! ok "$VENV/bin/python"; then
  py=""
  for cand in "${PYTHON:-}" python3.13 python3.12 python3 \
              "$HOME"/.pyenv/versions/3.1[2-9]*/bin/python /usr/local/bin/python3.1[2-9] /usr/bin/python3.1[2-9]; do
    [ -n "$cand" ] || continue
    p=$(command -v "$cand" 2>/dev/null || true)
    if [ -n "$p" ] && ok "$p"; then py=$p; break; fi
  done
  if [ -z "$py" ]; then
    echo "error: ddjax needs Python >= 3.12 (jax 0.11+); none found - install one (e.g. 'pyenv install 3.12') or set PYTHON=/path/to/python3.12" >&2
    exit 2
  fi
  echo "creating $VENV with $py ($("$py" --version 2>&1))"
  rm -rf "$VENV"
  "$py" -m venv "$VENV"
fi

stamp="$VENV/.installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -e ".[dev]"
  touch "$stamp"
fi
