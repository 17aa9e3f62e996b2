#!/usr/bin/env python3
"""Write a GGUF file with the reference `gguf` Python package: every scalar value type,
strings, arrays (numbers, bools, strings), and tensors of several types. Prints, as JSON,
what it wrote, so the Rust tests can check ferrite reads the same.
    usage: gguf_write.py OUT"""
import json
import sys

import numpy as np
from gguf import GGUFWriter, GGMLQuantizationType
from gguf.quants import quantize


def main():
    out = sys.argv[1]
    w = GGUFWriter(out, arch="llama")
    w.add_uint8("t.u8", 200)
    w.add_int8("t.i8", -100)
    w.add_uint16("t.u16", 65000)
    w.add_int16("t.i16", -32000)
    w.add_uint32("t.u32", 4000000000)
    w.add_int32("t.i32", -2000000000)
    w.add_float32("t.f32", 0.1)
    w.add_uint64("t.u64", 2**63 + 5)
    w.add_int64("t.i64", -(2**62))
    w.add_float64("t.f64", 1e-300)
    w.add_bool("t.bool", True)
    w.add_string("t.str", "héllo wörld ✓")
    w.add_array("t.arr_i32", [1, -2, 3])
    w.add_array("t.arr_str", ["a", "", "ŝtring", "x" * 100])
    w.add_array("t.arr_f32", [0.5, -1.25, 3.0])
    w.add_array("t.arr_bool", [True, False, True])
    w.add_array("t.arr_long", list(range(40)))
    rng = np.random.default_rng(7)
    a = rng.standard_normal((3, 64), dtype=np.float32)
    w.add_tensor("a.f32", a)
    b = rng.standard_normal((2, 32), dtype=np.float32).astype(np.float16)
    w.add_tensor("b.f16", b)
    c = rng.standard_normal((4, 64), dtype=np.float32)
    cq = quantize(c, GGMLQuantizationType.Q8_0)
    w.add_tensor("c.q8_0", cq, raw_shape=cq.shape, raw_dtype=GGMLQuantizationType.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(json.dumps({
        "tensors": {
            "a.f32": {"shape": [64, 3], "type": "F32", "values": a.flatten().tolist()},
            "b.f16": {"shape": [32, 2], "type": "F16", "values": b.astype(np.float32).flatten().tolist()},
            "c.q8_0": {"shape": [64, 4], "type": "Q8_0", "bytes": cq.tobytes().hex()},
        }
    }))


if __name__ == "__main__":
    main()
