#!/usr/bin/env python3
"""Recompute layer 0 of a Llama GGUF model with numpy, from the weights as the reference
`gguf` package dequantizes them, for the tokens recorded in a `ferrite run --dump-activations`
index, and print, as JSON, the relative L2 error of each dumped array of layer 0 against it.
    usage: layer0_check.py MODEL DUMP_DIR"""
import json
import sys

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize


def main():
    model, dump = sys.argv[1], sys.argv[2]
    r = GGUFReader(model)
    tensors = {t.name: t for t in r.tensors}
    f = r.fields

    def meta(key):
        return f[key].contents()

    def weight(name):
        t = tensors[name]
        a = dequantize(t.data, t.tensor_type).astype(np.float64)
        return a.reshape(-1, int(t.shape[0]))  # rows x cols (first GGUF dim = cols)

    idx = json.load(open(f"{dump}/index.json"))
    toks = idx["tokens"]
    dim = int(meta("llama.embedding_length"))
    heads = int(meta("llama.attention.head_count"))
    kv_heads = int(meta("llama.attention.head_count_kv"))
    eps = float(meta("llama.attention.layer_norm_rms_epsilon"))
    base = float(meta("llama.rope.freq_base"))
    hd = dim // heads

    emb = weight("token_embd.weight")
    x = emb[toks]  # positions x dim

    def rmsnorm(v, w):
        return v / np.sqrt((v * v).mean(axis=-1, keepdims=True) + eps) * w

    def rope(v, n_heads):
        out = v.reshape(len(toks), n_heads, hd).copy()
        inv = base ** (-np.arange(0, hd, 2) / hd)
        for p in range(len(toks)):
            ang = p * inv
            c, s = np.cos(ang), np.sin(ang)
            a, b = out[p, :, 0::2].copy(), out[p, :, 1::2].copy()
            out[p, :, 0::2] = a * c - b * s
            out[p, :, 1::2] = a * s + b * c
        return out.reshape(len(toks), n_heads * hd)

    L = "blk.0."
    ref = {}
    ref["attn_norm.in"] = x
    xn = rmsnorm(x, weight(L + "attn_norm.weight").ravel())
    ref["attn_norm.out"] = xn
    q = xn @ weight(L + "attn_q.weight").T
    k = xn @ weight(L + "attn_k.weight").T
    v = xn @ weight(L + "attn_v.weight").T
    ref["attn_q.out"], ref["attn_k.out"], ref["attn_v.out"] = q, k, v
    q, k = rope(q, heads), rope(k, kv_heads)
    ref["rope_q.out"], ref["rope_k.out"] = q, k
    n = len(toks)
    att = np.zeros((n, heads * hd))
    group = heads // kv_heads
    for h in range(heads):
        kh = h // group
        qh = q[:, h * hd:(h + 1) * hd]
        kk = k[:, kh * hd:(kh + 1) * hd]
        vv = v[:, kh * hd:(kh + 1) * hd]
        sc = qh @ kk.T / np.sqrt(hd)
        sc = sc + np.triu(np.full((n, n), -np.inf), 1)
        p = np.exp(sc - sc.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        att[:, h * hd:(h + 1) * hd] = p @ vv
    ref["attention.out"] = att
    o = att @ weight(L + "attn_output.weight").T
    ref["attn_output.out"] = o
    x = x + o
    ref["ffn_inp"] = x
    xn = rmsnorm(x, weight(L + "ffn_norm.weight").ravel())
    ref["ffn_norm.out"] = xn
    g = xn @ weight(L + "ffn_gate.weight").T
    u = xn @ weight(L + "ffn_up.weight").T
    ref["ffn_gate.out"], ref["ffn_up.out"] = g, u
    sw = g / (1 + np.exp(-g)) * u
    ref["swiglu.out"] = sw
    d = sw @ weight(L + "ffn_down.weight").T
    ref["ffn_down.out"] = d
    ref["layer.out"] = x + d

    errors = {}
    for a in idx["arrays"]:
        if a["layer"] != 0:
            continue
        ours = np.load(f"{dump}/{a['file']}").astype(np.float64)
        want = ref[a["step"]][-1]
        errors[a["step"]] = float(np.linalg.norm(ours - want) / max(np.linalg.norm(want), 1e-30))
    print(json.dumps(errors))


if __name__ == "__main__":
    main()
