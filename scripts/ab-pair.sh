#!/usr/bin/env bash
# A/B of two builds of a one-thread program (examples/matmul_speed, repack_speed): both run
# at the same time, one per core, three times with the cores swapped. On a shared machine the
# neighbours' load comes and goes over seconds; run one after the other, the same binary read
# 60-130 GMAC/s, side by side the two see the same disturbance (and the other core busy keeps
# the memory system awake: one thread alone read slower than with the other core at work).
#
#   scripts/ab-pair.sh OLD_BINARY NEW_BINARY ARGS...
# e.g. FERRITE_KERNELS=avx512 scripts/ab-pair.sh /tmp/old /tmp/new Q4_K 64 4096 4096 1
set -euo pipefail
[ $# -ge 2 ] || { sed -n 2,9p "$0"; exit 1; }
a=$1 b=$2
shift 2
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for i in 1 2 3; do
    if [ $((i % 2)) = 1 ]; then ca=0 cb=1; else ca=1 cb=0; fi
    taskset -c $ca "$a" "$@" >"$out/a" &
    taskset -c $cb "$b" "$@" >"$out/b" &
    wait
    echo "A: $(tail -1 "$out/a")    B: $(tail -1 "$out/b")"
done
