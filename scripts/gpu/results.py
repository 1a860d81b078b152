#!/usr/bin/env python3
"""The GPU kit's results: turn the logs that scripts/gpu/run.sh collects into one JSON per
stage, and print the figures that matter. Python 3.8+ standard library only.

    results.py stage1-todo   --state S --suite NAME --list FILE     tests still to run
    results.py stage1-update --state S --suite NAME --log FILE --rc N --call ID --todo FILE
    results.py stage1-json   --state S --out stage1.json
    results.py stage2k --work W --out stage2k.json
    results.py stage2  --work W --stage stage2a --out stage2a.json [--dry]
    results.py stage3  --dir D --out stage3.json [--steps N]
    results.py summary OUT_DIR                                      the figures, as text

Stage JSONs carry "status": "pass" (everything ran and passed), "partial" (some parts are
deferred or missing), "fail" or "skipped", and the raw figures with their units.
"""
import argparse
import glob
import json
import os
import re
import statistics
import sys

MISSING_MODEL = "is missing: run `scripts/fetch_models.sh"
H200_BANDWIDTH = 4.8e12  # bytes/s, the vendor's figure (used when no copy was measured)


def read(path, default=None):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return default


def load_json(path, default=None):
    text = read(path)
    if text is None:
        return default
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return default


def write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, ensure_ascii=False)
        f.write("\n")
    os.replace(tmp, path)


def rc_of(work, name):
    text = read(os.path.join(work, name + ".rc"))
    return None if text is None else int(text.split()[0])


def seconds_of(work, name):
    text = read(os.path.join(work, name + ".rc"))
    parts = (text or "").split()
    return float(parts[1]) if len(parts) > 1 else None


# ---------------------------------------------------------------------------------------------
# stage 1: libtest output


def listed_tests(path):
    """Names from `TESTBIN --list --format terse` (lines `name: test`)."""
    return [line[:-len(": test")] for line in (read(path) or "").splitlines() if line.endswith(": test")]


def parse_libtest(text):
    """(results {name: ok|FAILED|ignored}, failure output {name: text}) from libtest's output."""
    results, failures = {}, {}
    for m in re.finditer(r"^test (\S+) \.\.\. (ok|FAILED|ignored)", text, re.M):
        results[m.group(1)] = m.group(2)
    blocks = re.split(r"^---- (\S+) stdout ----$", text, flags=re.M)
    for name, body in zip(blocks[1::2], blocks[2::2]):
        body = re.split(r"^(failures:|---- )", body, flags=re.M)[0]
        failures[name] = body.strip()
    return results, failures


def cmd_stage1_todo(a):
    state = load_json(a.state, {})
    done = state.setdefault(a.suite, {})
    kept = 0
    for name in listed_tests(a.list):
        status = done.get(name, {}).get("status")
        if status is None and a.dry and a.dry_limit is not None and not re.search(a.dry_keep, name):
            # the dry run runs a few tests per suite (the whole suites run in scripts/test.sh)
            kept += 1
            if kept > a.dry_limit:
                done[name] = dict(status="dry-skip", detail="not run in the dry run (scripts/test.sh runs it)")
                continue
        if status == "deferred" and a.dry:
            # the dry run: a real-model test runs for minutes on lavapipe (scripts/test.sh runs
            # it); that it was deferred until its model arrived is what the dry run checks
            done[name] = dict(status="dry-skip", detail="its model arrived; not run in the dry run (minutes on lavapipe)")
        elif status in (None, "deferred"):
            print(name)
    if a.dry:
        write_json(a.state, state)


def cmd_stage1_update(a):
    state = load_json(a.state, {})
    suite = state.setdefault(a.suite, {})
    results, failures = parse_libtest(read(a.log, ""))
    todo = [t for t in (read(a.todo, "") or "").split() if t]
    for name in todo:
        r = results.get(name)
        detail = failures.get(name, "")
        if r == "ok":
            entry = dict(status="pass")
        elif r == "ignored":
            entry = dict(status="ignored")
        elif r == "FAILED" and MISSING_MODEL in detail:
            entry = dict(status="deferred", detail="its model has not arrived yet")
        elif r == "FAILED":
            entry = dict(status="fail", detail=detail[-1500:])
        elif a.rc in (124, 137):
            entry = dict(status="timeout", detail=f"no result before the stage's timeout (exit {a.rc})")
        else:
            entry = dict(status="crash", detail=f"no result: the test binary exited with {a.rc} (see its log)")
        entry["call"] = a.call
        suite[name] = entry
    write_json(a.state, state)


