// The web demo end to end in Debian's headless Chromium (WebGPU on SwiftShader): serve web/ on
// loopback, load SmolLM2-135M-Instruct and an adapter trained by `tinylora train` through the
// page's own controls; while the adapter is applied (in the page's worker), the page answers
// clicks within 100 ms and keeps painting. The page then offers the adapter as a link (the file
// in the URL's fragment): opened in a new tab, it loads the model, applies the link's adapter,
// and generates greedily with the adapter off and on; each answer (token ids and text) must
// equal the native `tinylora generate` output with the adapter file. A link whose adapter
// names another base model is refused, and so is a malformed one pasted into the same tab.
// Saves screenshots (demo.png, train.png) and the page's timing reports.
//
// Training in the tab: the tests' digit task (examples/digit_model.rs) trained 3 GRPO steps in
// the page's worker gives the native `tinylora train grpo` run's rewards and values step by
// step, and its adapter file loads in the CLI; "Compare" answers the held-out problems with the
// adapter off and on as the run did; Stop ends a long run early and keeps its values.
//
// Run by scripts/test_web.sh after `scripts/web.sh --build-only`; environment:
//   TINYLORA_BIN   the native CLI (default $CARGO_TARGET_DIR/release/tinylora)
//   TINYLORA_DIGIT the digit-task writer (default $CARGO_TARGET_DIR/release/examples/digit_model)
//   TINYLORA_OUT   where demo.png and demo-report.json go (default target/browser)
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import fs from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import puppeteer from "puppeteer-core";

const root = path.resolve(import.meta.dirname, "../..");
const models = process.env.TINYLORA_MODELS ?? path.join(root, "models");
const target = process.env.CARGO_TARGET_DIR ?? path.join(os.homedir(), ".cache/tinylora/target");
const bin = process.env.TINYLORA_BIN ?? path.join(target, "release/tinylora");
const digitModel = process.env.TINYLORA_DIGIT ?? path.join(target, "release/examples/digit_model");
const out = process.env.TINYLORA_OUT ?? path.join(root, "target/browser");

const MODEL = "SmolLM2-135M-Instruct.Q4_1.gguf";
const ADAPTER = "adapters/smollm2-arithmetic-u13.safetensors";
const PROMPT = "What is 7 + 5? The answer is";
const MAX_NEW_TOKENS = 6;
const MINUTE = 60_000;

/// The adapter file carried by a page link (`#adapter=` and the file in base64url).
function fromLink(link) {
  const hash = new URL(link).hash;
  assert.ok(hash.startsWith("#adapter="), `a link with an adapter: ${link}`);
  return Buffer.from(hash.slice("#adapter=".length), "base64url");
}

/// Native greedy generation, as `tinylora generate --json` prints it.
function native(adapter) {
  const args = ["generate", "--model", path.join(models, MODEL), "--prompt", PROMPT,
    "--max-new-tokens", String(MAX_NEW_TOKENS), "--json"];
  if (adapter) args.push("--adapter", path.join(root, "web", adapter));
  const stdout = execFileSync(bin, args, { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] });
  return JSON.parse(stdout.trim().split("\n").pop());
}

const TYPES = { ".html": "text/html", ".js": "text/javascript", ".css": "text/css",
  ".wasm": "application/wasm", ".json": "application/json" };

/// web/ on 127.0.0.1, with /models/ served from the checkout's models directory.
function serve() {
  const server = http.createServer((req, res) => {
    const url = decodeURIComponent(new URL(req.url, "http://x").pathname);
    const file = url.startsWith("/models/")
      ? path.join(models, url.slice("/models/".length))
      : url.startsWith("/data/")
        ? path.join(root, url)
        : path.join(root, "web", url === "/" ? "index.html" : url);
    fs.readFile(file, (err, data) => {
      if (err) { res.writeHead(404); res.end(`not found: ${url}`); return; }
      res.writeHead(200, { "content-type": TYPES[path.extname(file)] ?? "application/octet-stream" });
      res.end(data);
    });
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(server)));
}

