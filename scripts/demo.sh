#!/usr/bin/env bash
# Fetches SmolLM2, builds ferrite in release mode and shows what it can do with the model.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/fetch-models.sh
cargo build --release --quiet
MODEL=models/SmolLM2-135M-Instruct.Q4_1.gguf
if ./target/release/ferrite help run >/dev/null 2>&1; then
  ./target/release/ferrite run -m "$MODEL" -p "${1:-The capital of France is}" -n 32 --temp 0
else
  ./target/release/ferrite inspect "$MODEL" | head -16
fi
