#!/usr/bin/env python3
"""ferrite against llama.cpp on the same files and threads, runs alternated back to back.
Writes bench/results.json (or -o FILE) and prints a markdown table; scripts/bench-chart.py draws it.
    usage: scripts/bench-compare.py [-t THREADS] [-r REPS] [--levels L [--level-builds]] [--bandwidth GBS] [-o OUT.json] -- MODEL.gguf [-p P] [-n N] ...
"% of roofline" divides decode bytes/s (tokens/s x file size) by the read bandwidth that
`ferrite bench --roofline` measures right after each of its two runs (the best of the two;
this VM's bandwidth drifts by a quarter over minutes), or by --bandwidth if given.
Each MODEL may be followed by its own -p/-n (defaults 64/32). llama.cpp: the build of
scripts/llama-cpp-native.sh (its llama-bench); with --level-builds, the avx2 and avxvnni rows are
compared with that llama-bench running llama.cpp's CPU backend built for the same level
(scripts/llama-cpp-level.sh: AVX2+FMA+F16C, and that plus AVX-VNNI, no AVX-512)."""
import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def llama_bin():
    out = subprocess.run([f"{ROOT}/scripts/llama-cpp-native.sh"], capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


def level_libs(level):
    """llama.cpp's CPU backend built for an x86 level below AVX-512 (scripts/llama-cpp-level.sh)."""
    out = subprocess.run([f"{ROOT}/scripts/llama-cpp-level.sh", level], capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


def run_llama(bin_dir, model, p, n, t, r, libs=None):
    env = dict(os.environ)
    if libs:
        env["LD_LIBRARY_PATH"] = libs + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
    out = subprocess.run([f"{bin_dir}/llama-bench", "-m", model, "-p", str(p), "-n", str(n), "-t", str(t),
                          "-r", str(r), "-o", "json"], capture_output=True, text=True, check=True, env=env)
    res = {}
    for x in json.loads(out.stdout):
        key = f"pp{x['n_prompt']}" if x["n_prompt"] else f"tg{x['n_gen']}"
        res[key] = (x["avg_ts"], x["stddev_ts"])
    return res


def run_ferrite(model, p, n, t, r, level=None):
    env = dict(os.environ)
    if level:
        env["FERRITE_KERNELS"] = level
    out = subprocess.run([f"{ROOT}/target/release/ferrite", "bench", "-m", model, "-p", str(p), "-n", str(n),
                          "-t", str(t), "-r", str(r), "--json", "--roofline"], capture_output=True, text=True,
                         check=True, env=env)
    d = json.loads(out.stdout)
    res = {x["test"]: (x["tokens_per_s"], x["stddev"]) for x in d["results"]}
    return res, d["kernels"], d.get("read_bandwidth_bytes_per_s", 0.0) / 1e9


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-t", type=int, default=2)
    ap.add_argument("-r", type=int, default=3)
    ap.add_argument("--levels", default="", help="extra FERRITE_KERNELS levels to run, comma separated")
    ap.add_argument("--level-builds", action="store_true",
                    help="compare the --levels avx2/avxvnni rows with llama.cpp built for that level "
                         "(scripts/llama-cpp-level.sh), run right after them, instead of its main build")
    ap.add_argument("--bandwidth", type=float, default=0.0, help="measured read bandwidth, GB/s")
    ap.add_argument("-o", default=f"{ROOT}/bench/results.json", help="where the JSON results go")
    ap.add_argument("items", nargs="+")
    a = ap.parse_args()
    models, cur = [], None
    it = iter(a.items)
    for x in it:
        if x in ("-p", "-n"):
            cur[x] = int(next(it))
        else:
            cur = {"model": x, "-p": 64, "-n": 32}
            models.append(cur)
    bin_dir = llama_bin()
    levels = [x for x in a.levels.split(",") if x]
    libs = {lv: level_libs(lv) for lv in levels if a.level_builds and lv in ("avx2", "avxvnni")}
    rows = []
    for m in models:
        name = os.path.basename(m["model"])
        size = os.path.getsize(m["model"])
        ours, level, bw1 = run_ferrite(m["model"], m["-p"], m["-n"], a.t, a.r)
        theirs = run_llama(bin_dir, m["model"], m["-p"], m["-n"], a.t, a.r)
        ours2, _, bw2 = run_ferrite(m["model"], m["-p"], m["-n"], a.t, a.r)
        bw = a.bandwidth if a.bandwidth > 0 else max(bw1, bw2)
        for test in theirs:
            o = max(ours[test][0], ours2[test][0])
            row = {"model": name, "bytes": size, "test": test, "threads": a.t, "kernels": level, "llama_build": "main",
                   "ferrite": o, "llama_cpp": theirs[test][0], "ratio": o / theirs[test][0]}
            if test.startswith("tg") and bw > 0:
                row["bandwidth_gbs"] = bw
                row["roofline_pct"] = 100 * o * size / (bw * 1e9)
                row["llama_roofline_pct"] = 100 * theirs[test][0] * size / (bw * 1e9)
            rows.append(row)
        for lv in levels:
            r, _, _ = run_ferrite(m["model"], m["-p"], m["-n"], a.t, a.r, lv)
            ref = run_llama(bin_dir, m["model"], m["-p"], m["-n"], a.t, a.r, libs[lv]) if lv in libs else theirs
            for test in r:
                rows.append({"model": name, "bytes": size, "test": test, "threads": a.t, "kernels": lv,
                             "llama_build": lv if lv in libs else "main",
                             "ferrite": r[test][0], "llama_cpp": ref[test][0], "ratio": r[test][0] / ref[test][0]})
        sys.stderr.write(f"done {name}\n")
    os.makedirs(f"{ROOT}/bench", exist_ok=True)
    json.dump(rows, open(a.o, "w"), indent=1)
    print("| file | test | kernels | llama.cpp build | ferrite t/s | llama.cpp t/s | ratio | read GB/s | decode % of roofline (ferrite / llama.cpp) |")
    print("|---|---|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        roof = f"{r['roofline_pct']:.0f}% / {r['llama_roofline_pct']:.0f}%" if "roofline_pct" in r else ""
        bw = f"{r['bandwidth_gbs']:.1f}" if "bandwidth_gbs" in r else ""
        print(f"| {r['model']} | {r['test']} | {r['kernels']} | {r.get('llama_build', 'main')} | {r['ferrite']:.2f} | {r['llama_cpp']:.2f} | {r['ratio']:.2f}x | {bw} | {roof} |")


if __name__ == "__main__":
    main()
