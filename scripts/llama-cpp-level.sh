#!/usr/bin/env bash
# llama.cpp's CPU backend built for one of ferrite's lower x86 levels, so that ferrite's
# `FERRITE_KERNELS=avx2|avxvnni` rows can be compared with what llama.cpp does on a CPU that
# has only those instructions (its reference build uses AVX-512 wherever the CPU has it), and
# for lower levels (avx: no AVX2/FMA/F16C; scalar: no SIMD flags) to measure how far llama.cpp's
# logits move with the instruction set (scripts/goldens/llama_spread.py).
# Reuses the source tree of ../shared/tools/llama-cpp.sh and builds only libggml-cpu and
# libggml-base (build-LEVEL/, 1-3 minutes); prints a directory of libraries to put first in
# LD_LIBRARY_PATH when running the reference build's llama-bench.
#   usage: scripts/llama-cpp-level.sh avx2|avxvnni|avx|scalar [PREFIX]   (default ~/.cache/llama-cpp-ref)
set -euo pipefail
LEVEL=${1:?usage: llama-cpp-level.sh avx2|avxvnni|avx|scalar [PREFIX]}
PREFIX=${2:-$HOME/.cache/llama-cpp-ref}
here=$(cd "$(dirname "$0")" && pwd)
# Instruction sets per level (scalar: none beyond x86-64's SSE2, which the compiler may use).
case "$LEVEL" in
  avx2) isa="-DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX_VNNI=OFF" ;;
  avxvnni) isa="-DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX_VNNI=ON" ;;
  avx) isa="-DGGML_AVX=ON -DGGML_AVX2=OFF -DGGML_FMA=OFF -DGGML_F16C=OFF -DGGML_BMI2=OFF -DGGML_AVX_VNNI=OFF" ;;
  scalar) isa="-DGGML_SSE42=OFF -DGGML_AVX=OFF -DGGML_AVX2=OFF -DGGML_FMA=OFF -DGGML_F16C=OFF -DGGML_BMI2=OFF -DGGML_AVX_VNNI=OFF" ;;
  *) echo "llama-cpp-level.sh: unknown level '$LEVEL' (avx2, avxvnni, avx or scalar)" >&2; exit 1 ;;
esac
REF=$("$here/llama-cpp-native.sh" "$PREFIX" | tail -1)
SRC=$PREFIX/llama.cpp
LIBS=$PREFIX/libs-$LEVEL
if [ ! -e "$LIBS/libggml-cpu.so" ]; then
  python3 -m pip install -q cmake ninja >&2
  # shellcheck disable=SC2086
  cmake -S "$SRC" -B "$SRC/build-$LEVEL" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF \
    $isa -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF \
    -DGGML_AMX_BF16=OFF -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_OPENSSL=OFF >&2
  ninja -C "$SRC/build-$LEVEL" -j"$(nproc)" ggml-cpu >&2
  mkdir -p "$LIBS"
  for f in "$SRC/build-$LEVEL"/bin/libggml-cpu.so* "$SRC/build-$LEVEL"/bin/libggml-base.so*; do
    ln -sf "$f" "$LIBS/"
  done
fi
# The reference build's llama-bench must load these, not the libraries beside it.
if ! LD_LIBRARY_PATH=$LIBS ldd "$REF/llama-bench" | grep -q "$LIBS/libggml-cpu"; then
  echo "llama-cpp-level.sh: $REF/llama-bench does not pick up $LIBS" >&2
  exit 1
fi
echo "$LIBS"
