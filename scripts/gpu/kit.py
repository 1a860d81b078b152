#!/usr/bin/env python3
"""The GPU kit's bookkeeping: the plan of device calls, the pieces and their checksums, and,
on the device machine, taking in and reassembling what each call carried.

Python 3.8+ standard library only (the device machine has python3 3.12 and no network; this
machine has 3.11). Used by scripts/gpu/pack.sh (here) and scripts/gpu/run.sh (there):

    kit.py plan   --kit gpu-kit --tree-bytes N     split artifacts into per-call pieces and
                                                   write plan.json, PLAN.md, manifest.sha256
    kit.py check  --kit gpu-kit --tree-bytes N     every call within 64 MiB, visits A and Q within
                                                   the device minutes (exit 1 otherwise)
    kit.py tree-bytes                              bytes of the working tree every call sends
    kit.py ingest --call-dir DIR --stash S         verify the pieces a call carried, keep them
    kit.py assemble --stash S [--link-models DIR]  rebuild and install every complete artifact
    kit.py have   --stash S NAME...                exit 0 when those artifacts are installed

The plan: a *visit* is one lease of the device machine (about 15 minutes, start and transfers
included); it is a chain of *calls* of the device tool, each carrying one folder
gpu-kit/calls/<id>/ (pieces of artifacts, plus plan.json and manifest.sha256) next to the
working tree, within 64 MiB in all. A stage runs in the first call after which everything it
needs has arrived, so the machine must stay warm from call to call (it goes back after ~30 s
idle): the calls are meant to be issued back to back.
"""
import argparse
import hashlib
import json
import os
import re
import shutil
import sys
import tarfile
import time

MIB = 1 << 20

