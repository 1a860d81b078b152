#!/usr/bin/env bash
# The GPU kit's dry run, one command from a clean checkout:
#
#   scripts/gpu/dry_run.sh             # pack, then run every call
#   scripts/gpu/dry_run.sh --no-pack   # reuse gpu-kit/ as packed last time
#
# 1. packs the kit (scripts/gpu/pack.sh: build, binaries, loader .debs, wheels, models, data,
#    the plan of calls);
# 2. executes every call of the plan, in order, exactly as the device tool would: the plan's
#    own command line, run from the repository root, with OUT set to a fresh folder per call
#    and one stash per visit (a fresh machine per visit). KIT_DRY_RUN=1 makes the runner use
#    lavapipe and burn's CPU backend with small sizes, and leave / alone (no dpkg -x);
# 3. checks what came back: at most 8 files per call, each within the tool's limits; the
#    last JSON of every stage says "pass"; every call fits 64 MiB with the working tree as
#    it is now, and visits A and Q fit the device minutes. Exit status 1 on any failure.
#
# Everything lands in gpu-kit/dry/ (out/<call>/ holds what each call returned).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT="$(pwd -P)"
T0=$SECONDS
DRY="$ROOT/gpu-kit/dry"
fail() { echo "dry_run.sh: FAILED: $*" >&2; exit 1; }

case "${1:-}" in
  "") bash scripts/gpu/pack.sh; echo "dry_run.sh: pack done after $((SECONDS - T0)) s" >&2 ;;
  --no-pack) [[ -f gpu-kit/plan.json ]] || fail "gpu-kit/plan.json is missing: run without --no-pack" ;;
  *) fail "unknown option '$1' (--no-pack)" ;;
esac

rm -rf "$DRY"
mkdir -p "$DRY/out"
python3 - gpu-kit/plan.json >"$DRY/calls.tsv" <<'PY'
import json, sys
for v in json.load(open(sys.argv[1]))["visits"]:
    for c in v["calls"]:
        print("\t".join([v["id"], c["id"], str(c["timeout_s"]), c["command"]]))
PY

# KIT_DRY_TESTS: tests per suite in stage 1 (lavapipe takes minutes per suite; scripts/test.sh
# runs them all); set KIT_DRY_TESTS= (empty) for every test
export KIT_DRY_RUN=1 KIT_DRY_TESTS="${KIT_DRY_TESTS-3}"
prev=""
while IFS=$'\t' read -r visit call timeout_s cmd; do
  if [[ "$visit" != "$prev" ]]; then
    rm -rf "$DRY/stash-$prev"  # the machine of the last visit is gone
    prev="$visit"
  fi
  out="$DRY/out/$call"
  mkdir -p "$out"
  echo "dry_run.sh: == call $call: $cmd" >&2
  s=$SECONDS
  # the plan's timeout is for the H200; lavapipe and 2 cores get more room
  OUT="$out" KIT_STASH="$DRY/stash-$visit" timeout -k 30 1500 bash -c "$cmd" </dev/null >"$DRY/$call.log" 2>&1 \
    || fail "call $call exited $? (log: $DRY/$call.log):
$(tail -15 "$DRY/$call.log")"
  echo "dry_run.sh:    call $call done in $((SECONDS - s)) s" >&2
  # what the device tool would bring back
  n=0
  while IFS= read -r -d '' f; do
    n=$((n + 1))
    name="$(basename "$f")"
    [[ "$name" =~ ^[A-Za-z0-9._-]+$ ]] || fail "call $call: $name: a name the device tool would not return"
    (( $(stat -c %s "$f") <= 16 * 1024 * 1024 )) || fail "call $call: $name is over 16 MiB"
  done < <(find "$out" -type f -print0)
  ((n <= 8)) || fail "call $call wrote $n files to OUT; the device tool returns at most 8"
  [[ -z "$(find "$out" -mindepth 1 -type d)" ]] || fail "call $call wrote folders into OUT"
done <"$DRY/calls.tsv"
rm -rf "$DRY/stash-$prev"

# every stage of the plan: its last result says pass
python3 - gpu-kit/plan.json "$DRY" <<'PY' || fail "a stage did not pass (see above)"
import json, os, sys
plan, dry = json.load(open(sys.argv[1])), sys.argv[2]
bad = 0
for v in plan["visits"]:
    last = {}
    for c in v["calls"]:
        for s in c["stages"]:
            p = os.path.join(dry, "out", c["id"], s + ".json")
            if not os.path.exists(p):
                print(f"  {s}: call {c['id']} wrote no {s}.json"); bad = 1; continue
            last[s] = (c["id"], json.load(open(p)))
    for s, (cid, r) in last.items():
        ok = r.get("status") == "pass"
        bad |= not ok
        extra = "" if ok else f"  {json.dumps({k: r.get(k) for k in ('reason', 'failed_steps', 'failures', 'errors', 'left') if r.get(k)})[:600]}"
        print(f"  visit {v['id']} {s:8} (last run in {cid}): {r.get('status')}{extra}")
sys.exit(bad)
PY

# the limits, with the working tree as it is now
TREE_BYTES="$(python3 scripts/gpu/kit.py tree-bytes)"
python3 scripts/gpu/kit.py check --kit gpu-kit --tree-bytes "$TREE_BYTES" || fail "the plan does not fit (see above)"
echo "dry_run.sh: PASSED in $((SECONDS - T0)) s ($(wc -l <"$DRY/calls.tsv") calls; outputs in gpu-kit/dry/out/)" >&2
