#!/usr/bin/env bash
# The reference llama.cpp for *this* CPU. The shared build script (../shared/tools/llama-cpp.sh)
# targets AVX-512 (F/BW/VL/VNNI/VBMI/BF16) and AVX-VNNI unconditionally: where this CPU has all
# of them, its build is used as it is; elsewhere its binaries would die with SIGILL, so this
# script reuses the source it unpacks and builds a second tree, build-native/, with what this
# CPU has (GGML_NATIVE=ON). Prints the bin directory last.
#   usage: scripts/llama-cpp-native.sh [PREFIX]      (default ~/.cache/llama-cpp-ref)
set -euo pipefail
PREFIX=${1:-$HOME/.cache/llama-cpp-ref}
SRC=$PREFIX/llama.cpp
here=$(cd "$(dirname "$0")" && pwd)
shared_ok=1
for f in avx2 fma f16c bmi2 avx512f avx512bw avx512vl avx512_vnni avx512vbmi avx512_bf16 avx_vnni; do
  grep -qw "$f" /proc/cpuinfo || shared_ok=0
done
if [ "$shared_ok" = 1 ]; then
  bash "$here/../../shared/tools/llama-cpp.sh" "$PREFIX" | tail -1
  exit 0
fi
BIN=$SRC/build-native/bin
if [ -x "$BIN/llama-bench" ] && [ -x "$BIN/llama-tokenize" ] && [ -x "$BIN/llama-quantize" ]; then echo "$BIN"; exit 0; fi
if [ ! -d "$SRC" ]; then
  bash "$here/../../shared/tools/llama-cpp.sh" "$PREFIX" >&2 || true
fi
python3 -m pip install -q cmake ninja >&2
cd "$SRC"
cmake -B build-native -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
  -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_OPENSSL=OFF >&2
ninja -C build-native -j"$(nproc)" llama-bench llama-quantize llama-completion llama-tokenize \
  llama-perplexity llama-simple >&2
echo "$BIN"
