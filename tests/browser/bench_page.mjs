// The page's own figures on a real model (not a test: run by hand after `scripts/web.sh
// --build-only`; headless Chromium, WebGPU on whatever the machine has, here SwiftShader):
// load time, then a greedy generation (time to first token, tokens/s), then GRPO steps of the
// main job's settings (the page's defaults: single-digit arithmetic, 13 parameters). With
// --compare, the page's default adapter (the main job's) is applied instead and "Compare" answers
// the default held-out problems with it off and on: the page's showcase. Prints JSON.
//
//   node tests/browser/bench_page.mjs [--model FILE] [--weights f32|auto|q8|q4]
//        [--new-tokens N (4)] [--steps N (1; 0: no training)] [--eval N (0)] [--compare]
//        [--group N] [--prompts N] (the panel's group size and prompts a step; its defaults,
//        the main job's 8 × 8, take hours a step on SwiftShader: --group 6 --prompts 2 is the
//        earlier main job's step the README times)
//
// FILE is under models/ (default SmolLM2-135M-Instruct.Q4_1.gguf).
import fs from "node:fs";
import http from "node:http";
import path from "node:path";
import { parseArgs } from "node:util";
import puppeteer from "puppeteer-core";

const root = path.resolve(import.meta.dirname, "../..");
const { values: opt } = parseArgs({
  options: {
    model: { type: "string", default: "SmolLM2-135M-Instruct.Q4_1.gguf" },
    weights: { type: "string", default: "f32" },
    "new-tokens": { type: "string", default: "4" },
    steps: { type: "string", default: "1" },
    eval: { type: "string", default: "0" },
    compare: { type: "boolean", default: false },
    group: { type: "string" },
    prompts: { type: "string" },
  },
});
const TYPES = { ".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".wasm": "application/wasm" };

const server = http.createServer((req, res) => {
  const url = decodeURIComponent(new URL(req.url, "http://x").pathname);
  const file = /^\/(models|data)\//.test(url) ? path.join(root, url) : path.join(root, "web", url === "/" ? "index.html" : url);
  fs.readFile(file, (err, data) => {
    if (err) { res.writeHead(404); res.end(); return; }
    res.writeHead(200, { "content-type": TYPES[path.extname(file)] ?? "application/octet-stream" });
    res.end(data);
  });
});
await new Promise((r) => server.listen(0, "127.0.0.1", r));
const browser = await puppeteer.launch({
  executablePath: "/usr/bin/chromium", headless: true, protocolTimeout: 0,
  args: ["--no-sandbox", "--disable-gpu-sandbox", "--enable-unsafe-webgpu", "--no-first-run"],
});
const result = { model: opt.model, weights: opt.weights };
try {
  const page = await browser.newPage();
  const t = Date.now();
  page.on("console", (m) => console.error(`[${((Date.now() - t) / 1e3).toFixed(1)}s] ${m.text()}`));
  await page.goto(`http://127.0.0.1:${server.address().port}/?weights=${opt.weights}`);
  const state = async (s) => {
    await page.waitForFunction((x) => ["error", x].includes(document.getElementById("status").dataset.state),
      { timeout: 0, polling: 500 }, s);
    const st = await page.$eval("#status", (e) => ({ state: e.dataset.state, text: e.textContent }));
    if (st.state !== s) throw new Error(st.text);
  };
  await state("ready");
  await page.$eval("#model-url", (e, v) => { e.value = v; }, `models/${opt.model}`);
  let t0 = Date.now();
  await page.click("#model-load");
  await state("model");
  result.load_s = (Date.now() - t0) / 1e3;
  result.model_info = await page.$eval("#model-info", (e) => e.textContent);
  if (Number(opt["new-tokens"]) > 0) {
    await page.$eval("#max-tokens", (e, v) => { e.value = v; }, opt["new-tokens"]);
    await page.click("#generate");
    await state("done");
    result.generate = await page.evaluate(() => window.tinylora.reports.base);
  }
  if (opt.compare) {
    t0 = Date.now();
    await page.click("#adapter-load");
    await state("adapter");
    result.adapter_s = (Date.now() - t0) / 1e3;
    t0 = Date.now();
    await page.click("#train-compare");
    await state("compared");
    const report = await page.evaluate(() => window.tinylora.comparison.report);
    const right = (r) => r.records.map((x) => x.correct);
    const [off, on] = [right(report.before), right(report.after)];
    result.compare = {
      seconds: (Date.now() - t0) / 1e3,
      problems: off.length,
      accuracy_off: report.before.accuracy, accuracy_on: report.after.accuracy,
      right_only_on: on.filter((c, i) => c && !off[i]).length,
      right_only_off: off.filter((c, i) => c && !on[i]).length,
    };
  } else if (Number(opt.steps) > 0) {
    await page.evaluate((s, e, g, p) => {
      document.getElementById("train-steps").value = s;
      document.getElementById("train-eval").value = e;
      if (g) document.getElementById("train-group").value = g;
      if (p) document.getElementById("train-prompts").value = p;
    }, opt.steps, opt.eval, opt.group ?? "", opt.prompts ?? "");
    t0 = Date.now();
    await page.click("#train-start");
    await state("trained");
    const run = await page.evaluate(() => window.tinylora.training);
    result.train = {
      run_s: (Date.now() - t0) / 1e3,
      svd_modules: run.events.filter((e) => e.kind === "svd").length,
      steps: run.steps.map((m) => ({ step: m.step, rollout_s: m.rollout_s, train_s: m.train_s, reward_mean: m.reward_mean })),
      seconds_per_step: run.report.seconds_per_step,
      before: run.report.before?.accuracy, after: run.report.after?.accuracy,
    };
  }
} catch (e) {
  result.error = e.message;
} finally {
  console.log(JSON.stringify(result, null, 2));
  await browser.close();
  server.close();
}
