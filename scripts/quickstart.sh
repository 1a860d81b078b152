#!/usr/bin/env bash
# The main job on the embedded default: fetch SmolLM2-135M-Instruct, build, and train a
# 13-parameter TinyLoRA adapter (u = 13, one tie group for the whole model) with GRPO on the
# default arithmetic task (data/arithmetic.jsonl: 60 steps of 8 prompts × 8 samples), holding
# out half of the 126 problems (63) and answering them before and after; then draw the
# training curves. About 6 minutes on 2 CPU cores.
#
# Everything lands in ${RUN_DIR:-run/}: adapter.safetensors, metrics.jsonl, metrics.svg,
# metrics.png, config.json, state.json. STEPS (default 60) sets the length and EVAL_PROBLEMS
# (default 63) the held-out set; DEVICE (default auto: the GPU through wgpu when there is a
# hardware one, else burn's CPU backend, much faster than lavapipe) takes gpu or cpu to force
# one. On a GPU use more steps and point --model / --data at Qwen2.5 and GSM8K (see README).
# A run already in RUN_DIR is replaced; interrupt with Ctrl-C and continue with RESUME=1.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
scripts/fetch_models.sh smollm2
cargo build --release -p tinylora-cli
T="$CARGO_TARGET_DIR/release/tinylora"
RUN_DIR="${RUN_DIR:-run}"
"$T" train grpo --model models/SmolLM2-135M-Instruct.Q4_1.gguf --data data/arithmetic.jsonl \
  --out "$RUN_DIR" --device "${DEVICE:-auto}" --u 13 --tying full \
  --group-size 8 --prompts-per-step 8 --max-new-tokens 4 --steps "${STEPS:-60}" --lr 0.01 \
  --eval-problems "${EVAL_PROBLEMS:-63}" --extract flexible --instruction "" --answer-prefix "The answer is" \
  $([[ -n "${RESUME:-}" ]] && echo --resume || echo --overwrite)
"$T" plot "$RUN_DIR/metrics.jsonl" -o "$RUN_DIR/metrics.svg"
"$T" plot "$RUN_DIR/metrics.jsonl" -o "$RUN_DIR/metrics.png"
echo "chart: $RUN_DIR/metrics.svg (and metrics.png)"
