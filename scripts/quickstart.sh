#!/usr/bin/env bash
# The main job on the embedded default: fetch SmolLM2-135M-Instruct, build, and train a
# 13-parameter TinyLoRA adapter (u = 13, one tie group for the whole model) with GRPO on the
# default arithmetic task (data/arithmetic.jsonl), evaluating 32 held-out problems before and
# after; then draw the training curves.
#
# Everything lands in ${RUN_DIR:-run/}: adapter.safetensors, metrics.jsonl, metrics.svg,
# metrics.png, config.json, state.json. STEPS (default 12) sets the length and EVAL_PROBLEMS
# (default 32) the held-out set; DEVICE (default auto: the GPU through wgpu when there is a
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
  --group-size 6 --prompts-per-step 2 --max-new-tokens 4 --steps "${STEPS:-12}" --lr 0.005 \
  --eval-problems "${EVAL_PROBLEMS:-32}" --extract flexible --instruction "" --answer-prefix "The answer is" \
  $([[ -n "${RESUME:-}" ]] && echo --resume || echo --overwrite)
"$T" plot "$RUN_DIR/metrics.jsonl" -o "$RUN_DIR/metrics.svg"
"$T" plot "$RUN_DIR/metrics.jsonl" -o "$RUN_DIR/metrics.png"
echo "chart: $RUN_DIR/metrics.svg (and metrics.png)"
