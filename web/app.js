// The demo page: load a model and an adapter (picked, dropped, fetched from URLs next to the
// page, or carried by the page's link), then generate with the adapter off and on, streaming
// both answers. An applied adapter can be shared as a link: the adapter file itself, base64url
// in the URL's fragment (`#adapter=…`, never sent to a server); the file records the base
// model's fingerprint, so a link opened on another model is refused by the same check as a file. The session
// itself lives in a Web Worker (worker.js): this thread only renders and sends requests, so the
// page keeps painting and answering clicks while the worker loads, applies SVDs or generates.
// The page also trains an adapter in the tab (GRPO, the CLI's trainer, in the worker) with a
// live reward chart and the held-out accuracy before and after.
// `window.tinylora` exposes the model, the adapter, the last reports and the last training run
// (the browser test reads them).

const $ = (id) => document.getElementById(id);
const page = { model: null, reports: {}, busy: false, frames: 0, loading: null };
window.tinylora = page;

// The worker and its requests: `call(op, args)` resolves to the worker's answer; `onProgress`
// receives what it reports while the request runs; `transfer` moves buffers instead of copying.
const worker = new Worker(new URL("./worker.js", import.meta.url), { type: "module" });
const pending = new Map();
let nextId = 1;
// Why the worker's module stopped for good (a Rust panic), once it has: later requests are
// refused with the same words.
let stopped = null;
worker.onmessage = (e) => {
  const m = e.data;
  if ("panic" in m) return workerStopped(m.panic);
  const p = pending.get(m.id);
  if (!p) return;
  if ("progress" in m) return p.onProgress?.(m.progress);
  pending.delete(m.id);
  if (m.ok) p.resolve(m.result);
  else p.reject(new Error(m.error));
};
worker.onerror = (e) => {
  e.preventDefault();
  const message = e.message;
  // a panic's own words (the module's hook posts them just before the trap that raises this
  // event) may arrive a little after it: give them the first say
  setTimeout(() => {
    if (stopped) return;
    const err = new Error(`the worker stopped: ${message || "it could not start"}`);
    for (const p of pending.values()) p.reject(err);
    pending.clear();
  }, 200);
};
// A panic in the worker (its module cannot run again): every request waiting, and every later
// one, fails with what happened and what to do. wgpu raises a GPU out of memory this way.
function workerStopped(panic) {
  // the first panic says why (an out of memory is followed by wgpu's errors about the buffer
  // that could not be made, each one panicking again): keep it
  if (stopped) return console.error("the worker panicked again:", panic);
  // "panicked at file:line:col:" then the message
  const why = panic.split("\n").slice(1).map((l) => l.trim()).filter(Boolean).join(" ") || panic;
  const loading = page.loading ? ` while loading ${page.loading.name} (${mb(page.loading.bytes)}, weights ${WEIGHTS})` : "";
  const advice = /out of ?memory/i.test(panic)
    ? `the GPU ran out of memory${loading}: ${WEIGHTS === "f32"
      ? "open the page with ?weights=auto to keep the file's quantized blocks on the GPU (a Q4 file takes a fifth of f32's memory), or " : ""}` +
      "pick a smaller model or a more quantized file"
    : `the worker stopped on an internal error${loading}`;
  stopped = `${advice}; reload the page to go on (${why})`;
  for (const p of pending.values()) p.reject(new Error(stopped));
  pending.clear();
  refreshButtons();
  status(stopped, "error");
}
function call(op, args = {}, { onProgress, transfer = [] } = {}) {
  const id = nextId++;
  if (stopped) return Promise.reject(new Error(stopped));
  return new Promise((resolve, reject) => {
    pending.set(id, { resolve, reject, onProgress });
    worker.postMessage({ id, op, args }, transfer);
  });
}
page.call = call; // the browser test sends a request of its own (`panic`)
// Frames painted so far (the browser test checks the page keeps painting while the worker works).
const countFrames = () => { page.frames += 1; requestAnimationFrame(countFrames); };
requestAnimationFrame(countFrames);

