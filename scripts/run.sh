#!/usr/bin/env bash
# Runs the studio CLI on the bundled models, fetching them first when missing.
#   bash scripts/run.sh generate --prompt "한국의 수도는"
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/studio-target}"
bash scripts/fetch-models.sh >&2
# The studio's browser bundle, for `serve` (quick when nothing changed).
if [ "${1:-}" = serve ]; then bash scripts/build-ui.sh; fi
[ $# -gt 0 ] || set -- generate --prompt "한국의 수도는"
exec cargo run --quiet --release -p app --bin studio -- "$@"
