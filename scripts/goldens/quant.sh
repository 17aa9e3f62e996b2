#!/usr/bin/env bash
# Regenerates kernels/tests/fixtures/quant/ (quantization and dequantization goldens) from
# the outside references: llama.cpp's reference build (its own quantizers) and the `gguf`
# Python package (its dequantizers). See kernels/tests/fixtures/quant/README.md.
#   usage: scripts/goldens/quant.sh
# Needs: gcc, python3 with gguf==0.19.0 and numpy, the llama.cpp reference build
# (../shared/tools/llama-cpp.sh; set LLAMA_CPP_SH to use another copy of that script) and
# models/SmolLM2-135M-Instruct.Q4_1.gguf (scripts/fetch-models.sh, run here if missing).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
OUT=kernels/tests/fixtures/quant

GGUF_VERSION=$(python3 -m pip show gguf 2>/dev/null | sed -n 's/^Version: //p')
[ "$GGUF_VERSION" = 0.19.0 ] || { echo "error: need gguf==0.19.0, have '${GGUF_VERSION}'" >&2; exit 1; }

BIN=$("${LLAMA_CPP_SH:-$ROOT/../shared/tools/llama-cpp.sh}" | tail -n 1)
SRC=$(cd "$BIN/../.." && pwd)
./scripts/fetch-models.sh

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

gcc -O2 -std=c11 -Wall -Wextra -o "$WORK/quant-ref" tools/quant-ref.c \
  -I"$SRC/ggml/include" -L"$BIN" -lggml-base -Wl,-rpath,"$BIN" -lm

# The reference build's CPU backend may use instructions this CPU lacks (it is built for
# AVX-512): llama-quantize then dies with SIGILL while initialising ggml-cpu, before it reads
# anything. Quantization itself runs in libggml-base (built without arch flags, as
# quant-ref uses it), so a CPU backend built for AVX2 from the same source, put in front of
# the reference one, changes no byte of the output; the dequant script also checks
# llama-quantize's bytes against quant-ref's.
LLAMA_ENV=()
set +e
"$BIN/llama-quantize" --pure "$WORK/none.gguf" "$WORK/none-q.gguf" Q4_0 1 >/dev/null 2>&1
rc=$?
set -e
if [ "$rc" = 132 ]; then
  CPU_BUILD=${FERRITE_GGML_CPU_BUILD:-$HOME/.cache/ferrite-goldens/ggml-cpu-avx2}
  if [ ! -f "$CPU_BUILD/cpu-only/libggml-cpu.so.0" ]; then
    echo "llama-quantize cannot run on this CPU; building an AVX2 ggml-cpu in $CPU_BUILD..." >&2
    cmake -S "$SRC" -B "$CPU_BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF \
      -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX512=OFF \
      -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF \
      -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_OPENSSL=OFF >&2
    ninja -C "$CPU_BUILD" -j"$(nproc)" ggml-cpu >&2
    mkdir -p "$CPU_BUILD/cpu-only"
    cp -L "$CPU_BUILD/bin/libggml-cpu.so.0" "$CPU_BUILD/cpu-only/"
  fi
  LLAMA_ENV=(env "LD_LIBRARY_PATH=$CPU_BUILD/cpu-only${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}")
fi

# Everything here but README.md is generated.
rm -rf "$OUT/dequant" "$OUT"/*.blocks "$OUT"/*.hashes "$OUT/summary.txt"
mkdir -p "$OUT/dequant"

# Quantization goldens: 4096 rows x 256 generated inputs, blocks of the first 64 rows.
"$WORK/quant-ref" goldens "$OUT" 4096 64

# Dequantization goldens: llama-quantize's blocks, gguf's dequantization.
"${LLAMA_ENV[@]}" python3 scripts/goldens/dequant.py \
  --llama-quantize "$BIN/llama-quantize" --quant-ref "$WORK/quant-ref" \
  --model models/SmolLM2-135M-Instruct.Q4_1.gguf --work "$WORK" --out "$OUT/dequant"

du -sh "$OUT" >&2
