#!/usr/bin/env bash
# Data-parallel training over MPI, end to end on the CPU device (run by scripts/test.sh, so by
# CI): installs Open MPI, builds the CLI with `--features mpi`, and checks on a short job
# (SmolLM2, the arithmetic task, 2 prompts × 6 samples a step) that
#   1. `mpirun -np 2` (one prompt per rank) ends with the values of one process running the
#      same global batch (within 1e-6: the gradient's sum is ordered differently, see below),
#      the same reward at every step, the same held-out accuracies (the evaluation is sharded),
#      and one metrics line per step (rank 0 alone writes);
#   2. a rank killed mid-run ends the job with a non-zero status and leaves a checkpoint from
#      which `--resume` (again on 2 ranks) ends byte-identical to the uninterrupted 2-rank run.
# The tolerance: one process sums the gradient over the whole batch in burn's order; two ranks
# each sum their half, then add the halves in f64. The f32 sums differ by at most a few ulps
# (relative ~1e-6 of the gradient), AdamW's step lr·m/(√v+ε) carries that relative error, so
# after 3 steps at lr 0.005 the values can differ by ~3·0.005·1e-6 ≈ 2e-8; 1e-6 leaves room.
set -euo pipefail
cd "$(dirname "$0")/.."
export TINYLORA_MPI=1
source scripts/setup.sh
scripts/fetch_models.sh smollm2
cargo build --release -p tinylora-cli --features mpi
T="$CARGO_TARGET_DIR/release/tinylora"
MPIRUN=(mpirun --oversubscribe -np 2)
[[ $(id -u) -eq 0 ]] && MPIRUN+=(--allow-run-as-root)
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
JOB=(train grpo --model models/SmolLM2-135M-Instruct.Q4_1.gguf --data data/arithmetic.jsonl
  --device cpu --u 13 --tying full --group-size 6 --prompts-per-step 2 --max-new-tokens 4
  --steps 3 --lr 0.005 --eval-problems 8 --extract flexible --instruction ""
  --answer-prefix "The answer is")

echo "== one process"
"$T" "${JOB[@]}" --out "$W/one" >"$W/one.out"
echo "== two ranks"
"${MPIRUN[@]}" "$T" "${JOB[@]}" --out "$W/two" >"$W/two.out" 2>"$W/two.err"
grep "^MPI:" "$W/two.err"
python3 - "$W" <<'EOF'
import json, sys
w = sys.argv[1]
def metrics(run):
    return [json.loads(l) for l in open(f"{w}/{run}/metrics.jsonl")]
one, two = metrics("one"), metrics("two")
assert [m["step"] for m in two] == [1, 2, 3], f"rank 0 alone writes: {[m['step'] for m in two]}"
for a, b in zip(one, two):
    assert a["reward_mean"] == b["reward_mean"], (a["step"], a["reward_mean"], b["reward_mean"])
    gap = max(abs(x - y) for x, y in zip(a["values"], b["values"]))
    assert gap <= 1e-6, f"step {a['step']}: values differ by {gap}"
    print(f"step {a['step']}: reward {a['reward_mean']:.3f} on both, values within {gap:.1e}")
acc = lambda run: [l for l in open(f"{w}/{run}.out") if l.startswith("held-out accuracy")]
assert acc("one") == acc("two") and acc("one"), (acc("one"), acc("two"))
print("held-out:", acc("two")[0].strip(), "(sharded across the ranks)")
EOF

echo "== rank 1 killed after step 2, then --resume on two ranks"
"${MPIRUN[@]}" "$T" "${JOB[@]}" --out "$W/killed" >/dev/null 2>"$W/killed.err" &
LAUNCHER=$!
until [[ -f "$W/killed/metrics.jsonl" && $(wc -l <"$W/killed/metrics.jsonl") -ge 2 ]]; do
  kill -0 "$LAUNCHER" 2>/dev/null || { echo "the job ended before step 2"; exit 1; }
  sleep 0.1
done
for pid in $(pgrep -f "$W/killed"); do
  if tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=1"; then
    kill -KILL "$pid"
  fi
done
if wait "$LAUNCHER"; then
  echo "the job went on with a rank killed"; exit 1
fi
grep -m1 -i "rank 1\|signal 9\|killed" "$W/killed.err" || { cat "$W/killed.err"; exit 1; }
python3 -c "import json,sys; s=json.load(open(sys.argv[1])); print('checkpoint intact at step', s['step'])" "$W/killed/state.json"
"${MPIRUN[@]}" "$T" "${JOB[@]}" --out "$W/killed" --resume >/dev/null 2>"$W/resumed.err"
cmp "$W/two/adapter.safetensors" "$W/killed/adapter.safetensors"
cmp "$W/two/state.json" "$W/killed/state.json"
echo "resumed: adapter and state byte-identical to the uninterrupted 2-rank run"
echo "MPI: 2 passed, 0 failed"