# What the kit carries, in the order it travels (most valuable first). `install`: "tar" (a
# tar or tar.xz file extracted into <stash>/<name>/) or "model" (the file itself, written to
# <stash>/models/<dest>).
ARTIFACTS = [
    ("tools", "tools.tar", "tar", None),  # Vulkan loader .debs + vkinfo
    ("bin-tests", "bin-tests.tar.xz", "tar", None),  # kernels, blocks, adapter, engine test binaries
    ("bin-bench", "bin-bench.tar.xz", "tar", None),  # engine, adapter and blocks bench binaries
    ("bin-cli", "bin-cli.tar.xz", "tar", None),  # the tinylora CLI
    ("wheels", "wheels.tar", "tar", None),  # gguf (and peft with TinyLoRA) for python 3.12
    ("data", "data.tar.xz", "tar", None),  # GSM8K train + test
    ("smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "model", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    ("qwen05", "Qwen2.5-Coder-0.5B-Instruct.gguf", "model", "Qwen2.5-Coder-0.5B-Instruct.gguf"),
]

# Stages: what they need, what they may use when it has arrived (stage1 runs again, for the
# tests it had to defer, once such an artifact is complete), and seconds on the H200: expected
# (for the plan's minutes; measured on the visit of 2026-11-30 where a stage ran then, with what
# was added since) and budget (the stage's own timeout in run.sh).
STAGES = {
    "stage1": dict(needs=["tools", "bin-tests"], optional=["smollm2", "qwen05"],
                   expected=170, budget=240, rerun_expected=60, rerun_budget=150,
                   what="test suites kernels, blocks, adapter, engine on the GPU"),
    "stage2k": dict(needs=["tools", "bin-bench"], expected=62, budget=120,
                    what="WGSL kernels vs the same math in stock burn ops"),
    "stage2a": dict(needs=["tools", "bin-bench", "bin-cli", "wheels", "data", "smollm2"],
                    expected=400, budget=520,
                    what="speed on SmolLM2-135M: tinylora vs PyTorch f32/bf16 (training step, decode, prefill, SVD setup)"),
    "stage2b": dict(needs=["tools", "bin-bench", "bin-cli", "wheels", "qwen05"], expected=440, budget=560,
                    what="speed on Qwen2.5-Coder-0.5B: tinylora vs PyTorch f32/bf16 (training step, decode); compressed-weight products (bench-blocks)"),
    "stage3": dict(needs=["tools", "bin-cli", "data", "qwen05"], expected=540, budget=540,
                   what="GSM8K reproduction (GRPO, 13 parameters) + SFT baseline, resumable"),
}

# Visit A ran on 2026-11-30 (benches/gpu/2026-11-30-h200/); a session that draws a GPU runs the
# first visit whose results are not yet recorded there: Q, then B.
VISITS = [
    dict(id="A", title="stages 1-2 on SmolLM2: GPU tests, kernels and speed", stages=["stage1", "stage2k", "stage2a"],
         artifacts=["tools", "bin-tests", "bin-bench", "bin-cli", "wheels", "data", "smollm2"], must_fit=True),
    dict(id="Q", title="stages 1-2 on Qwen2.5-Coder-0.5B: the real-model tests and speed", stages=["stage1", "stage2b"],
         artifacts=["tools", "bin-tests", "bin-bench", "bin-cli", "wheels", "smollm2", "qwen05"], must_fit=True),
    dict(id="B", title="stage 3: the reproduction (repeat visits until stage3.json says done)",
         stages=["stage3"], artifacts=["tools", "bin-cli", "data", "qwen05"], must_fit=False,
         continue_stage="stage3"),
]

# Assumptions behind the minutes (override with the environment). Measured on 2026-11-30: a
# cold machine started and took a 62 MiB call in ~34 s; a warm call of 62 MiB cost ~8 s of
# device time in all (transfer + turnaround).
ASSUME = dict(
    limit_mib=float(os.environ.get("KIT_LIMIT_MIB", 64)),  # per call: tree + carried
    margin_mib=float(os.environ.get("KIT_MARGIN_MIB", 1.5)),  # room for the tree to grow
    start_s=float(os.environ.get("KIT_START_S", 45)),  # a cold machine (measured ~30 s)
    per_call_s=float(os.environ.get("KIT_PER_CALL_S", 5)),  # tool turnaround + the caller's gap
    xfer_mib_s=float(os.environ.get("KIT_XFER_MIB_S", 10)),  # copy rate to the machine (measured ~9-10)
    device_s=float(os.environ.get("KIT_DEVICE_S", 15 * 60)),  # device time per visit
    call_slack_s=45,  # run.sh's own work around the stages (ingest, unpack, env)
)


def die(msg):
    print(f"kit.py: error: {msg}", file=sys.stderr)
    sys.exit(1)


def sha256_file(path, chunk=8 * MIB):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                return h.hexdigest()
            h.update(b)


def sha256_range(path, offset, size):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(offset)
        left = size
        while left:
            b = f.read(min(8 * MIB, left))
            if not b:
                die(f"{path}: short read at offset {offset + size - left}")
            h.update(b)
            left -= len(b)
    return h.hexdigest()


def write_json(path, obj):
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)


def load_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        die(f"{path} is missing")
    except json.JSONDecodeError as e:
        die(f"{path} is not valid JSON: {e}")


# ---------------------------------------------------------------------------------------------
# planning (here)


def piece_name(artifact, visit, k, n):
    """`qwen05.A.03of09`: piece 3 of the 9 that visit A splits artifact qwen05 into."""
    return f"{artifact}.{visit}.{k:02d}of{n:02d}"


PIECE = re.compile(r"^(?P<name>[a-z0-9-]+)\.(?P<visit>[A-Z])\.(?P<k>\d+)of(?P<n>\d+)$")


def plan_visit(visit, arts, capacity):
    """Fill calls with the visit's artifacts in order, splitting them at call boundaries."""
    calls, cur, room = [], [], capacity
    queue = [(a, 0) for a in visit["artifacts"]]
    while queue:
        name, offset = queue.pop(0)
        size = arts[name]["bytes"]
        take = min(size - offset, room)
        if take > 0:
            cur.append(dict(artifact=name, offset=offset, bytes=take))
            room -= take
        if offset + take < size:
            queue.insert(0, (name, offset + take))
            calls.append(cur)
            cur, room = [], capacity
    if cur:
        calls.append(cur)
    # number the pieces of each artifact
    counts = {}
    for call in calls:
        for p in call:
            counts[p["artifact"]] = counts.get(p["artifact"], 0) + 1
    seen = {}
    for call in calls:
        for p in call:
            k = seen[p["artifact"]] = seen.get(p["artifact"], 0) + 1
            p["index"], p["count"] = k, counts[p["artifact"]]
            p["file"] = piece_name(p["artifact"], visit["id"], k, counts[p["artifact"]])
    return calls


