#!/usr/bin/env bash
# One command for a lent GPU machine (the workplace's `device` tool) or any CUDA machine with jax[cuda], inside
# 10 minutes:
#   1. says what is there (GPU, driver, jax and its devices, package versions);
#   2. `python -m benchmarks.double_descent_gpu --torch-only`: PyTorch one width at a time, in a process of its
#      own with the GPU to itself (about a minute; its JSON is written after every width);
#   3. `python -m benchmarks.double_descent_gpu`: ResNet18k widths 1..64, every bucket of the first configuration,
#      then the other strategies and conv forms bucket by bucket (widest first) while the budget lasts, then the
#      widest bucket with 5 trials; it reads PyTorch's JSON and reports the speedup;
#   4. checks the CUDA path end to end: the double-descent `smoke` preset through the CLI (train, evaluate,
#      checkpoint, results, figures), then `--resume` of the finished run.
# Each step has a hard time limit (SIGINT, then SIGKILL 10-15 s later), so one slow compile cannot take the
# others' time. Everything lands in $OUT (default benchmarks/results): the JSONs, rewritten after every
# measurement so that a step cut short keeps what it measured, and gpu_check.log with every step's whole output.
# Commit the JSONs.
#
# Packages: it runs from the repository root with the machine's python3 (PYTHON=...), no install. Wheels in .whl/
# (pure-Python flax, optax, orbax-checkpoint, mnist1d ... of the versions pyproject.toml asks for) are installed
# into /tmp/site first when present (name .whl in the device call's carry); `bash scripts/gpu_benchmark.sh
# --wheels` downloads them here.
#
#   BUDGET_S=300 bash scripts/gpu_benchmark.sh      # start no new jax measurement after 300 s of the benchmark
#                                                   # (default: whatever ends its measurements near 420 s)
#   BENCH_ARGS=--tiny PYTHON=.venv/bin/python bash scripts/gpu_benchmark.sh   # a CPU rehearsal of the whole call
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

if [[ "${1:-}" == "--wheels" ]]; then  # on a machine with a package index, for carrying to one without
  grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >>.git/info/exclude
  exec "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any -d .whl \
    'flax>=0.12.10' 'optax>=0.2.5' 'orbax-checkpoint>=0.11.17' mnist1d
fi

OUT=${OUT:-benchmarks/results}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=${XLA_PYTHON_CLIENT_PREALLOCATE:-true}
if compgen -G '.whl/*.whl' >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 2
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
log="$OUT/gpu_check.log"
{
  echo "== $(date -u +%FT%TZ) $(uname -m)"
  if command -v nvidia-smi >/dev/null; then nvidia-smi --query-gpu=name,memory.total,driver_version \
    --format=csv,noheader 2>&1; else echo 'no nvidia-smi'; fi
  "$PY" - <<'EOF'
import importlib.metadata as m
import jax
for p in ('jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint', 'numpy', 'torch'):
  try:
    print(p, m.version(p))
  except m.PackageNotFoundError:
    print(p, 'not installed')
print('backend', jax.default_backend(), jax.devices())
EOF
} 2>&1 | tee "$log"

# seconds left until $1 seconds into the script (at least 20): each step's hard limit
left() { local t=$(($1 - SECONDS)); echo $((t > 20 ? t : 20)); }

echo "== PyTorch one width at a time, in a process of its own (jax stays on the CPU there)" | tee -a "$log"
timeout -k 10 -s INT "$(left 110)" "$PY" -m benchmarks.double_descent_gpu --out "$OUT" --torch-only --torch-s 45 \
  ${BENCH_ARGS:-} 2>&1 | tee -a "$log"
torch_rc=${PIPESTATUS[0]}

echo "== benchmark" | tee -a "$log"
budget=${BUDGET_S:-$((420 - SECONDS))}
echo "jax measurements: no new one after $budget s; hard stop at 470 s into the script" | tee -a "$log"
timeout -k 15 -s INT "$(left 470)" "$PY" -m benchmarks.double_descent_gpu --out "$OUT" --budget-s "$budget" \
  --torch-s 0 ${BENCH_ARGS:-} 2>&1 | tee -a "$log"
bench_rc=${PIPESTATUS[0]}

smoke=$(mktemp -d)/smoke
echo "== CUDA path: smoke preset, then --resume of the finished run" | tee -a "$log"
start=$(date +%s)
timeout -k 10 -s INT "$(left 550)" "$PY" -m experiments.double_descent --preset smoke --out "$smoke" --no-progress \
  2>&1 | tee -a "$log"
smoke_rc=${PIPESTATUS[0]}
timeout -k 5 -s INT "$(left 575)" "$PY" -m experiments.double_descent --preset smoke --out "$smoke" --resume \
  --no-progress 2>&1 | tee -a "$log"
resume_rc=${PIPESTATUS[0]}
echo "smoke exit $smoke_rc, resume exit $resume_rc, $(($(date +%s) - start)) s" | tee -a "$log"
echo "PyTorch exit $torch_rc, benchmark exit $bench_rc, $SECONDS s in all" | tee -a "$log"
exit $(( smoke_rc || resume_rc || bench_rc || torch_rc ))
