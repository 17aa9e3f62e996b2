#!/usr/bin/env python3
"""Dequantization goldens: llama.cpp quantizes, the `gguf` Python package dequantizes.

Builds a small F32 llama-architecture GGUF (one layer, n_embd 256, n_ff 512) whose weight
tensors hold chosen data (random of several distributions, special rows, and real weights
from SmolLM2-135M-Instruct), quantizes it with `llama-quantize --pure` to every type the
crate dequantizes, checks that llama-quantize's bytes equal `quant-ref quant` (ggml's
`ggml_quantize_chunk`, no importance matrix) on the same data, and writes for each type:

  OUT/TYPE.bin   the first SLICE_ELEMS elements' blocks of each tensor in SLICES, concatenated
  OUT/TYPE.f32   `gguf.quants.dequantize` of each slice (f32 LE), concatenated
  OUT/slices.txt the slice size and the tensor of each slice, in order

Run by scripts/goldens/quant.sh; see kernels/tests/fixtures/quant/README.md.
"""

import argparse
import os
import subprocess
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as QT
from gguf import GGUFReader, GGUFWriter

SLICE_ELEMS = 1024  # a whole number of blocks for every type (K blocks hold 256)
N_EMBD, N_FF, N_HEAD, N_VOCAB = 256, 512, 4, 64

# (our name, llama-quantize ftype, ggml type name for quant-ref). With --pure every weight
# tensor gets the ftype's base type (Q3_K_M -> Q3_K, ...).
TYPES = [
    ("Q4_0", "Q4_0", "q4_0"),
    ("Q4_1", "Q4_1", "q4_1"),
    ("Q5_0", "Q5_0", "q5_0"),
    ("Q5_1", "Q5_1", "q5_1"),
    ("Q8_0", "Q8_0", "q8_0"),
    ("Q2_K", "Q2_K", "q2_K"),
    ("Q3_K", "Q3_K_M", "q3_K"),
    ("Q4_K", "Q4_K_M", "q4_K"),
    ("Q5_K", "Q5_K_M", "q5_K"),
    ("Q6_K", "Q6_K", "q6_K"),
    ("IQ4_NL", "IQ4_NL", "iq4_nl"),
    ("IQ4_XS", "IQ4_XS", "iq4_xs"),
    ("F16", "F16", "f16"),
    ("BF16", "BF16", "bf16"),
]

# The tensors sliced into the goldens, and what their data is.
SLICES = [
    ("blk.0.attn_q.weight", "normal, sigma 0.02 (weight-like)"),
    ("blk.0.attn_k.weight", "normal, sigma 0.05, 2% outliers x20"),
    ("blk.0.attn_v.weight", "uniform [-1, 1)"),
    ("blk.0.attn_output.weight", "real: SmolLM2 token_embd rows (Q8_0 in the file), first 256 columns"),
    ("blk.0.ffn_gate.weight", "rows: zeros + one big value, constant, tiny (1e-7), block magnitudes 2^-8..2^7"),
    ("blk.0.ffn_up.weight", "normal x 1000, mixed with all-positive blocks"),
    ("blk.0.ffn_down.weight", "real: SmolLM2 blk.0.ffn_down (Q4_1 in the file), 256 x 512 corner"),
]


def real_weights(model_path):
    r = GGUFReader(model_path)
    t = {x.name: x for x in r.tensors}

    def deq(name):
        x = t[name]
        return gguf.quants.dequantize(x.data, x.tensor_type).reshape(x.data.shape[0], -1)

    emb = deq("token_embd.weight")  # (49152, 576)
    down = deq("blk.0.ffn_down.weight")  # (576, 1536)
    # Token rows from the middle of the vocabulary (ordinary tokens, not specials).
    return emb[1000:1000 + N_EMBD, :N_EMBD].astype(np.float32), down[:N_EMBD, :N_FF].astype(np.float32)


