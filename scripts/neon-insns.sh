#!/usr/bin/env bash
# Instructions the NEON kernels execute per block and product, counted under qemu-aarch64
# by a TCG plugin (scripts/qemu-insn-count.c): without an ARM machine this is how the NEON
# level's work is compared (not its speed: qemu's timing says nothing about a real core's).
#   usage: scripts/neon-insns.sh [max|cortex-a53] [TYPE...]   (max: with dotprod)
# Prints, per type, the instructions per block of one product for the one-row kernel
# (`one`, 8 calls), the decode kernel over many rows (`rows`, 2 calls of 4 rows), the 4x2
# tile (`tile`, one call making the same 8 products) and the 4x4 tile (`tile44`, 16 products;
# the 32-value types only).
#   scripts/neon-insns.sh model FILE...
# Prints, per model file, the instructions per token of a one-thread prefill (pp64 less pp1)
# and decode (tg16 less pp1) of `ferrite bench` built for aarch64.
set -euo pipefail
cd "$(dirname "$0")/.."
PLUGIN=target/qemu-insn-count.so
gcc -shared -fPIC -O2 -o "$PLUGIN" scripts/qemu-insn-count.c
if [ "${1:-}" = model ]; then
  shift
  cargo build -q --release --target aarch64-unknown-linux-gnu --bin ferrite
  BIN=target/aarch64-unknown-linux-gnu/release/ferrite
  printf '| file | prefill instructions per token | decode instructions per token |\n|---|---:|---:|\n'
  for f in "$@"; do
    c() { qemu-aarch64 -L /usr/aarch64-linux-gnu -cpu max -plugin "$PLUGIN" "$BIN" bench -m "$f" "$@" -r 1 -t 1 2>&1 | awk '/guest instructions/ {print $3}'; }
    a=$(c -p 1 -n 0); p=$(c -p 64 -n 0); d=$(c -p 1 -n 16)
    echo "| $(basename "$f") | $(( (p - a) / 63 )) | $(( (d - a) / 16 )) |"
  done
  exit 0
fi
CPU=${1:-max}; shift || true
TYPES=${*:-Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 IQ4_NL Q2_K Q3_K Q4_K Q5_K Q6_K IQ4_XS}
cargo build -q -p ferrite-kernels --release --target aarch64-unknown-linux-gnu --example insns
EX=target/aarch64-unknown-linux-gnu/release/examples/insns
count() { qemu-aarch64 -L /usr/aarch64-linux-gnu -cpu "$CPU" -plugin "$PLUGIN" "$EX" "$@" 2>&1 >/dev/null | awk '/guest instructions/ {print $3}'; }
REPS=50
printf '| type | one-row kernel | rows kernel | 4x2 tile | 4x4 tile |\n|---|---:|---:|---:|---:|\n'
for ty in $TYPES; do
  blocks=$(( 4096 / $( [[ $ty == *_K || $ty == IQ4_XS ]] && echo 256 || echo 32 ) ))
  row="| $ty"
  for mode in one rows tile tile44; do
    if [ $mode = tile44 ] && [ $blocks = 16 ]; then row+=" | -"; continue; fi
    products=8; [ $mode = tile44 ] && products=16
    base=$(count "$ty" "$mode" 0); n=$(count "$ty" "$mode" $REPS)
    row+=" | $(awk -v a="$n" -v b="$base" -v d=$((REPS * products * blocks)) 'BEGIN {printf "%.1f", (a - b) / d}')"
  done
  echo "$row |"
done
