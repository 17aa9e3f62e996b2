#!/usr/bin/env bash
# Regenerates tests/fixtures/goldens/escapes.json: llama-tokenize's ids for prompts with
# escape sequences given to -p as typed (its default escape processing; one entry with
# --no-escape), on SmolLM2's vocabulary. Needs the reference llama.cpp build
# (scripts/llama-cpp-native.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=$(scripts/llama-cpp-native.sh | tail -1)
./scripts/fetch-models.sh
python3 - "$BIN" <<'PY'
import json, subprocess, sys
bin_dir = sys.argv[1]
model = "models/SmolLM2-135M-Instruct.Q4_1.gguf"
texts = [
    r"a\nb",
    r"tab\tand\rcr",
    r"""say \"hi\" and \'bye\'""",
    r"back\\slash and \\n",
    r"hex \x41\x42\x43 and \xe2\x82\xac",
    r"unknown \q and \xZZ and \x4",
    "ends with \\",
    r"<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
]
entries = []
for text, no_escape in [(t, False) for t in texts] + [(r"a\nb \x41", True)]:
    args = [f"{bin_dir}/llama-tokenize", "-m", model, "-p", text, "--ids", "--log-disable"]
    r = subprocess.run(args + (["--no-escape"] if no_escape else []), capture_output=True, text=True, check=True)
    ids = json.loads(r.stdout.strip().splitlines()[-1])
    entries.append({"text": text, "no_escape": no_escape, "ids": ids})
    print(text, no_escape, ids, file=sys.stderr)
out = {"tool": "llama-tokenize -p TEXT --ids [--no-escape]", "model": model, "entries": entries}
json.dump(out, open("tests/fixtures/goldens/escapes.json", "w"), indent=1, ensure_ascii=False)
PY
