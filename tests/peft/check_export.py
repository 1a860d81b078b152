"""Load the adapters that `cargo test --release --test peft` exported (target/peft-export/*) with
the real PEFT onto the tiny llama fixture and compare PEFT's logits with tinylora's.

    .venv/bin/python tests/peft/check_export.py      # venv as in make_peft_fixtures.py

Prints, per adapter, the largest |Δlogit| and the top-1 agreement; exits 1 if any adapter's
logits differ by more than 1e-4 or any argmax differs.
"""

import glob
import json
import os
import sys

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SEQS = [[5, 17, 200, 3, 99, 42, 7, 7, 1], [250, 11, 64, 65, 66, 67, 68]]


def main():
    dirs = sorted(glob.glob(os.path.join(ROOT, "target/peft-export/*/")))
    if not dirs:
        sys.exit("no exported adapters: run `cargo test --release --test peft` first")
    ok = True
    for d in dirs:
        base = AutoModelForCausalLM.from_pretrained(os.path.join(HERE, "fixtures/tiny-llama"), dtype=torch.float32)
        model = PeftModel.from_pretrained(base, d).eval()
        ours = json.load(open(os.path.join(d, "tinylora-logits.json")))
        worst, agree, rows = 0.0, 0, 0
        with torch.no_grad():
            for seq, want in zip(SEQS, ours):
                got = model(torch.tensor([seq])).logits[0]
                want = torch.tensor(want).reshape(got.shape)
                worst = max(worst, (got - want).abs().max().item())
                agree += (got.argmax(-1) == want.argmax(-1)).sum().item()
                rows += got.shape[0]
        good = worst < 1e-4 and agree == rows
        ok &= good
        print(f"{os.path.basename(d.rstrip('/'))}: max |Δlogit| {worst:.2e}, top-1 {agree}/{rows} {'ok' if good else 'MISMATCH'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