def cmd_stage1_json(a):
    state = load_json(a.state, {})
    counts, failures, deferred = {}, [], []
    for suite, tests in state.items():
        for name, t in tests.items():
            counts[t["status"]] = counts.get(t["status"], 0) + 1
            if t["status"] in ("fail", "timeout", "crash"):
                failures.append(dict(suite=suite, test=name, status=t["status"], detail=t.get("detail", "")))
            elif t["status"] == "deferred":
                deferred.append(f"{suite}::{name}")
    if not state:
        status = "fail"
    elif failures:
        status = "fail"
    elif deferred:
        status = "partial"
    else:
        status = "pass"
    write_json(a.out, dict(stage="stage1", status=status, counts=counts, failures=failures, deferred=deferred,
                           suites={s: {n: t["status"] for n, t in ts.items()} for s, ts in state.items()},
                           note="deferred: the test's model had not arrived; a later call of the visit runs it"))


# ---------------------------------------------------------------------------------------------
# stage 2: the benches' text output


def parse_kernels(text):
    """adapter bench --kernels-only: `forward   T=16 d_in=576 ...   1.18ms   2.13ms   1.97×`."""
    rows = []
    for m in re.finditer(r"^(forward|fwd\+bwd|merge)\s+(.*?)\s+([\d.]+)ms\s+([\d.]+)ms\s+([\d.]+)×\s*$", text, re.M):
        rows.append(dict(op=m.group(1), shape=m.group(2), kernel_ms=float(m.group(3)), stock_ms=float(m.group(4)),
                         speedup=float(m.group(5))))
    return rows


def parse_engine_bench(text):
    """engine bench: its final table; without one (the bench was stopped), the figures it
    printed as it measured them, marked partial."""
    table = parse_engine_table(text)
    if table["rows"]:
        return table
    progress = parse_engine_progress(text)
    return progress if progress["rows"] else table


def parse_engine_table(text):
    """engine bench's table: a header with the device names, then `label  v1 [v2] unit` rows."""
    devices, rows = [], {}
    for line in text.splitlines():
        # the column header: device/weights names alone ("gpu/f32  gpu/auto")
        if line.split() and all(re.fullmatch(r"(gpu|cpu)(/\w+)?", w) for w in line.split()):
            devices = line.split()
            continue
        if not devices:
            continue
        parts = line.split()
        n = len(devices)
        if len(parts) < n + 2:
            continue
        try:
            values = [float(v) for v in parts[-n - 1:-1]]
        except ValueError:
            continue
        label = " ".join(parts[: len(parts) - n - 1])
        rows[label] = dict(zip(devices, values), unit=parts[-1])
    return dict(devices=devices, rows=rows)


def parse_engine_progress(text):
    """engine bench's `column: label: value unit` lines, printed to stderr as it measures."""
    devices, rows = [], {}
    for m in re.finditer(r"^((?:gpu|cpu)/\w+): (.+): (-?[\d.]+) (\S+)$", text, re.M):
        if m.group(1) not in devices:
            devices.append(m.group(1))
        rows.setdefault(m.group(2), dict(unit=m.group(4)))[m.group(1)] = float(m.group(3))
    return dict(devices=devices, rows=rows, partial=True)


def parse_blocks_bench(text):
    """blocks bench: `Q4_1 1536×576, N = 9   5.80  5.49  6.45  4.73  -  -` (ms a product: the
    chosen path, the decoding kernels forced, the decoded copy + stock matmul, f32 weights, and for
    F16 the decoding kernels with W's tile in f16 and in f32; `-` where not measured)."""
    rows = []
    num = r"\s+([\d.]+)"
    opt = r"(?:\s+([\d.]+|-))?"
    for m in re.finditer(r"^(\w+) (\d+)×(\d+), N = (\d+)" + 4 * num + 2 * opt + r"\s*$", text, re.M):
        ms = dict(path=float(m.group(5)), fused=float(m.group(6)),
                  decoded_matmul=float(m.group(7)), f32=float(m.group(8)))
        for key, g in (("fused_f16_tile", 9), ("fused_f32_tile", 10)):
            if m.group(g) not in (None, "-"):
                ms[key] = float(m.group(g))
        rows.append(dict(type=m.group(1), rows=int(m.group(2)), d_in=int(m.group(3)), n=int(m.group(4)), ms=ms))
    return rows


