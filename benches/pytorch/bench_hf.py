#!/usr/bin/env python3
"""PyTorch + transformers (+ PEFT) speed on the same GGUF weights tinylora reads: the other
side of tinylora's benches (benches/engine.rs, benches/adapter.rs), for the GPU kit
(scripts/gpu/run.sh, stage 2) and for CPU comparisons by hand.

    python3 benches/pytorch/bench_hf.py --model models/SmolLM2-135M-Instruct.Q4_1.gguf \\
        --device cuda --dtype f32,bf16 --bandwidth --out hf.json
    python3 benches/pytorch/bench_hf.py --model models/SmolLM2-135M-Instruct.Q4_1.gguf \\
        --device cpu --dtype f32 --threads 2 --batches 1,16 --new-tokens 32 \\
        --train 1x128:u1:t0 --out hf-cpu.json

transformers dequantizes the GGUF (`from_pretrained(dir, gguf_file=...)`) once, in f32 on the
CPU; each --dtype (f32, bf16, or both) then runs on a copy moved to --device. What it
measures, each after a warm-up, medians of --reps (CUDA timings synchronize):

- load: GGUF → dequantized f32 model (CPU), then the copy to the device in --dtype;
- prefill: one forward of a --prompt-tokens prompt (logits of the last position only), tokens/s;
- decode at each batch of --batches: `generate` (greedy, eager, the default dynamic KV cache)
  of --new-tokens and of 8 new tokens from --decode-prompt-tokens prompts; the difference
  gives decode tokens/s without the prefill (tinylora's engine bench does the same);
- --train ROWSxTOKENS:uU:tW (repeatable, comma-separated): PEFT TinyLoRA (r = --rank, u = U,
  weight_tying = W: 0 untied, 1 one group for the whole model) on q,k,v,o,gate,up,down:
  the setup (get_peft_model: the frozen SVDs), one forward without gradient (the logits of
  every position) and one forward + backward (cross-entropy on the tokens themselves) of
  ROWS sequences of TOKENS tokens. Without TinyLoRA in the
  installed PEFT it times LoRA r = --rank instead and says so in `method`;
- --bandwidth (CUDA): a device-to-device copy of 4 GiB (bytes read + written / time), the
  bandwidth that bounds decoding (weight bytes / bandwidth per step).

Writes one JSON object (--out, default stdout). Needs torch, transformers, gguf and (for
--train) peft; imported only when run, so `--help` works without them:

    python3 -m pip install torch transformers gguf peft accelerate
    (CPU-only torch: add --index-url with PyTorch's CPU wheel index)

Exit status 3 when a needed package is missing (the message says which).
"""
import argparse
import copy
import json
import os
import platform
import statistics
import sys
import time

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
INSTALL = "python3 -m pip install torch transformers gguf peft accelerate"


def need(module):
    """Import a package or exit 3 saying how to install it."""
    try:
        return __import__(module)
    except ImportError as e:
        print(f"bench_hf.py: needs the Python package '{module}' ({e}); install with: {INSTALL}", file=sys.stderr)
        sys.exit(3)


def parse_train(spec):
    """'16x256:u13:t1' -> (16, 256, 13, 1.0)."""
    try:
        shape, u, t = spec.split(":")
        rows, tokens = shape.lower().split("x")
        assert u[0] == "u" and t[0] == "t"
        return int(rows), int(tokens), int(u[1:]), float(t[1:])
    except (ValueError, AssertionError, IndexError):
        raise argparse.ArgumentTypeError(f"--train {spec!r}: expected ROWSxTOKENS:uU:tW, e.g. 16x256:u13:t1")


class Timer:
    def __init__(self, torch, device):
        self.torch, self.cuda = torch, device.startswith("cuda")

    def sync(self):
        if self.cuda:
            self.torch.cuda.synchronize()

    def __call__(self, f):
        self.sync()
        t = time.perf_counter()
        out = f()
        self.sync()
        return time.perf_counter() - t, out

    def median(self, reps, f):
        f()  # warm-up
        return statistics.median(self(f)[0] for _ in range(reps))


