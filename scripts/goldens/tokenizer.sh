#!/usr/bin/env bash
# Regenerates the tokenizer goldens in tests/fixtures/tokenizer/ from llama.cpp's own
# tokenizer (`llama-tokenize`, built by ../shared/tools/llama-cpp.sh):
#   smollm2.json    models/SmolLM2-135M-Instruct.Q4_1.gguf (gpt2 BPE, pre-tokenizer smollm)
#   smollm2-pre-default.json, smollm2-pre-gpt-2.json
#                   the same vocabulary with tokenizer.ggml.pre = default / gpt-2
#   llama-bpe.json  tests/fixtures/vocab/ggml-vocab-llama-bpe.gguf (Llama 3)
#   llama-spm.json  tests/fixtures/vocab/ggml-vocab-llama-spm.gguf (Llama 2 SentencePiece)
# Each is a list of {text, add_special, parse_special, ids}: `add_special` false means
# llama-tokenize ran with --no-bos, `parse_special` false with --no-parse-special.
#
#   usage: scripts/goldens/tokenizer.sh            (from the project root)
#   env:   LLAMA_TOKENIZE=path/to/llama-tokenize   (default: from ../shared/tools/llama-cpp.sh)
#          LLAMA_LIB_DIR=dir                        (put first on LD_LIBRARY_PATH)
#
# The reference build enables AVX-512; on a CPU without it, llama-tokenize dies with SIGILL
# in ggml_cpu_init. Then this script builds an AVX2-only libggml-cpu from the same source
# (a few minutes) into $TMPDIR and runs llama-tokenize against it: the tokenizer itself
# does not depend on the CPU backend.
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ -z "${LLAMA_TOKENIZE:-}" ]; then
  BIN=$(../shared/tools/llama-cpp.sh | tail -n 1)
  LLAMA_TOKENIZE=$BIN/llama-tokenize
fi
SRC=$(cd "$(dirname "$LLAMA_TOKENIZE")/../.." && pwd)   # llama.cpp/ above build/bin

probe() {
  printf 'x' > "${TMPDIR:-/tmp}/ferrite-tok-probe.txt"
  LD_LIBRARY_PATH=${LLAMA_LIB_DIR:-} "$LLAMA_TOKENIZE" -m tests/fixtures/vocab/ggml-vocab-llama-spm.gguf \
    -f "${TMPDIR:-/tmp}/ferrite-tok-probe.txt" --ids --log-disable >/dev/null 2>&1
}

if ! probe; then
  AVX2=${TMPDIR:-/tmp}/ferrite-llama-avx2
  echo "llama-tokenize failed (no AVX-512?): building an AVX2 libggml-cpu in $AVX2" >&2
  cmake -S "$SRC" -B "$AVX2" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF \
    -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX512=OFF \
    -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF -DLLAMA_CURL=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_OPENSSL=OFF -DBUILD_SHARED_LIBS=ON >&2
  ninja -C "$AVX2" ggml-cpu >&2
  export LLAMA_LIB_DIR=$AVX2/bin
  probe || { echo "llama-tokenize still fails" >&2; exit 1; }
fi
[ -f models/SmolLM2-135M-Instruct.Q4_1.gguf ] || ./scripts/fetch-models.sh

export LLAMA_TOKENIZE LLAMA_LIB_DIR=${LLAMA_LIB_DIR:-}
python3 - <<'PY'
import json, os, subprocess, tempfile

tok = os.environ["LLAMA_TOKENIZE"]
env = dict(os.environ, LD_LIBRARY_PATH=os.environ.get("LLAMA_LIB_DIR", ""))

def llama_ids(model, text, add_special, parse_special):
    with tempfile.NamedTemporaryFile("wb", suffix=".txt", delete=False) as f:
        f.write(text.encode("utf-8"))
        path = f.name
    try:
        args = [tok, "-m", model, "-f", path, "--no-escape", "--ids", "--log-disable"]
        if not add_special:
            args.append("--no-bos")
        if not parse_special:
            args.append("--no-parse-special")
        out = subprocess.run(args, env=env, capture_output=True, check=True).stdout.decode()
    finally:
        os.unlink(path)
    line = [l for l in out.splitlines() if l.startswith("[")][-1]
    return json.loads(line)

def inp_strings(path):
    data = open(path, encoding="utf-8").read()
    parts = data.split("\n__ggml_vocab_test__\n")
    assert parts[-1] == "", "the .inp file must end with a separator line"
    return parts[:-1]