def place_stages(visit, calls):
    """The stages each call runs: a stage in the first call after which its needs are all
    complete; stage1 again where an optional artifact completes later (its deferred tests)."""
    complete_at = {}
    for i, call in enumerate(calls):
        for p in call:
            if p["index"] == p["count"]:
                complete_at[p["artifact"]] = i
    runs = [[] for _ in calls]
    for s in visit["stages"]:
        spec = STAGES[s]
        missing = [a for a in spec["needs"] if a not in complete_at]
        if missing:
            die(f"visit {visit['id']}: {s} needs {missing}, which the visit does not carry")
        first = max(complete_at[a] for a in spec["needs"])
        runs[first].append((s, False))
        for a in spec.get("optional", []):
            at = complete_at.get(a)
            if at is not None and at > first and (s, True) not in runs[at]:
                runs[at].append((s, True))
    # stage1 first in every call (the cheapest check that the GPU works), then the rest
    for r in runs:
        r.sort(key=lambda x: visit["stages"].index(x[0]))
    return runs


def cmd_plan(args):
    kit = args.kit
    arts = {}
    for name, file, install, dest in ARTIFACTS:
        path = os.path.join(kit, "artifacts", file)
        if not os.path.isfile(path):
            die(f"{path} is missing: run scripts/gpu/pack.sh first")
        info = dict(file=file, bytes=os.path.getsize(path), sha256=sha256_file(path), install=install)
        if dest:
            info["dest"] = dest
        arts[name] = info
    capacity = int((ASSUME["limit_mib"] - ASSUME["margin_mib"]) * MIB) - args.tree_bytes - args.meta_bytes
    if capacity < int(os.environ.get("KIT_MIN_CAPACITY_MIB", 8)) * MIB:
        die(f"the working tree ({args.tree_bytes / MIB:.1f} MiB) leaves only {capacity / MIB:.1f} MiB per call")
    plan = dict(
        format=1,
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        git_head=args.git_head,
        manifest_dir=args.manifest_dir,
        tree_bytes=args.tree_bytes,
        limit_bytes=int(ASSUME["limit_mib"] * MIB),
        call_capacity_bytes=capacity,
        assumptions=ASSUME,
        stages={k: {kk: v for kk, v in s.items()} for k, s in STAGES.items()},
        artifacts=arts,
        visits=[],
    )
    calls_root = os.path.join(kit, "calls")
    if os.path.isdir(calls_root):
        shutil.rmtree(calls_root)
    manifest = []
    for visit in VISITS:
        calls = plan_visit(visit, arts, capacity)
        runs = place_stages(visit, calls)
        vplan = dict(id=visit["id"], title=visit["title"], must_fit=visit["must_fit"], calls=[])
        elapsed = ASSUME["start_s"]
        for i, (pieces, stages) in enumerate(zip(calls, runs)):
            cid = f"{visit['id']}{i + 1:02d}"
            cdir = os.path.join(calls_root, cid)
            os.makedirs(cdir)
            for p in pieces:
                src = os.path.join(kit, "artifacts", arts[p["artifact"]]["file"])
                dst = os.path.join(cdir, p["file"])
                copy_range(src, dst, p["offset"], p["bytes"])
                p["sha256"] = sha256_range(src, p["offset"], p["bytes"])
                manifest.append((p["sha256"], f"{cid}/{p['file']}"))
            carried = sum(p["bytes"] for p in pieces)
            budget = sum(STAGES[s]["rerun_budget" if re else "budget"] for s, re in stages)
            expected = {s: STAGES[s]["rerun_expected" if re else "expected"] for s, re in stages}
            xfer = (carried + args.tree_bytes) / MIB / ASSUME["xfer_mib_s"]
            call_s = ASSUME["per_call_s"] + xfer + sum(expected.values())
            elapsed += call_s
            names = [s for s, _ in stages]
            vplan["calls"].append(dict(
                id=cid, dir=f"gpu-kit/calls/{cid}", carry=[f"gpu-kit/calls/{cid}"],
                command=" ".join(["bash scripts/gpu/run.sh --call", cid] + names),
                timeout_s=min(600, int(budget + ASSUME["call_slack_s"] + 30)) if names else 120,
                pieces=pieces, bytes_carried=carried, bytes_total=carried + args.tree_bytes,
                stages=names, reruns=[s for s, re in stages if re],
                expected_s=dict(overhead=ASSUME["per_call_s"], transfer=round(xfer, 1), stages=expected),
                expected_end_s=round(elapsed),
            ))
        # a resumable stage continues in calls that carry nothing, while device time lasts
        cont = visit.get("continue_stage")
        while cont and elapsed + ASSUME["per_call_s"] + 120 < ASSUME["device_s"]:
            i = len(vplan["calls"]) + 1
            cid = f"{visit['id']}{i:02d}"
            budget = min(STAGES[cont]["budget"], ASSUME["device_s"] - elapsed - ASSUME["per_call_s"] - 30)
            xfer = args.tree_bytes / MIB / ASSUME["xfer_mib_s"]
            elapsed += ASSUME["per_call_s"] + xfer + budget
            vplan["calls"].append(dict(
                id=cid, dir=None, carry=[], command=f"KIT_BUDGET={int(budget)} bash scripts/gpu/run.sh --call {cid} {cont}",
                timeout_s=min(600, int(budget + ASSUME["call_slack_s"] + 30)), pieces=[], bytes_carried=0,
                bytes_total=args.tree_bytes, stages=[cont], reruns=[],
                expected_s=dict(overhead=ASSUME["per_call_s"], transfer=round(xfer, 1), stages={cont: int(budget)}),
                expected_end_s=round(elapsed),
            ))
        vplan["expected_total_s"] = round(elapsed)
        vplan["bytes_total"] = sum(c["bytes_total"] for c in vplan["calls"])
        vplan["fits"] = elapsed <= ASSUME["device_s"]
        plan["visits"].append(vplan)
    for name, a in arts.items():
        manifest.append((a["sha256"], f"artifact/{a['file']}"))
    with open(os.path.join(kit, "manifest.sha256"), "w") as f:
        for h, p in manifest:
            f.write(f"{h}  {p}\n")
    write_json(os.path.join(kit, "plan.json"), plan)
    with open(os.path.join(kit, "PLAN.md"), "w") as f:
        f.write(plan_markdown(plan))
    # every call folder carries the plan and the manifest: each call is self-describing
    for visit in plan["visits"]:
        for c in visit["calls"]:
            if c["dir"]:
                d = os.path.join(calls_root, c["id"])
                shutil.copy(os.path.join(kit, "plan.json"), d)
                shutil.copy(os.path.join(kit, "manifest.sha256"), d)
    print(plan_summary(plan))
    return check(plan, kit, args.tree_bytes)


