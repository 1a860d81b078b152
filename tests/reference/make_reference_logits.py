#!/usr/bin/env python3
"""Independent reference logits for a GGUF llama/qwen2 model, computed with numpy (float64).

Weights are read and dequantized by the `gguf` Python package (llama.cpp's own reader),
not by tinylora. Token ids come from the Rust tokenizer (passed in as JSON) so that the
comparison isolates the forward pass; the tokenizer is tested separately.

    pip install gguf numpy
    python3 tests/reference/make_reference_logits.py MODEL.gguf PROMPTS.json OUT.json

PROMPTS.json: {"prompts": [[id, ...], ...]}. OUT.json holds, per prompt and position, the
top-5 ids and logits and the logits of a fixed set of probe ids.
"""
import json
import sys

import numpy as np
import gguf


def load(path):
    r = gguf.GGUFReader(path)
    meta = {}
    for f in r.fields.values():
        if len(f.types) == 1 and f.types[0] != gguf.GGUFValueType.STRING:
            meta[f.name] = f.parts[f.data[0]][0].item()
        elif f.types == [gguf.GGUFValueType.STRING]:
            meta[f.name] = bytes(f.parts[f.data[0]]).decode()
    arch = meta["general.architecture"]
    w = {}
    for t in r.tensors:
        a = gguf.quants.dequantize(t.data, t.tensor_type)
        shape = [int(x) for x in reversed(t.shape.tolist())]
        w[t.name] = np.asarray(a, dtype=np.float64).reshape(shape)
    return arch, meta, w


def unpermute(x, n_head):
    """llama.cpp stores q/k rows as (head, pair, 2); Hugging Face as (head, 2, pair)."""
    rows, cols = x.shape
    hd = rows // n_head
    return x.reshape(n_head, hd // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)


def forward(arch, meta, w, ids):
    p = arch + "."
    n_head = meta[p + "attention.head_count"]
    n_kv = meta[p + "attention.head_count_kv"]
    eps = meta[p + "attention.layer_norm_rms_epsilon"]
    theta = meta.get(p + "rope.freq_base", 10000.0)
    n_layer = meta[p + "block_count"]
    emb = w["token_embd.weight"]
    head = w.get("output.weight", emb)
    x = emb[ids]  # [T, H]
    T, H = x.shape
    hd = H // n_head

    def rms(v, g):
        return v / np.sqrt((v * v).mean(-1, keepdims=True) + eps) * g

    inv = 1.0 / theta ** (np.arange(0, hd, 2) / hd)
    ang = np.arange(T)[:, None] * inv[None, :]
    cos = np.concatenate([np.cos(ang)] * 2, -1)
    sin = np.concatenate([np.sin(ang)] * 2, -1)

    def rope(v):  # [heads, T, hd]
        v1, v2 = v[..., : hd // 2], v[..., hd // 2:]
        return v * cos + np.concatenate([-v2, v1], -1) * sin

    causal = np.triu(np.full((T, T), -np.inf), 1)
    for i in range(n_layer):
        b = f"blk.{i}."
        wq, wk = w[b + "attn_q.weight"], w[b + "attn_k.weight"]
        if arch == "llama":
            wq, wk = unpermute(wq, n_head), unpermute(wk, n_kv)
        hN = rms(x, w[b + "attn_norm.weight"])
        q = hN @ wq.T + w.get(b + "attn_q.bias", 0)
        k = hN @ wk.T + w.get(b + "attn_k.bias", 0)
        v = hN @ w[b + "attn_v.weight"].T + w.get(b + "attn_v.bias", 0)
        q = rope(q.reshape(T, n_head, hd).transpose(1, 0, 2))
        k = rope(k.reshape(T, n_kv, hd).transpose(1, 0, 2))
        v = v.reshape(T, n_kv, hd).transpose(1, 0, 2)
        k = np.repeat(k, n_head // n_kv, axis=0)
        v = np.repeat(v, n_head // n_kv, axis=0)
        s = q @ k.transpose(0, 2, 1) / np.sqrt(hd) + causal
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        o = (s @ v).transpose(1, 0, 2).reshape(T, n_head * hd)
        x = x + o @ w[b + "attn_output.weight"].T
        hN = rms(x, w[b + "ffn_norm.weight"])
        g = hN @ w[b + "ffn_gate.weight"].T
        u = hN @ w[b + "ffn_up.weight"].T
        x = x + ((g / (1 + np.exp(-g))) * u) @ w[b + "ffn_down.weight"].T
    return rms(x, w["output_norm.weight"]) @ head.T  # [T, V]


def main():
    model, prompts_path, out_path = sys.argv[1:4]
    arch, meta, w = load(model)
    prompts = json.load(open(prompts_path))["prompts"]
    vocab = w["token_embd.weight"].shape[0]
    probes = np.random.default_rng(0).choice(vocab, 64, replace=False).tolist()
    out = {"model": model.split("/")[-1], "probe_ids": probes, "prompts": []}
    for ids in prompts:
        logits = forward(arch, meta, w, np.array(ids))
        top = np.argsort(-logits, -1)[:, :5]
        out["prompts"].append({
            "ids": ids,
            "top5_ids": top.tolist(),
            "top5_logits": np.take_along_axis(logits, top, -1).round(5).tolist(),
            "probe_logits": logits[:, probes].round(5).tolist(),
        })
        print(f"prompt of {len(ids)} tokens: top-1 {top[:, 0].tolist()[:10]}...", file=sys.stderr)
    json.dump(out, open(out_path, "w"))


if __name__ == "__main__":
    main()
