//! tinylora in the browser. The same engine, adapter code and WGSL kernels as the native
//! build, compiled to wasm32 and driven from JavaScript through [`Session`]:
//!
//! ```js
//! const s = await Session.load("model.gguf", { "model.gguf": bytes });
//! s.load_adapter("adapter.safetensors", adapterBytes); // SVD + merge: adapter on
//! const stats = await s.generate("What is 7 + 5?", { max_new_tokens: 16 }, (text, id) => ...);
//! s.set_adapter(false);                                // unmerge: the base model again
//! ```
//!
//! Every error reaches JavaScript as an `Error` whose message names the file and the problem.

mod device;
mod session;

pub use device::webgpu_device;
pub use session::{GenerateSettings, Session};

use wasm_bindgen::prelude::*;

/// Route Rust panics to the browser console with their message.
#[wasm_bindgen(start)]
pub fn start() {
    console_error_panic_hook::set_once();
}
