#!/usr/bin/env bash
set -u
D=target/device
export LD_LIBRARY_PATH=$PWD/$D/llama
M=/tmp/m; mkdir -p $M
V=tests/fixtures/vocab/ggml-vocab-llama-bpe.gguf
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 )) s]"; }
echo "== cpu"; grep -m1 "model name" /proc/cpuinfo; nproc
echo "== levels (real tiles)"; timeout 120 $D/levels --test-threads 8 2>&1 | grep -E "test |test result|panicked"; el
for t in Q4_K_M Q4_0; do $D/ferrite-c synth --shape llama3-1b --type $t --vocab $V -o $M/1b-$t.gguf | tail -1; done
b() { echo -n "$1 $3 pp$4: "; FERRITE_KERNELS=$2 timeout 60 $D/$1 bench -m $M/$3.gguf -p $4 -n 0 -r 2 -t 2 | grep -E "pp" | awk -F'|' '{print $8}'; }
l() { echo -n "llama $1 pp$2: "; timeout 90 $D/llama/llama-bench -m $M/$1.gguf -p $2 -n 0 -r 2 -t 2 | grep -E "pp" | awk -F'|' '{print $8}'; }
for round in 1 2; do
  for p in 64 512; do
    b ferrite-old amx 1b-Q4_K_M $p; b ferrite-a amx 1b-Q4_K_M $p; b ferrite-c amx 1b-Q4_K_M $p; l 1b-Q4_K_M $p
    b ferrite-a amx 1b-Q4_0 $p; b ferrite-c amx 1b-Q4_0 $p; l 1b-Q4_0 $p
  done; el
done
$D/ferrite-c synth --shape llama3-8b --type Q4_K_M --vocab $V -o $M/8b-Q4_K_M.gguf | tail -1; el
b ferrite-old amx 8b-Q4_K_M 64; b ferrite-c amx 8b-Q4_K_M 64; l 8b-Q4_K_M 64; el