def tensors(model_path):
    rng = np.random.default_rng(20240917)
    f32 = np.float32
    emb_real, down_real = real_weights(model_path)
    k = rng.normal(0, 0.05, (N_EMBD, N_EMBD))
    k[rng.random(k.shape) < 0.02] *= 20
    gate = rng.normal(0, 0.3, (N_FF, N_EMBD))
    gate[0] = 0
    gate[0, 77] = -9.5
    gate[1] = 0.4375
    gate[2] = rng.normal(0, 1e-7, N_EMBD)
    gate[3] = rng.normal(0, 1, N_EMBD) * np.repeat(2.0 ** np.arange(-8, 8), 16)
    up = rng.normal(0, 1000, (N_FF, N_EMBD))
    up[:, 32:64] = np.abs(up[:, 32:64])
    return {
        "token_embd.weight": rng.normal(0, 0.1, (N_VOCAB, N_EMBD)).astype(f32),
        "blk.0.attn_norm.weight": np.ones(N_EMBD, f32),
        "blk.0.attn_q.weight": rng.normal(0, 0.02, (N_EMBD, N_EMBD)).astype(f32),
        "blk.0.attn_k.weight": k.astype(f32),
        "blk.0.attn_v.weight": rng.uniform(-1, 1, (N_EMBD, N_EMBD)).astype(f32),
        "blk.0.attn_output.weight": emb_real,
        "blk.0.ffn_norm.weight": np.ones(N_EMBD, f32),
        "blk.0.ffn_gate.weight": gate.astype(f32),
        "blk.0.ffn_up.weight": up.astype(f32),
        "blk.0.ffn_down.weight": down_real,
        "output_norm.weight": np.ones(N_EMBD, f32),
    }


def write_model(path, ts):
    w = GGUFWriter(path, "llama")
    w.add_name("ferrite dequant goldens")
    w.add_context_length(128)
    w.add_embedding_length(N_EMBD)
    w.add_block_count(1)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_HEAD)
    w.add_rope_dimension_count(N_EMBD // N_HEAD)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(N_VOCAB)
    w.add_file_type(0)  # all F32
    for name, data in ts.items():
        w.add_tensor(name, data)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--llama-quantize", required=True)
    ap.add_argument("--quant-ref", required=True)
    ap.add_argument("--model", required=True, help="SmolLM2-135M-Instruct.Q4_1.gguf (real weights)")
    ap.add_argument("--work", required=True, help="scratch directory")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)

    ts = tensors(a.model)
    f32_path = os.path.join(a.work, "tiny-f32.gguf")
    write_model(f32_path, ts)

    with open(os.path.join(a.out, "slices.txt"), "w") as f:
        f.write("# written by scripts/goldens/dequant.py; do not edit\n")
        f.write(f"elems {SLICE_ELEMS}\n")
        for name, what in SLICES:
            f.write(f"slice {name} {what}\n")

    for ours, ftype, ggml_name in TYPES:
        qt = QT[ours]
        block, tsize = gguf.GGML_QUANT_SIZES[qt]
        out_path = os.path.join(a.work, f"tiny-{ours}.gguf")
        subprocess.run([a.llama_quantize, "--pure", f32_path, out_path, ftype, "2"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        r = GGUFReader(out_path)
        got = {t.name: t for t in r.tensors}
        blobs, deqs = [], []
        for name, _ in SLICES:
            t = got[name]
            if t.tensor_type != qt:
                sys.exit(f"{ours}: {name} came out as {t.tensor_type.name}")
            raw = np.asarray(t.data).tobytes()
            # llama-quantize without an importance matrix must be ggml_quantize_chunk.
            src = ts[name]
            inp, ref = os.path.join(a.work, "in.f32"), os.path.join(a.work, "ref.bin")
            src.tofile(inp)
            subprocess.run([a.quant_ref, "quant", ggml_name, str(src.shape[0]), str(src.shape[1]), inp, ref],
                           check=True)
            with open(ref, "rb") as f:
                if f.read() != raw:
                    sys.exit(f"{ours}: {name}: llama-quantize and ggml_quantize_chunk disagree")
            nbytes = SLICE_ELEMS // block * tsize
            blob = raw[:nbytes]
            deq = gguf.quants.dequantize(np.frombuffer(blob, dtype=np.uint8).reshape(1, nbytes), qt)
            deq = np.asarray(deq, dtype=np.float32).reshape(-1)
            if deq.size != SLICE_ELEMS:
                sys.exit(f"{ours}: {name}: dequantized {deq.size} values")
            blobs.append(blob)
            deqs.append(deq)
        with open(os.path.join(a.out, f"{ours}.bin"), "wb") as f:
            f.write(b"".join(blobs))
        np.concatenate(deqs).astype("<f4").tofile(os.path.join(a.out, f"{ours}.f32"))
        print(f"{ours}: {len(SLICES)} slices of {SLICE_ELEMS}", file=sys.stderr)


if __name__ == "__main__":
    main()
