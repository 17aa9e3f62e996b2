#!/usr/bin/env bash
# Everything the tests need, then the tests: the one command README.md and .ci/run give.
#   FERRITE_SKIP_NEON=1 skips the aarch64 cross-compiled kernel tests under qemu.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

python3 -c "import gguf, numpy, openai" 2>/dev/null || python3 -m pip install -q "gguf==0.19.0" numpy "openai==3.57.0"
./scripts/fetch-models.sh
rustup component add rustfmt clippy >/dev/null 2>&1 || true

cargo fmt --all --check
cargo build --release --workspace
./scripts/make-variants.sh
cargo test --workspace --release
cargo clippy --workspace --all-targets --release -- -D warnings
# The amx level's loop, addressing and scaling on any x86 CPU: the tile instructions
# emulated in Rust (a CPU with AMX runs the real ones in the tests above).
if [ "$(uname -m)" = x86_64 ]; then
  RUSTFLAGS="--cfg ferrite_amx_emulate" CARGO_TARGET_DIR=target/amx-emulated \
    cargo test --release -p ferrite-kernels --test levels -- amx_tiles_match_scalar repacked_matmul_matches_rows amx_batch_parts
  # The avxvnni level on a CPU with AVX-512 VNNI but no AVX-VNNI: built with the EVEX
  # encoding of the same `vpdpbusd` (a CPU with AVX-VNNI runs the level in the tests above).
  if ! grep -qw avx_vnni /proc/cpuinfo && grep -qw avx512_vnni /proc/cpuinfo; then
    RUSTFLAGS="--cfg ferrite_avxvnni_emulate" CARGO_TARGET_DIR=target/avxvnni-emulated \
      cargo test --release -p ferrite-kernels --test levels
  fi
fi

if [ "${FERRITE_SKIP_NEON:-0}" != 1 ]; then
  ./scripts/neon-test.sh
fi
echo "all tests passed"