/// The values of an adapter file (safetensors: an 8-byte header length, a JSON header, then
/// the `trainable` f32 tensor).
function adapterValues(bytes) {
  const n = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + n).toString("utf8"));
  const t = header.trainable;
  assert.equal(t.dtype, "F32", "an f32 adapter");
  const [a, b] = t.data_offsets;
  const data = bytes.subarray(8 + n + a, 8 + n + b);
  return Array.from({ length: data.length / 4 }, (_, i) => data.readFloatLE(4 * i));
}

/// Debian's Chromium, headless, with WebGPU (SwiftShader) and no network chatter.
function chromium() {
  return puppeteer.launch({
    executablePath: "/usr/bin/chromium",
    headless: true,
    protocolTimeout: 30 * MINUTE,
    args: ["--no-sandbox", "--disable-gpu-sandbox", "--enable-unsafe-webgpu",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
      "--no-first-run", "--window-size=1200,900"],
  });
}

/// Wait until the page's status reaches `state`; fail with the page's message on an error.
async function until(page, state, timeout) {
  await page.waitForFunction(
    (s) => ["error", s].includes(document.getElementById("status").dataset.state),
    { timeout, polling: 250 }, state);
  const status = await page.$eval("#status", (e) => ({ state: e.dataset.state, text: e.textContent }));
  assert.equal(status.state, state, `page status: ${status.text}`);
}

/// While the worker applies the adapter (the page's status reports its SVD progress): three real
/// clicks (input events from the browser) on the page, each one's delay from the event to its
/// handler, and the frames the page painted meanwhile.
async function whileBusy(page) {
  await page.waitForFunction(() => /SVD of module/.test(document.getElementById("status").textContent),
    { timeout: 10 * MINUTE, polling: 50 });
  await page.evaluate(() => {
    window.tinylora.clickDelays = [];
    document.getElementById("model-info").addEventListener("click",
      (e) => window.tinylora.clickDelays.push(performance.now() - e.timeStamp));
  });
  const frames0 = await page.evaluate(() => window.tinylora.frames);
  const t0 = Date.now();
  for (let i = 0; i < 3; i++) {
    await page.click("#model-info");
    await new Promise((r) => setTimeout(r, 300));
  }
  const after = await page.evaluate(() => ({
    frames: window.tinylora.frames,
    delays: window.tinylora.clickDelays,
    state: document.getElementById("status").dataset.state,
    text: document.getElementById("status").textContent,
  }));
  assert.equal(after.state, "busy", `still applying the adapter after the clicks (else they tested nothing): ${after.text}`);
  assert.equal(after.delays.length, 3, "every click reached its handler");
  return { click_delays_ms: after.delays.map((d) => Math.round(d * 10) / 10),
    frames: after.frames - frames0, seconds: (Date.now() - t0) / 1e3 };
}