// The status line (and the console, unless `quiet`: progress updates would flood it).
function status(text, state = "ready", quiet = false) {
  const s = $("status");
  s.textContent = text;
  s.dataset.state = state;
  if (!quiet) console.info(`[status ${state}] ${text}`);
}

function fail(what, err) {
  const msg = err && err.message ? err.message : String(err);
  // the worker's panic names what it was doing already
  status(stopped && msg === stopped ? msg : `${what}: ${msg}`, "error");
  console.error(what, err);
}

const mb = (n) => `${(n / 1e6).toFixed(1)} MB`;
// How the model's weight matrices are kept on the GPU (the CLI's --weights): `?weights=auto`
// keeps the file's quantized blocks (a fifth of f32's memory for a Q4 file); f32 by default,
// since the block kernels decode several times slower on software WebGPU (SwiftShader,
// benches/README.md) and no hardware figure exists yet.
const WEIGHTS = new URLSearchParams(location.search).get("weights") ?? "f32";
const baseName = (url) => decodeURIComponent(url.split("/").pop().split("?")[0]);

// The bytes at `url`; `onBytes(read, total)` follows the download (total 0 when the server
// does not say).
async function fetchBytes(url, onBytes) {
  const res = await fetch(url);
  if (!res.ok) throw new Error(`${url}: HTTP ${res.status} ${res.statusText}`);
  const total = Number(res.headers.get("content-length")) || 0;
  if (!onBytes || !res.body) return new Uint8Array(await res.arrayBuffer());
  const chunks = [];
  let read = 0;
  for (const reader = res.body.getReader(); ;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    read += value.length;
    onBytes(read, total);
  }
  const bytes = new Uint8Array(read);
  let at = 0;
  for (const c of chunks) { bytes.set(c, at); at += c.length; }
  return bytes;
}

// "Downloading name: 120.3 of 491.4 MB", at most every 100 ms.
function downloadProgress(name) {
  let last = 0;
  return (read, total) => {
    const now = performance.now();
    if (now - last < 100 && read !== total) return;
    last = now;
    status(`Downloading ${name}: ${mb(read)}${total ? ` of ${mb(total)}` : ""}…`, "busy", true);
  };
}

async function readFiles(fileList) {
  const files = {};
  for (const f of fileList) files[f.name] = new Uint8Array(await f.arrayBuffer());
  return files;
}

function refreshButtons() {
  // nothing runs on a worker that panicked
  const busy = page.busy || Boolean(stopped);
  $("generate").disabled = busy || !page.model;
  $("model-load").disabled = busy;
  for (const id of ["adapter-load", "train-start"]) $(id).disabled = busy || !page.model;
  $("train-compare").disabled = busy || !page.adapter;
  $("train-stop").disabled = Boolean(stopped) || !(page.training?.running || page.comparison?.running);
}

async function withBusy(fn) {
  page.busy = true;
  refreshButtons();
  try { return await fn(); } finally { page.busy = false; refreshButtons(); }
}

async function loadModel(name, files) {
  await withBusy(async () => {
    const size = Object.values(files).reduce((n, b) => n + b.length, 0);
    status(`Loading ${name} (${mb(size)}) onto the GPU…`, "busy");
    const t0 = performance.now();
    let info;
    try {
      page.model = null;
      page.adapter = null;
      page.loading = { name, bytes: size };
      info = await call("load", { name, files, weights: WEIGHTS },
        { transfer: Object.values(files).map((b) => b.buffer) });
    } catch (e) {
      $("model-info").textContent = "No model loaded.";
      return fail(`Could not load ${name}`, e);
    } finally {
      page.loading = null;
    }
    page.model = info;
    $("model-info").textContent = `${info.name}: ${info.architecture}, ${info.layers} layers, ` +
      `${(info.parameters / 1e6).toFixed(1)}M parameters, vocabulary ${info.vocab_size} ` +
      `(${mb(size)}, loaded in ${((performance.now() - t0) / 1e3).toFixed(1)} s; ` +
      `weights ${info.weights}: ${mb(info.weight_bytes)} on the GPU)`;
    $("chat").disabled = !info.has_chat_template;
    if (!info.has_chat_template) $("chat").checked = false;
    $("adapter-info").textContent = "No adapter loaded.";
    $("adapter-share").hidden = true;
    $("train-info").textContent = "Ready to train on this model.";
    status("Model loaded. Load an adapter, or generate with the base model.", "model");
  });
  await applyLinked();
}

