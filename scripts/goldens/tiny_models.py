#!/usr/bin/env python3
"""Tiny random-weight Llama models and llama.cpp logits for them (tests/fixtures/tiny/).

Called by scripts/goldens/tiny-models.sh, which finds llama.cpp; see that script and
tests/fixtures/tiny/README.md.

  tiny_models.py write OUT.gguf           write the F16 model (fixed seed, reproducible)
  tiny_models.py goldens BIN LOGITS OUTDIR  quantize, run llama-logits, write manifest.json
"""
import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import gguf

SEED = 20240611
DIM, LAYERS, HEADS, KV_HEADS, FFN, CTX = 256, 2, 8, 2, 512, 512
ROPE_BASE, RMS_EPS = 10000.0, 1e-5

# llama-quantize type names (the F16 file is written directly).
TYPES = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K_M", "Q4_K_M", "Q5_K_M", "Q6_K",
         "IQ4_NL", "IQ4_XS"]

# The short prompt is mostly byte-fallback and single characters; the long one is mostly
# whole-word pieces (~20 tokens). Both are tokenized by llama.cpp (BOS added).
PROMPTS = [
    "Hi, the cat!",
    "the cat sat on the mat and the dog sat on a log in the sun, so the cat ran to the dog",
]

# Words whose pieces (with every prefix, so SentencePiece merges can build them) go into the
# vocabulary after the single characters.
WORDS = ["▁the", "▁cat", "▁sat", "▁on", "▁mat", "▁and", "▁dog", "▁a", "▁log", "▁in", "▁sun",
         "▁so", "▁ran", "▁to", "▁is", "▁of", "er", "in", "ing", "at", "he", "an"]
N_VOCAB = 328


def vocab():
    """SentencePiece-style vocabulary: <unk> <s> </s>, 256 byte tokens, then pieces."""
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL] + \
        [gguf.TokenType.BYTE] * 256
    scores = [0.0] * len(tokens)
    pieces = ["▁"] + [chr(c) for c in range(ord("a"), ord("z") + 1)]
    for w in WORDS:
        for n in range(2, len(w) + 1):
            if w[:n] not in pieces:
                pieces.append(w[:n])
    # Filler pieces (never produced by the prompts) to reach N_VOCAB.
    i = 0
    while len(tokens) + len(pieces) < N_VOCAB:
        a, b = "etaoinsrh"[i % 9], "nrtslde"[(i // 9) % 7]
        if a + b not in pieces:
            pieces.append(a + b)
        i += 1
    assert len(tokens) + len(pieces) == N_VOCAB, len(tokens) + len(pieces)
    for k, p in enumerate(pieces):
        tokens.append(p)
        types.append(gguf.TokenType.NORMAL)
        scores.append(-float(k))  # earlier pieces merge first, as in a trained model
    return tokens, scores, types


def write_model(path):
    rng = np.random.default_rng(SEED)
    tokens, scores, types = vocab()
    n_vocab, head_dim = len(tokens), DIM // HEADS
    w = gguf.GGUFWriter(path, "llama")
    w.add_name("ferrite-tiny-random")
    w.add_context_length(CTX)
    w.add_embedding_length(DIM)
    w.add_block_count(LAYERS)
    w.add_feed_forward_length(FFN)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_rope_dimension_count(head_dim)
    w.add_rope_freq_base(ROPE_BASE)
    w.add_layer_norm_rms_eps(RMS_EPS)
    w.add_vocab_size(n_vocab)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)

    def mat(rows, cols, std):
        # numpy shape (rows, cols) is GGUF dims [cols, rows]: each row is one output.
        return (rng.standard_normal((rows, cols)) * std).astype(np.float16)

    def norm(n):
        return (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)

    kv = KV_HEADS * head_dim
    # std 0.02 as in trained models, except q/k (0.08: attention scores of a few units, so the
    # softmax is far from uniform and RoPE/GQA mistakes show) and the output matrix (0.1:
    # logits spread over ~10 units instead of ~1).
    w.add_tensor("token_embd.weight", mat(n_vocab, DIM, 0.02))
    for i in range(LAYERS):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", norm(DIM))
        w.add_tensor(p + "attn_q.weight", mat(DIM, DIM, 0.08))
        w.add_tensor(p + "attn_k.weight", mat(kv, DIM, 0.08))
        w.add_tensor(p + "attn_v.weight", mat(kv, DIM, 0.02))
        w.add_tensor(p + "attn_output.weight", mat(DIM, DIM, 0.02))
        w.add_tensor(p + "ffn_norm.weight", norm(DIM))
        w.add_tensor(p + "ffn_gate.weight", mat(FFN, DIM, 0.02))
        w.add_tensor(p + "ffn_up.weight", mat(FFN, DIM, 0.02))
        w.add_tensor(p + "ffn_down.weight", mat(DIM, FFN, 0.02))
    w.add_tensor("output_norm.weight", norm(DIM))
    w.add_tensor("output.weight", mat(n_vocab, DIM, 0.1))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def sha256(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def tensor_types(path):
    counts = {}
    for t in gguf.GGUFReader(path).tensors:
        name = t.tensor_type.name
        counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items()))


def goldens(bin_dir, logits_bin, out):
    f16 = os.path.join(out, "tiny-F16.gguf")
    write_model(f16)
    files = {"F16": f16}
    for t in TYPES:
        f = os.path.join(out, f"tiny-{t}.gguf")
        subprocess.run([os.path.join(bin_dir, "llama-quantize"), f16, f, t, "1"],
                       check=True, capture_output=True)
        files[t] = f
    entries = []
    for t, f in files.items():
        for i, p in enumerate(PROMPTS):
            name = f"logits-{t}-{i}.f32"
            r = subprocess.run([logits_bin, f, p, "1", "2"], capture_output=True, check=True)
            logits = np.frombuffer(r.stdout, dtype="<f4")
            assert logits.size == N_VOCAB, (t, logits.size)
            assert np.isfinite(logits).all(), t
            open(os.path.join(out, name), "wb").write(r.stdout)
            ids = [int(x) for x in r.stderr.decode().split()]
            entries.append({
                "file": os.path.basename(f), "type": t, "prompt": p, "tokens": ids,
                "logits": name, "sha256": sha256(f), "tensor_types": tensor_types(f),
                "range": float(logits.max() - logits.min()), "top1": int(logits.argmax()),
            })
            print(f"{t:7} prompt {i}: {len(ids):2} tokens, range {logits.max() - logits.min():6.2f},"
                  f" std {logits.std():5.2f}, top1 {int(logits.argmax())}", file=sys.stderr)
    manifest = {
        "model": {"dim": DIM, "layers": LAYERS, "heads": HEADS, "kv_heads": KV_HEADS,
                  "ffn": FFN, "vocab": N_VOCAB, "context": CTX, "rope_base": ROPE_BASE,
                  "rms_eps": RMS_EPS, "seed": SEED},
        "entries": entries,
    }
    with open(os.path.join(out, "manifest.json"), "w") as fh:
        json.dump(manifest, fh, indent=1, ensure_ascii=False)
        fh.write("\n")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "write":
        write_model(sys.argv[2])
    elif len(sys.argv) == 5 and sys.argv[1] == "goldens":
        goldens(*sys.argv[2:])
    else:
        sys.exit(__doc__)
