#!/usr/bin/env bash
# Creates .venv with a Python >= 3.12 (jax 0.11+ needs it) and installs ddjax with its dev extra.
# Re-running is cheap: it reinstalls only when pyproject.toml or constraints.txt changed, or other extras or
# constraints are asked for.
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

# The exact versions of constraints.txt (CONSTRAINTS= for none: the newest that pyproject.toml allows); EXTRAS=cuda12
# adds the CUDA wheels. pip's own output goes to $VENV/install.log: one line here, the log's end if it fails.
stamp="$VENV/.installed"
stamped=$(cat "$stamp" 2>/dev/null || true)  # "EXTRAS CONSTRAINTS" of the last install
extras="dev${EXTRAS:+,$EXTRAS}"
missing=0
for e in ${extras//,/ }; do  # extras installed before are kept (no reinstall back and forth)
  case ",${stamped%% *}," in *",$e,"*) ;; *) missing=1 ;; esac
done
[ -n "$stamped" ] && extras=$(echo "${stamped%% *},$extras" | tr ',' '\n' | awk 'NF && !seen[$0]++' | paste -sd, -)
constraints=${CONSTRAINTS-constraints.txt}
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || { [ -n "$constraints" ] && [ "$constraints" -nt "$stamp" ]; } \
   || [ "$missing" = 1 ] || [ "${stamped#* }" != "$constraints" ]; then
  echo "installing ddjax[$extras]${constraints:+ with the versions of $constraints} into $VENV (log: $VENV/install.log)"
  start=$SECONDS
  if ! { "$VENV/bin/python" -m pip install --upgrade pip \
         && PYTHONWARNINGS=ignore "$VENV/bin/python" -m pip install ${constraints:+-c "$constraints"} -e ".[$extras]"; } \
       > "$VENV/install.log" 2>&1; then
    tail -n 20 "$VENV/install.log" >&2
    echo "error: the install failed; the whole log is $VENV/install.log" >&2
    exit 1
  fi
  echo "$extras $constraints" > "$stamp"
  echo "installed in $((SECONDS - start)) s"
fi
