#!/usr/bin/env bash
# One command for a machine with an NVIDIA GPU: install what the GPU path needs, check that
# onnxruntime-gpu really loads its CUDA provider, run the `gpu` tests and the GPU benchmark.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]        (default: $OUT, else ./gpu-check-out)
#
# Writes OUT_DIR/cuda_libs.json (which CUDA library loads), nvidia-smi.txt, gpu-tests.log and
# gpu-tests.xml (pytest -m gpu tests/gpu), gpu-results.json and gpu-table.md (python -m
# benchmarks --gpu). Exit status: that of the tests (0 = every gpu test passed or was skipped).
#
# Installs: with wheels in ./.whl (a machine without network: carry them there), from those
# only, into /tmp/site; otherwise from PyPI into the current Python: the project with its test
# extra, onnxruntime-gpu and the CUDA 13 / cuDNN 9 runtime wheels its CUDA provider links against
# (nvidia-cuda-runtime, nvidia-cublas, nvidia-curand, nvidia-cudnn-cu13; see benchmarks/cuda_libs.py).
# SKIP_INSTALL=1 installs nothing. The NVIDIA driver (libcuda.so.1) must already be there.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${1:-${OUT:-gpu-check-out}}"
mkdir -p "$OUT_DIR"
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && PY=.venv/bin/python
export PYTHONUNBUFFERED=1 QT_QPA_PLATFORM=offscreen

if [ "${SKIP_INSTALL:-0}" != 1 ]; then
  if compgen -G ".whl/*.whl" > /dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
    export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
  else
    "$PY" -m pip install -q -e '.[test]' onnxruntime-gpu \
      'nvidia-cuda-runtime>=13,<14' 'nvidia-cublas>=13,<14' 'nvidia-curand>=10,<11' 'nvidia-cudnn-cu13>=9,<10' || exit 3
  fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

(nvidia-smi || echo "nvidia-smi not found") > "$OUT_DIR/nvidia-smi.txt" 2>&1
"$PY" -m benchmarks.cuda_libs --out "$OUT_DIR/cuda_libs.json"
echo "cuda_libs exit $? (0: the CUDA provider library loads)"

"$PY" -m pytest -q -m gpu tests/gpu -rs -p no:cacheprovider --junitxml "$OUT_DIR/gpu-tests.xml" 2>&1 \
  | tee "$OUT_DIR/gpu-tests.log"
tests=${PIPESTATUS[0]}

"$PY" -m benchmarks --gpu --out "$OUT_DIR/gpu-results.json" 2>&1 | tee "$OUT_DIR/gpu-table.md"
echo "gpu tests exit $tests; results in $OUT_DIR"
exit "$tests"
