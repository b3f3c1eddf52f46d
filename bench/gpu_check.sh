#!/usr/bin/env bash
# GPU check for a lent GPU node or a GPU pod: is TensorFlow on the GPU, and how fast is the engine?
# Needs a Python environment with `tensorflow[and-cuda]==2.21.0` and the project installed
# (the GPU image has both: `docker run --gpus all --entrypoint bash IMAGE bench/gpu_check.sh`).
# Prints the device, per-evaluation seconds of the engine vs the reference way at 260 and 512 px,
# and the GPU memory peak. Bounded: about two minutes on an H100.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" - <<'PY'
import tensorflow as tf
gpus = tf.config.list_physical_devices("GPU")
print("tensorflow", tf.__version__, "GPUs:", gpus)
if not gpus:
    raise SystemExit("no GPU visible to TensorFlow: check the CUDA wheels (tensorflow[and-cuda])")
PY
"$PY" bench/engine_bench.py --sizes 260 512 --evaluations 20 --repeats 3 \
  --final-evaluations 200 --rss-size 512 "$@"