// The adapter file ⇄ the URL fragment's base64url text (RFC 4648 §5, no padding).
function toBase64Url(bytes) {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
}
function fromBase64Url(text) {
  if (!/^[A-Za-z0-9_-]+$/.test(text)) throw new Error("the link's adapter is not base64url text");
  const s = atob(text.replaceAll("-", "+").replaceAll("_", "/"));
  return Uint8Array.from(s, (c) => c.charCodeAt(0));
}
const LINK_KEY = "adapter=";
const LINK_NAME = "adapter from the link";

// The adapter file carried by the page's own link (applied after each model load), null when
// the link has none; throws when it is not base64url.
function adapterFromLink() {
  const hash = location.hash.slice(1);
  return hash.startsWith(LINK_KEY) ? fromBase64Url(hash.slice(LINK_KEY.length)) : null;
}

// Apply the link's adapter to the loaded model; once it is applied, later model loads keep
// to what the user picks.
async function applyLinked() {
  if (!page.model || !page.linked) return;
  await loadAdapter(LINK_NAME, page.linked.slice());
  if (page.adapter) page.linked = null;
}

// Offer the applied adapter as a link and as a file.
function offerAdapter(name, bytes) {
  const url = new URL(location.href);
  url.hash = LINK_KEY + toBase64Url(bytes);
  $("adapter-link").href = url.href;
  $("adapter-link").textContent = `link (${url.href.length} characters)`;
  const download = $("adapter-download");
  if (download.href.startsWith("blob:")) URL.revokeObjectURL(download.href);
  download.href = URL.createObjectURL(new Blob([bytes], { type: "application/octet-stream" }));
  download.download = name === LINK_NAME ? "adapter.safetensors" : name;
  $("adapter-share").hidden = false;
}

function showAdapter(a, how) {
  page.adapter = a;
  $("adapter-info").textContent = `${a.name}: ${a.method}, ${a.parameters} trainable ` +
    `parameters (${a.payload_bytes} bytes of values, file ${a.file_bytes} bytes), ` +
    `${a.tie_groups} tie group(s) over ${a.modules} modules, rank ${a.rank}; ${how}`;
}

async function loadAdapter(name, bytes) {
  if (!page.model) return fail("Adapter", new Error("load a model first"));
  const kept = bytes.slice(); // `bytes` moves to the worker
  await withBusy(async () => {
    status(`Applying ${name}: SVD of the target weights, then merging the update…`, "busy");
    try {
      page.adapter = null;
      $("adapter-share").hidden = true;
      const a = await call("loadAdapter", { name, bytes }, {
        transfer: [bytes.buffer],
        onProgress: ({ done, total }) =>
          status(`Applying ${name}: SVD of module ${done} of ${total}…`, "busy", done % 50 !== 0),
      });
      showAdapter(a, `applied in ${(a.attach_ms / 1e3).toFixed(1)} s`);
      offerAdapter(name, kept);
      status("Adapter applied. Generate to compare.", "adapter");
    } catch (e) {
      fail(`Could not apply ${name}`, e);
    }
  });
}

function statsLine(r) {
  return `${r.new_tokens} tokens (${r.finish}), first token after ${(r.first_token_ms / 1e3).toFixed(2)} s, ` +
    `${r.tokens_per_s.toFixed(2)} tokens/s overall, ${r.decode_tokens_per_s.toFixed(2)} tokens/s decoding`;
}

async function runOne(which, adapterOn) {
  const out = $(`out-${which}`);
  out.textContent = "";
  $(`stats-${which}`).textContent = "";
  if (page.adapter) await call("setAdapter", { on: adapterOn });
  const settings = { max_new_tokens: Number($("max-tokens").value) || 16, chat: $("chat").checked };
  const report = await call("generate", { prompt: $("prompt").value, settings },
    { onProgress: ({ piece }) => { out.textContent += piece; } });
  out.textContent = report.text;
  $(`stats-${which}`).textContent = statsLine(report);
  page.reports[which] = report;
}