test("demo page answers like the native CLI with the adapter off and on", { timeout: 40 * MINUTE }, async () => {
  const want = { base: native(null), adapted: native(ADAPTER) };
  assert.notDeepEqual(want.base.output_ids, want.adapted.output_ids,
    "the adapter should change the native answer to this prompt (else the test shows nothing)");

  const server = await serve();
  const browser = await chromium();
  try {
    const page = await browser.newPage();
    await page.setViewport({ width: 1200, height: 900 });
    const t = Date.now();
    page.on("console", (m) => console.log(`[page ${((Date.now() - t) / 1e3).toFixed(1)}s ${m.type()}] ${m.text()}`));
    page.on("pageerror", (e) => console.log(`[page error] ${e.message}`));
    page.on("error", (e) => console.log(`[page crashed] ${e.message}`));
    await page.goto(`http://127.0.0.1:${server.address().port}/`);
    await until(page, "ready", MINUTE);

    const t0 = Date.now();
    await page.$eval("#model-url", (e, v) => { e.value = v; }, `models/${MODEL}`);
    await page.click("#model-load");
    await until(page, "model", 10 * MINUTE);
    const loadMs = Date.now() - t0;
    await page.$eval("#adapter-url", (e, v) => { e.value = v; }, ADAPTER);
    await page.click("#adapter-load");
    const responsive = await whileBusy(page);
    await until(page, "adapter", 10 * MINUTE);
    const offered = await page.evaluate(() => ({
      adapter: window.tinylora.adapter,
      link: document.getElementById("adapter-link").href,
      shareShown: !document.getElementById("adapter-share").hidden,
    }));
    const file = fs.readFileSync(path.join(root, "web", ADAPTER));
    assert.ok(offered.shareShown, "the applied adapter is offered as a link");
    assert.deepEqual(fromLink(offered.link), file, "the link carries the adapter file byte for byte");

    // the link, opened in a new tab: the model loads, then the link's adapter is applied
    await page.close();
    const linked = await browser.newPage();
    await linked.setViewport({ width: 1200, height: 900 });
    linked.on("console", (m) => console.log(`[link page ${((Date.now() - t) / 1e3).toFixed(1)}s ${m.type()}] ${m.text()}`));
    await linked.goto(offered.link);
    await until(linked, "ready", MINUTE);
    assert.match(await linked.$eval("#adapter-info", (e) => e.textContent),
      new RegExp(`link carries an adapter \\(${file.length} bytes\\)`));
    await linked.$eval("#model-url", (e, v) => { e.value = v; }, `models/${MODEL}`);
    await linked.click("#model-load");
    await until(linked, "adapter", 10 * MINUTE);
    await linked.$eval("#prompt", (e, v) => { e.value = v; }, PROMPT);
    await linked.$eval("#max-tokens", (e, v) => { e.value = v; }, String(MAX_NEW_TOKENS));
    await linked.click("#generate");
    await until(linked, "done", 20 * MINUTE);

    const got = await linked.evaluate(() => ({
      reports: window.tinylora.reports,
      adapter: window.tinylora.adapter,
      shown: { base: document.getElementById("out-base").textContent,
        adapted: document.getElementById("out-adapted").textContent },
    }));
    fs.mkdirSync(out, { recursive: true });
    await linked.screenshot({ path: path.join(out, "demo.png"), fullPage: true });
    fs.writeFileSync(path.join(out, "demo-report.json"),
      JSON.stringify({ model_load_ms: loadMs, while_applying_the_adapter: responsive,
        applied_from_the_url: offered.adapter, link_length: offered.link.length, ...got, native: want }, null, 2));

    // the worker, not the page, did the adapter's SVDs: clicks answered, frames painted
    assert.ok(Math.max(...responsive.click_delays_ms) < 100,
      `clicks answered within 100 ms while the adapter was applied: ${responsive.click_delays_ms}`);
    assert.ok(responsive.frames >= 10, `frames painted in ${responsive.seconds} s: ${responsive.frames}`);

    for (const which of ["base", "adapted"]) {
      const r = got.reports[which];
      assert.equal(r.adapter, which === "adapted", `${which}: adapter switch`);
      assert.deepEqual(r.output_ids, want[which].output_ids, `${which}: token ids differ from native`);
      assert.equal(r.text, want[which].text, `${which}: text differs from native`);
      assert.equal(got.shown[which], want[which].text, `${which}: the page shows other text`);
      assert.ok(r.tokens_per_s > 0 && r.first_token_ms > 0, `${which}: timings reported`);
    }
    assert.equal(offered.adapter.parameters, 13, "adapter parameter count shown");
    assert.deepEqual({ ...got.adapter, name: null, attach_ms: null }, { ...offered.adapter, name: null, attach_ms: null },
      "the link's adapter is the file's");

    // a link whose adapter was made for another base model: refused, saying so
    const foreign = Buffer.from(file);
    const at = foreign.indexOf(Buffer.from(`"base_fingerprint":"`)) + 20;
    assert.ok(at > 20, "the adapter file records its base model's fingerprint");
    foreign[at] = foreign[at] === 0x30 ? 0x31 : 0x30;
    await linked.close();
    const other = await browser.newPage();
    await other.goto(offered.link.replace(/#.*/, `#adapter=${foreign.toString("base64url")}`));
    await until(other, "ready", MINUTE);
    await other.$eval("#model-url", (e, v) => { e.value = v; }, `models/${MODEL}`);
    await other.click("#model-load");
    await other.waitForFunction(() => ["error", "adapter"].includes(document.getElementById("status").dataset.state),
      { timeout: 10 * MINUTE, polling: 250 });
    const refusal = await other.$eval("#status", (e) => ({ state: e.dataset.state, text: e.textContent }));
    assert.equal(refusal.state, "error", `a foreign link is refused: ${refusal.text}`);
    assert.match(refusal.text, /made for base model .*not for this model/, refusal.text);
    assert.equal(await other.evaluate(() => window.tinylora.adapter), null, "no adapter applied");
    // a malformed link pasted into the same tab (only the fragment changes: no reload)
    await other.evaluate(() => { location.hash = "adapter=not*base64"; });
    await other.waitForFunction(() => /not base64url/.test(document.getElementById("status").textContent),
      { timeout: MINUTE, polling: 100 });
    console.log(`browser: model load ${(loadMs / 1e3).toFixed(1)} s, adapter ${(got.adapter.attach_ms / 1e3).toFixed(1)} s; ` +
      ["base", "adapted"].map((w) => `${w}: first token ${(got.reports[w].first_token_ms / 1e3).toFixed(2)} s, ` +
        `${got.reports[w].decode_tokens_per_s.toFixed(2)} tokens/s decoding`).join("; "));
  } finally {
    await browser.close();
    server.close();
  }
});

// The module the page downloads, as scripts/web.sh builds it (`-C opt-level=s` in
// .cargo/config.toml, then binaryen's `wasm-opt -Oz`): 10.1 MB on 2026-11-30 against 28.2 MB
// before either; the goal (issue 19) is under 12 MB.
const WASM_LIMIT_MB = 12;

test("the wasm module is under 12 MB", () => {
  const wasm = path.join(root, "web/pkg/tinylora_web_bg.wasm");
  const mb = fs.statSync(wasm).size / 1e6;
  console.log(`wasm module: ${mb.toFixed(1)} MB`);
  assert.ok(mb < WASM_LIMIT_MB, `${wasm} is ${mb.toFixed(1)} MB, over ${WASM_LIMIT_MB} MB`);
});

test("without WebGPU the page says so plainly and offers nothing broken", { timeout: 5 * MINUTE }, async () => {
  const server = await serve();
  const browser = await chromium();
  try {
    const page = await browser.newPage();
    // a browser without WebGPU: no navigator.gpu at all
    await page.evaluateOnNewDocument(() => { delete Navigator.prototype.gpu; });
    await page.goto(`http://127.0.0.1:${server.address().port}/`);
    await until(page, "error", MINUTE);
    const shown = await page.evaluate(() => ({
      banner: document.getElementById("no-webgpu").hidden ? null : document.getElementById("no-webgpu").textContent,
      generate: document.getElementById("generate").disabled,
    }));
    assert.match(shown.banner ?? "", /no WebGPU/, "the banner explains the missing WebGPU");
    assert.equal(shown.generate, true, "nothing to run without WebGPU");
  } finally {
    await browser.close();
    server.close();
  }
});

test("a panic in the worker (how wgpu reports a GPU out of memory) reaches the page with what to do", { timeout: 5 * MINUTE }, async () => {
  const server = await serve();
  const browser = await chromium();
  try {
    const page = await browser.newPage();
    await page.goto(`http://127.0.0.1:${server.address().port}/`);
    await until(page, "ready", MINUTE);
    await page.evaluate(() => window.tinylora.call("panic", { message: "wgpu error: Out of Memory" }));
    await until(page, "error", MINUTE);
    const shown = await page.$eval("#status", (e) => e.textContent);
    assert.match(shown, /^the GPU ran out of memory: open the page with \?weights=auto .* pick a smaller model .*; reload the page to go on \(wgpu error: Out of Memory\)$/);
    const later = await page.evaluate(() => window.tinylora.call("adapterInfo").then(() => "answered", (e) => e.message));
    assert.equal(later, shown, "later requests are refused with the same words");
    const enabled = await page.$$eval("button", (bs) => bs.filter((b) => !b.disabled).map((b) => b.id));
    assert.deepEqual(enabled, [], "no button offers work to the stopped worker");
  } finally {
    await browser.close();
    server.close();
  }
});

// The digit task's GRPO settings (tests/common/digit_task.rs), as the page's controls and as
// the CLI's flags.
const DIGIT_RUN = { "train-group": 8, "train-steps": 3, "train-lr": 0.3, "train-eval": 2,
  "train-prompts": 4, "train-tokens": 1, "train-u": 13, "train-temperature": 1, "train-warmup": 0,
  "train-clip": 0, "train-seed": 0, "train-instruction": "", "train-prefix": "" };
const DIGIT_FLAGS = ["--group-size", "8", "--steps", "3", "--lr", "0.3", "--eval-problems", "2",
  "--prompts-per-step", "4", "--max-new-tokens", "1", "--u", "13", "--tying", "full",
  "--temperature", "1", "--warmup", "0", "--max-grad-norm", "0", "--seed", "0",
  "--instruction", "", "--answer-prefix", "", "--extract", "flexible"];
// The values differ between the CPU backend and WebGPU in rounding only (1e-6 after 3 steps on
// 2026-11-30); one sample drawn differently would move them by about the learning rate (0.3).
const VALUE_TOLERANCE = 1e-4;

async function setControls(page, values) {
  await page.evaluate((v) => {
    for (const [id, x] of Object.entries(v)) document.getElementById(id).value = String(x);
  }, values);
}

test("GRPO in the page's worker trains like the native CLI, and Stop keeps what was learned", { timeout: 20 * MINUTE }, async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tinylora-digit-"));
  execFileSync(digitModel, [dir], { stdio: "inherit" });
  const modelDir = path.join(dir, "model");
  const data = path.join(dir, "problems.jsonl");
  const runDir = path.join(dir, "run");
  const native = spawnSync(bin, ["train", "grpo", "--model", modelDir, "--data", data, "--out", runDir,
    "--device", "cpu", ...DIGIT_FLAGS], { encoding: "utf8" });
  const log = native.stdout + native.stderr;
  assert.equal(native.status, 0, `the native run: ${log}`);
  const want = fs.readFileSync(path.join(runDir, "metrics.jsonl"), "utf8").trim().split("\n").map(JSON.parse);
  assert.equal(want.length, 3, `three native steps: ${log}`);

  const server = await serve();
  const browser = await chromium();
  try {
    const page = await browser.newPage();
    const t = Date.now();
    page.on("console", (m) => console.log(`[train page ${((Date.now() - t) / 1e3).toFixed(1)}s ${m.type()}] ${m.text()}`));
    page.on("pageerror", (e) => console.log(`[page error] ${e.message}`));
    await page.goto(`http://127.0.0.1:${server.address().port}/`);
    await until(page, "ready", MINUTE);
    const modelInput = await page.$("#model-files");
    await modelInput.uploadFile(...fs.readdirSync(modelDir).map((f) => path.join(modelDir, f)));
    await until(page, "model", 5 * MINUTE);
    await (await page.$("#train-data-file")).uploadFile(data);
    await setControls(page, DIGIT_RUN);
    await page.click("#train-start");
    await until(page, "trained", 10 * MINUTE);
    const got = await page.evaluate(() => ({
      run: window.tinylora.training,
      link: document.getElementById("adapter-link").href,
      chart: document.querySelectorAll("#train-chart polyline.reward")[0]?.getAttribute("points") ?? "",
      info: document.getElementById("train-info").textContent,
    }));
    assert.equal(got.run.steps.length, 3, "three steps in the page");
    fs.mkdirSync(out, { recursive: true });
    await page.screenshot({ path: path.join(out, "train.png"), fullPage: true });
    for (const [i, w] of want.entries()) {
      const g = got.run.steps[i];
      assert.equal(g.step, w.step, "step numbers");
      assert.equal(g.reward_mean, w.reward_mean, `step ${w.step}: the same samples, the same mean reward`);
      assert.equal(g.zero_variance_groups, w.zero_variance_groups, `step ${w.step}: same flat groups`);
      assert.equal(g.values.length, w.values.length, `step ${w.step}: as many values as native`);
      const worst = Math.max(...g.values.map((v, k) => Math.abs(v - w.values[k])));
      assert.ok(worst <= VALUE_TOLERANCE, `step ${w.step}: values within ${VALUE_TOLERANCE} of native (worst ${worst}): ` +
        `${g.values} vs ${w.values}`);
    }
    assert.equal(got.chart.split(" ").length, 3, "the chart has a point per step");
    // the held-out evaluations: the CLI prints "base model: … flexible 50.0% …"
    const flexible = (label) => Number(new RegExp(`${label}: .*flexible ([0-9.]+)%`).exec(log)?.[1]);
    assert.equal(100 * got.run.report.before.accuracy[1], flexible("base model"), "accuracy before");
    assert.equal(100 * got.run.report.after.accuracy[1], flexible("with the adapter"), "accuracy after");
    assert.match(got.info, /Held-out accuracy \(flexible\): base model .* → with the adapter/);
    // the page's adapter file: the trained values, and the CLI loads it
    const file = fromLink(got.link);
    const values = adapterValues(file);
    assert.deepEqual(values, got.run.report.values.map(Math.fround), "the offered file holds the trained values");
    const adapterPath = path.join(dir, "from-the-page.safetensors");
    fs.writeFileSync(adapterPath, file);
    const nativeAnswer = JSON.parse(execFileSync(bin, ["generate", "--model", modelDir, "--adapter", adapterPath,
      "--prompt", "t20 t40 t100", "--max-new-tokens", "1", "--device", "cpu", "--json"],
    { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] }).trim().split("\n").pop());
    assert.equal(nativeAnswer.output_ids.length, 1, "the CLI generates with the page's adapter");

    // "Compare": the same held-out problems, the trained adapter off and on, the same answers
    await page.click("#train-compare");
    await until(page, "compared", 5 * MINUTE);
    const compared = await page.evaluate(() => window.tinylora.comparison.report);
    for (const which of ["before", "after"]) {
      assert.deepEqual(compared[which].records.map((r) => r.output), got.run.report[which].records.map((r) => r.output),
        `compare ${which}: the training run's held-out answers`);
      assert.deepEqual(compared[which].accuracy, got.run.report[which].accuracy, `compare ${which}: accuracy`);
    }

    // a run refused before it begins (every problem held out) keeps the trained adapter
    await setControls(page, { "train-eval": 8 });
    await page.click("#train-start");
    await until(page, "error", MINUTE);
    assert.match(await page.$eval("#status", (e) => e.textContent),
      /Training on problems\.jsonl failed: .*no problems left for training after holding out 8/);
    const kept = await page.evaluate(() => ({ adapter: window.tinylora.adapter,
      compare: !document.getElementById("train-compare").disabled }));
    assert.equal(kept.adapter?.name, "trained in this tab", "the trained adapter is still shown");
    assert.ok(kept.compare, "and can still be compared");

    // a long run, stopped after its first step: the steps taken are kept
    await setControls(page, { "train-steps": 500, "train-eval": 2 });
    await page.evaluate(() => { window.tinylora.training = null; });
    await page.click("#train-start");
    await page.waitForFunction(() => window.tinylora.training?.steps.length >= 1, { timeout: 5 * MINUTE, polling: 50 });
    await page.click("#train-stop");
    await page.waitForFunction(() => !window.tinylora.training.running, { timeout: 5 * MINUTE, polling: 100 });
    await until(page, "trained", MINUTE);
    const stopped = await page.evaluate(() => window.tinylora.training);
    assert.equal(stopped.report.interrupted, true, "Stop ended the run early");
    assert.ok(stopped.report.steps >= 1 && stopped.report.steps < 500, `steps taken: ${stopped.report.steps}`);
    assert.equal(stopped.report.steps, stopped.steps.length, "every step taken was reported");
    assert.deepEqual(stopped.report.values, stopped.steps.at(-1).values, "the last step's values are kept");
    console.log(`browser training (digit task, SwiftShader): ${got.run.report.seconds_per_step.toFixed(2)} s a step; ` +
      `stopped after ${stopped.report.steps} steps`);
    fs.mkdirSync(out, { recursive: true });
    fs.writeFileSync(path.join(out, "train-report.json"), JSON.stringify({ page: got.run, native: want }, null, 2));
  } finally {
    await browser.close();
    server.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
