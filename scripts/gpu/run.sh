#!/usr/bin/env bash
# The GPU kit's runner, for one call of the device tool (and for the dry run here):
#
#   bash scripts/gpu/run.sh --call A01 stage1 stage2k
#
# 1. takes in what the call carried (gpu-kit/calls/<call>/): checks every piece against the
#    manifest and keeps it in the stash, which outlives the call while the machine stays warm;
# 2. rebuilds every artifact whose pieces are all there (checksums again) and installs it:
#    binaries and tools into the stash, models into <stash>/models (linked into models/);
# 3. on the GPU machine, unpacks Debian's Vulkan loader into / (it has none) and records the
#    GPU, its driver and the Vulkan devices wgpu chooses from;
# 4. runs each requested stage under its own timeout, writing one JSON per stage, a summary
#    and a tar.gz of the logs to $OUT (at most 8 files; ./gpu-kit/out when OUT is unset).
#
# Stages (scripts/gpu/README.md): stage1 (test suites), stage2k (kernels vs stock ops),
# stage2a (speed on SmolLM2), stage2b (speed on Qwen2.5-Coder-0.5B), stage3 (reproduction).
# A stage whose artifacts have not all arrived is reported as skipped, naming them.
#
# Environment: KIT_DRY_RUN=1 (this machine: lavapipe and the CPU backend, small sizes, no
# dpkg into /; KIT_DRY_TESTS=N runs only N tests per suite besides the real-model ones,
# which defer until their model arrives and are then skipped), KIT_STASH (default /var/tmp/tinylora-kit), KIT_BUDGET (seconds for the stages
# of this call, overriding the plan's), OUT.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)"
cd "$REPO"
GPU="$REPO/scripts/gpu"
DRY="${KIT_DRY_RUN:-0}"
STASH="${KIT_STASH:-/var/tmp/tinylora-kit}"
OUT="${OUT:-$REPO/gpu-kit/out}"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}" RUST_BACKTRACE=0 PYTHONUNBUFFERED=1

die() { echo "run.sh: error: $*" >&2; exit 1; }
note() { echo "run.sh: $*" >&2; }

CALL=""
STAGES=()
while (($#)); do
  case "$1" in
    --call) CALL="${2:?--call needs an id such as A01}"; shift 2 ;;
    stage1|stage2k|stage2a|stage2b|stage3) STAGES+=("$1"); shift ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) die "unknown argument '$1' (stages: stage1 stage2k stage2a stage2b stage3; --call ID)" ;;
  esac
done
[[ -n "$CALL" ]] || die "--call ID is required (the plan's call id, e.g. A01)"
command -v python3 >/dev/null || die "python3 not found"

mkdir -p "$OUT" "$STASH"
STASH="$(cd "$STASH" && pwd -P)"
WORK="$STASH/work/$CALL"
rm -rf "$WORK"
mkdir -p "$WORK"
# everything printed also lands in the logs that come back
exec > >(tee -a "$WORK/run.log") 2>&1
T0=$SECONDS
note "call $CALL, stages: ${STAGES[*]:-none}, dry run: $DRY, repo $REPO, stash $STASH"

# --- 1-2. take in the call's pieces, rebuild what is complete --------------------------------
CALL_DIR="gpu-kit/calls/$CALL"
if [[ -d "$CALL_DIR" ]]; then
  python3 "$GPU/kit.py" ingest --call-dir "$CALL_DIR" --stash "$STASH"
elif [[ -f "$STASH/plan.json" ]]; then
  note "$CALL_DIR not carried: continuing with what the stash holds"
else
  die "$CALL_DIR is missing and the stash $STASH is empty: carry $CALL_DIR (see gpu-kit/PLAN.md)"
fi
# a stage-3 run from an earlier visit, carried back (gpu-kit/stage3-carry/stage3-runs.tar.gz)
if [[ -f gpu-kit/stage3-carry/stage3-runs.tar.gz && ! -d "$STASH/stage3" ]]; then
  mkdir -p "$STASH/stage3" && tar -xzf gpu-kit/stage3-carry/stage3-runs.tar.gz -C "$STASH/stage3"
  note "stage 3 continues from gpu-kit/stage3-carry/stage3-runs.tar.gz"