def copy_range(src, dst, offset, size):
    with open(src, "rb") as fi, open(dst, "wb") as fo:
        fi.seek(offset)
        left = size
        while left:
            b = fi.read(min(8 * MIB, left))
            if not b:
                die(f"{src}: short read")
            fo.write(b)
            left -= len(b)


def fmt_mib(b):
    return f"{b / MIB:.1f} MiB"


def plan_summary(plan):
    lines = []
    for v in plan["visits"]:
        n = len(v["calls"])
        lines.append(f"visit {v['id']} ({v['title']}): {n} calls, {fmt_mib(v['bytes_total'])} sent, "
                     f"expected {v['expected_total_s'] / 60:.1f} device minutes"
                     + ("" if v["fits"] or not v["must_fit"] else "  ** OVER BUDGET **"))
        for c in v["calls"]:
            lines.append(f"  {c['id']}: {fmt_mib(c['bytes_total']):>9}  {', '.join(c['stages']) or '(transfer only)':<32}"
                         f" ends ~{c['expected_end_s'] / 60:4.1f} min")
    return "\n".join(lines)


def plan_markdown(plan):
    a = plan["assumptions"]
    out = [
        "# GPU kit: plan of device calls",
        "",
        f"Made {plan['created']} from commit {plan['git_head']}; binaries built in `{plan['manifest_dir']}`.",
        f"Working tree that travels with every call: {fmt_mib(plan['tree_bytes'])}; room per call for "
        f"carried pieces: {fmt_mib(plan['call_capacity_bytes'])} (limit {a['limit_mib']:g} MiB, margin {a['margin_mib']:g} MiB).",
        "",
        f"Minutes assume: machine start {a['start_s']:.0f} s, {a['per_call_s']:.0f} s per call (tool turnaround "
        f"and the gap before the next call), transfer {a['xfer_mib_s']:g} MiB/s, and each stage's expected "
        "seconds on the H200 (measured on the visit of 2026-11-30 for the stages that ran then, guesses for the others; each stage's budget is its hard timeout, cut to the call's timeout by run.sh).",
        "**Issue the calls of a visit back to back**: the machine keeps what earlier calls carried only "
        "while it is warm (about 30 s idle).",
        "",
        "## Artifacts",
        "",
        "| artifact | file | bytes | sha256 |",
        "|---|---|---:|---|",
    ]
    for name, x in plan["artifacts"].items():
        out.append(f"| {name} | {x['file']} | {x['bytes']:,} | `{x['sha256'][:16]}…` |")
    out += ["", "## Stages", "", "| stage | needs | expected s | budget s | what |", "|---|---|---:|---:|---|"]
    for name, s in plan["stages"].items():
        out.append(f"| {name} | {', '.join(s['needs'])} | {s['expected']} | {s['budget']} | {s['what']} |")
    for v in plan["visits"]:
        out += ["", f"## Visit {v['id']}: {v['title']}", "",
                f"{len(v['calls'])} calls, {fmt_mib(v['bytes_total'])} sent in all, expected "
                f"**{v['expected_total_s'] / 60:.1f} device minutes** of {a['device_s'] / 60:.0f}"
                + (" (fits)" if v["fits"] else " (does NOT fit)") + ".", "",
                "| call | carry | bytes (tree + pieces) | pieces | stages | timeout_s | expected end |",
                "|---|---|---:|---|---|---:|---:|"]
        for c in v["calls"]:
            pieces = ", ".join(p["file"] for p in c["pieces"]) or "-"
            stages = ", ".join(s + (" (deferred tests)" if s in c["reruns"] else "") for s in c["stages"]) or "transfer only"
            out.append(f"| {c['id']} | {', '.join(c['carry']) or '-'} | {c['bytes_total']:,} | {pieces} | {stages} "
                       f"| {c['timeout_s']} | {c['expected_end_s'] / 60:.1f} min |")
        # per stage: what it needs, and where in the visit it runs
        out += ["", "Per stage: the bytes of what it needs, the call where it (first) runs, what the visit "
                "has sent by then (tree included) and when that call should end:", "",
                "| stage | needs (bytes) | runs in | sent by then | ends by |", "|---|---:|---|---:|---:|"]
        sent = 0
        first = {}
        for c in v["calls"]:
            sent += c["bytes_total"]
            for st in c["stages"]:
                first.setdefault(st, (c, sent))
        for st, (c, by) in first.items():
            need = sum(plan["artifacts"][n]["bytes"] for n in plan["stages"][st]["needs"])
            again = [x["id"] for x in v["calls"] if st in x["stages"] and x is not c]
            out.append(f"| {st} | {need:,} | {c['id']}" + (f" (again in {', '.join(again)})" if again else "")
                       + f" | {by:,} | {c['expected_end_s'] / 60:.1f} min |")
        out += ["", "The `run` calls, in order:", "", "```"]
        for c in v["calls"]:
            out.append(json.dumps(dict(command=c["command"], carry=c["carry"], timeout_s=c["timeout_s"]), ensure_ascii=False))
        out += ["```"]
    return "\n".join(out) + "\n"


