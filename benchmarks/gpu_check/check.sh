#!/usr/bin/env bash
# One-shot GPU check (benchmarks/gpu_check/check.py): MaskDiT-XL/2 and DiT-XL/2 training-step speed and memory,
# eager first, then each train.compile scope, then the fast options at the fastest scope, each row written to
# gpu_check.json + gpu_check.md under $OUT as soon as it is measured. Needs no network; ≤ 8 minutes on one H100.
#
#   GPU machine:  mkdir -p .whl && cp ../shared/wheels/gpu-py312/*.whl .whl/   (here, before the run; carry .whl)
#                 OUT=/some/dir bash benchmarks/gpu_check/check.sh
#   CPU check:    OUT=/tmp/gpu-check bash benchmarks/gpu_check/check.sh --tiny
#
# Packages the GPU image lacks (omegaconf, diffusers, lmdb, webdataset, torchao, ...) are installed from .whl/
# with --no-deps into a private folder, never from requirements.txt (that would replace the image's torch).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-results/gpu-check}
# the wheels are the GPU image's (Python 3.12); a --tiny check runs where the packages are installed already
if compgen -G ".whl/*.whl" > /dev/null && [[ " $* " != *" --tiny "* ]]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/gpu-check-site .whl/*.whl
  export PYTHONPATH="/tmp/gpu-check-site${PYTHONPATH:+:$PYTHONPATH}"
fi
exec python3 -m benchmarks.gpu_check run --out "$OUT" "$@"