async function generate() {
  await withBusy(async () => {
    page.reports = {};
    $("out-adapted").textContent = "";
    $("stats-adapted").textContent = "";
    try {
      status("Generating with the base model…", "busy");
      await runOne("base", false);
      if (page.adapter) {
        status("Generating with the adapter…", "busy");
        await runOne("adapted", true);
      } else {
        $("out-adapted").textContent = "(no adapter loaded)";
      }
      status("Done.", "done");
    } catch (e) {
      fail("Generation failed", e);
    }
  });
}

// ---- Training in the tab ----------------------------------------------------------------

function trainSettings() {
  const num = (id) => Number($(id).value);
  return {
    group_size: num("train-group"), steps: num("train-steps"), lr: num("train-lr"),
    eval_problems: num("train-eval"), prompts_per_step: num("train-prompts"),
    max_new_tokens: num("train-tokens"), u: num("train-u"), temperature: num("train-temperature"),
    warmup: num("train-warmup"), max_grad_norm: num("train-clip"), seed: num("train-seed"),
    extract: $("train-extract").value, instruction: $("train-instruction").value,
    answer_prefix: $("train-prefix").value,
  };
}

// The mean reward (and the share of right answers) of every step so far, on `total` steps.
function drawChart(steps, total) {
  const [w, h, pad] = [600, 150, 14];
  const x = (step) => pad + (w - 2 * pad) * (step / Math.max(total, 1));
  const y = (v) => h - pad - (h - 2 * pad) * Math.min(Math.max(v, 0), 1);
  const line = (cls, key) => `<polyline class="${cls}" points="${
    steps.map((m) => `${x(m.step).toFixed(1)},${y(m[key]).toFixed(1)}`).join(" ")}"/>`;
  $("train-chart").innerHTML =
    `<line x1="${pad}" x2="${w - pad}" y1="${y(0)}" y2="${y(0)}" stroke="#d9dde5"/>` +
    `<line x1="${pad}" x2="${w - pad}" y1="${y(1)}" y2="${y(1)}" stroke="#d9dde5"/>` +
    line("reward", "reward_mean") + line("accuracy", "accuracy") +
    `<text x="${pad + 4}" y="${pad + 10}">mean reward (solid) · right answers (dashed), step ` +
    `${steps.length ? steps[steps.length - 1].step : 0} of ${total}</text>`;
}

const percent = (x) => `${(100 * x).toFixed(1)}%`;
const EXTRACT = { strict: 0, flexible: 1, boxed: 2 };

// Held-out problems the adapter got right and the base model wrong (wins), and the reverse
// (losses): up to four of each, so the page shows what changed, not only what improved.
function showExamples(before, after) {
  const body = $("train-examples").querySelector("tbody");
  body.textContent = "";
  if (!before || !after) return;
  const pairs = before.records.map((b, i) => [b, after.records[i]]);
  const wins = pairs.filter(([b, a]) => !b.correct && a.correct).slice(0, 4);
  const losses = pairs.filter(([b, a]) => b.correct && !a.correct).slice(0, 4);
  const same = pairs.filter(([b, a]) => b.correct === a.correct).slice(0, Math.max(0, 4 - wins.length - losses.length));
  for (const [b, a] of [...wins, ...losses, ...same]) {
    const row = body.insertRow();
    row.insertCell().textContent = b.question;
    row.insertCell().textContent = b.gold;
    for (const r of [b, a]) {
      const cell = row.insertCell();
      cell.textContent = r.output.trim() || "(nothing)";
      cell.className = r.correct ? "right" : "wrong";
    }
  }
  $("train-examples").hidden = body.rows.length === 0;
}

