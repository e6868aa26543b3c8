#!/usr/bin/env bash
# Compiles the NCCL tensor-parallel path (candle's CUDA backend + cudarc NCCL) with a real
# nvcc from PyPI; no GPU or system CUDA toolkit is needed. Linking and running it needs a
# GPU machine with libcuda/libnccl.
set -euo pipefail
cd "$(dirname "$0")/.."
cuda="${STUDIO_CUDA_WHEELS:-$HOME/.cache/studio-cuda-wheels}"
if [ ! -x "$cuda/nvidia/cu13/bin/nvcc" ]; then
  echo "installing nvcc 13.4 from PyPI into $cuda"
  python3 -m pip install --quiet --no-deps --disable-pip-version-check --target "$cuda" \
    nvidia-cuda-nvcc==13.4.92 nvidia-cuda-runtime==13.4.92 nvidia-cuda-crt==13.4.92 \
    nvidia-nvvm==13.4.92 nvidia-cuda-cccl==13.3.4.3.1
fi
export CUDA_HOME="$cuda/nvidia/cu13" PATH="$cuda/nvidia/cu13/bin:$PATH" CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-80}"
# A separate target dir: the CUDA feature set rebuilds candle.
CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/studio-target}-cuda" cargo check -p inference -p app --features app/nccl
echo "nccl check: ok"