def check(plan, kit, tree_bytes):
    """Loud failure when a call would exceed the size limit or a must-fit visit the device minutes."""
    bad = []
    limit = plan["limit_bytes"]
    for v in plan["visits"]:
        for c in v["calls"]:
            carried = 0
            if c["dir"]:
                d = os.path.join(kit, "calls", c["id"])
                if not os.path.isdir(d):
                    bad.append(f"{d} is missing (re-run pack.sh)")
                    continue
                carried = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))
            total = carried + tree_bytes
            if total > limit:
                bad.append(f"call {c['id']}: {total:,} bytes (tree {tree_bytes:,} + carried {carried:,}) > {limit:,}")
        if v["must_fit"] and not v["fits"]:
            bad.append(f"visit {v['id']}: expected {v['expected_total_s'] / 60:.1f} device minutes > "
                       f"{plan['assumptions']['device_s'] / 60:.0f}")
    if bad:
        print("kit.py: PLAN CHECK FAILED:\n  " + "\n  ".join(bad), file=sys.stderr)
        return 1
    fits = ", ".join(f"visit {v['id']} {v['expected_total_s'] / 60:.1f}" for v in plan["visits"] if v["must_fit"])
    print(f"plan check: every call within {limit / MIB:.0f} MiB with a {tree_bytes / MIB:.1f} MiB tree; "
          f"expected device minutes (of {plan['assumptions']['device_s'] / 60:.0f}): {fits}")
    return 0


