#!/usr/bin/env bash
# Set everything up and run the main job on the embedded default model
# (SmolLM2-135M-Instruct): fetch it, build, and answer a math question with it.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
scripts/fetch_models.sh smollm2
cargo build --release -p tinylora-cli
"$CARGO_TARGET_DIR/release/tinylora" info --model models/SmolLM2-135M-Instruct.Q4_1.gguf
"$CARGO_TARGET_DIR/release/tinylora" generate --model models/SmolLM2-135M-Instruct.Q4_1.gguf --chat \
  --prompt "${1:-Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips did Natalia sell altogether in April and May?}" \
  --max-new-tokens "${MAX_NEW_TOKENS:-128}"