def parse_burn_quant_bench(text):
    """blocks bench, its last table: `N = 1   17.73   3.60   5.7e-6, 0.0e0` (ms a product:
    block_matmul, burn's QuantScheme matmul on the same Q8_0 numbers; the largest difference of
    each from the f32 product), after the line naming burn's QuantScheme."""
    head = re.search(r"^burn's QuantScheme.*\(exact: (\w+)\)$", text, re.M)
    if not head:
        return None
    rows = [dict(n=int(m.group(1)), ms=dict(block_matmul=float(m.group(2)), burn=float(m.group(3))),
                 max_diff=dict(block_matmul=float(m.group(4)), burn=float(m.group(5))))
            for m in re.finditer(r"^N = (\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.e+-]+), ([\d.e+-]+)\s*$",
                                 text[head.end():], re.M)]
    return dict(exact=head.group(1) == "true", rows=rows)


def parse_training_bench(text):
    """adapter bench --training-only: `label   0.123 s  (…)` rows."""
    rows = {}
    for m in re.finditer(r"^(attach adapter.*?|forward.*?)\s+([\d.]+) s\b(.*)$", text, re.M):
        rows[m.group(1).strip()] = dict(seconds=float(m.group(2)), note=m.group(3).strip())
    head = re.search(r"^(\S+) on the (.*?), (\d+) × (\d+) tokens, TinyLoRA r=2 u=(\d+) (?:tying (\w+)|untied) "
                     r"\((\d+) parameters\), median of (\d+):", text, re.M)
    svd = [dict(model=m.group(1), matrices=int(m.group(2)), cores=int(m.group(3)), seconds=float(m.group(4)))
           for m in re.finditer(r"^(\S+\.gguf): (\d+) rank-2 SVDs .*? on (\d+) cores in ([\d.]+) s", text, re.M)]
    if not head:
        return dict(rows=rows, svd=svd)
    return dict(model=head.group(1), device=head.group(2), batch=int(head.group(3)), tokens=int(head.group(4)),
                u=int(head.group(5)), tying=(head.group(6) or "none").lower(), params=int(head.group(7)), rows=rows, svd=svd)


GEN = re.compile(r"(\d+) tokens in ([\d.]+)s: ([\d.]+) tokens/s \(batch (\d+), prompt (\d+) tokens, "
                 r"first token after ([\d.]+)s\)")


def parse_generate(text):
    m = GEN.search(text or "")
    if not m:
        return None
    return dict(tokens=int(m.group(1)), seconds=float(m.group(2)), batch=int(m.group(4)),
                prompt_tokens=int(m.group(5)), first_token_s=float(m.group(6)))


def decode_from_generate(work):
    """tinylora generate at each batch, short and long: decode tokens/s from the difference
    (each process compiles its shaders; the difference leaves that and the prefill out)."""
    out = []
    runs = {}
    for path in glob.glob(os.path.join(work, "gen_b*_n*.log")):
        m = re.search(r"gen_b(\d+)_n(\d+)\.log$", path)
        g = parse_generate(read(path))
        if g:
            runs.setdefault(int(m.group(1)), {})[int(m.group(2))] = g
    for b in sorted(runs):
        ns = sorted(runs[b])
        if len(ns) < 2:
            continue
        s, l = runs[b][ns[0]], runs[b][ns[-1]]
        dt = (l["seconds"] - l["first_token_s"]) - (s["seconds"] - s["first_token_s"])
        dtok = l["tokens"] - s["tokens"]
        out.append(dict(batch=b, new_tokens=ns[-1], prompt_tokens=l["prompt_tokens"], tokens_generated=l["tokens"],
                        tokens_per_s=dtok / dt if dt > 0 else None,
                        cold_tokens_per_s=l["tokens"] / l["seconds"], cold_first_token_s=l["first_token_s"]))
    return out


