#!/usr/bin/env bash
set -u
D=target/device
export LD_LIBRARY_PATH=$PWD/$D/llama
M=/tmp/m; mkdir -p $M
V=tests/fixtures/vocab/ggml-vocab-llama-bpe.gguf
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 )) s]"; }
echo "== levels (real tiles)"; timeout 120 $D/levels --test-threads 8 2>&1 | grep -E "test result|FAILED|panicked"; el
for t in Q4_K_M Q4_0; do $D/ferrite-new synth --shape llama3-1b --type $t --vocab $V -o $M/1b-$t.gguf | tail -1; done
b() { echo -n "$1 $3 pp$4: "; FERRITE_KERNELS=$2 timeout 60 $D/$1 bench -m $M/1b-$3.gguf -p $4 -n 0 -r 2 -t 2 | grep -E "pp" | awk -F'|' '{print $8}'; }
l() { echo -n "llama $1 pp$2: "; timeout 90 $D/llama/llama-bench -m $M/1b-$1.gguf -p $2 -n 0 -r 2 -t 2 | grep -E "pp" | awk -F'|' '{print $8}'; }
for p in 64 512; do l Q4_K_M $p; l Q4_0 $p; done; el
for round in 1 2 3; do
  for p in 64 512; do
    b ferrite-new amx Q4_K_M $p; b ferrite-a amx Q4_K_M $p
    b ferrite-a amx Q4_0 $p; b ferrite-b amx Q4_0 $p
  done; el
done
for p in 64 512; do l Q4_K_M $p; l Q4_0 $p; done; el
