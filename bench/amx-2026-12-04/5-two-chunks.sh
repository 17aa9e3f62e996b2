#!/usr/bin/env bash
set -u
D=target/device
export LD_LIBRARY_PATH=$PWD/$D/llama
M=/tmp/m; mkdir -p $M
V=tests/fixtures/vocab/ggml-vocab-llama-bpe.gguf
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 )) s]"; }
echo "== levels (real tiles)"; timeout 60 $D/levels --test-threads 8 2>&1 | grep -E "test result|panicked"; el
$D/ferrite-d synth --shape llama3-1b --type Q4_K_M --vocab $V -o $M/1b-Q4_K_M.gguf | tail -1
$D/ferrite-d synth --shape llama3-8b --type Q4_K_M --vocab $V -o $M/8b-Q4_K_M.gguf | tail -1; el
b() { echo -n "$1 $2 pp$3: "; FERRITE_KERNELS=amx timeout 40 $D/$1 bench -m $M/$2.gguf -p $3 -n 0 -r 2 -t 2 | grep -E "pp" | awk -F'|' '{print $8}'; }
l() { echo -n "llama $1 pp$2: "; timeout 40 $D/llama/llama-bench -m $M/$1.gguf -p $2 -n 0 -r 2 -t 2 | grep -E "pp" | awk -F'|' '{print $8}'; }
for round in 1 2 3; do
  for p in 64 512; do b ferrite-a 1b-Q4_K_M $p; b ferrite-d 1b-Q4_K_M $p; done
  [ $round = 2 ] && { l 1b-Q4_K_M 64; l 1b-Q4_K_M 512; }
  el
done
for round in 1 2; do b ferrite-a 8b-Q4_K_M 64; b ferrite-d 8b-Q4_K_M 64; done; el
l 8b-Q4_K_M 64; el