def info_params(text):
    """Parameters, and those a decode step reads: all but an untied input embedding, of
    which a step reads only the batch's rows (a tied one is the output head: read whole)."""
    g = lambda pat: re.search(pat, text or "", re.M)  # noqa: E731
    p, hv, voc, tied = g(r"^parameters:\s+(\d+)"), g(r"^hidden / ffn:\s+(\d+)"), g(r"^vocab:\s+(\d+)"), g(r"^tied embedding:\s+(\w+)")
    if not p:
        return None, None
    params = int(p.group(1))
    per_step = params
    if hv and voc and tied and tied.group(1) == "false":
        per_step -= int(hv.group(1)) * int(voc.group(1))
    return params, per_step


def metrics_steps(path):
    steps = []
    for line in (read(path, "") or "").splitlines():
        try:
            d = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(d, dict) and "train_s" in d:
            steps.append(d)
    return steps


def step_record(work, name):
    return dict(rc=rc_of(work, name), seconds=seconds_of(work, name))


def cmd_stage2k(a):
    text = read(os.path.join(a.work, "kernels.log"), "")
    rows = parse_kernels(text)
    rc = rc_of(a.work, "kernels")
    status = "pass" if rc == 0 and rows else "fail"
    slower = [f"{r['op']} {r['shape']}: {r['speedup']:.2f}×" for r in rows if r["speedup"] < 1.0]
    write_json(a.out, dict(
        stage="stage2k", status=status, rc=rc, rows=rows,
        target=dict(name="kernels at least as fast as the same math in stock burn ops",
                    met=bool(rows) and not slower, slower=slower),
        device=read(os.path.join(a.work, "device.txt"), "").strip()))