function onTrainEvent(e) {
  const run = page.training;
  if (e.kind !== "eval") run.events.push(e.kind === "evaluated" ? { ...e, records: e.records.length } : e);
  if (e.kind === "svd") {
    status(`Training: SVD of module ${e.done} of ${e.total}…`, "busy", e.done % 50 !== 0);
  } else if (e.kind === "eval") {
    status(`Evaluating (${e.label}): ${e.done} of ${e.problems} held-out problems, ${e.tokens} tokens…`, "busy", true);
  } else if (e.kind === "evaluated") {
    run[e.label === "base model" ? "before" : "after"] = e;
    status(`${e.label}: ${percent(e.accuracy[EXTRACT[run.settings.extract]])} right on ${e.problems} held-out problems`, "busy");
  } else if (e.kind === "step") {
    const m = e.metrics;
    run.steps.push(m);
    drawChart(run.steps, e.steps);
    const line = `Step ${m.step} of ${e.steps}: mean reward ${m.reward_mean.toFixed(2)} ± ` +
      `${m.reward_std.toFixed(2)}, ${percent(m.accuracy)} right, ${(m.rollout_s + m.train_s).toFixed(1)} s`;
    $("train-info").textContent = line;
    status(line, "busy");
  }
}

// The problems: the picked file, else the URL's; with a name for messages.
async function trainingData() {
  const picked = $("train-data-file").files[0];
  if (picked) return { name: picked.name, data: new Uint8Array(await picked.arrayBuffer()) };
  const url = $("train-data-url").value.trim();
  return { name: baseName(url), data: await fetchBytes(url) };
}

// After a refused or failed request: show the adapter the worker holds (a run replaces the
// loaded adapter only once it begins), and offer it again.
async function resyncAdapter() {
  const a = await call("adapterInfo").catch(() => null);
  page.adapter = null;
  $("adapter-info").textContent = "No adapter loaded.";
  if (!a) return;
  showAdapter(a, "kept");
  const bytes = await call("adapterFile").catch(() => null);
  if (bytes) offerAdapter(a.name.endsWith(".safetensors") ? a.name : "adapter.safetensors", bytes);
}

// "base model 46.0% → with the adapter 69.8% on 63 problems" under the run's extraction mode.
function accuracyLine(settings, before, after) {
  const mode = EXTRACT[settings.extract];
  const acc = (r) => (r ? percent(r.accuracy[mode]) : "not evaluated");
  return `Held-out accuracy (${settings.extract}): base model ${acc(before)} → with the adapter ` +
    `${acc(after)}` + (before ? ` on ${before.problems} problems.` : ".");
}

// While busy, read the problems (hiding the last examples) and run `job(data)` for the request
// `run` (page.training or page.comparison) named `what`; on a failure, `recover()`, then a
// message naming the problems file.
async function withProblems(run, what, job, recover = async () => {}) {
  await withBusy(async () => {
    let source = "the problems";
    try {
      status("Reading the problems…", "busy");
      const { name, data } = await trainingData();
      source = name;
      $("train-examples").hidden = true;
      await job(data);
    } catch (e) {
      await recover();
      fail(`${what} on ${source} failed`, e);
    } finally {
      run.running = false;
    }
  });
}

async function train() {
  if (!page.model) return fail("Training", new Error("load a model first"));
  const settings = trainSettings();
  page.training = { settings, events: [], steps: [], running: true, report: null };
  await withProblems(page.training, "Training", async (data) => {
    drawChart([], settings.steps);
    status("Training: SVD of the target weights…", "busy");
    page.adapter = null;
    $("adapter-share").hidden = true;
    $("adapter-info").textContent = "Training an adapter…";
    const report = await call("train", { data, settings },
      { transfer: [data.buffer], onProgress: onTrainEvent });
    page.training.report = report;
    showAdapter(report.adapter, `trained here in ${report.steps} steps ` +
      `(${report.seconds_per_step.toFixed(1)} s a step)${report.interrupted ? ", stopped early" : ""}`);
    offerAdapter("adapter.safetensors", await call("adapterFile"));
    $("train-info").textContent = `${report.steps} steps, ${report.seconds_per_step.toFixed(1)} s each` +
      `${report.interrupted ? " (stopped early)" : ""}. ${accuracyLine(settings, report.before, report.after)}`;
    showExamples(report.before, report.after);
    status("Trained: the adapter is on. Generate to compare, or share it.", "trained");
  }, resyncAdapter);
}

