#!/usr/bin/env bash
# Cross-compiles the kernel tests to aarch64 and runs them under qemu-aarch64 (NEON level).
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
if ! command -v aarch64-linux-gnu-gcc >/dev/null || ! command -v qemu-aarch64 >/dev/null; then
  $SUDO apt-get update -qq >/dev/null
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user >/dev/null
fi
rustup target add aarch64-unknown-linux-gnu >/dev/null 2>&1
cargo test -p ferrite-kernels --release --target aarch64-unknown-linux-gnu
# A CPU without dotprod (Cortex-A53): the NEON level must pick its plain (no `sdot`) table.
CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu -cpu cortex-a53" \
  cargo test -p ferrite-kernels --release --target aarch64-unknown-linux-gnu --test levels
# The whole model at the NEON level (every matrix from the file's rows: NEON has no repacked
# layouts) against llama.cpp's greedy continuations, as tests/generation.rs checks x86. Only
# the library-level test: the tests that run the `ferrite` binary cannot start it under qemu.
cargo test --release --target aarch64-unknown-linux-gnu --test generation -- \
  greedy_continuations_match_llama_cpp_without_repacking