def cmd_stage2(a):
    w = a.work
    steps = load_json(os.path.join(w, "steps.json"), {})
    params, per_step = info_params(read(os.path.join(w, "info.log")))
    tl = dict(params=params, params_read_per_decode_step=per_step, weight_bytes_f32=per_step * 4 if per_step else None)
    need_ok = ["info"]
    if os.path.exists(os.path.join(w, "engine_bench.log")):
        tl["engine_bench"] = parse_engine_bench(read(os.path.join(w, "engine_bench.log"), ""))
        need_ok.append("engine_bench")
    if os.path.exists(os.path.join(w, "blocks_bench.log")):
        text = read(os.path.join(w, "blocks_bench.log"), "")
        tl["blocks_bench"] = parse_blocks_bench(text)
        tl["blocks_bench_burn_quant"] = parse_burn_quant_bench(text)
        need_ok.append("blocks_bench")
    for name in ("training_bench", "training16_bench"):
        if os.path.exists(os.path.join(w, name + ".log")):
            tl[name] = parse_training_bench(read(os.path.join(w, name + ".log"), ""))
            need_ok.append(name)
    tl["decode"] = decode_from_generate(w)
    need_ok += [os.path.basename(p)[:-3] for p in glob.glob(os.path.join(w, "gen_b*.rc"))]
    failed = [n for n in need_ok if rc_of(w, n) != 0]

    # PyTorch side
    hf = load_json(os.path.join(w, "hf.json"))
    hf_log = read(os.path.join(w, "hf.log"), "") or ""
    if hf is None:
        reason = (read(os.path.join(w, "hf.skipped")) or hf_log.strip().splitlines()[-1:] or ["no output"])
        reason = reason if isinstance(reason, str) else reason[0]
        hf = dict(skipped=reason.strip(), rc=rc_of(w, "hf"))
    # bounds: one pass over the weights per decode step
    bw = hf.get("bandwidth_bytes_per_s")
    bw_src = "measured (torch device copy)" if bw else None
    if not bw and "H200" in (read(os.path.join(w, "device.txt"), "") or ""):
        bw, bw_src = H200_BANDWIDTH, "H200 datasheet (4.8 TB/s)"
    bounds = dict(bandwidth_bytes_per_s=bw, source=bw_src)
    comparisons = []

    def frac(tps, batch, weight_bytes):
        if not (bw and tps and weight_bytes):
            return None, None
        bound = batch * bw / weight_bytes
        return bound, tps / bound

    for d in tl["decode"]:
        bound, f = frac(d["tokens_per_s"], d["batch"], tl["weight_bytes_f32"])
        d["bound_tokens_per_s"], d["fraction_of_bound"] = bound, f
    for run in hf.get("runs", []):
        for d in run.get("decode", []):
            wb = per_step * (4 if run.get("dtype") == "f32" else 2) if per_step else None
            bound, f = frac(d["tokens_per_s"], d["batch"], wb)
            d["bound_tokens_per_s"], d["fraction_of_bound"] = bound, f

    # side by side: decode per batch, prefill, training step
    def hf_val(dtype, key, batch=None):
        for run in hf.get("runs", []):
            if run.get("dtype") != dtype:
                continue
            if key == "decode":
                return next((d["tokens_per_s"] for d in run.get("decode", []) if d["batch"] == batch), None)
            if key == "prefill":
                return run.get("prefill", {}).get("tokens_per_s")
        return None

    for d in tl["decode"]:
        comparisons.append(dict(measure=f"decode tokens/s, batch {d['batch']}", tinylora=d["tokens_per_s"],
                                pytorch_f32=hf_val("f32", "decode", d["batch"]),
                                pytorch_bf16=hf_val("bf16", "decode", d["batch"])))
    eb = tl.get("engine_bench", {}).get("rows", {})
    pre = next((v for k, v in eb.items() if k.startswith("prefill")), None)
    if pre:
        dev = next(k for k in pre if k != "unit")
        comparisons.append(dict(measure="prefill tokens/s, 256-token prompt", tinylora=pre[dev],
                                pytorch_f32=hf_val("f32", "prefill"), pytorch_bf16=hf_val("bf16", "prefill")))
    def hf_train(dtype, rows, u):
        for run in hf.get("runs", []):
            if run.get("dtype") == dtype:
                for t in run.get("train", []):
                    if t["rows"] == rows and t["u"] == u:
                        return t
        return None

    # TinyLoRA forward + backward, the same rows × tokens and adapter on both sides
    for name in ("training_bench", "training16_bench"):
        bench = tl.get(name, {})
        merged = next((v["seconds"] for k, v in bench.get("rows", {}).items() if "merged weights" in k), None)
        if merged is None or "batch" not in bench:
            continue
        f32, bf16 = hf_train("f32", bench["batch"], bench["u"]), hf_train("bf16", bench["batch"], bench["u"])
        comparisons.append(dict(
            measure=f"TinyLoRA fwd+bwd s, {bench['batch']}×{bench['tokens']} tokens, u={bench['u']} "
                    f"tying {bench['tying']} ({bench['params']} params)",
            tinylora=merged, pytorch_f32=f32 and f32["forward_backward_s"],
            pytorch_bf16=bf16 and bf16["forward_backward_s"], lower_is_better=True,
            pytorch_method=(f32 or bf16 or {}).get("method")))
    tb = tl.get("training_bench", {}).get("rows", {})
    attach = next((v["seconds"] for k, v in tb.items() if k.startswith("attach adapter")), None)
    if attach is not None:
        f32 = hf_train("f32", 1, 1)
        comparisons.append(dict(measure="frozen-SVD setup s (210 rank-2 SVDs; tinylora: CPU, all cores + upload)",
                                tinylora=attach, pytorch_f32=f32 and f32["setup_s"], lower_is_better=True))

    targets = []
    b64 = next((d for d in tl["decode"] if d["batch"] == 64), None)
    if b64:
        f = b64.get("fraction_of_bound")
        targets.append(dict(name="batch-64 decode >= 50% of the weight-bandwidth bound (the bound from the f32 "
                                 "weight bytes; tinylora's generate decodes with its default --weights auto)",
                            value=f, met=None if f is None else f >= 0.5))
    for c in comparisons:
        if c["measure"].startswith("TinyLoRA fwd+bwd"):
            peft = [v for v in (c["pytorch_f32"], c["pytorch_bf16"]) if v]
            best = min(peft) if peft else None
            targets.append(dict(name=f"tinylora faster than PEFT: {c['measure']}",
                                value=dict(tinylora=c["tinylora"], peft_best=best),
                                met=None if not best else c["tinylora"] < best))

    # figures that should be there
    missing = [f"decode batch {d['batch']}" for d in tl["decode"] if not d["tokens_per_s"]]
    missing += [f"decode batch {d['batch']}: stopped early ({d['tokens_generated']} tokens)" for d in tl["decode"]
                if d["tokens_generated"] < 0.9 * d["batch"] * d["new_tokens"]]
    if not tl["decode"]:
        missing.append("tinylora decode (no generate logs)")
    # output the parsers did not understand (a bench's format changed)
    if "engine_bench" in tl and not tl["engine_bench"]["rows"]:
        missing.append("engine bench: no rows understood in engine_bench.log")
    if "blocks_bench" in tl and not tl["blocks_bench"]:
        missing.append("blocks bench: no rows understood in blocks_bench.log")
    if "blocks_bench" in tl and not (tl.get("blocks_bench_burn_quant") or {}).get("rows"):
        missing.append("blocks bench: no rows of burn's QuantScheme table in blocks_bench.log (stopped before it?)")
    missing += [f"{n}: header not understood" for n in ("training_bench", "training16_bench")
                if n in tl and "batch" not in tl[n]]
    hf_ok = "runs" in hf
    if failed or missing:
        status = "fail"
    elif hf_ok or (a.dry and "skipped" in hf):
        status = "pass"
    else:
        status = "partial"
    write_json(a.out, dict(
        stage=a.stage, status=status, failed_steps=failed, missing=missing, model=read(os.path.join(w, "model.txt"), "").strip(),
        device=read(os.path.join(w, "device.txt"), "").strip(), dry_run=a.dry, tinylora=tl, pytorch=hf,
        bounds=bounds, comparisons=comparisons, targets=targets, steps=steps))


