#!/usr/bin/env bash
# One sitting on the CPU: PyTorch + transformers + PEFT (bench_hf.py) and tinylora's engine and
# adapter benches, alternating for ROUNDS rounds on the same machine, every output kept.
#
#   benches/pytorch/cpu_sitting.sh [MODEL] [ROUNDS] [REPS] [OUT_DIR]
#
# MODEL defaults to SmolLM2-135M-Instruct, ROUNDS to 2, REPS to 3, OUT_DIR to
# target/cpu-sitting. PYTHON (default ~/.venvs/torch/bin/python) must have torch, transformers,
# peft and gguf (benches/README.md says how to make that environment). By hand, not in CI:
# a sitting takes 10–30 minutes.
set -euo pipefail
cd "$(dirname "$0")/../.."
MODEL=${1:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
ROUNDS=${2:-2}
REPS=${3:-3}
OUT=${4:-target/cpu-sitting}
PYTHON=${PYTHON:-$HOME/.venvs/torch/bin/python}
[[ -f "$MODEL" ]] || { echo "no model at $MODEL (scripts/fetch_models.sh fetches them)" >&2; exit 2; }
"$PYTHON" -c "import torch, transformers, peft, gguf" 2>/dev/null ||
  { echo "$PYTHON lacks torch, transformers, peft or gguf" >&2; exit 3; }
mkdir -p "$OUT"
# build first, so that no round pays for compilation
cargo bench --profile release --bench engine --bench adapter --no-run
tag=$(basename "$MODEL" .gguf)
for i in $(seq 1 "$ROUNDS"); do
  echo "round $i of $ROUNDS: PyTorch ($(date +%T))"
  "$PYTHON" benches/pytorch/bench_hf.py --model "$MODEL" --device cpu --dtype f32 --threads 2 \
    --batches 1,16,64 --new-tokens 32 --prompt-tokens 256 --train 16x128:u13:t1 --reps "$REPS" \
    --out "$OUT/hf-$tag-$i.json" 2> "$OUT/hf-$tag-$i.log"
  echo "round $i of $ROUNDS: tinylora ($(date +%T))"
  cargo bench --profile release --bench engine -- --device cpu --new-tokens 32 --batches 1,16,64 \
    --weights f32,auto --model "$MODEL" > "$OUT/engine-$tag-$i.txt"
  cargo bench --profile release --bench adapter -- --training-only --device cpu --rows 16 \
    --tokens 128 --reps "$REPS" --u 13 --tying full --model "$MODEL" > "$OUT/adapter-$tag-$i.txt"
done
echo "done ($(date +%T)): $OUT"
