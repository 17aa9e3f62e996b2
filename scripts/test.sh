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

if [ "${FERRITE_SKIP_NEON:-0}" != 1 ]; then
  ./scripts/neon-test.sh
fi
echo "all tests passed"