def tree_bytes(repo="."):
    """Bytes of what the device tool sends with every call: tracked and untracked-not-ignored
    files, plus a shared/ folder inside the checkout if there is one."""
    import subprocess
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=repo,
                         check=True, stdout=subprocess.PIPE).stdout
    paths = {os.path.join(repo, p.decode()) for p in out.split(b"\0") if p}
    shared = os.path.join(repo, "shared")
    if os.path.isdir(shared):
        paths |= {os.path.join(d, f) for d, _, fs in os.walk(shared) for f in fs}
    return sum(os.lstat(p).st_size for p in paths if os.path.lexists(p))


def cmd_tree_bytes(args):
    print(tree_bytes(args.repo))


def cmd_check(args):
    return check(load_json(os.path.join(args.kit, "plan.json")), args.kit, args.tree_bytes)


# ---------------------------------------------------------------------------------------------
# on the device machine


def stash_plan(stash):
    return load_json(os.path.join(stash, "plan.json"))


def cmd_ingest(args):
    """Verify every piece a call carried against the manifest, then keep it in the stash."""
    d, stash = args.call_dir, args.stash
    if not os.path.isdir(d):
        die(f"{d} is missing: this call must carry it (carry: [\"{d}\"])")
    os.makedirs(os.path.join(stash, "pieces"), exist_ok=True)
    plan_path = os.path.join(d, "plan.json")
    plan = load_json(plan_path)
    old = os.path.join(stash, "plan.json")
    if os.path.exists(old) and load_json(old).get("created") != plan.get("created"):
        die(f"{plan_path} is from another pack ({plan.get('created')}) than the pieces already here "
            f"({load_json(old).get('created')}): re-send the whole visit from its first call")
    shutil.copy(plan_path, old)
    shutil.copy(os.path.join(d, "manifest.sha256"), os.path.join(stash, "manifest.sha256"))
    cid = os.path.basename(os.path.normpath(d))
    want = {}
    for line in open(os.path.join(d, "manifest.sha256")):
        h, p = line.rstrip("\n").split("  ", 1)
        if p.startswith(cid + "/"):
            want[p[len(cid) + 1:]] = h
    present = set(os.listdir(d)) - {"plan.json", "manifest.sha256"}
    for f in sorted(set(want) - present):
        die(f"piece {d}/{f} is missing from the carried folder (incomplete copy? re-send call {cid})")
    n = 0
    for f in sorted(present):
        if f not in want:
            die(f"{d}/{f} is not in the manifest (a stale file? re-run pack.sh)")
        got = sha256_file(os.path.join(d, f))
        if got != want[f]:
            die(f"piece {d}/{f}: sha256 {got[:16]}… does not match the manifest's {want[f][:16]}… "
                f"(corrupt copy: re-send call {cid}, or re-run pack.sh)")
        dst = os.path.join(stash, "pieces", f)
        if os.path.exists(dst):
            os.remove(dst)
        try:
            os.link(os.path.join(d, f), dst)  # free on one file system; the dry run keeps its kit
        except OSError:
            shutil.copyfile(os.path.join(d, f), dst)
        n += 1
    print(f"ingest {cid}: {n} pieces verified")


def installed(stash, name):
    return os.path.exists(os.path.join(stash, "installed", name))