def token_ids(torch, vocab, rows, n, seed, device):
    """Deterministic ids away from the special tokens (speed does not depend on the text)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(100, max(101, vocab - 300), (rows, n), generator=g).to(device)


def measure(args, torch, timer, base, dtype_name, trains, peft):
    """Every figure for one dtype: a copy of the loaded model in that dtype on the device."""
    dtype = {"f32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    t_copy, model = timer(lambda: copy.deepcopy(base).to(device=args.device, dtype=dtype).eval())
    vocab = model.config.vocab_size
    n_params = sum(p.numel() for p in model.parameters())  # tied embeddings counted once
    res = dict(dtype=dtype_name, to_device_s=t_copy, params=n_params,
               weight_bytes=n_params * (4 if dtype_name == "f32" else 2))
    log = lambda msg: print(f"[{dtype_name}] {msg}", file=sys.stderr, flush=True)  # noqa: E731

    # prefill
    ids = token_ids(torch, vocab, 1, args.prompt_tokens, 1, args.device)
    with torch.no_grad():
        t = timer.median(args.reps, lambda: model(input_ids=ids, logits_to_keep=1, use_cache=False))
    res["prefill"] = dict(tokens=args.prompt_tokens, seconds=t, tokens_per_s=args.prompt_tokens / t)
    log(f"prefill {args.prompt_tokens} tokens: {args.prompt_tokens / t:.0f} tokens/s")

    # decode
    res["decode"] = []
    short = 8
    for b in [int(x) for x in args.batches.split(",") if x.strip()]:
        ids = token_ids(torch, vocab, b, args.decode_prompt_tokens, 2 + b, args.device)
        mask = torch.ones_like(ids)

        def gen(n):
            return model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n,
                                  do_sample=False, pad_token_id=0)

        with torch.no_grad():
            gen(2)  # warm-up
            reps = max(1, min(3, args.reps))
            t_short = statistics.median(timer(lambda: gen(short))[0] for _ in range(reps))
            t_long, out = timer(lambda: gen(args.new_tokens))
        made = out.shape[1] - ids.shape[1]
        tps = b * (made - short) / max(t_long - t_short, 1e-9)
        res["decode"].append(dict(batch=b, new_tokens=made, prompt_tokens=args.decode_prompt_tokens,
                                  seconds=t_long, seconds_short=t_short, tokens_per_s=tps,
                                  tokens_per_s_with_prefill=b * made / t_long))
        log(f"decode batch {b} x {made}: {tps:.1f} tokens/s")

    # training step with PEFT
    res["train"] = []
    for rows, tokens, u, tying in trains:
        has_tiny = hasattr(peft, "TinyLoraConfig")
        if has_tiny:
            cfg = peft.TinyLoraConfig(r=args.rank, u=u, weight_tying=tying, target_modules=TARGETS)
            method = f"PEFT TinyLoRA r={args.rank} u={u} weight_tying={tying:g}"
        else:
            cfg = peft.LoraConfig(r=args.rank, lora_alpha=2 * args.rank, target_modules=TARGETS)
            method = f"PEFT LoRA r={args.rank} (this PEFT {peft.__version__} has no TinyLoRA)"
        # a fresh copy each time: get_peft_model changes the model it wraps
        m = copy.deepcopy(base).to(device=args.device, dtype=dtype)
        setup_s, pm = timer(lambda: peft.get_peft_model(m, cfg))
        trainable = sum(p.numel() for p in pm.parameters() if p.requires_grad)
        pm.train()
        x = token_ids(torch, vocab, rows, tokens, 3, args.device)

        def step():
            loss = pm(input_ids=x, labels=x).loss
            loss.backward()
            for p in pm.parameters():
                p.grad = None

        def forward():  # logits of every position, as GRPO's scoring pass and tinylora's bench
            with torch.no_grad():
                pm(input_ids=x)

        fwd_bwd = timer.median(args.reps, step)
        fwd = timer.median(args.reps, forward)
        res["train"].append(dict(rows=rows, tokens=tokens, u=u, weight_tying=tying, method=method,
                                 tinylora=has_tiny, trainable_params=trainable, setup_s=setup_s,
                                 forward_s=fwd, forward_backward_s=fwd_bwd,
                                 tokens_per_s=rows * tokens / fwd_bwd))
        log(f"{method}, {rows}x{tokens}: setup {setup_s:.2f}s, fwd+bwd {fwd_bwd * 1e3:.1f} ms ({trainable} trainable)")
        del pm, m
    del model
    if args.device == "cuda":
        torch.cuda.empty_cache()
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a GGUF file (transformers dequantizes it)")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--dtype", default="f32", help="f32, bf16 or both (f32,bf16): one load, a run each")
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    ap.add_argument("--prompt-tokens", type=int, default=256, help="prefill prompt length")
    ap.add_argument("--decode-prompt-tokens", type=int, default=64, help="prompt length for decoding")
    ap.add_argument("--batches", default="1,16,64", help="decode batch sizes, comma-separated ('' for none)")
    ap.add_argument("--new-tokens", type=int, default=128, help="new tokens per sequence when decoding")
    ap.add_argument("--train", type=parse_train, action="append",
                    help="ROWSxTOKENS:uU:tW (repeatable); default 1x256:u1:t0 and 16x256:u13:t1")
    ap.add_argument("--no-train", action="store_true", help="skip the PEFT training step")
    ap.add_argument("--rank", type=int, default=2, help="TinyLoRA's frozen SVD rank (LoRA's rank in the fallback)")
    ap.add_argument("--reps", type=int, default=5, help="timed repetitions (medians)")
    ap.add_argument("--bandwidth", action="store_true", help="measure device copy bandwidth (CUDA)")
    ap.add_argument("--out", help="write the JSON here (default: stdout)")
    args = ap.parse_args()
    if not os.path.isfile(args.model):
        ap.error(f"--model {args.model}: no such file")
    dtypes = [d.strip() for d in args.dtype.split(",") if d.strip()]
    if not dtypes or any(d not in ("f32", "bf16") for d in dtypes):
        ap.error(f"--dtype {args.dtype}: expected f32, bf16 or f32,bf16")
    trains = [] if args.no_train else (args.train or [(1, 256, 1, 0.0), (16, 256, 13, 1.0)])

    torch = need("torch")
    transformers = need("transformers")
    need("gguf")
    peft = need("peft") if trains else None
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench_hf.py: --device cuda but torch sees no CUDA device", file=sys.stderr)
        sys.exit(2)
    timer = Timer(torch, args.device)
    versions = dict(python=platform.python_version(), torch=torch.__version__, transformers=transformers.__version__)
    if peft:
        versions["peft"] = peft.__version__
    res = dict(
        engine="transformers", model=os.path.basename(args.model), device=args.device, versions=versions,
        device_name=torch.cuda.get_device_name(0) if args.device == "cuda" else platform.processor() or platform.machine(),
        threads=torch.get_num_threads(), peft_has_tinylora=bool(peft and hasattr(peft, "TinyLoraConfig")),
    )

    def load():  # the GGUF dequantized by transformers, in f32 on the CPU
        d, f = os.path.split(os.path.abspath(args.model))
        return transformers.AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32).eval()

    res["load_s"], base = timer(load)
    print(f"loaded {res['model']} on the CPU in {res['load_s']:.1f}s; device {res['device_name']}", file=sys.stderr)
    res["runs"] = [measure(args, torch, timer, base, d, trains, peft) for d in dtypes]

    if args.bandwidth and args.device == "cuda":
        n = 1 << 30  # 4 GiB of f32
        src = torch.empty(n, dtype=torch.float32, device="cuda").uniform_()
        dst = torch.empty_like(src)
        t = timer.median(args.reps, lambda: [dst.copy_(src) for _ in range(5)]) / 5
        res["bandwidth_bytes_per_s"] = 2 * 4 * n / t
        print(f"device copy: {2 * 4 * n / t / 1e12:.2f} TB/s (read + write)", file=sys.stderr)
        del src, dst

    text = json.dumps(res, indent=1)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    else:
        print(text)


if __name__ == "__main__":
    main()
