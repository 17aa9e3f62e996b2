#!/usr/bin/env python3
"""Tiny random-weight Llama models and llama.cpp logits for them (tests/fixtures/tiny/).

Called by scripts/goldens/tiny-models.sh, which finds llama.cpp; see that script and
tests/fixtures/tiny/README.md.

  tiny_models.py write OUT.gguf             write the F16 model (fixed seed, reproducible)
  tiny_models.py goldens BIN LOGITS OUTDIR  quantize, run llama-logits, write manifest.json
  tiny_models.py noise [N]                  the noise-floor experiment of the README: emulate
                                            llama.cpp's forward on tiny-Q8_0.gguf and perturb it
"""
import hashlib
import json
import os
import re
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

# Prompts, tokenized by llama.cpp with BOS added: 4 to 21 tokens (llama.cpp's f16 attention
# path) and one of 71 tokens (64 and more: its tiled f32 path). Word salad of vocabulary
# pieces, one with byte fallback ("A", "."). Each was picked (from random candidates) so that
# llama.cpp's top-1 logit leads the runner-up by >= 2% of the logit range for every type:
# a top-1 comparison is then not at the mercy of float noise.
PROMPTS = [
    "a dog sat",
    "sun the the the",
    "A cat is on the mat.",
    "cat sat sat the is the log a log on",
    "the and dog sun mat sun to dog log on ran so of a sat cat",
    "dog a so sat log sat is sat sun a ran in cat sun and sun in a sun on",
    "and dog so ran sun on to so mat sat cat in sun to in sun so log sun the on mat sun sun sun"
    " sat is log of is so ran sat cat mat cat of log a sun so so ran in is sun and the mat log a"
    " mat on and to cat on log on dog log sat sat sat dog and to the so of",
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
            top = np.sort(logits)[::-1]
            rng = float(logits.max() - logits.min())
            gap = float(100 * (top[0] - top[1]) / rng)
            if gap < 2.0:
                print(f"warning: {t} prompt {i}: top-1 leads by only {gap:.2f}% of the range",
                      file=sys.stderr)
            entries.append({
                "file": os.path.basename(f), "type": t, "prompt": p, "tokens": ids,
                "logits": name, "sha256": sha256(f), "tensor_types": tensor_types(f),
                "range": rng, "top1": int(logits.argmax()), "top1_gap_pct": round(gap, 3),
            })
            print(f"{t:7} prompt {i}: {len(ids):2} tokens, range {logits.max() - logits.min():6.2f},"
                  f" std {logits.std():5.2f}, top1 {int(logits.argmax())}", file=sys.stderr)
    manifest = {
        "model": {"dim": DIM, "layers": LAYERS, "heads": HEADS, "kv_heads": KV_HEADS,
                  "ffn": FFN, "vocab": N_VOCAB, "context": CTX, "rope_base": ROPE_BASE,
                  "rms_eps": RMS_EPS, "seed": SEED},
        "entries": entries,
    }
    text = json.dumps(manifest, indent=1, ensure_ascii=False)
    # token lists on one line each
    text = re.sub(r"\[\s+([0-9,\s]+?)\s+\]",
                  lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]", text)
    with open(os.path.join(out, "manifest.json"), "w") as fh:
        fh.write(text + "\n")


# --- Noise-floor experiment (tests/fixtures/tiny/README.md, "Tolerances") ---------------
# A float64/float32 emulation of llama.cpp's CPU forward for the Q8_0 file: weights
# dequantized by the gguf package, activations quantized to Q8_0 before every matmul (as
# ggml's vec_dot_q8_0_q8_0 does: d = amax/127 rounded to f16, roundf), K/V cached as f16,
# attention as ggml's flash-attention path for short batches (query rounded to f16, online
# softmax, values accumulated in f16). It reproduces llama.cpp's logits to ~1e-5 of their
# range; then perturbing the input embeddings by a relative 1e-6..1e-5 shows what a float
# difference of a few ulps does to the logits.

def _q8_0(x):
    b = x.reshape(-1, 32)
    d = np.abs(b).max(1, keepdims=True) / 127
    iv = np.where(d > 0, 1 / np.where(d > 0, d, 1), 0)
    q = np.trunc(b * iv + np.copysign(0.5, b * iv))  # C roundf: half away from zero
    return (q * d.astype(np.float16).astype(np.float32)).reshape(x.shape).astype(np.float32)


def emulate(weights, ids, eps=0.0, seed=0, act_quant=True, f16_attn=True):
    head_dim, group = DIM // HEADS, HEADS // KV_HEADS
    rng = np.random.default_rng(seed)
    mm = lambda w, x: (w @ (_q8_0(x) if act_quant else x)).astype(np.float32)

    def rms(x, w):
        return (x / np.sqrt((x.astype(np.float64) ** 2).mean() + RMS_EPS)).astype(np.float32) * w

    def rope(v, pos):
        v = v.reshape(-1, head_dim // 2, 2).copy()
        th = pos * ROPE_BASE ** (-2 * np.arange(head_dim // 2) / head_dim)
        c, s = np.cos(th).astype(np.float32), np.sin(th).astype(np.float32)
        a, b = v[..., 0].copy(), v[..., 1].copy()
        v[..., 0], v[..., 1] = a * c - b * s, a * s + b * c
        return v.reshape(-1)

    emb = weights["token_embd.weight"]
    xs = [emb[t] * (1 + eps * rng.standard_normal(DIM)).astype(np.float32) for t in ids]
    adt = np.float16 if f16_attn else np.float32
    for layer in range(LAYERS):
        w = lambda n: weights[f"blk.{layer}.{n}.weight"]
        ks, vs, mid = [], [], []
        for pos, x in enumerate(xs):
            n = rms(x, w("attn_norm"))
            q = rope(mm(w("attn_q"), n), pos)
            ks.append(rope(mm(w("attn_k"), n), pos).astype(np.float16))
            vs.append(mm(w("attn_v"), n).astype(np.float16))
            att = np.zeros(DIM, np.float32)
            for h in range(HEADS):
                g = slice(h // group * head_dim, (h // group + 1) * head_dim)
                qh = q[h * head_dim:(h + 1) * head_dim]
                if f16_attn:
                    qh = qh.astype(np.float16).astype(np.float32)
                m, s, acc = -np.inf, 0.0, np.zeros(head_dim, adt)
                for j in range(pos + 1):
                    sc = np.float32(np.dot(qh, ks[j][g].astype(np.float32)) / np.sqrt(head_dim))
                    ms, vsc = 1.0, 1.0
                    if sc > m:
                        ms = np.exp(m - sc) if m > -np.inf else 0.0
                        m = sc
                        acc = (acc.astype(np.float32) * ms).astype(adt)
                    else:
                        vsc = np.exp(sc - m)
                    acc = (acc.astype(np.float32) + vs[j][g].astype(np.float32) * np.float32(vsc)).astype(adt)
                    s = s * ms + vsc
                att[h * head_dim:(h + 1) * head_dim] = acc.astype(np.float32) / np.float32(s)
            mid.append(x + mm(w("attn_output"), att))
        xs = []
        for x in mid:
            n = rms(x, w("ffn_norm"))
            gate, up = mm(w("ffn_gate"), n), mm(w("ffn_up"), n)
            xs.append(x + mm(w("ffn_down"), gate / (1 + np.exp(-gate)) * up))
    return mm(weights["output.weight"], rms(xs[-1], weights["output_norm.weight"]))


def noise(n_seeds):
    from gguf.quants import dequantize
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../tests/fixtures/tiny")
    weights = {}
    for t in gguf.GGUFReader(os.path.join(here, "tiny-Q8_0.gguf")).tensors:
        shape = [int(x) for x in reversed(t.shape)]
        weights[t.name] = dequantize(t.data, t.tensor_type).astype(np.float32).reshape(shape)
    manifest = json.load(open(os.path.join(here, "manifest.json")))
    for e in manifest["entries"]:
        if e["type"] != "Q8_0" or len(e["tokens"]) > 30:
            continue
        ids, ref = e["tokens"], np.fromfile(os.path.join(here, e["logits"]), "<f4")
        pct = lambda a, b: 100 * np.abs(a - b).max() / (ref.max() - ref.min())
        base = emulate(weights, ids)
        plain = emulate(weights, ids, act_quant=False, f16_attn=False)
        print(f"{len(ids):2} tokens: emulation vs llama.cpp {pct(base, ref):.4f}% of the range; "
              f"without activation quantization {pct(plain, ref):.3f}%")
        for eps in [1e-6, 1e-5]:
            for aq in [True, False]:
                b = base if aq else emulate(weights, ids, act_quant=False)
                d = np.array([pct(emulate(weights, ids, eps, 1000 + k, act_quant=aq), b)
                              for k in range(n_seeds)])
                j = d[d > 0.01]
                print(f"   input x (1 + {eps:g} N(0,1)), activations {'Q8_0' if aq else 'f32 '}: "
                      f"{len(j)}/{n_seeds} moved by > 0.01%"
                      + (f", median {np.median(j):.3f}%, max {j.max():.3f}%" if len(j) else "")
                      + f"; largest move {d.max():.4f}%", flush=True)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "write":
        write_model(sys.argv[2])
    elif len(sys.argv) == 5 and sys.argv[1] == "goldens":
        goldens(*sys.argv[2:])
    elif len(sys.argv) in (2, 3) and sys.argv[1] == "noise":
        noise(int(sys.argv[2]) if len(sys.argv) == 3 else 20)
    else:
        sys.exit(__doc__)
