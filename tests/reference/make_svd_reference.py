#!/usr/bin/env python3
"""Reference singular values and right singular vectors of real GGUF weights (numpy's full
SVD in f64 of the tensor dequantized by llama.cpp's `gguf` package), for the frozen rank-r
SVD test in tests/adapter.rs.

For each listed tensor: its GGUF name and the name tinylora loads it by, shape [rows, cols] as PyTorch reads it, the top three
singular values (the third tells how well separated the second is) and the top two right
singular vectors (length cols). Right vectors and singular values do not change when the
rows are permuted, so the llama Q/K un-permutation tinylora applies at load does not matter.

    pip install gguf numpy
    python3 tests/reference/make_svd_reference.py tests/reference/svd.json models/
"""
import json
import os
import sys

import numpy as np
import gguf

# (GGUF name, the name tinylora loads it by)
TENSORS = {
    "SmolLM2-135M-Instruct.Q4_1.gguf": [
        ("blk.0.attn_q.weight", "model.layers.0.self_attn.q_proj.weight"),
        ("blk.7.ffn_down.weight", "model.layers.7.mlp.down_proj.weight"),
        ("blk.29.ffn_gate.weight", "model.layers.29.mlp.gate_proj.weight"),
    ],
    "Qwen2.5-Coder-0.5B-Instruct.gguf": [
        ("blk.0.attn_k.weight", "model.layers.0.self_attn.k_proj.weight"),
        ("blk.3.ffn_down.weight", "model.layers.3.mlp.down_proj.weight"),
        ("blk.23.attn_output.weight", "model.layers.23.self_attn.o_proj.weight"),
    ],
}


def main():
    out_path, models = sys.argv[1], sys.argv[2]
    out = {}
    for model, names in TENSORS.items():
        r = gguf.GGUFReader(os.path.join(models, model))
        by_name = {t.name: t for t in r.tensors}
        out[model] = []
        for name, hf_name in names:
            t = by_name[name]
            cols, rows = (int(d) for d in t.shape)  # GGUF lists the fastest dimension first
            w = np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float64).reshape(rows, cols)
            _, s, vt = np.linalg.svd(w, full_matrices=False)
            out[model].append({
                "tensor": name,
                "name": hf_name,
                "type": t.tensor_type.name,
                "shape": [rows, cols],
                "sigma": s[:3].tolist(),
                "v": [[float(f"{x:.7g}") for x in row] for row in vt[:2]],
            })
            print(model, name, t.tensor_type.name, [rows, cols], s[:3], file=sys.stderr)
    json.dump(out, open(out_path, "w"))


if __name__ == "__main__":
    main()
