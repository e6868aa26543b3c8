#!/usr/bin/env bash
# Builds the studio's browser bundle into site/pkg: studio-ui compiled for wasm32 with its
# `hydrate` feature, then wasm-bindgen (the CLI pinned to the crate's exact version).
# Everything comes from crates.io; nothing runs through npm.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/studio-target}"
WASM_BINDGEN_VERSION=0.2.130
SITE_DIR="${STUDIO_SITE_DIR:-site}"

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
  rustup target add wasm32-unknown-unknown
fi
if ! wasm-bindgen --version 2>/dev/null | grep -q " $WASM_BINDGEN_VERSION\$"; then
  echo "installing wasm-bindgen-cli $WASM_BINDGEN_VERSION (once, about 8 minutes)" >&2
  CARGO_RESOLVER_INCOMPATIBLE_RUST_VERSIONS=fallback cargo install --quiet wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION"
fi
cargo rustc --quiet -p studio-ui --lib --crate-type cdylib --target wasm32-unknown-unknown \
  --no-default-features --features hydrate --profile wasm-release
mkdir -p "$SITE_DIR/pkg"
wasm-bindgen --target web --out-dir "$SITE_DIR/pkg" --out-name studio-ui \
  "$CARGO_TARGET_DIR/wasm32-unknown-unknown/wasm-release/studio_ui.wasm"
# The server serves the bundle under a hash of its content and keeps brotli and gzip copies
# (`studio-ui-<hash>_bg.wasm.br`) beside it, made at its first start; drop the old ones.
rm -f "$SITE_DIR"/pkg/studio-ui-*.br "$SITE_DIR"/pkg/studio-ui-*.gz
echo "studio bundle: $(du -h "$SITE_DIR/pkg/studio-ui_bg.wasm" | cut -f1) in $SITE_DIR/pkg" >&2