// The loaded adapter, off and on, on the held-out problems the panel's settings choose.
async function compare() {
  const settings = trainSettings();
  page.comparison = { settings, events: [], running: true, report: null };
  await withProblems(page.comparison, "Comparison", async (data) => {
    status("Answering the held-out problems with the adapter off, then on…", "busy");
    const report = await call("evaluate", { data, settings }, {
      transfer: [data.buffer],
      onProgress: (e) => {
        if (e.kind === "evaluated") page.comparison.events.push({ ...e, records: e.records.length });
        if (e.kind === "eval") {
          status(`Evaluating (${e.label}): ${e.done} of ${e.problems} held-out problems…`, "busy", true);
        }
      },
    });
    page.comparison.report = report;
    $("train-info").textContent = accuracyLine(settings, report.before, report.after);
    showExamples(report.before, report.after);
    status("Compared: the adapter is on.", "compared");
  });
}

async function stopTraining() {
  $("train-stop").disabled = true;
  status(page.training?.running
    ? "Stopping after the current step, which may take a while on a slow GPU (Stop again during " +
      "the last evaluation skips it)…"
    : "Stopping after the current batch of problems…", "busy");
  await call("stop");
  setTimeout(refreshButtons, 0);
}

function dropZone(zoneId, onFiles) {
  const zone = $(zoneId);
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    if (e.dataTransfer.files.length) onFiles(e.dataTransfer.files);
  });
}

async function modelFromFiles(list) {
  const files = await readFiles(list);
  const names = Object.keys(files);
  const name = names.length === 1 ? names[0] : "model files";
  await loadModel(name, files);
}

async function adapterFromFiles(list) {
  const f = list[0];
  await loadAdapter(f.name, new Uint8Array(await f.arrayBuffer()));
}

async function main() {
  if (!navigator.gpu) {
    const b = $("no-webgpu");
    b.hidden = false;
    b.textContent = "This browser has no WebGPU, which tinylora needs to run the model on the GPU. " +
      "Use a recent Chrome or Edge (113+), Safari 26+, or Firefox with WebGPU enabled, and open " +
      "the page over http://localhost or https (WebGPU is off on plain http elsewhere).";
    status("WebGPU unavailable.", "error");
    return;
  }
  try {
    await call("hello");
  } catch (e) {
    return fail("Could not start the WebAssembly module", e);
  }
  $("model-files").addEventListener("change", (e) => modelFromFiles(e.target.files));
  $("adapter-file").addEventListener("change", (e) => adapterFromFiles(e.target.files));
  dropZone("model-drop", modelFromFiles);
  dropZone("adapter-drop", adapterFromFiles);
  $("model-load").addEventListener("click", async () => {
    const url = $("model-url").value.trim();
    try {
      status(`Downloading ${url}…`, "busy");
      const bytes = await fetchBytes(url, downloadProgress(baseName(url)));
      await loadModel(baseName(url), { [baseName(url)]: bytes });
    } catch (e) { fail("Could not fetch the model", e); }
  });
  $("adapter-load").addEventListener("click", async () => {
    const url = $("adapter-url").value.trim();
    try {
      await loadAdapter(baseName(url), await fetchBytes(url));
    } catch (e) { fail("Could not fetch the adapter", e); }
  });
  $("generate").addEventListener("click", generate);
  $("train-start").addEventListener("click", train);
  $("train-stop").addEventListener("click", stopTraining);
  $("train-compare").addEventListener("click", compare);
  refreshButtons();
  try {
    page.linked = adapterFromLink();
  } catch (e) {
    return fail("This link's adapter", e);
  }
  const announce = () => {
    if (page.linked) {
      $("adapter-info").textContent = `This link carries an adapter (${page.linked.length} bytes): ` +
        "it is applied once a model is loaded.";
    }
  };
  announce();
  // a link pasted into this tab's address bar changes only the fragment: no reload
  window.addEventListener("hashchange", async () => {
    try {
      page.linked = adapterFromLink();
    } catch (e) {
      return fail("This link's adapter", e);
    }
    if (page.busy) return announce(); // applied after the model that is loading
    if (page.model) await applyLinked();
    else announce();
  });
  status("Ready: load a model.", "ready");
}

main();
