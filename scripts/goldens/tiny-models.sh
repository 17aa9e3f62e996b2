#!/usr/bin/env bash
# Regenerates tests/fixtures/tiny/ (see its README.md): a random-weight F16 Llama model
# (written by scripts/goldens/tiny_models.py, fixed seed), llama-quantize'd to every weight
# type the runtime supports, and llama.cpp's last-position logits for seven prompts on each,
# with manifest.json (file, type, prompt, token ids, sha256). Checked by tests/tiny_logits.rs.
#   usage: scripts/goldens/tiny-models.sh
# Needs: python3 with gguf==0.19.0 and numpy, and the llama.cpp reference build for this CPU
# (scripts/llama-cpp-native.sh, run here; it builds it if missing).
set -euo pipefail
cd "$(dirname "$0")/../.."

GGUF_VERSION=$(python3 -m pip show gguf 2>/dev/null | sed -n 's/^Version: //p')
[ "$GGUF_VERSION" = 0.19.0 ] || { echo "error: need gguf==0.19.0, have '${GGUF_VERSION}'" >&2; exit 1; }

BIN=$(scripts/llama-cpp-native.sh | tail -n 1)
SRC=$(cd "$BIN/../.." && pwd)
LOGITS=models/llama-logits
mkdir -p models
[ -x "$LOGITS" ] || cc -O2 ../shared/tools/llama-logits.c -I "$SRC/include" -I "$SRC/ggml/include" \
  -L "$BIN" -lllama -lggml -lggml-base -Wl,-rpath,"$BIN" -o "$LOGITS"

OUT=tests/fixtures/tiny
mkdir -p "$OUT"
rm -f "$OUT"/*.gguf "$OUT"/*.f32 "$OUT"/manifest.json
python3 scripts/goldens/tiny_models.py goldens "$BIN" "$LOGITS" "$OUT"
du -ch "$OUT"/* | tail -n 1