# ---------------------------------------------------------------------------------------------
# stage 3: the reproduction


def parse_eval(text):
    acc = {m.group(1): float(m.group(2)) for m in re.finditer(r"^(strict|flexible|boxed)\s+accuracy\s+([\d.]+)%", text or "", re.M)}
    m = re.search(r"^([\d.]+) tokens/s, ([\d.]+) s;", text or "", re.M)
    n = re.search(r"\((\d+) problems\)", text or "")
    if not acc:
        return None
    return dict(accuracy_percent=acc, problems=int(n.group(1)) if n else None,
                tokens_per_s=float(m.group(1)) if m else None, seconds=float(m.group(2)) if m else None)


def cmd_stage3(a):
    d = a.dir
    phases = {}
    for ev in ("eval-base", "eval-grpo", "eval-sft"):
        r = parse_eval(read(os.path.join(d, ev + ".log")))
        phases[ev] = dict(done=os.path.exists(os.path.join(d, "done-" + ev)), **(r or {}))
    for run in ("grpo", "sft"):
        st = metrics_steps(os.path.join(d, run, "metrics.jsonl"))
        step_s = [s["rollout_s"] + s["train_s"] for s in st if "rollout_s" in s]
        last = st[-1] if st else {}
        phases[run] = dict(done=os.path.exists(os.path.join(d, "done-" + run)), steps_done=len(st),
                           steps_total=a.steps, step_s_median=statistics.median(step_s) if step_s else None,
                           rollout_s_median=statistics.median([s["rollout_s"] for s in st]) if st else None,
                           train_s_median=statistics.median([s["train_s"] for s in st]) if st else None,
                           last=dict((k, last.get(k)) for k in ("step", "reward_mean", "accuracy", "response_len",
                                                                 "values")) if last else None)
    phases["plot"] = dict(done=os.path.exists(os.path.join(d, "done-plot")),
                          files=sorted(os.path.basename(p) for p in glob.glob(os.path.join(d, "compare.*"))))
    order = ["eval-base", "grpo", "eval-grpo", "sft", "eval-sft", "plot"]
    errors = (read(os.path.join(d, "errors.txt"), "") or "").strip()
    left = [p for p in order if not phases[p]["done"]]
    est = None
    g = phases["grpo"]
    if g["step_s_median"] and a.steps:
        s = phases["sft"]
        est = ((a.steps - g["steps_done"]) * g["step_s_median"]
               + (a.steps - s["steps_done"]) * (s["step_s_median"] or 0)
               + sum((phases[e].get("seconds") or 60) for e in ("eval-grpo", "eval-sft") if not phases[e]["done"]))
    status = "fail" if errors else ("pass" if not left else "partial")
    write_json(a.out, dict(stage="stage3", status=status, phases=phases, left=left, errors=errors or None,
                           estimated_seconds_left=est,
                           note="resumable: the next call (or visit, carrying stage3-runs.tar.gz back) continues"))


# ---------------------------------------------------------------------------------------------
# summary


def fmt(v, unit=""):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}{unit}"
    return f"{v}{unit}"


