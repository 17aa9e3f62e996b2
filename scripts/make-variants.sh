#!/usr/bin/env bash
# Makes the Q8_0, Q4_0 and Q4_K_M variants of SmolLM2 in models/ with `ferrite quantize`
# (byte-identical to llama-quantize --allow-requantize; checked against the sha256 recorded in
# tests/fixtures/goldens/models.json from llama.cpp's own files). Needs a release build.
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=models/SmolLM2-135M-Instruct.Q4_1.gguf
for t in Q8_0 Q4_0 Q4_K_M; do
  f=models/SmolLM2-135M-Instruct.$t.gguf
  want=$(python3 -c "import json,sys; print(json.load(open('tests/fixtures/goldens/models.json'))['$t'])")
  if [ -f "$f" ] && echo "$want  $f" | sha256sum -c --quiet - 2>/dev/null; then continue; fi
  ./target/release/ferrite quantize "$BASE" "$f" "$t" 2>/dev/null
  echo "$want  $f" | sha256sum -c --quiet - || { echo "error: $f differs from llama.cpp's requantization" >&2; exit 1; }
done
