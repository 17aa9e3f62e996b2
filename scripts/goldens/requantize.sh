#!/usr/bin/env bash
# Regenerates tests/fixtures/goldens/requantized.json: what llama.cpp's
#   llama-quantize --allow-requantize models/SmolLM2-135M-Instruct.Q4_1.gguf OUT TYPE
# writes for TYPE in Q8_0 Q4_0 Q4_K_M: each file's sha256 and size, the sha256 of its header
# (everything before the tensor data) and every tensor's type and data sha256.
# tests/quantize_file.rs checks `ferrite::quantize::quantize_file` against it.
#   usage: scripts/goldens/requantize.sh
# Needs: python3 with gguf==0.19.0, the llama.cpp reference built for this CPU
# (scripts/llama-cpp-native.sh; set LLAMA_QUANTIZE to use another llama-quantize) and
# models/SmolLM2-135M-Instruct.Q4_1.gguf (scripts/fetch-models.sh, run here if missing).
# If FERRITE_REQUANT_OUT names a folder, llama.cpp's files are kept there as TYPE.gguf.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=tests/fixtures/goldens/requantized.json
MODEL=models/SmolLM2-135M-Instruct.Q4_1.gguf

GGUF_VERSION=$(python3 -m pip show gguf 2>/dev/null | sed -n 's/^Version: //p')
[ "$GGUF_VERSION" = 0.19.0 ] || { echo "error: need gguf==0.19.0, have '${GGUF_VERSION}'" >&2; exit 1; }

QUANTIZE=${LLAMA_QUANTIZE:-$(scripts/llama-cpp-native.sh | tail -n 1)/llama-quantize}
./scripts/fetch-models.sh

WORK=${FERRITE_REQUANT_OUT:-$(mktemp -d)}
mkdir -p "$WORK"
[ -n "${FERRITE_REQUANT_OUT:-}" ] || trap 'rm -rf "$WORK"' EXIT

for t in Q8_0 Q4_0 Q4_K_M; do
  "$QUANTIZE" --allow-requantize "$MODEL" "$WORK/$t.gguf" "$t" >"$WORK/$t.log" 2>&1 \
    || { cat "$WORK/$t.log" >&2; exit 1; }
done

mkdir -p "$(dirname "$OUT")"
python3 - "$WORK" "$OUT" "$QUANTIZE" <<'PY'
import hashlib, json, os, sys
from gguf import GGUFReader

work, out, quantize = sys.argv[1:4]
res = {
    "source": "llama-quantize --allow-requantize models/SmolLM2-135M-Instruct.Q4_1.gguf OUT TYPE "
              "(llama.cpp from the llama-cpp-python source distribution, scripts/llama-cpp-native.sh); "
              "regenerate with scripts/goldens/requantize.sh",
}
for t in ["Q8_0", "Q4_0", "Q4_K_M"]:
    path = os.path.join(work, t + ".gguf")
    data = open(path, "rb").read()
    r = GGUFReader(path)
    data_start = min(int(x.data_offset) for x in r.tensors)
    tensors = []
    for x in r.tensors:
        off, n = int(x.data_offset), int(x.n_bytes)
        tensors.append({
            "name": x.name,
            "type": x.tensor_type.name,
            "sha256": hashlib.sha256(data[off:off + n]).hexdigest(),
        })
    res[t] = {
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
        "header_sha256": hashlib.sha256(data[:data_start]).hexdigest(),
        "header_size": data_start,
        "tensors": tensors,
    }
# One line per tensor, so a diff of the fixture shows which tensors changed.
lines = ["{", "  \"source\": " + json.dumps(res.pop("source")) + ","]
for i, (t, v) in enumerate(res.items()):
    lines.append(f"  {json.dumps(t)}: {{")
    for k in ["sha256", "size", "header_sha256", "header_size"]:
        lines.append(f"    {json.dumps(k)}: {json.dumps(v[k])},")
    lines.append("    \"tensors\": [")
    lines += ["      " + json.dumps(x) + ("," if j + 1 < len(v["tensors"]) else "") for j, x in enumerate(v["tensors"])]
    lines.append("    ]")
    lines.append("  }" + ("," if i + 1 < len(res) else ""))
lines.append("}")
with open(out, "w") as f:
    f.write("\n".join(lines) + "\n")
print(out, file=sys.stderr)
PY
