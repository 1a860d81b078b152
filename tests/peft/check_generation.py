"""Check that transformers (optionally with a PEFT adapter) generates what tinylora generates
with an adapter applied: a `tinylora merge` directory loaded as a normal model, or the base
model plus a `tinylora export-peft` directory loaded by PEFT.

    tinylora generate --model M --adapter A --prompt P --max-new-tokens 8 --json > /tmp/gen.json
    tinylora merge --model M --adapter A --out /tmp/merged
    .venv/bin/python tests/peft/check_generation.py /tmp/gen.json /tmp/merged
    tinylora export-peft --model M --adapter A --out /tmp/peft
    .venv/bin/python tests/peft/check_generation.py /tmp/gen.json models/ --gguf M.gguf --peft /tmp/peft

Greedy decoding in transformers from the same prompt ids must give the same output ids; the
log-probabilities of those tokens are compared too. Exits 1 on a mismatch.
"""

import argparse
import json
import sys

import torch
from transformers import AutoModelForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("gen", help="a line of `tinylora generate --json`")
    ap.add_argument("model", help="model directory (merged, or the base)")
    ap.add_argument("--gguf", help="GGUF file name inside the model directory")
    ap.add_argument("--peft", help="PEFT adapter directory to load onto the model")
    args = ap.parse_args()
    want = json.loads(open(args.gen).read().strip().splitlines()[-1])
    model = AutoModelForCausalLM.from_pretrained(args.model, gguf_file=args.gguf, dtype=torch.float32)
    if args.peft:
        from peft import PeftModel
        model = PeftModel.from_pretrained(model, args.peft)
    model = model.eval()
    ids = torch.tensor([want["prompt_ids"]])
    n = len(want["output_ids"])
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=n, do_sample=False, output_scores=True,
                             return_dict_in_generate=True, eos_token_id=None, pad_token_id=0)
    got = out.sequences[0, ids.shape[1]:].tolist()
    logprobs = [torch.log_softmax(s[0], -1)[t].item() for s, t in zip(out.scores, got)]
    worst = max(abs(a - b) for a, b in zip(logprobs, want["logprobs"]))
    print(f"transformers: {got}\ntinylora:     {want['output_ids']}\nmax |Δ logprob| {worst:.2e}")
    sys.exit(0 if got == want["output_ids"] and worst < 1e-3 else 1)


if __name__ == "__main__":
    main()
