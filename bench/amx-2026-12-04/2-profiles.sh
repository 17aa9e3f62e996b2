#!/usr/bin/env bash
set -u
D=target/device
M=/tmp/m; mkdir -p $M
V=tests/fixtures/vocab/ggml-vocab-llama-bpe.gguf
for t in Q4_K_M Q4_0; do $D/ferrite-new synth --shape llama3-1b --type $t --vocab $V -o $M/1b-$t.gguf | tail -1; done
p() { echo "== $1 $2 $3 pp$4"; FERRITE_KERNELS=$2 timeout 60 $D/$1 bench -m $M/1b-$3.gguf -p $4 -n 0 -r 1 -t 2 --profile 2>&1 | sed -n '1,19p'; }
p ferrite-new amx Q4_K_M 512
p ferrite-old amx Q4_K_M 512
p ferrite-new amx Q4_0 512
p ferrite-new amx Q4_K_M 64
p ferrite-old amx Q4_K_M 64
p ferrite-new avx512 Q4_K_M 512
p ferrite-new amx Q4_K_M 512
