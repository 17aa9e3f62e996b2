#!/usr/bin/env bash
# Regenerates tests/fixtures/goldens/perplexity.json: llama-perplexity's value, chunk count and
# context for each SmolLM2 file (the model's Q4_1 and the requantizations of
# scripts/make-variants.sh) on the texts of tests/fixtures/text/ (and, for the Q4_1 file, the first
# three chunks of the longer text: `--chunks 3`). Needs the reference
# llama.cpp build (scripts/llama-cpp-native.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=$(scripts/llama-cpp-native.sh | tail -1)
./scripts/fetch-models.sh
./scripts/make-variants.sh
python3 - "$BIN" <<'PY'
import hashlib, json, re, subprocess, sys
bin_dir = sys.argv[1]
# (text, context, --chunks or None for all); the limited run only for the model's own file.
runs = [("ferrite-essay.txt", 256, None), ("ferrite-docs.txt", 512, None)]
out = {"tool": "llama-perplexity -t 2", "entries": []}
for t in ["Q4_1", "Q8_0", "Q4_0", "Q4_K_M"]:
    model = f"models/SmolLM2-135M-Instruct.{t}.gguf"
    sha = hashlib.sha256(open(model, "rb").read()).hexdigest()
    for text, c, limit in runs + ([("ferrite-docs.txt", 512, 3)] if t == "Q4_1" else []):
        path = f"tests/fixtures/text/{text}"
        args = ["-c", str(c), "-t", "2"] + (["--chunks", str(limit)] if limit else [])
        r = subprocess.run([f"{bin_dir}/llama-perplexity", "-m", model, "-f", path] + args,
                           capture_output=True, text=True, check=True)
        log = r.stdout + r.stderr
        ppl = float(re.search(r"Final estimate: PPL = ([0-9.]+)", log).group(1))
        chunks = int(re.search(r"calculating perplexity over (\d+) chunks", log).group(1))
        e = {"type": t, "sha256": sha, "text": text, "ctx": c, "chunks": chunks, "perplexity": ppl}
        if limit:
            e["max_chunks"] = limit
        out["entries"].append(e)
        print(t, text, c, chunks, ppl, file=sys.stderr)
json.dump(out, open("tests/fixtures/goldens/perplexity.json", "w"), indent=1)
PY
