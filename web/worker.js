// The session's own thread: a module Web Worker that owns the WebAssembly module, the WebGPU
// device, the model and the adapter, so that loading, an adapter's SVDs and generation never
// block the page, which only renders and sends requests.
//
// Protocol (structured-clone messages):
//   page → worker  {id, op, args}         op: hello | load | loadAdapter | setAdapter | generate
//                                         | train | evaluate | adapterFile | adapterInfo | stop
//                                         | panic
//   worker → page  {id, ok: true, result} or {id, ok: false, error}: the answer to request id
//                  {id, progress: {...}}  while request id runs: {done, total} of an adapter's
//                                         modules; {piece, token} of a generation; a training
//                                         run's events ({kind: "svd" | "eval" | "evaluated" |
//                                         "step", ...}, see Session.train)
//   worker → page  {panic: message}       the module panicked and cannot run again (the Rust
//                                         panic hook posts it; see tinylora-web's lib.rs)
// Requests run one at a time, in the order they arrive; `stop` alone is answered at once (it
// asks the training run in progress to stop after its step).
import init, { Session, panic_with } from "./pkg/tinylora_web.js";

let session = null;
let queue = Promise.resolve();
const started = init();

function current() {
  if (!session) throw new Error("load a model first");
  return session;
}

const ops = {
  async hello() {
    await started;
    return { webgpu: Boolean(navigator.gpu) };
  },
  async load({ name, files, weights }) {
    await started;
    if (session) session.free();
    session = null;
    session = await Session.load(name, files, weights);
    return session.model_info();
  },
  loadAdapter({ name, bytes }, progress) {
    return current().load_adapter(name, bytes, (done, total) => progress({ done, total }));
  },
  setAdapter({ on }) {
    current().set_adapter(on);
    return null;
  },
  generate({ prompt, settings }, progress) {
    return current().generate(prompt, settings, (piece, token) => progress({ piece, token }));
  },
  train({ data, settings }, progress) {
    return current().train(data, settings, progress);
  },
  evaluate({ data, settings }, progress) {
    return current().evaluate(data, settings, progress);
  },
  adapterFile() {
    return current().adapter_file() ?? null;
  },
  adapterInfo() {
    return current().adapter_info();
  },
  // A panic raised from the worker's event loop, as wgpu raises its uncaptured errors (a GPU
  // out of memory among them): the browser test checks what the page then says with it.
  async panic({ message }) {
    await started;
    setTimeout(() => panic_with(String(message)));
    return null;
  },
};

async function handle({ id, op, args }) {
  const progress = (p) => postMessage({ id, progress: p });
  try {
    if (!(op in ops)) throw new Error(`unknown request ${op}`);
    postMessage({ id, ok: true, result: await ops[op](args ?? {}, progress) });
  } catch (err) {
    postMessage({ id, ok: false, error: err && err.message ? err.message : String(err) });
  }
}

self.onmessage = (e) => {
  if (e.data.op === "stop") {
    session?.stop_training();
    postMessage({ id: e.data.id, ok: true, result: null });
    return;
  }
  queue = queue.then(() => handle(e.data));
};
