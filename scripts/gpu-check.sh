#!/usr/bin/env bash
# The GPU path on a CUDA machine: builds with the CUDA/NCCL features, then
# - generates greedily on CUDA and compares with the CPU's tokens, on both models;
# - prints decode tokens/s at 1 and 16 rows against the HBM-bandwidth bound (bytes of
#   weights read per step ÷ bandwidth);
# - with two or more GPUs, checks TP=2 over NCCL against TP=1.
#
#   scripts/gpu-check.sh [MODEL...]        (default: gemma3-270m smollm2-135m)
#
# Environment: BANDWIDTH_GBS (the GPU's HBM bandwidth, default 4800: an H200),
# CUDA_COMPUTE_CAP (default: read from nvidia-smi), CARGO_TARGET_DIR.
# Needs nvidia-smi, a CUDA toolkit (nvcc) and libnccl; exits non-zero when tokens differ.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v nvidia-smi >/dev/null || { echo "no nvidia-smi: this script needs a CUDA machine" >&2; exit 1; }
command -v nvcc >/dev/null || [ -n "${CUDA_HOME:-}" ] || { echo "no nvcc on PATH and no CUDA_HOME" >&2; exit 1; }
gpus=$(nvidia-smi --query-gpu=name --format=csv,noheader | wc -l)
[ "$gpus" -ge 1 ] || { echo "nvidia-smi lists no GPU" >&2; exit 1; }
if [ -z "${CUDA_COMPUTE_CAP:-}" ]; then
    CUDA_COMPUTE_CAP=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -n1 | tr -d '.')
    export CUDA_COMPUTE_CAP
fi
models=("$@")
[ ${#models[@]} -gt 0 ] || models=(gemma3-270m smollm2-135m)

echo "GPUs: $gpus x $(nvidia-smi --query-gpu=name --format=csv,noheader | head -n1), compute capability $CUDA_COMPUTE_CAP"
# A separate target dir: the CUDA feature set rebuilds candle.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/studio-target}-cuda"
cargo build --release -p inference --features nccl --example gpu_check
"$CARGO_TARGET_DIR/release/examples/gpu_check" "${models[@]}" --bandwidth-gbs "${BANDWIDTH_GBS:-4800}" --gpus "$gpus"
