#!/usr/bin/env bash
# The reference llama.cpp built for *this* CPU (GGML_NATIVE=ON). The shared build script
# (../shared/tools/llama-cpp.sh) targets AVX-512 unconditionally; on a machine without
# AVX-512 its binaries die with SIGILL. This script reuses the source it unpacks and builds a
# second tree, build-native/, with what this CPU has. Prints the bin directory last.
#   usage: scripts/llama-cpp-native.sh [PREFIX]      (default ~/.cache/llama-cpp-ref)
set -euo pipefail
PREFIX=${1:-$HOME/.cache/llama-cpp-ref}
SRC=$PREFIX/llama.cpp
BIN=$SRC/build-native/bin
if [ -x "$BIN/llama-bench" ] && [ -x "$BIN/llama-tokenize" ] && [ -x "$BIN/llama-quantize" ]; then echo "$BIN"; exit 0; fi
if [ ! -d "$SRC" ]; then
  here=$(cd "$(dirname "$0")" && pwd)
  bash "$here/../../shared/tools/llama-cpp.sh" "$PREFIX" >&2 || true
fi
python3 -m pip install -q cmake ninja >&2
cd "$SRC"
cmake -B build-native -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
  -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_OPENSSL=OFF >&2
ninja -C build-native -j"$(nproc)" llama-bench llama-quantize llama-completion llama-tokenize \
  llama-perplexity llama-simple >&2
echo "$BIN"