fi
MANIFEST_DIR="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["manifest_dir"])' "$STASH/plan.json")"
LINK=()
[[ "$DRY" == 1 ]] || LINK=(--link-models "$REPO/models")
python3 "$GPU/kit.py" assemble --stash "$STASH" "${LINK[@]}"

# The binaries read files under the directory they were built in (env!("CARGO_MANIFEST_DIR"):
# models/, tests/reference/): make that path lead here.
if [[ "$MANIFEST_DIR" != "$REPO" ]]; then
  if [[ -e "$MANIFEST_DIR" ]]; then
    [[ "$(cd "$MANIFEST_DIR" && pwd -P)" == "$REPO" ]] \
      || die "the binaries were built in $MANIFEST_DIR, which exists here and is not this checkout ($REPO)"
  else
    mkdir -p "$(dirname "$MANIFEST_DIR")" && ln -s "$REPO" "$MANIFEST_DIR"
    note "linked $MANIFEST_DIR -> $REPO (the binaries' CARGO_MANIFEST_DIR)"
  fi
fi

have() { python3 "$GPU/kit.py" have --stash "$STASH" "$@" >/dev/null; }
BIN_TESTS="$STASH/bin-tests"
BIN_BENCH="$STASH/bin-bench"
TL="$STASH/bin-cli/tinylora"

