#!/usr/bin/env python3
"""Reference dequantization of real GGUF tensors by llama.cpp's `gguf` Python package.

For one tensor of every storage type in each model, records the type, the value count, the sum
of the values and 256 values at evenly spaced positions (in PyTorch row-major order of the
tensor as stored, i.e. before any llama Q/K un-permutation).

    pip install gguf numpy
    python3 tests/reference/make_dequant_reference.py OUT.json MODEL.gguf [MODEL.gguf ...]
"""
import json
import os
import sys

import numpy as np
import gguf


def main():
    out_path, models = sys.argv[1], sys.argv[2:]
    out = {}
    for path in models:
        r = gguf.GGUFReader(path)
        seen = {}
        for t in r.tensors:
            name = t.tensor_type.name
            if name in seen or len(t.shape) < 2:
                continue
            a = np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float64).reshape(-1)
            idx = np.linspace(0, a.size - 1, 256).astype(np.int64)
            seen[name] = {
                "tensor": t.name,
                "count": int(a.size),
                "sum": float(a.sum()),
                "positions": idx.tolist(),
                "values": a[idx].tolist(),
            }
        out[os.path.basename(path)] = seen
        print(path, sorted(seen), file=sys.stderr)
    json.dump(out, open(out_path, "w"))


if __name__ == "__main__":
    main()