def cmd_assemble(args):
    """Rebuild each artifact whose pieces are all here, verify it, and install it."""
    stash = args.stash
    plan = stash_plan(stash)
    os.makedirs(os.path.join(stash, "installed"), exist_ok=True)
    pieces_dir = os.path.join(stash, "pieces")
    have = set(os.listdir(pieces_dir)) if os.path.isdir(pieces_dir) else set()
    status = {}
    for name, a in plan["artifacts"].items():
        if installed(stash, name):
            status[name] = "installed"
            continue
        # this artifact's pieces here, all from one visit (a fresh machine per visit)
        mine = [m for m in map(PIECE.match, sorted(have)) if m and m["name"] == name]
        if not mine:
            status[name] = "absent"
            continue
        visits = {(m["visit"], m["n"]) for m in mine}
        if len(visits) > 1:
            die(f"pieces of {name} from several visits in {pieces_dir}: {sorted(visits)}; empty the stash")
        visit, n = visits.pop()
        count = int(n)
        names = [piece_name(name, visit, k, count) for k in range(1, count + 1)]
        missing = [f for f in names if f not in have]
        if missing:
            status[name] = f"{count - len(missing)}/{count} pieces"
            continue
        out = os.path.join(stash, "assembling", a["file"])
        os.makedirs(os.path.dirname(out), exist_ok=True)
        h = hashlib.sha256()
        with open(out, "wb") as fo:
            for f in names:
                with open(os.path.join(pieces_dir, f), "rb") as fi:
                    while True:
                        b = fi.read(8 * MIB)
                        if not b:
                            break
                        h.update(b)
                        fo.write(b)
        if h.hexdigest() != a["sha256"]:
            die(f"artifact {a['file']} reassembled from {count} pieces has sha256 {h.hexdigest()[:16]}…, "
                f"the plan says {a['sha256'][:16]}… (pieces from two different packs?)")
        if a["install"] == "model":
            dest_dir = os.path.join(stash, "models")
            os.makedirs(dest_dir, exist_ok=True)
            os.replace(out, os.path.join(dest_dir, a["dest"]))
            if args.link_models:
                os.makedirs(args.link_models, exist_ok=True)
                link = os.path.join(args.link_models, a["dest"])
                if os.path.lexists(link):
                    os.remove(link)
                os.symlink(os.path.abspath(os.path.join(dest_dir, a["dest"])), link)
        else:
            dest_dir = os.path.join(stash, name)
            with tarfile.open(out, "r:*") as t:  # tar or tar.xz: lzma is in the standard library
                t.extractall(dest_dir)
            os.remove(out)
        for f in names:  # the artifact is in place: its pieces are no longer needed
            os.remove(os.path.join(pieces_dir, f))
        with open(os.path.join(stash, "installed", name), "w") as f:
            f.write(a["sha256"] + "\n")
        status[name] = "installed now"
    shutil.rmtree(os.path.join(stash, "assembling"), ignore_errors=True)
    print("artifacts: " + ", ".join(f"{k} {v}" for k, v in status.items()))


def cmd_have(args):
    missing = [n for n in args.names if not installed(args.stash, n)]
    if missing:
        print(" ".join(missing))
        return 1
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("plan")
    p.add_argument("--kit", required=True)
    p.add_argument("--tree-bytes", type=int, required=True)
    p.add_argument("--meta-bytes", type=int, default=256 * 1024, help="room for plan.json + manifest per call")
    p.add_argument("--git-head", default="?")
    p.add_argument("--manifest-dir", required=True)
    p = sub.add_parser("check")
    p.add_argument("--kit", required=True)
    p.add_argument("--tree-bytes", type=int, required=True)
    p = sub.add_parser("tree-bytes", help="bytes of the working tree that travels with every call")
    p.add_argument("--repo", default=".")
    p = sub.add_parser("ingest")
    p.add_argument("--call-dir", required=True)
    p.add_argument("--stash", required=True)
    p = sub.add_parser("assemble")
    p.add_argument("--stash", required=True)
    p.add_argument("--link-models", help="also symlink installed models into this folder")
    p = sub.add_parser("have")
    p.add_argument("--stash", required=True)
    p.add_argument("names", nargs="+")
    args = ap.parse_args()
    return {"plan": cmd_plan, "check": cmd_check, "tree-bytes": cmd_tree_bytes, "ingest": cmd_ingest, "assemble": cmd_assemble,
            "have": cmd_have}[args.cmd](args) or 0


if __name__ == "__main__":
    sys.exit(main())