# --- 3. Vulkan and the record of the machine --------------------------------------------------
if have tools && [[ "$DRY" != 1 ]]; then
  if ! ldconfig -p 2>/dev/null | grep 'libvulkan\.so\.1' >/dev/null; then
    command -v dpkg >/dev/null || die "dpkg not found: cannot unpack the Vulkan loader .debs"
    for f in "$STASH"/tools/debs/*.deb; do dpkg -x "$f" /; done
    ldconfig
    note "unpacked the Vulkan loader: $(ls "$STASH"/tools/debs | tr '\n' ' ')"
  fi
fi
vulkan_json() { if have tools; then "$STASH/tools/vkinfo" 2>&1 || true; else echo '{"ok": false, "error": "tools not here yet"}'; fi; }
VK="$(vulkan_json)"
NV_ICD=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
if [[ "$DRY" != 1 && "$VK" != *'"type": "discrete"'* && -f "$NV_ICD" && -z "${VK_DRIVER_FILES:-}" ]]; then
  export VK_DRIVER_FILES="$NV_ICD"
  note "no discrete GPU through Vulkan yet: VK_DRIVER_FILES=$NV_ICD"
  VK="$(vulkan_json)"
fi
GPU_CSV="$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "no nvidia-smi")"
python3 - "$OUT/env.json" "$CALL" "$DRY" "$GPU_CSV" "$VK" <<'PY'
import json, os, platform, sys
out, call, dry, gpu, vk = sys.argv[1:]
try:
    vkj = json.loads(vk)
except json.JSONDecodeError:
    vkj = {"ok": False, "raw": vk}
devs = vkj.get("devices", [])
json.dump(dict(call=call, dry_run=dry == "1", host=platform.node(), kernel=platform.release(), cpus=os.cpu_count(),
               python=platform.python_version(), gpu=gpu.strip(), vulkan=vkj,
               vulkan_device=", ".join(f"{d['name']} ({d['type']})" for d in devs) or None,
               vk_driver_files=os.environ.get("VK_DRIVER_FILES")), open(out, "w"), indent=1)
PY
note "GPU: $GPU_CSV"
note "Vulkan: $VK"

if [[ "$DRY" == 1 ]]; then
  DEVICE=cpu          # the CLI and the benches' model work on burn's CPU backend (fast here)
  TEST_DEVICE_NOTE="lavapipe (software Vulkan) + CPU"
else
  DEVICE=gpu
  TEST_DEVICE_NOTE="$GPU_CSV"
fi

# --- helpers ---------------------------------------------------------------------------------
STAGE_END=0
budget_of() { # STAGE [rerun]: the stage's seconds from the plan (KIT_BUDGET overrides)
  if [[ -n "${KIT_BUDGET:-}" ]]; then echo "$KIT_BUDGET"; return; fi
  python3 -c 'import json,sys; s=json.load(open(sys.argv[1]))["stages"][sys.argv[2]]; print(s["rerun_budget" if sys.argv[3]=="1" and "rerun_budget" in s else "budget"])' \
    "$STASH/plan.json" "$1" "${2:-0}"
}
left() { echo $((STAGE_END - SECONDS)); }
# step NAME CAP CMD...: run CMD (output to $W/NAME.log) under min(CAP, time left in the stage);
# NAME.rc holds "exit-status seconds". Never stops the runner.
step() {
  local name="$1" cap="$2"; shift 2
  local t=$(( $(left) < cap ? $(left) : cap )) s=$SECONDS rc=0
  if ((t < 5)); then echo "124 0 no time left" >"$W/$name.rc"; note "  $name: skipped (stage time used up)"; return 0; fi
  timeout -k 15 "$t" "$@" >"$W/$name.log" 2>&1 || rc=$?
  echo "$rc $((SECONDS - s))" >"$W/$name.rc"
  note "  $name: exit $rc in $((SECONDS - s)) s"
}

# --- stage 1: the test suites ------------------------------------------------------------------
stage1() {
  local state="$STASH/state/stage1.json" suite bin todo rc
  mkdir -p "$STASH/state"
  for suite in kernels blocks adapter engine; do
    bin="$BIN_TESTS/test-$suite"
    "$bin" --list --format terse >"$W/stage1-$suite.list" 2>&1 || die "$bin --list failed: $(tail -3 "$W/stage1-$suite.list")"
    python3 "$GPU/results.py" stage1-todo --state "$state" --suite "$suite" --list "$W/stage1-$suite.list" \
      $([[ "$DRY" == 1 ]] && echo --dry ${KIT_DRY_TESTS:+--dry-limit "$KIT_DRY_TESTS"}) >"$W/stage1-$suite.todo"
    [[ -s "$W/stage1-$suite.todo" ]] || continue
    # shellcheck disable=SC2046
    step "stage1-$suite" 100000 env TINYLORA_MODELS="$STASH/models" "$bin" --exact $(cat "$W/stage1-$suite.todo") ${KIT_TEST_ARGS:-}
    rc="$(cut -d' ' -f1 "$W/stage1-$suite.rc")"
    python3 "$GPU/results.py" stage1-update --state "$state" --suite "$suite" --log "$W/stage1-$suite.log" \
      --rc "$rc" --call "$CALL" --todo "$W/stage1-$suite.todo"
  done
  python3 "$GPU/results.py" stage1-json --state "$state" --out "$OUT/stage1.json"
}

# --- stage 2: speed ------------------------------------------------------------------------------
stage2k() {
  echo "$TEST_DEVICE_NOTE" >"$W/device.txt"
  local reps=()
  [[ "$DRY" == 1 ]] && reps=(--kernel-reps 3)
  step kernels 100000 "$BIN_BENCH/bench-adapter" --kernels-only "${reps[@]}"
  python3 "$GPU/results.py" stage2k --work "$W" --out "$OUT/stage2k.json"
}

# counting, which greedy decoding continues for hundreds of tokens without stopping (so every
# sample makes all its new tokens); about 60 tokens
PROMPT="$(seq -s ', ' 1 20),"

stage2_model() { # KEY FILE
  local key="$1" model="$STASH/models/$2" b n
  echo "$2" >"$W/model.txt"
  echo "$TEST_DEVICE_NOTE" >"$W/device.txt"
  local batches=(1 16 64) lengths=(8 128) hf_args=(--device cuda --dtype f32,bf16 --bandwidth) hf_cap=150
  [[ "$key" == qwen05 ]] && hf_cap=240  # SmolLM2's PyTorch side took 97 s on the H200
  if [[ "$DRY" == 1 ]]; then batches=(1 4); lengths=(2 8); fi
  step info 60 "$TL" info --model "$model"
  # first what the targets are about (the training step against PEFT's), then the PyTorch side
  # (the anchors, ~100 s), then tinylora's decode and prefill; each step has a cap so that none
  # starves the ones after it
  if [[ "$DRY" == 1 ]]; then
    # SmolLM2 only: the CPU backend takes minutes for Qwen's
    if [[ "$key" == smollm2 ]]; then
      step training_bench 300 "$BIN_BENCH/bench-adapter" --training-only --device cpu --tokens 32 --reps 1
      step training16_bench 300 "$BIN_BENCH/bench-adapter" --training-only --device cpu --rows 2 --tokens 32 \
        --u 13 --tying full --reps 1
    fi
  else
    step training_bench 75 "$BIN_BENCH/bench-adapter" --training-only --model "$model" --tokens 256 --reps 5
    step training16_bench 75 "$BIN_BENCH/bench-adapter" --training-only --model "$model" --rows 16 --tokens 256 \
      --u 13 --tying full --reps 3
  fi
  # one short generate first: its prompt length is the PyTorch side's decode prompt
  step "gen_b1_n${lengths[0]}" 90 "$TL" generate --model "$model" --device "$DEVICE" --prompt "$PROMPT" \
    --max-new-tokens "${lengths[0]}" --num-samples 1 --json
  stage2_pytorch
  if [[ "$key" == smollm2 ]]; then
    if [[ "$DRY" == 1 ]]; then
      step engine_bench 300 "$BIN_BENCH/bench-engine" --device cpu --new-tokens 32
    else
      step engine_bench 120 "$BIN_BENCH/bench-engine" --device gpu --new-tokens 128 --weights f32,auto
    fi
  fi
  # products with compressed weights one matrix at a time (benches/blocks.rs: the chosen path, the
  # decoding kernels, the decoded copy, f32; F16 with its tile in f16 and in f32; Q8_0 as burn's
  # own quantized tensor at three sizes, each autotuned), on synthetic matrices of SmolLM2's and
  # Qwen's shapes: once a visit on the GPU, in Qwen's stage; in the dry run, in both models' stages
  if [[ "$key" == qwen05 || "$DRY" == 1 ]]; then
    if [[ "$DRY" == 1 ]]; then
      step blocks_bench 120 "$BIN_BENCH/bench-blocks" --rows 9,64 --burn-rows 9
    else
      step blocks_bench 90 "$BIN_BENCH/bench-blocks" --rows 1,8,9,16,32,64,256 --burn-rows 1,16,256
    fi
  fi
  for b in "${batches[@]}"; do
    for n in "${lengths[@]}"; do
      [[ "$(cut -d' ' -f1 "$W/gen_b${b}_n${n}.rc" 2>/dev/null)" == 0 ]] && continue
      step "gen_b${b}_n${n}" 90 "$TL" generate --model "$model" --device "$DEVICE" --prompt "$PROMPT" \
        --max-new-tokens "$n" --num-samples "$b" --json
    done
  done
}
# the PyTorch side (transformers + PEFT on the same GGUF), with stage2_model's hf_args and hf_cap: on the
# GPU machine with the gguf wheel, and PEFT's own wheel when the installed PEFT lacks TinyLoRA
stage2_pytorch() {
  local site="$STASH/site"
  if [[ ! -d "$site" ]] && have wheels; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
      "$STASH"/wheels/gguf-*.whl >"$W/pip.log" 2>&1 || note "pip install of the gguf wheel failed (see pip.log)"
    if ! python3 -c 'import peft; peft.TinyLoraConfig' >/dev/null 2>&1 && python3 -c 'import torch' >/dev/null 2>&1; then
      python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
        "$STASH"/wheels/peft-*.whl >>"$W/pip.log" 2>&1 && note "installed PEFT with TinyLoRA from the kit's wheel"
    fi
  fi
  if [[ "$DRY" == 1 ]]; then
    hf_args=(--device cpu --dtype f32 --batches 1 --new-tokens 8 --train 1x32:u1:t0 --train 2x32:u13:t1 --reps 1)
  fi
  # decode from prompts as long as tinylora's
  local plen
  plen="$( { grep -ho 'prompt [0-9]* tokens' "$W"/gen_b1_n*.log 2>/dev/null || true; } | head -n1 | tr -dc 0-9)"
  [[ -n "$plen" ]] && hf_args+=(--decode-prompt-tokens "$plen")
  step hf "$hf_cap" env PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}" \
    python3 "$REPO/benches/pytorch/bench_hf.py" --model "$model" --out "$W/hf.json" "${hf_args[@]}"
  if [[ "$(cut -d' ' -f1 "$W/hf.rc")" == 3 ]]; then
    grep -m1 'needs the Python package' "$W/hf.log" >"$W/hf.skipped" || true
  fi
}
stage2a() { stage2_model smollm2 SmolLM2-135M-Instruct.Q4_1.gguf; python3 "$GPU/results.py" stage2 --work "$W" --stage stage2a --out "$OUT/stage2a.json" $([[ "$DRY" == 1 ]] && echo --dry); }
stage2b() { stage2_model qwen05 Qwen2.5-Coder-0.5B-Instruct.gguf; python3 "$GPU/results.py" stage2 --work "$W" --stage stage2b --out "$OUT/stage2b.json" $([[ "$DRY" == 1 ]] && echo --dry); }

# --- stage 3: the reproduction, resumable ------------------------------------------------------
stage3() {
  local d="$STASH/stage3" model train test limit steps common grpo_extra sft_extra eval_extra
  mkdir -p "$d"
  if [[ "$DRY" == 1 ]]; then
    # the dry run: SmolLM2 (the checkout's) on the arithmetic task, tiny sizes, CPU backend
    model="$REPO/models/SmolLM2-135M-Instruct.Q4_1.gguf"; train="$REPO/data/arithmetic.jsonl"; test="$train"
    limit=8; steps=2
    common=(--extract flexible --instruction "" --answer-prefix "The answer is" --max-new-tokens 4)
    grpo_extra=(--group-size 2 --prompts-per-step 2); sft_extra=(--batch-size 2); eval_extra=(--batch-size 8)
  else
    model="$STASH/models/Qwen2.5-Coder-0.5B-Instruct.gguf"; train="$STASH/data/gsm8k/train.jsonl"
    test="$STASH/data/gsm8k/test.jsonl"; limit=200; steps="${KIT_S3_STEPS:-200}"
    common=(--max-new-tokens 256)
    # passes of 8 sequences: the H200's memory is no concern, and fewer passes launch less
    grpo_extra=(--group-size 8 --prompts-per-step 4 --micro-batch 8); sft_extra=(--batch-size 4)
    eval_extra=(--batch-size 64)
  fi
  [[ -f "$model" ]] || die "stage3: $model is missing"
  W="$d"  # stage 3 keeps its logs with its runs, which go back and forth between visits
  : >"$d/errors.txt"
  phase_eval() { # NAME [ADAPTER]
    local name="$1" ad=()
    [[ -f "$d/done-$name" ]] && return 0
    [[ -n "${2:-}" ]] && ad=(--adapter "$2")
    step "$name" 100000 "$TL" eval --model "$model" --device "$DEVICE" --data "$test" --limit "$limit" \
      --out "$d/$name.jsonl" "${ad[@]}" "${eval_extra[@]}" "${common[@]}"
    if [[ "$(cut -d' ' -f1 "$d/$name.rc")" == 0 ]]; then touch "$d/done-$name"
    elif (($(left) > 5)); then echo "$name failed: $(tail -2 "$d/$name.log")" >>"$d/errors.txt"; fi
  }
  phase_train() { # grpo|sft
    local run="$1" extra=() resume=(--overwrite) rc t
    [[ -f "$d/done-$run" ]] && return 0
    [[ -f "$d/$run/state.json" ]] && resume=(--resume)
    if [[ "$run" == grpo ]]; then extra=("${grpo_extra[@]}" --reward correct:1 --reward format:0.2); else extra=("${sft_extra[@]}"); fi
    t=$(left)
    ((t > 30)) || return 0
    # SIGINT at the time box: the trainer finishes its step, checkpoints and exits 130
    rc=0
    timeout -s INT -k 120 "$((t - 20))" "$TL" train "$run" --model "$model" --data "$train" --out "$d/$run" \
      --device "$DEVICE" --u 13 --tying full --steps "$steps" --lr 0.005 --eval-problems 0 \
      "${resume[@]}" "${extra[@]}" "${common[@]}" >>"$d/$run.log" 2>&1 || rc=$?
    note "  train $run: exit $rc"
    if ((rc == 0)); then touch "$d/done-$run"
    elif ((rc != 130 && rc != 124)); then echo "train $run exited $rc: $(tail -2 "$d/$run.log")" >>"$d/errors.txt"; fi
  }
  phase_eval eval-base
  phase_train grpo
  [[ -f "$d/done-grpo" ]] && phase_eval eval-grpo "$d/grpo/adapter.safetensors"
  [[ -f "$d/done-grpo" ]] && phase_train sft
  [[ -f "$d/done-sft" ]] && phase_eval eval-sft "$d/sft/adapter.safetensors"
  if [[ -f "$d/done-sft" && ! -f "$d/done-plot" ]]; then
    "$TL" plot "$d/grpo/metrics.jsonl" "$d/sft/metrics.jsonl" -o "$d/compare.svg" >"$d/plot.log" 2>&1 \
      && "$TL" plot "$d/grpo/metrics.jsonl" "$d/sft/metrics.jsonl" -o "$d/compare.png" >>"$d/plot.log" 2>&1 \
      && touch "$d/done-plot" || echo "plot failed: $(tail -2 "$d/plot.log")" >>"$d/errors.txt"
  fi
  python3 "$GPU/results.py" stage3 --dir "$d" --out "$OUT/stage3.json" --steps "$steps"
  tar --exclude='*.rc' -czf "$OUT/stage3-runs.tar.gz" -C "$d" .
}

# --- 4. the stages ---------------------------------------------------------------------------------
# the call's deadline on the device: the plan's timeout_s for it, less a minute for the summary,
# the logs and the way back (none in the dry run, whose budgets are lavapipe's)
CALL_DEADLINE=""
if [[ "$DRY" != 1 ]]; then
  t="$(python3 -c 'import json,sys; print(next((c["timeout_s"] for v in json.load(open(sys.argv[1]))["visits"] for c in v["calls"] if c["id"] == sys.argv[2]), ""))' "$STASH/plan.json" "$CALL")"
  [[ -n "$t" ]] && CALL_DEADLINE=$((T0 + t - 60))
fi
for s in "${STAGES[@]}"; do
  needs="$(python3 -c 'import json,sys; print(" ".join(json.load(open(sys.argv[1]))["stages"][sys.argv[2]]["needs"]))' "$STASH/plan.json" "$s")"
  # shellcheck disable=SC2086
  if ! missing="$(python3 "$GPU/kit.py" have --stash "$STASH" $needs)"; then
    note "$s skipped: missing artifacts: $missing"
    python3 -c 'import json,sys; json.dump(dict(stage=sys.argv[2], status="skipped", reason="missing artifacts: " + sys.argv[3] + " (their pieces come in earlier calls of the visit: was the machine given back in between? then re-send the visit from its first call)"), open(sys.argv[1], "w"), indent=1)' \
      "$OUT/$s.json" "$s" "$missing"
    continue
  fi
  rerun=0
  [[ "$s" == stage1 && -f "$STASH/state/stage1.json" ]] && rerun=1
  B="$(budget_of "$s" "$rerun")"
  [[ "$DRY" == 1 && -z "${KIT_BUDGET:-}" ]] && B="${KIT_DRY_BUDGET:-900}"
  # never past the call's deadline: what is cut short still writes its JSON and logs
  if [[ -n "$CALL_DEADLINE" ]] && ((CALL_DEADLINE - SECONDS < B)); then
    B=$((CALL_DEADLINE - SECONDS))
    note "$s: budget cut to $B s by the call's timeout"
  fi
  if ((B < 10)); then
    python3 -c 'import json,sys; json.dump(dict(stage=sys.argv[2], status="skipped", reason="no time left in this call (its timeout_s); run it in a call of its own"), open(sys.argv[1], "w"), indent=1)' "$OUT/$s.json" "$s"
    note "$s skipped: no time left in this call"
    continue
  fi
  STAGE_END=$((SECONDS + B))
  W="$WORK/$s"
  mkdir -p "$W"
  note "== $s (budget $B s)"
  set +e
  ( set -e; "$s" )
  rc=$?
  set -e
  [[ $rc == 0 ]] || note "$s: the runner's stage function exited $rc"
  [[ -f "$OUT/$s.json" ]] || python3 -c 'import json,sys; json.dump(dict(stage=sys.argv[2], status="fail", reason="the stage wrote no result (exit " + sys.argv[3] + "); see the logs"), open(sys.argv[1], "w"), indent=1)' "$OUT/$s.json" "$s" "$rc"
  note "== $s done in $((SECONDS - STAGE_END + B)) s: $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["status"])' "$OUT/$s.json")"
done

# --- what comes back ------------------------------------------------------------------------------
note "call $CALL finished in $((SECONDS - T0)) s"
python3 "$GPU/results.py" summary "$OUT" || true
tar -czf "$OUT/logs-$CALL.tar.gz" -C "$WORK" . 2>/dev/null || true
n="$(find "$OUT" -maxdepth 1 -type f | wc -l)"
((n <= 8)) || note "warning: $n files in $OUT; the device tool returns at most 8"
