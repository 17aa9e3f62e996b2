#!/usr/bin/env python3
"""Print, as JSON, what the reference `gguf` Python package reads from a GGUF file:
metadata (type and value; long arrays in the same summary form as `ferrite inspect --json`)
and tensor infos. Used by the Rust tests to cross-check ferrite's reader.
    usage: gguf_read.py FILE [--full]   (--full: arrays in full, never summarised)"""
import json
import math
import sys

from gguf import GGUFReader, GGUFValueType

NAMES = {
    GGUFValueType.UINT8: "u8", GGUFValueType.INT8: "i8", GGUFValueType.UINT16: "u16",
    GGUFValueType.INT16: "i16", GGUFValueType.UINT32: "u32", GGUFValueType.INT32: "i32",
    GGUFValueType.FLOAT32: "f32", GGUFValueType.BOOL: "bool", GGUFValueType.STRING: "string",
    GGUFValueType.ARRAY: "array", GGUFValueType.UINT64: "u64", GGUFValueType.INT64: "i64",
    GGUFValueType.FLOAT64: "f64",
}


def clean(x):
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return x


def main():
    path = sys.argv[1]
    full = "--full" in sys.argv
    r = GGUFReader(path)
    md = {}
    types = {}
    for name, f in r.fields.items():
        if name.startswith("GGUF."):
            continue
        main_type = f.types[0]
        v = f.contents()
        if main_type == GGUFValueType.ARRAY:
            # The package records no element type for an empty array.
            sub = NAMES[f.types[-1]] if len(f.types) > 1 else "?"
            v = [clean(x) for x in v]
            types[name] = "array[" + sub + "]"
            if len(v) > 16 and not full:
                v = {"type": "array", "element_type": sub, "len": len(v), "head": v[:8]}
        else:
            types[name] = NAMES[main_type]
            v = clean(v)
        md[name] = v
    tensors = []
    data_start = min((t.data_offset for t in r.tensors), default=0)
    for t in r.tensors:
        tensors.append({
            "name": t.name,
            "type": t.tensor_type.name,
            "shape": [int(d) for d in t.shape],
            "offset": int(t.data_offset) - int(r.data_offset),
            "size": int(t.n_bytes),
        })
    version = int(r.fields["GGUF.version"].contents())
    print(json.dumps({"version": version, "metadata": md, "types": types, "tensors": tensors,
                      "data_offset": int(r.data_offset), "min_tensor_start": int(data_start)}))


if __name__ == "__main__":
    main()