def write(name, model, cases):
    rows = [dict(text=t, add_special=a, parse_special=p, ids=llama_ids(model, t, a, p)) for t, a, p in cases]
    with open(f"tests/fixtures/tokenizer/{name}", "w", encoding="utf-8") as f:
        # One case per line: easy to read and to diff.
        f.write("[\n" + ",\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n]\n")
    print(f"wrote tests/fixtures/tokenizer/{name}: {len(rows)} cases")

varied = [
    "Hello world",
    " Hello world",
    "The quick brown fox jumps over the lazy dog.",
    'fn main() {\n    println!("Hello, world!");\n}\n',
    "def f(x):\n\treturn x ** 2  # square\n",
    "12345678",
    "3.14159 and 1,000,000 and 2024-05-09 and 0x1F",
    "   leading and trailing   ",
    "a\n\nb\r\n\tc",
    "\n\n\n",
    "        ",
    "emoji 🦙🚀 😶‍🌫️ done 👍🏽",
    "中文测试：我想在apple工作1314151天～",
    "日本語のテキストとカタカナ、한국어",
    "Café naïve résumé Äpfel Übermäßig",
    "Привет, мир! Γειά σου Κόσμε",
    "I've been 'told he's there, 'RE you sure? We'Ve a'lL",
    "Ω≈ç√∫˜µ≤≥÷ ½ ¼ ① ⅷ ٣٤",
    "ﬁ ﬂ ligatures,\u00a0nbsp and\u3000ideographic space",
    "x = [1, 2, 3]; y = {'a': 1} // $5 + 10% <= ~|^`",
    "a\u0000b\u007fc\u200bd\u0085e",
    "bytes SmolLM2 lacks: \u0004\u0006\u0013 \U00050000 \u00c0",
    "a" * 80,
    "",
]
chat = "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
specials_smol = [
    chat,
    "<|endoftext|>text<reponame>x",
    "<|im_start|><|im_start|>nested <|im_end",
    " <|im_end|> spaced <|im_start|> ",
]

smol_inp = inp_strings("tests/fixtures/vocab/ggml-vocab-llama-bpe.gguf.inp")
smol = [(t, True, False) for t in varied + smol_inp]
smol += [(t, True, p) for t in specials_smol for p in (True, False)]
write("smollm2.json", "models/SmolLM2-135M-Instruct.Q4_1.gguf", smol)

# The "default" and "gpt-2" pre-tokenizers, on SmolLM2's vocabulary: a metadata-only copy
# with tokenizer.ggml.pre replaced (tests/tokenizer.rs builds the same metadata in memory).
import gguf
def with_pre(src, pre, dst):
    r = gguf.GGUFReader(src)
    w = gguf.GGUFWriter(dst, arch="llama")
    for k, f in r.fields.items():
        if k.startswith("GGUF.") or k == "general.architecture":
            continue
        t, v = f.types[0], f.contents()
        if k == "tokenizer.ggml.pre":
            w.add_string(k, pre)
        elif t == gguf.GGUFValueType.ARRAY:
            w.add_array(k, v)
        elif t == gguf.GGUFValueType.STRING:
            w.add_string(k, v)
        else:
            w.add_key_value(k, v, t)
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()

with tempfile.TemporaryDirectory() as d:
    for pre in ("default", "gpt-2"):
        path = os.path.join(d, f"smollm2-{pre}.gguf")
        with_pre("models/SmolLM2-135M-Instruct.Q4_1.gguf", pre, path)
        write(f"smollm2-pre-{pre}.json", path, [(t, True, False) for t in varied + smol_inp])

bpe_specials = [
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>",
    "text<|eot_id|><|reserved_special_token_5|>x",
]
common = ["Hello world", " Hello", "", "  two spaces\n", "a\n\nb", chat]
write("llama-bpe.json", "tests/fixtures/vocab/ggml-vocab-llama-bpe.gguf",
      [(t, a, p) for t in common + bpe_specials + varied[3:9] for a in (True, False) for p in (True, False)])

spm_specials = ["<s>[INST] hi [/INST]</s>", "<unk> and </s>x</s> y", "x<s>", "</s>"]
write("llama-spm.json", "tests/fixtures/vocab/ggml-vocab-llama-spm.gguf",
      [(t, a, p) for t in common + spm_specials + varied[3:9] + varied[11:14] for a in (True, False) for p in (True, False)])
PY