def cmd_summary(a):
    lines = []
    env = load_json(os.path.join(a.out, "env.json"), {})
    if env:
        lines.append(f"device: {env.get('gpu') or '-'} | vulkan: {env.get('vulkan_device') or '-'}")
    s1 = load_json(os.path.join(a.out, "stage1.json"))
    if s1:
        lines.append(f"stage1 {s1['status']}: {s1['counts']}")
        for f in s1["failures"][:8]:
            first = (f["detail"].strip().splitlines() or [""])[-1][:160]
            lines.append(f"  {f['status']}: {f['suite']}::{f['test']}  {first}")
    s2k = load_json(os.path.join(a.out, "stage2k.json"))
    if s2k:
        lines.append(f"stage2k {s2k['status']}: kernels vs stock burn ops (speedup > 1: kernel faster)")
        for r in s2k["rows"]:
            lines.append(f"  {r['op']:<8} {r['shape']:<36} {r['kernel_ms']:8.3f} ms {r['stock_ms']:8.3f} ms {r['speedup']:6.2f}×")
    for st in ("stage2a", "stage2b"):
        s = load_json(os.path.join(a.out, st + ".json"))
        if not s:
            continue
        lines.append(f"{st} {s['status']} ({s['model']}; failed steps: {s['failed_steps'] or 'none'}; "
                     f"pytorch: {'ran' if 'runs' in s['pytorch'] else s['pytorch'].get('skipped')})")
        lines.append(f"  {'measure':<62} {'tinylora':>10} {'pt f32':>10} {'pt bf16':>10}")
        for c in s["comparisons"]:
            lines.append(f"  {c['measure'][:62]:<62} {fmt(c.get('tinylora')):>10} {fmt(c.get('pytorch_f32')):>10} {fmt(c.get('pytorch_bf16')):>10}")
        for d in s["tinylora"]["decode"]:
            if d.get("fraction_of_bound") is not None:
                lines.append(f"  tinylora decode batch {d['batch']}: {100 * d['fraction_of_bound']:.1f}% of the f32 weight-bandwidth bound")
    s3 = load_json(os.path.join(a.out, "stage3.json"))
    if s3:
        p = s3["phases"]
        acc = lambda k: (p[k].get("accuracy_percent") or {})  # noqa: E731
        lines.append(f"stage3 {s3['status']}: left {s3['left'] or 'nothing'}; grpo {p['grpo']['steps_done']}/{p['grpo']['steps_total']} "
                     f"steps ({fmt(p['grpo']['step_s_median'], ' s/step')}), sft {p['sft']['steps_done']}/{p['sft']['steps_total']}")
        for k in ("eval-base", "eval-grpo", "eval-sft"):
            if acc(k):
                lines.append(f"  {k}: " + ", ".join(f"{m} {v:.1f}%" for m, v in acc(k).items()))
    text = "\n".join(lines)
    print(text)
    with open(os.path.join(a.out, "summary.txt"), "w") as f:
        f.write(text + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("stage1-todo")
    p.add_argument("--state", required=True)
    p.add_argument("--suite", required=True)
    p.add_argument("--list", required=True)
    p.add_argument("--dry", action="store_true")
    p.add_argument("--dry-limit", type=int, help="dry run: tests per suite, besides --dry-keep")
    p.add_argument("--dry-keep", default="smollm2|qwen", help="dry run: always run these (they defer)")
    p = sub.add_parser("stage1-update")
    for k in ("--state", "--suite", "--log", "--call", "--todo"):
        p.add_argument(k, required=True)
    p.add_argument("--rc", type=int, required=True)
    p = sub.add_parser("stage1-json")
    p.add_argument("--state", required=True)
    p.add_argument("--out", required=True)
    p = sub.add_parser("stage2k")
    p.add_argument("--work", required=True)
    p.add_argument("--out", required=True)
    p = sub.add_parser("stage2")
    p.add_argument("--work", required=True)
    p.add_argument("--stage", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--dry", action="store_true")
    p = sub.add_parser("stage3")
    p.add_argument("--dir", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int)
    p = sub.add_parser("summary")
    p.add_argument("out")
    a = ap.parse_args()
    {"stage1-todo": cmd_stage1_todo, "stage1-update": cmd_stage1_update, "stage1-json": cmd_stage1_json,
     "stage2k": cmd_stage2k, "stage2": cmd_stage2, "stage3": cmd_stage3, "summary": cmd_summary}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
