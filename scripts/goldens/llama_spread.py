#!/usr/bin/env python3
"""llama.cpp against its own logit goldens, built for another instruction set.

Runs a llama-logits binary (../shared/tools/llama-logits.c, built by tiny-models.sh as
models/llama-logits) on every (file, prompt) of tests/fixtures/tiny/manifest.json and of the
SmolLM2 logits in tests/fixtures/goldens/generation.json, once per LIBDIR put first in
LD_LIBRARY_PATH (llama.cpp's CPU backend built for another level: scripts/llama-cpp-level.sh
avx|scalar; none: the build the binary was linked with), and prints max |d| in % of the
golden's range. It shows how far the reference itself moves with the instruction set
(tests/fixtures/tiny/README.md, "Tolerances").
    usage: scripts/goldens/llama_spread.py LOGITS [LIBDIR ...]
"""
import json
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(ROOT, "tests/fixtures/tiny")
GOLD = os.path.join(ROOT, "tests/fixtures/goldens")


def entries():
    """(set, type, model path, prompt, add_bos, golden path, expected ids or None)"""
    for e in json.load(open(os.path.join(TINY, "manifest.json")))["entries"]:
        yield ("tiny", e["type"], os.path.join(TINY, e["file"]), e["prompt"], "1",
               os.path.join(TINY, e["logits"]), e["tokens"])
    for name, e in json.load(open(os.path.join(GOLD, "generation.json")))["logits"].items():
        yield ("SmolLM2", e["model"], os.path.join(ROOT, f"models/SmolLM2-135M-Instruct.{e['model']}.gguf"),
               e["prompt"], "0", os.path.join(GOLD, name), None)


def run(logits_bin, libdir):
    env = dict(os.environ)
    if libdir:
        env["LD_LIBRARY_PATH"] = libdir + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
    rows = {}
    for kind, ty, model, prompt, bos, golden, ids in entries():
        r = subprocess.run([logits_bin, model, prompt, bos, "2"], capture_output=True, check=True, env=env)
        got, ref = np.frombuffer(r.stdout, dtype="<f4"), np.fromfile(golden, "<f4")
        if ids is not None:
            assert [int(x) for x in r.stderr.decode().split()] == ids, golden
        d = float(100 * np.abs(got - ref).max() / (ref.max() - ref.min()))
        rows.setdefault((kind, ty), []).append(d)
        if got.argmax() != ref.argmax():
            print(f"{os.path.basename(golden)}: top-1 {int(got.argmax())}, the golden's {int(ref.argmax())}")
    print(f"== {libdir or 'the linked build'}: max |d| per prompt, % of the range")
    for (kind, ty), ds in rows.items():
        print(f"{kind:8} {ty:8} " + " ".join(f"{d:6.3f}" for d in ds))
    q = [d for (kind, ty), ds in rows.items() if kind == "tiny" and ty != "F16" for d in ds]
    f16 = rows.get(("tiny", "F16"), [0.0])
    s = [d for (kind, ty), ds in rows.items() if kind == "SmolLM2" for d in ds]
    print(f"tiny quantized: {sum(d <= 0.02 for d in q)} of {len(q)} within 0.02%, {sum(d > 0.5 for d in q)}"
          f" over 0.5%, largest {max(q):.3f}%; tiny F16 largest {max(f16):.3f}%;"
          f" SmolLM2 {min(s):.2f}-{max(s):.2f}%")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    for lib in sys.argv[2:] or [None]:
        run(sys.argv[1], lib)
