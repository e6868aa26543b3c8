#!/usr/bin/env bash
# The project's test command (README; CI runs exactly this through .ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
# Reuse one target dir outside the clone, so only a fresh machine pays the full build.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/studio-target}"

bash scripts/fetch-models.sh
# The official OpenAI Python client, for the end-to-end API test.
venv="$HOME/.cache/studio-venv"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import openai" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check openai
fi
cargo fmt --all --check
# The deployment file must stay valid; Debian's docker-compose validates it without an engine.
if ! command -v docker-compose >/dev/null; then
  if [ "$(id -u)" = 0 ]; then apt-get install -y -qq docker-compose >/dev/null || { apt-get update -qq && apt-get install -y -qq docker-compose >/dev/null; }
  else sudo apt-get install -y -qq docker-compose >/dev/null; fi
fi
docker-compose -f docker-compose.yml config -q
cargo test --workspace --all-targets
# The NCCL/CUDA path must at least compile without a GPU (nvcc comes from PyPI wheels).
if [ "${STUDIO_SKIP_NCCL_CHECK:-0}" != "1" ]; then
  bash scripts/check-nccl.sh
fi
