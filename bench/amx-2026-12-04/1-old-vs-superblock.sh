#!/usr/bin/env bash
# Device check: real-tile tests, then old/new amx K-type kernels against llama.cpp, alternated.
set -u
D=target/device
export LD_LIBRARY_PATH=$PWD/$D/llama
M=/tmp/m; mkdir -p $M
V=tests/fixtures/vocab/ggml-vocab-llama-bpe.gguf
T0=$(date +%s)
el() { echo "[$(( $(date +%s) - T0 )) s]"; }
echo "== cpu"; grep -m1 "model name" /proc/cpuinfo; nproc; uname -r
grep -o -w -E "amx_(tile|int8|bf16)" /proc/cpuinfo | sort -u | tr '\n' ' '; echo
echo "== levels (real tiles)"; timeout 120 $D/levels --test-threads 8 2>&1 | tail -4; el
for t in Q4_K_M Q4_0; do $D/ferrite-new synth --shape llama3-1b --type $t --vocab $V -o $M/1b-$t.gguf | tail -1; done; el
b() { FERRITE_KERNELS=$2 timeout 60 $D/$1 bench -m $3 -p $4 -n 0 -r 3 -t 2 | grep -E "pp"; }
l() { timeout 90 $D/llama/llama-bench -m $1 -p $2 -n 0 -r 2 -t 2 | grep -E "pp"; }
for round in 1 2; do
  for p in 64 512; do
    f=$M/1b-Q4_K_M.gguf; echo "-- round $round 1B Q4_K_M pp$p"
    echo -n "old amx: "; b ferrite-old amx $f $p
    echo -n "new amx: "; b ferrite-new amx $f $p
    echo -n "llama:   "; l $f $p
  done; el
done
f=$M/1b-Q4_0.gguf
for p in 64 512; do echo "-- 1B Q4_0 pp$p (control)"; echo -n "new amx: "; b ferrite-new amx $f $p; echo -n "llama: "; l $f $p; done; el
echo "-- 1B Q4_K_M profile pp512"; FERRITE_KERNELS=amx $D/ferrite-new bench -m $M/1b-Q4_K_M.gguf -p 512 -n 0 -r 1 -t 2 --profile 2>&1 | tail -25; el
$D/ferrite-new synth --shape llama3-8b --type Q4_K_M --vocab $V -o $M/8b-Q4_K_M.gguf | tail -1; el
f=$M/8b-Q4_K_M.gguf; echo "-- 8B Q4_K_M pp64"
echo -n "old amx: "; b ferrite-old amx $f 64
echo -n "new amx: "; b ferrite-new amx $f 64
echo -n "llama:   "; l $f 64; el
