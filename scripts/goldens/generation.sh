#!/usr/bin/env bash
# Regenerates llama.cpp goldens for the model tests (needs the reference llama.cpp build):
#   tests/fixtures/goldens/generation.json  greedy 40-token continuations (llama-completion)
#   tests/fixtures/goldens/logits-*.f32      last-position logits (llama-logits)
#   tests/fixtures/goldens/models.json       sha256 of each requantized SmolLM2 file
# SmolLM2 Q4_1 is requantized by llama-quantize to Q8_0, Q4_0 and Q4_K_M in models/.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=$(scripts/llama-cpp-native.sh | tail -1)
SRC=$(cd "$BIN/../.." && pwd)
OUT=tests/fixtures/goldens
mkdir -p "$OUT"
./scripts/fetch-models.sh
BASE=models/SmolLM2-135M-Instruct.Q4_1.gguf
for t in Q8_0 Q4_0 Q4_K_M; do
  f=models/SmolLM2-135M-Instruct.$t.gguf
  [ -f "$f" ] || "$BIN/llama-quantize" --allow-requantize "$BASE" "$f" "$t" >/dev/null 2>&1
done
LOGITS=models/llama-logits
[ -x "$LOGITS" ] || cc -O2 ../shared/tools/llama-logits.c -I "$SRC/include" -I "$SRC/ggml/include" \
  -L "$BIN" -lllama -lggml -lggml-base -Wl,-rpath,"$BIN" -o "$LOGITS"

python3 - "$BIN" "$LOGITS" "$OUT" <<'PY'
import hashlib, json, subprocess, sys
bin_dir, logits_bin, out = sys.argv[1], sys.argv[2], sys.argv[3]
models = {t: f"models/SmolLM2-135M-Instruct.{t}.gguf" for t in ["Q4_1", "Q8_0", "Q4_0", "Q4_K_M"]}
prompts = [
    "The capital of France is",
    "Once upon a time, in a small village,",
    "def fibonacci(n):",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "The three primary colors are",
    "Water boils at a temperature of",
    "<|im_start|>user\nWrite a haiku about the sea.<|im_end|>\n<|im_start|>assistant\n",
]
gen, shas = {}, {}
for t, path in models.items():
    shas[t] = hashlib.sha256(open(path, "rb").read()).hexdigest()
    gen[t] = {}
    for p in prompts:
        r = subprocess.run([f"{bin_dir}/llama-completion", "-m", path, "-no-cnv", "--temp", "0",
                            "--no-display-prompt", "-p", p, "-n", "40", "-t", "2"],
                           capture_output=True, check=True)
        text = r.stdout.decode("utf-8")
        eos = " [end of text]" in text
        if eos:
            text = text[: text.rindex(" [end of text]")]
        gen[t][p] = {"text": text, "eos": eos}
    for i, p in enumerate(prompts[:2] + prompts[3:4]):
        r = subprocess.run([logits_bin, path, p, "0", "2"], capture_output=True, check=True)
        open(f"{out}/logits-{t}-{i}.f32", "wb").write(r.stdout)
        gen.setdefault("_logits", {})[f"logits-{t}-{i}.f32"] = {"model": t, "prompt": p,
            "tokens": [int(x) for x in r.stderr.decode().split()[-64:] if x.isdigit()]}
json.dump({"prompts": prompts, "generation": {k: v for k, v in gen.items() if k != "_logits"},
           "logits": gen["_logits"]}, open(f"{out}/generation.json", "w"), indent=1, ensure_ascii=False)
json.dump(shas, open(f"{out}/models.json", "w"), indent=1)
print("wrote goldens to", out)
PY
