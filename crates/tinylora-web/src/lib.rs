//! tinylora in the browser. The same engine, adapter code and WGSL kernels as the native
//! build, compiled to wasm32 and driven from JavaScript through [`Session`]:
//!
//! ```js
//! const s = await Session.load("model.gguf", { "model.gguf": bytes });
//! s.load_adapter("adapter.safetensors", adapterBytes); // SVD + merge: adapter on
//! const stats = await s.generate("What is 7 + 5?", { max_new_tokens: 16 }, (text, id) => ...);
//! s.set_adapter(false);                                // unmerge: the base model again
//! const run = await s.train(problemsJsonl, { steps: 12 }, (event) => ...); // GRPO in the tab
//! const file = s.adapter_file();                       // the trained adapter, for the CLI
//! ```
//!
//! Every error reaches JavaScript as an `Error` whose message names the file and the problem.

mod device;
mod session;
mod training;

pub use device::webgpu_device;
pub use session::{GenerateSettings, Session};
pub use training::TrainSettings;

use wasm_bindgen::prelude::*;

/// Route Rust panics to the browser console with their message and, in a Web Worker, to the
/// page as `{panic: message}`: a panic stops the module for good (wgpu's uncaptured errors,
/// an out-of-memory GPU among them, panic inside an event callback that no request awaits),
/// so the page has to hear why.
#[wasm_bindgen(start)]
pub fn start() {
    std::panic::set_hook(Box::new(|info| {
        console_error_panic_hook::hook(info);
        post_panic(&info.to_string());
    }));
}

/// Post `{panic: message}` from a dedicated worker to its page; nothing elsewhere (a window's
/// `postMessage` sends to itself and takes a target origin).
fn post_panic(message: &str) {
    use js_sys::{Function, Object, Reflect};
    let global: JsValue = js_sys::global().into();
    if Reflect::has(&global, &"document".into()).unwrap_or(true) {
        return;
    }
    let Some(post) = Reflect::get(&global, &"postMessage".into())
        .ok()
        .and_then(|f| f.dyn_into::<Function>().ok())
    else {
        return;
    };
    let report = Object::new();
    if Reflect::set(&report, &"panic".into(), &message.into()).is_ok() {
        let _ = post.call1(&global, &report);
    }
}

/// Panic with `message`. The worker raises it from its event loop as wgpu raises uncaptured
/// errors, so that the browser test can check what the page says then (SwiftShader's memory is
/// the host's: a real GPU out-of-memory cannot be provoked there).
#[wasm_bindgen]
pub fn panic_with(message: String) {
    panic!("{message}");
}
