#!/usr/bin/env python3
"""Mutation fuzzing of ferrite's command line on a small GGUF file: every run must end with
exit status 0 or 1 (a one-line error), never a panic, a signal or a hang.

    scripts/fuzz-gguf.py FILE [--runs N] [--seed S] [--mode header|data] [--bin PATH]

`header` mutates bytes, words and lengths near the start of the file (metadata, tensor
infos) and truncates it, then runs `inspect` and `run`; `data` overwrites bytes of the tensor
data (scales among them: infinities and NaNs) and runs `run` with several samplers and
`perplexity`. Failing inputs are kept as fuzz-*.gguf in the working directory. Not a CI test
(minutes of runs); e.g. `scripts/fuzz-gguf.py tests/fixtures/tiny/tiny-Q4_K_M.gguf --mode data`.
"""
import argparse
import os
import random
import struct
import subprocess
import sys
import tempfile


def data_offset(b):
    """Where the tensor data starts (the `gguf` package, if present; else 0)."""
    try:
        import gguf

        with tempfile.NamedTemporaryFile(suffix=".gguf") as f:
            f.write(b)
            f.flush()
            return gguf.GGUFReader(f.name).data_offset
    except Exception:
        return 0


def mutate_header(b, rng):
    b = bytearray(b)
    for _ in range(rng.choice([1, 2, 4, 8, 16])):
        if len(b) < 16:
            break
        r, near = rng.random(), min(len(b), 65536)
        if r < 0.5:
            b[rng.randrange(near)] = rng.randrange(256)
        elif r < 0.7:
            pos, val = rng.randrange(near), rng.choice([0, 0x7F, 0x80, 0xFF])
            b[pos : pos + rng.choice([1, 2, 4, 8])] = bytes([val]) * len(b[pos : pos + 8])
        elif r < 0.85:
            b = b[: rng.randrange(len(b))]
        else:
            pos = rng.randrange(near)
            b[pos : pos + 8] = struct.pack("<Q", rng.randrange(1 << 64))
    return bytes(b)


def mutate_data(b, start, rng):
    b = bytearray(b)
    for _ in range(rng.choice([10, 100, 1000, 10000])):
        b[rng.randrange(start, len(b))] = rng.choice([0xFF, 0x7C, 0x7E, 0xFC, 0x00, rng.randrange(256)])
    return bytes(b)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("file")
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--mode", choices=["header", "data"], default="header")
    ap.add_argument("--bin", default=os.path.join(os.path.dirname(__file__), "..", "target", "release", "ferrite"))
    a = ap.parse_args()
    src = open(a.file, "rb").read()
    start = data_offset(src) if a.mode == "data" else 0
    text = os.path.join(os.path.dirname(__file__), "..", "README.md")
    rng, bad = random.Random(a.seed), 0
    with tempfile.TemporaryDirectory() as d:
        case = os.path.join(d, "case.gguf")
        for it in range(a.runs):
            b = mutate_header(src, rng) if a.mode == "header" else mutate_data(src, start, rng)
            open(case, "wb").write(b)
            run = [a.bin, "run", "-m", case, "-p", "hello world", "-n", "4", "-t", rng.choice(["1", "2"])]
            if a.mode == "header":
                cmd = rng.choice([[a.bin, "inspect", case], run])
            elif rng.random() < 0.3:
                cmd = [a.bin, "perplexity", "-m", case, "-f", text, "-c", "64"]
            else:
                cmd = run + rng.choice([[], ["--temp", "0"], ["--top-k", "1"], ["--min-p", "0.5"], ["--repeat-penalty", "1.3"]])
            try:
                r = subprocess.run(cmd, capture_output=True, timeout=60)
                failed = r.returncode not in (0, 1) or b"panicked" in r.stderr
                why = f"exit {r.returncode}: {r.stderr[-300:].decode(errors='replace')}"
            except subprocess.TimeoutExpired:
                failed, why = True, "timeout (60 s)"
            if failed:
                bad += 1
                keep = f"fuzz-{a.mode}-{a.seed}-{it}.gguf"
                open(keep, "wb").write(b)
                print(f"run {it}: {' '.join(cmd[1:2])}: {why} (input kept as {keep})")
    print(f"{a.runs} runs, {bad} failures")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
