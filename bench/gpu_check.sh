#!/usr/bin/env bash
# bench/gpu_check.sh: one prepared run (at most 8 minutes) on a lent GPU machine that has a Python
# with JAX (CUDA), numpy, scipy, Pillow, h5py and grpcio but can download nothing. It installs
# Keras and the pure-Python pieces that Python lacks from a wheel folder prepared beforehand,
# loads a float16 copy of the VGG16 weights given to it, runs the engine on KERAS_BACKEND=jax and
# prints ONE table (bench/gpu_bench.py): per precision (auto, which the table resolves, float32,
# mixed_bfloat16, mixed_float16) and size (260, 512, 1024 px) the seconds per evaluation, the job's seconds for 500 evaluations,
# the peak GPU memory and the final loss; 4 concurrent 256 px jobs one at a time versus batched,
# in jobs per minute; the same step on the CPU backend (smaller settings) for the GPU/CPU ratio;
# then the memory model fitted from the peaks and the largest size that fits 16 and 80 GiB.
#
# Prepare (here, with the network; both land in the git-ignored .whl/, about 31 MiB):
#   make gpu-prep      # = make gpu-wheels (keras, namex, optree for CPython 3.12 manylinux
#                      #   x86_64, pinned by requirements/lock.txt) + make gpu-weights
#                      #   (styletx weights export --float16 .whl/vgg16_notop.float16.weights.h5)
# Run on the lent machine with the device tool (one call; well under its 10-minute limit):
#   run(kind="nvidia-h100-x1", timeout_s=560, carry=[".whl"],
#       command="bash bench/gpu_check.sh --weights .whl/vgg16_notop.float16.weights.h5 "
#               "--json $OUT/gpu_check.json 2>&1 | tee $OUT/gpu_check.log")
#   then give_back(), and put the table in bench/RESULTS.md with the machine it names.
# Here, on a CPU (same wheel-folder logic, small sizes; a few minutes on 2 busy cores):
#   bash bench/gpu_check.sh --cpu-smoke --weights .whl/vgg16_notop.float16.weights.h5
#
# Options: --weights PATH (default $STYLETX_WEIGHTS), --cpu-smoke, --budget-seconds N (the
# benchmark's share of the 8 minutes, default 420); anything else goes to bench/gpu_bench.py.
# Environment: PYTHON (default python3), STYLETX_WHEELS (default .whl), STYLETX_FORCE_WHEELS=1
# installs from the wheel folder even where Keras is already importable (to test that path).
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
PY="${PYTHON:-python3}"
WHEELS="${STYLETX_WHEELS:-.whl}"
SITE="${TMPDIR:-/tmp}/styletx-gpu-site"
WEIGHTS="${STYLETX_WEIGHTS:-}"
BUDGET=420
PASS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --weights) WEIGHTS="$2"; shift 2 ;;
    --budget-seconds) BUDGET="$2"; shift 2 ;;
    *) PASS+=("$1"); shift ;;
  esac
done
if [ -z "$WEIGHTS" ] || [ ! -f "$WEIGHTS" ]; then
  echo "gpu_check: no weights file ('${WEIGHTS}'): pass --weights PATH (make gpu-weights" \
    "writes .whl/vgg16_notop.float16.weights.h5)" >&2
  exit 2
fi
export KERAS_BACKEND=jax TF_CPP_MIN_LOG_LEVEL=2 PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

# Keras and what it needs beyond the machine's packages, from the wheel folder (no index).
missing=$("$PY" -c 'import importlib.util as u
print(" ".join(m for m in ("keras", "namex", "optree") if u.find_spec(m) is None))')
if [ -n "$missing" ] || [ "${STYLETX_FORCE_WHEELS:-0}" = 1 ]; then
  shopt -s nullglob
  wheels=("$WHEELS"/*.whl)
  if [ ${#wheels[@]} -eq 0 ]; then
    echo "gpu_check: this Python lacks ${missing:-nothing} and $WHEELS holds no wheels:" \
      "run make gpu-wheels where pip can download, and carry $WHEELS" >&2
    exit 2
  fi
  echo "installing from $WHEELS: ${wheels[*]##*/}"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" "${wheels[@]}"
  export PYTHONPATH="$SITE:$PYTHONPATH"
fi

# Everything the engine imports, and what JAX sees, before the timed part.
"$PY" - "$WEIGHTS" <<'PY'
import importlib
import sys

missing = []
for name in ("numpy", "scipy", "PIL", "h5py", "threadpoolctl", "jax", "keras", "optree"):
    try:
        importlib.import_module(name)
    except ImportError as exc:
        missing.append(f"{name} ({exc})")
if missing:
    sys.exit("gpu_check: cannot import " + ", ".join(missing))
import jax
import keras

print(f"python {sys.version.split()[0]}, jax {jax.__version__}, keras {keras.__version__} "
      f"({keras.backend.backend()}), devices: {', '.join(str(d) for d in jax.devices())}")
from styletx.weights import verify_weights_file

verify_weights_file(__import__("pathlib").Path(sys.argv[1]))
print(f"weights: {sys.argv[1]} (verified)")
PY
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi

# The benchmark; the timeout is a backstop behind its own budget (8 minutes in all).
left=$((480 - (SECONDS - started) - 15))
[ "$BUDGET" -gt "$left" ] && BUDGET=$left
timeout $((BUDGET + 30)) "$PY" bench/gpu_bench.py --weights "$WEIGHTS" \
  --budget-seconds "$BUDGET" ${PASS[@]+"${PASS[@]}"}
echo "gpu_check: done in $((SECONDS - started)) s"
