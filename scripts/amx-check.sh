#!/usr/bin/env bash
# The amx level on a machine that has AMX: the kernel tests on the real tiles, then prefill
# at the avx512 and amx levels against llama.cpp's llama-bench, back to back, 2 threads (how
# BENCHMARKS.md's "The amx level" table was made). Binaries may be built elsewhere and copied:
#   FERRITE=path/to/ferrite LEVELS=path/to/levels-test-binary LLAMA_BENCH=path/to/llama-bench \
#     scripts/amx-check.sh [OUTDIR]      (OUTDIR: where the synthetic models go, default /tmp)
# The levels test binary is what `cargo test --release -p ferrite-kernels --test levels --no-run`
# prints; without LEVELS the tests run through cargo. BASELINE=path/to/another/ferrite adds
# its amx runs beside each of FERRITE's (an A/B of two builds), ROUNDS=N repeats every
# comparison N times, alternated (the lent machines' speed drifts within minutes: compare
# numbers of the same round only).
set -uo pipefail
cd "$(dirname "$0")/.."
FERRITE=${FERRITE:-target/release/ferrite}
OUT=${1:-/tmp}
V=tests/fixtures/vocab/ggml-vocab-llama-bpe.gguf
echo "== cpu"
grep -m1 "model name" /proc/cpuinfo; nproc; uname -r
grep -o -w -E "amx_(tile|int8|bf16)" /proc/cpuinfo | sort -u | tr '\n' ' '; echo
echo "== kernel tests (the amx level is among the tables where the CPU and Linux allow it)"
if [ -n "${LEVELS:-}" ]; then "$LEVELS" --test-threads 8; else cargo test --release -p ferrite-kernels --test levels; fi
b() { FERRITE_KERNELS=$2 "$1" bench -m "$3" -p "$4" -n 0 -r 3 -t 2 | grep -E "^\| .*pp"; }
l() { [ -n "${LLAMA_BENCH:-}" ] && "$LLAMA_BENCH" -m "$1" -p "$2" -n 0 -r 2 -t "${3:-2}" | grep -E "pp"; }
for shape in llama3-1b llama3-8b; do
  for t in Q4_0 Q8_0 Q4_K_M Q4_1; do
    [ $shape = llama3-8b ] && [ $t != Q4_0 ] && [ $t != Q4_K_M ] && continue
    f=$OUT/$shape-$t.gguf
    [ -f "$f" ] || "$FERRITE" synth --shape $shape --type $t --vocab $V -o "$f" | tail -1
    for p in 64 512; do
      [ $shape = llama3-8b ] && [ $p = 512 ] && continue
      for round in $(seq "${ROUNDS:-1}"); do
        echo "-- $f pp$p, round $round"
        b "$FERRITE" avx512 "$f" $p; b "$FERRITE" amx "$f" $p
        [ -n "${BASELINE:-}" ] && { echo -n "baseline: "; b "$BASELINE" amx "$f" $p; }
        l "$f" $p
      done
    done
  done
done
