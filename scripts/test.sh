#!/usr/bin/env bash
# The project's test command (README; CI runs exactly this through .ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
# Reuse one target dir outside the clone, so only a fresh machine pays the full build.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/studio-target}"

bash scripts/fetch-models.sh
# The official OpenAI Python client, for the end-to-end API test.
venv="$HOME/.cache/studio-venv"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import openai, jsonschema" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check openai jsonschema
fi
cargo fmt --all --check
# Lints: any warning fails (the few workspace-wide allows are in Cargo.toml, with reasons).
cargo clippy --workspace --all-targets -- -D warnings
# Debian packages the tests need: docker-compose (validates the deployment file without an
# engine), Chromium for the browser tests, CJK fonts so Korean/Japanese render in it.
apt_install() {
  local sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get install -y -qq "$@" >/dev/null || { $sudo apt-get update -qq && $sudo apt-get install -y -qq "$@" >/dev/null; }
}
command -v docker-compose >/dev/null || apt_install docker-compose
command -v chromium >/dev/null || apt_install chromium chromium-driver
[ -d /usr/share/fonts/opentype/noto ] || apt_install fonts-noto-cjk
# Deployment files: docker-compose.yml and the Kubernetes manifests, validated offline.
bash scripts/check-deploy.sh
# playwright-core drives Debian's Chromium (it downloads no browser of its own).
[ -d tests/e2e/node_modules/playwright-core ] || (cd tests/e2e && npm ci --silent --no-audit --no-fund)
# The studio's browser bundle (wasm), which the browser tests load.
bash scripts/build-ui.sh
cargo test --workspace --all-targets
# The NCCL/CUDA path must at least compile without a GPU (nvcc comes from PyPI wheels).
if [ "${STUDIO_SKIP_NCCL_CHECK:-0}" != "1" ]; then
  bash scripts/check-nccl.sh
fi
