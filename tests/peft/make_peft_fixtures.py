"""Make the PEFT interoperability fixtures with the real Python libraries (run once; the outputs
are committed under tests/peft/fixtures/).

    python3 -m venv .venv && .venv/bin/pip install torch==2.15.0 peft==0.21.2 transformers==5.23.0
    .venv/bin/python tests/peft/make_peft_fixtures.py

For a tiny random llama (written here, weights committed: ~0.5 MB) it saves
  tiny-llama/                      config.json, model.safetensors, tokenizer.json (byte level)
  tiny-llama-tinylora/             PEFT TinyLoRA adapter (r=2, u=3, weight_tying=0.5, v ≠ 0)
  tiny-llama-lora/                 PEFT LoRA adapter (r=4, alpha=8, random B ≠ 0)
  tiny-llama-logits.safetensors    PEFT's logits of SEQS with each adapter and without
and, for SmolLM2-135M-Instruct (the Q4_1 GGUF from scripts/fetch_models.sh, dequantized by
transformers; its weights are fetched, not committed):
  smollm2-tinylora/                PEFT TinyLoRA on q_proj and v_proj (r=2, u=13, weight_tying=1.0,
                                   v ≠ 0)
  smollm2-logits.safetensors       PEFT's logits of SMOLLM2_SEQ's last 3 positions, with and without
All float32, computed on the CPU.
"""

import json
import os
import sys

import torch
from peft import LoraConfig, TinyLoraConfig, get_peft_model
from safetensors.torch import save_file
from tokenizers import Tokenizer, models, pre_tokenizers, decoders
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# the token sequences every test feeds 
SEQS = [[5, 17, 200, 3, 99, 42, 7, 7, 1], [250, 11, 64, 65, 66, 67, 68]]


def byte_tokenizer(path):
    """A byte-level BPE without merges: the 256 byte symbols, then <s>, </s>."""
    vocab = {c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    vocab["<s>"] = 256
    vocab["</s>"] = 257
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.save(path)


def logits(model):
    with torch.no_grad():
        return {f"seq{i}": model(torch.tensor([s])).logits[0].float().contiguous() for i, s in enumerate(SEQS)}


SMOLLM2_SEQ = [1, 4093, 314, 216, 1022, 1441, 30, 378, 3060]


def smollm2(models_dir):
    """PEFT TinyLoRA on SmolLM2-135M-Instruct, loaded from the GGUF tinylora's tests read."""
    torch.manual_seed(2)
    base = AutoModelForCausalLM.from_pretrained(
        models_dir, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf", dtype=torch.float32).eval()
    ids = torch.tensor([SMOLLM2_SEQ])
    with torch.no_grad():
        tensors = {"base": base(ids).logits[0, -3:].contiguous()}
    cfg = TinyLoraConfig(r=2, u=13, weight_tying=1.0, target_modules=["q_proj", "v_proj"],
                         projection_seed=7, init_weights="uniform", init_v_bound=0.5)
    model = get_peft_model(base, cfg).eval()
    with torch.no_grad():
        tensors["tinylora"] = model(ids).logits[0, -3:].contiguous()
    model.save_pretrained(os.path.join(OUT, "smollm2-tinylora"))
    save_file(tensors, os.path.join(OUT, "smollm2-logits.safetensors"),
              metadata={"seq": json.dumps(SMOLLM2_SEQ), "positions": "last 3", "torch": torch.__version__})


def main():
    torch.manual_seed(0)
    os.makedirs(OUT, exist_ok=True)
    cfg = LlamaConfig(
        vocab_size=258, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, rms_norm_eps=1e-5,
        rope_theta=10000.0, tie_word_embeddings=True, max_position_embeddings=512,
        bos_token_id=256, eos_token_id=257, torch_dtype="float32",
    )
    base = LlamaForCausalLM(cfg).eval()
    # larger-than-default weights so that the logits are far from uniform
    with torch.no_grad():
        for p in base.parameters():
            if p.dim() == 2:
                p.mul_(5.0)
    base_dir = os.path.join(OUT, "tiny-llama")
    base.save_pretrained(base_dir, safe_serialization=True)
    byte_tokenizer(os.path.join(base_dir, "tokenizer.json"))
    tensors = {f"base/{k}": v for k, v in logits(base).items()}

    tl_cfg = TinyLoraConfig(r=2, u=3, weight_tying=0.5, target_modules=TARGETS, projection_seed=42,
                            init_weights="uniform", init_v_bound=1.0)
    tl = get_peft_model(base, tl_cfg).eval()
    tensors.update({f"tinylora/{k}": v for k, v in logits(tl).items()})
    tl.save_pretrained(os.path.join(OUT, "tiny-llama-tinylora"))
    base = tl.unload()

    torch.manual_seed(1)
    lora_cfg = LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, init_lora_weights=False)
    lora = get_peft_model(base, lora_cfg).eval()
    tensors.update({f"lora/{k}": v for k, v in logits(lora).items()})
    lora.save_pretrained(os.path.join(OUT, "tiny-llama-lora"))

    save_file(tensors, os.path.join(OUT, "tiny-llama-logits.safetensors"),
              metadata={"seqs": json.dumps(SEQS), "torch": torch.__version__})
    models_dir = os.environ.get("TINYLORA_MODELS", os.path.join(OUT, "../../../models"))
    smollm2(models_dir)
    print("fixtures written to", OUT, file=sys.stderr)


if __name__ == "__main__":
    main()
