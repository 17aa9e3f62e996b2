#!/usr/bin/env bash
# Regenerates tests/fixtures/goldens/perplexity.json: llama-perplexity's value, chunk count and
# context for each SmolLM2 file (the model's Q4_1 and the requantizations of
# scripts/make-variants.sh) on the texts of tests/fixtures/text/. Needs the reference
# llama.cpp build (scripts/llama-cpp-native.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=$(scripts/llama-cpp-native.sh | tail -1)
./scripts/fetch-models.sh
./scripts/make-variants.sh
python3 - "$BIN" <<'PY'
import hashlib, json, re, subprocess, sys
bin_dir = sys.argv[1]
runs = [("ferrite-essay.txt", 256), ("ferrite-docs.txt", 512)]
out = {"tool": "llama-perplexity -t 2", "entries": []}
for t in ["Q4_1", "Q8_0", "Q4_0", "Q4_K_M"]:
    model = f"models/SmolLM2-135M-Instruct.{t}.gguf"
    sha = hashlib.sha256(open(model, "rb").read()).hexdigest()
    for text, c in runs:
        path = f"tests/fixtures/text/{text}"
        r = subprocess.run([f"{bin_dir}/llama-perplexity", "-m", model, "-f", path, "-c", str(c), "-t", "2"],
                           capture_output=True, text=True, check=True)
        log = r.stdout + r.stderr
        ppl = float(re.search(r"Final estimate: PPL = ([0-9.]+)", log).group(1))
        chunks = int(re.search(r"calculating perplexity over (\d+) chunks", log).group(1))
        out["entries"].append({"type": t, "sha256": sha, "text": text, "ctx": c, "chunks": chunks,
                               "perplexity": ppl})
        print(t, text, c, chunks, ppl, file=sys.stderr)
json.dump(out, open("tests/fixtures/goldens/perplexity.json", "w"), indent=1)
PY
