#!/usr/bin/env bash
# One command for a lent GPU machine (the workplace's `device` tool) or any CUDA machine with jax[cuda]:
#   1. says what is there (GPU, driver, jax and its devices, package versions);
#   2. checks the CUDA path end to end: the double-descent `smoke` preset through the CLI (train, evaluate,
#      checkpoint, results, figures), then `--resume` of the finished run;
#   3. runs `python -m benchmarks.double_descent_gpu` (ResNet18k widths 1..64, every bucket, strategy and conv
#      form, the widest bucket with 5 trials), then its `--torch-only` in a second process (PyTorch one width at a
#      time when torch is there, with the GPU to itself).
# Everything it writes lands in $OUT (default benchmarks/results): the benchmark JSON, written again after every
# measurement so that a run cut short keeps what it measured, and gpu_check.log. Commit the JSON.
#
# Packages: it runs from the repository root with the machine's python3 (PYTHON=...), no install. Wheels in .whl/
# (pure-Python flax, optax, orbax-checkpoint, mnist1d ... of the versions pyproject.toml asks for) are installed
# into /tmp/site first when present; `bash scripts/gpu_benchmark.sh --wheels` downloads them here.
#
#   BUDGET_S=300 bash scripts/gpu_benchmark.sh      # start no new jax measurement after 300 s of the benchmark
#                                                   # (default: whatever keeps the whole command near 9 minutes)
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
  "$PY" -c 'import jax, flax, optax, orbax.checkpoint as o, numpy
print("jax", jax.__version__, "flax", flax.__version__, "optax", optax.__version__, "numpy", numpy.__version__)
print("backend", jax.default_backend(), jax.devices())'
} 2>&1 | tee "$log"

smoke=$(mktemp -d)/smoke
echo "== CUDA path: smoke preset, then --resume of the finished run" | tee -a "$log"
start=$(date +%s)
"$PY" -m experiments.double_descent --preset smoke --out "$smoke" 2>&1 | tail -n 15 | tee -a "$log"
smoke_rc=${PIPESTATUS[0]}
"$PY" -m experiments.double_descent --preset smoke --out "$smoke" --resume 2>&1 | tail -n 3 | tee -a "$log"
resume_rc=${PIPESTATUS[0]}
echo "smoke exit $smoke_rc, resume exit $resume_rc, $(($(date +%s) - start)) s" | tee -a "$log"

echo "== benchmark" | tee -a "$log"
budget=${BUDGET_S:-$((400 - SECONDS))}  # the whole command stays inside a 10-minute limit: jax until ~400 s,
echo "jax measurements: $budget s, then PyTorch: 40 s" | tee -a "$log"  # one overrun, then PyTorch's minute
# hard stops keep the command inside the device's 10 minutes; the JSON holds whatever was measured by then
left() { local t=$(($1 - SECONDS)); echo $((t > 30 ? t : 30)); }  # seconds until $1, at least 30
timeout -s INT "$(left 520)" "$PY" -m benchmarks.double_descent_gpu --out "$OUT" --budget-s "$budget" \
  --torch-s 0 ${BENCH_ARGS:-} 2>&1 | tee -a "$log"
bench_rc=${PIPESTATUS[0]}
echo "== PyTorch one width at a time, in a process of its own (the jax one held 90% of the GPU)" | tee -a "$log"
timeout -s INT "$(left 590)" "$PY" -m benchmarks.double_descent_gpu --out "$OUT" --torch-only --torch-s 40 \
  ${BENCH_ARGS:-} 2>&1 | tee -a "$log"
torch_rc=${PIPESTATUS[0]}
echo "benchmark exit $bench_rc, PyTorch exit $torch_rc, $SECONDS s in all" | tee -a "$log"
exit $(( smoke_rc || resume_rc || bench_rc || torch_rc ))
