// Seconds per GRPO step in the page's worker on a real model (not a test: run by hand after
// `scripts/web.sh --build-only`; headless Chromium, WebGPU on whatever the machine has, here
// SwiftShader). Loads the model through the page's URL field, trains STEPS steps of the main
// job's settings (the page's defaults: single-digit arithmetic, 13 parameters) with EVAL
// held-out problems, and prints the page's timings as JSON.
//
//   node tests/browser/bench_train.mjs [MODEL (models/…)] [STEPS (2)] [EVAL (0)]
import fs from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import puppeteer from "puppeteer-core";

const root = path.resolve(import.meta.dirname, "../..");
const [model = "SmolLM2-135M-Instruct.Q4_1.gguf", steps = "2", evalProblems = "0"] = process.argv.slice(2);
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
  userDataDir: fs.mkdtempSync(path.join(os.tmpdir(), "tinylora-chromium-")),
  args: ["--no-sandbox", "--disable-gpu-sandbox", "--enable-unsafe-webgpu", "--no-first-run"],
});
try {
  const page = await browser.newPage();
  const t = Date.now();
  page.on("console", (m) => console.error(`[${((Date.now() - t) / 1e3).toFixed(1)}s] ${m.text()}`));
  await page.goto(`http://127.0.0.1:${server.address().port}/`);
  const state = (s) => page.waitForFunction((x) => ["error", x].includes(document.getElementById("status").dataset.state),
    { timeout: 0, polling: 500 }, s);
  await state("ready");
  await page.$eval("#model-url", (e, v) => { e.value = v; }, `models/${model}`);
  const t0 = Date.now();
  await page.click("#model-load");
  await state("model");
  const loadS = (Date.now() - t0) / 1e3;
  await page.evaluate((s, e) => {
    document.getElementById("train-steps").value = s;
    document.getElementById("train-eval").value = e;
  }, steps, evalProblems);
  const t1 = Date.now();
  await page.click("#train-start");
  await state("trained");
  const run = await page.evaluate(() => window.tinylora.training);
  if (!run?.report) throw new Error(await page.$eval("#status", (e) => e.textContent));
  const svd = run.events.filter((e) => e.kind === "svd").length;
  console.log(JSON.stringify({
    model, load_s: loadS, run_s: (Date.now() - t1) / 1e3, svd_modules: svd,
    steps: run.steps.map((m) => ({ step: m.step, rollout_s: m.rollout_s, train_s: m.train_s, reward_mean: m.reward_mean })),
    seconds_per_step: run.report.seconds_per_step,
  }, null, 2));
} finally {
  await browser.close();
  server.close();
}
