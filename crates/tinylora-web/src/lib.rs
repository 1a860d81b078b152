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

/// Route Rust panics to the browser console with their message.
#[wasm_bindgen(start)]
pub fn start() {
    console_error_panic_hook::set_once();
}
