//! One loaded model (and optionally one adapter) in the page, as JavaScript sees it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::AtomicBool;

use serde::{Deserialize, Serialize};
use tinylora_adapter::{AdaptedModel, AdapterFile, AdapterParts, Method, plan};
use tinylora_engine::{DeltaMode, FinishReason, GenerateOptions, SamplingParams, Transformer};
use tinylora_formats::{ModelFile, TextStream, WeightFormat, error_chain};
use wasm_bindgen::prelude::*;

use crate::device::webgpu_device;

/// The most bytes of model files a session loads: wasm32's 4 GiB address space holds the file
/// (kept for the embedding and the adapter's SVDs) beside the rest of the module's memory.
pub const MAX_MODEL_FILE_BYTES: u64 = 3 << 30;

/// Refuse model files of `total` bytes that cannot fit in the module's memory.
fn check_model_bytes(name: &str, total: u64) -> Result<(), String> {
    if total <= MAX_MODEL_FILE_BYTES {
        return Ok(());
    }
    Err(format!(
        "{name}: the model's files are {:.2} GB; a browser tab's WebAssembly memory holds at most \
         4 GiB and keeps the file, so at most {:.2} GB fit: pick a smaller model or a more \
         quantized file (e.g. Q4_K_M)",
        total as f64 / 1e9,
        MAX_MODEL_FILE_BYTES as f64 / 1e9
    ))
}

/// A model on the browser's GPU with an optional adapter that can be switched on (merged into
/// the weights) and off (unmerged) without reloading anything.
#[wasm_bindgen]
pub struct Session {
    pub(crate) state: Rc<RefCell<State>>,
    /// Set to stop a training run (read between its steps and evaluation batches).
    pub(crate) stop: Rc<AtomicBool>,
}

pub(crate) struct State {
    pub(crate) file: ModelFile,
    pub(crate) model: AdaptedModel,
    pub(crate) adapter: Option<AdapterInfo>,
    /// The adapter as a file (values, configuration, base model fingerprint).
    pub(crate) adapter_file: Option<AdapterFile>,
    /// How the weight matrices are kept.
    pub(crate) weights: WeightFormat,
}

impl State {
    /// Whether an adapter is attached and on: merged into the weights, or beside weights kept
    /// in blocks (the page's "on").
    fn adapter_on(&self) -> bool {
        self.model.adapter().is_some() && self.model.mode() == DeltaMode::Merged
    }
}

/// A progress callback with the modules done and in all.
pub(crate) type OnModule = Box<dyn FnMut(u32, u32)>;

thread_local! {
    /// The progress callback of the adapter being prepared, with the modules done and in all.
    /// A thread-local because the SVD loop takes a `Sync` callback and a JavaScript function
    /// is not `Sync`; wasm32 in a browser runs it all on this thread.
    static PROGRESS: RefCell<Option<(OnModule, u32, u32)>> = const { RefCell::new(None) };
}

/// Reports SVD progress while it lives.
pub(crate) struct ModuleProgress;

impl ModuleProgress {
    pub(crate) fn new(on_module: Option<OnModule>, total: usize) -> Self {
        PROGRESS.with(|p| *p.borrow_mut() = on_module.map(|f| (f, 0, total as u32)));
        ModuleProgress
    }

    /// One more module done: `on_module(done, total)`.
    pub(crate) fn tick(&self) {
        PROGRESS.with(|p| {
            if let Some((f, done, total)) = &mut *p.borrow_mut() {
                *done += 1;
                f(*done, *total);
            }
        });
    }
}

impl Drop for ModuleProgress {
    fn drop(&mut self) {
        PROGRESS.with(|p| *p.borrow_mut() = None);
    }
}

/// `error` with its whole chain of causes, for JavaScript.
pub(crate) fn js_error(error: &dyn std::error::Error) -> JsError {
    JsError::new(&error_chain(error))
}

/// What the page shows about a loaded model.
#[derive(Serialize)]
struct ModelInfo {
    name: String,
    architecture: &'static str,
    layers: usize,
    parameters: usize,
    vocab_size: usize,
    has_chat_template: bool,
    fingerprint: String,
    /// The `--weights` choice the matrices are kept by.
    weights: String,
    /// Bytes of the weight matrices on the GPU.
    weight_bytes: usize,
}

/// What the page shows about a loaded adapter.
#[derive(Serialize, Clone)]
pub(crate) struct AdapterInfo {
    pub(crate) name: String,
    pub(crate) method: String,
    pub(crate) rank: usize,
    /// Trainable parameters.
    pub(crate) parameters: usize,
    /// Bytes of the trainable values (the adapter's payload).
    pub(crate) payload_bytes: usize,
    /// Size of the adapter file.
    pub(crate) file_bytes: usize,
    pub(crate) tie_groups: usize,
    pub(crate) modules: usize,
    /// Time to factorise the target weights and merge the update (or to train it).
    pub(crate) attach_ms: f64,
}

/// Generation settings from JavaScript (every field optional).
#[derive(Deserialize, Debug, Clone)]
#[serde(default, deny_unknown_fields)]
pub struct GenerateSettings {
    /// Most new tokens.
    pub max_new_tokens: usize,
    /// Wrap the prompt in the model's chat template as a user turn.
    pub chat: bool,
    /// System message for `chat`.
    pub system: Option<String>,
    /// 0 is greedy.
    pub temperature: f32,
    /// 0: off.
    pub top_k: usize,
    /// 1: off.
    pub top_p: f32,
    /// Seed of the sampler.
    pub seed: u64,
}

impl Default for GenerateSettings {
    fn default() -> Self {
        Self {
            max_new_tokens: 64,
            chat: false,
            system: None,
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
        }
    }
}

/// What one generation produced and how fast.
#[derive(Serialize)]
struct GenerateReport {
    text: String,
    prompt_tokens: usize,
    output_ids: Vec<u32>,
    new_tokens: usize,
    finish: &'static str,
    adapter: bool,
    first_token_ms: f64,
    total_ms: f64,
    /// New tokens over the whole call (prefill included), as `tinylora generate` reports.
    tokens_per_s: f64,
    /// Tokens after the first over the time after the first: the decode speed.
    decode_tokens_per_s: f64,
}

pub(crate) fn now_ms() -> f64 {
    js_sys::Date::now()
}

pub(crate) fn to_js<T: Serialize>(value: &T) -> Result<JsValue, JsError> {
    let json = serde_json::to_string(value).map_err(|e| JsError::new(&e.to_string()))?;
    js_sys::JSON::parse(&json).map_err(|_| JsError::new("internal error: report is not JSON"))
}

pub(crate) fn busy() -> JsError {
    JsError::new(
        "the model is busy with another request (a generation, a training run or a comparison): \
         wait for it to finish",
    )
}

#[wasm_bindgen]
impl Session {
    /// Load a model from its files: `files` maps file names to `Uint8Array`s, either one
    /// `*.gguf` file or a Hugging Face set (`config.json`, `tokenizer.json`, optional
    /// `tokenizer_config.json`, `model.safetensors`). `name` labels it in messages. `weights`
    /// is the CLI's `--weights` (`auto` when absent: the file's blocks are kept and multiplied
    /// as they are, a fifth of f32's memory for a Q4 file).
    pub async fn load(
        name: String,
        files: js_sys::Object,
        weights: Option<String>,
    ) -> Result<Session, JsError> {
        let weights: WeightFormat = match weights {
            Some(w) => w
                .parse()
                .map_err(|e: String| JsError::new(&format!("{name}: {e}")))?,
            None => WeightFormat::Auto,
        };
        let device = webgpu_device().await.map_err(|e| js_error(&e))?;
        let mut arrays = Vec::new();
        for entry in js_sys::Object::entries(&files).iter() {
            let pair: js_sys::Array = entry.into();
            let key = pair.get(0).as_string().unwrap_or_default();
            let value = pair.get(1);
            if !value.is_instance_of::<js_sys::Uint8Array>() {
                return Err(JsError::new(&format!("{name}: file {key} is not a Uint8Array")));
            }
            arrays.push((key, js_sys::Uint8Array::from(value)));
        }
        // the files are copied into the module's memory and kept there: refuse what cannot
        // fit before copying anything
        let total = arrays.iter().map(|(_, a)| u64::from(a.length())).sum();
        check_model_bytes(&name, total).map_err(|e| JsError::new(&e))?;
        let mut bytes: HashMap<String, Vec<u8>> = arrays.into_iter().map(|(k, a)| (k, a.to_vec())).collect();
        let gguf = bytes.keys().find(|k| k.ends_with(".gguf")).cloned();
        let file = match gguf {
            Some(key) if bytes.len() == 1 => {
                ModelFile::from_gguf_bytes(&key, bytes.remove(&key).unwrap_or_default())
            }
            Some(_) => {
                return Err(JsError::new(&format!(
                    "{name}: give either one .gguf file or a Hugging Face model's files, not both"
                )));
            }
            None => ModelFile::from_hf_bytes(&name, bytes),
        }
        .map_err(|e| js_error(&e))?;
        let model =
            AdaptedModel::new(Transformer::load_with(&file, &device, weights).map_err(|e| js_error(&e))?);
        Ok(Session {
            state: Rc::new(RefCell::new(State {
                file,
                model,
                adapter: None,
                adapter_file: None,
                weights,
            })),
            stop: Rc::new(AtomicBool::new(false)),
        })
    }

    /// The model: name, architecture, layers, parameters, vocabulary, fingerprint.
    pub fn model_info(&self) -> Result<JsValue, JsError> {
        let state = self.state.try_borrow().map_err(|_| busy())?;
        let (file, c) = (&state.file, &state.file.config);
        to_js(&ModelInfo {
            name: file.path().display().to_string(),
            architecture: c.architecture.name(),
            layers: c.num_hidden_layers,
            parameters: c.parameter_count(),
            vocab_size: c.vocab_size,
            has_chat_template: file.chat_template.is_some(),
            fingerprint: file.fingerprint(),
            weights: state.weights.name().into(),
            weight_bytes: state.model.weight_bytes().0,
        })
    }

    /// Apply an adapter file made for this model by `tinylora train` (replacing any loaded
    /// one): the frozen factors are recomputed from the weights (SVD), then the update is
    /// merged into f32 weights (or, on weights kept in blocks, applied beside them), so the
    /// adapter is on. `on_module(done, total)`, when given, is called after each module's SVD.
    /// Returns its description.
    pub fn load_adapter(
        &self,
        name: String,
        bytes: Vec<u8>,
        on_module: Option<js_sys::Function>,
    ) -> Result<JsValue, JsError> {
        let mut state = self.state.try_borrow_mut().map_err(|_| busy())?;
        let start = now_ms();
        let path = Path::new(&name);
        let adapter = AdapterFile::parse(path, &bytes).map_err(|e| js_error(&e))?;
        adapter
            .check_base(path, &state.file.fingerprint())
            .map_err(|e| js_error(&e))?;
        let State { file, model, .. } = &mut *state;
        let p = plan(&file.config, &adapter.config);
        let on_module = on_module.map(|f| -> OnModule {
            // its exceptions are ignored: progress is advisory
            Box::new(move |done, total| {
                let _ = f.call2(&JsValue::NULL, &done.into(), &total.into());
            })
        });
        let progress = ModuleProgress::new(on_module, p.modules);
        AdapterParts::build(file, &adapter.config, &adapter.values, &|| progress.tick())
            .and_then(|parts| model.attach(parts))
            .and_then(|()| model.set_mode(DeltaMode::Merged))
            .map_err(|e| JsError::new(&format!("{name}: {}", error_chain(&e))))?;
        drop(progress);
        let info = AdapterInfo {
            name,
            method: match adapter.config.method {
                Method::Tinylora => "TinyLoRA",
                Method::LoraXs => "LoRA-XS",
                Method::Lora => "LoRA",
            }
            .into(),
            rank: adapter.config.rank,
            parameters: p.params,
            payload_bytes: p.bytes,
            file_bytes: bytes.len(),
            tie_groups: p.groups,
            modules: p.modules,
            attach_ms: now_ms() - start,
        };
        state.adapter = Some(info.clone());
        state.adapter_file = Some(adapter);
        to_js(&info)
    }

    /// Switch the loaded adapter on (merge its update into the weights) or off (unmerge it).
    pub fn set_adapter(&self, on: bool) -> Result<(), JsError> {
        let mut state = self.state.try_borrow_mut().map_err(|_| busy())?;
        if state.adapter.is_none() {
            return Err(JsError::new("no adapter is loaded"));
        }
        state
            .model
            .set_mode(if on { DeltaMode::Merged } else { DeltaMode::Off })
            .map_err(|e| js_error(&e))
    }

    /// The loaded adapter's description (as `load_adapter` returned it), or `null`.
    pub fn adapter_info(&self) -> Result<JsValue, JsError> {
        let state = self.state.try_borrow().map_err(|_| busy())?;
        match &state.adapter {
            Some(info) => to_js(info),
            None => Ok(JsValue::NULL),
        }
    }

    /// Whether an adapter is loaded and on.
    pub fn adapter_on(&self) -> bool {
        self.state.try_borrow().is_ok_and(|s| s.adapter_on())
    }

    /// Generate from `prompt` with `settings` (see [`GenerateSettings`]); `on_token(text, id)`
    /// is called for every new token with the text it completed. Resolves to a report: the
    /// text, ids, time to first token, tokens/s.
    // The shared borrow is held across the awaits on purpose: while it lives, a call that
    // would change the weights (load_adapter, set_adapter) is refused as busy instead of
    // mutating the model mid-generation.
    #[allow(clippy::await_holding_refcell_ref)]
    pub fn generate(
        &self,
        prompt: String,
        settings: JsValue,
        on_token: js_sys::Function,
    ) -> Result<js_sys::Promise, JsError> {
        let settings: GenerateSettings = if settings.is_undefined() || settings.is_null() {
            GenerateSettings::default()
        } else {
            let json = js_sys::JSON::stringify(&settings)
                .map_err(|_| JsError::new("settings must be a plain object"))?;
            serde_json::from_str(&String::from(json))
                .map_err(|e| JsError::new(&format!("bad generation settings: {e}")))?
        };
        let state = self.state.clone();
        Ok(wasm_bindgen_futures::future_to_promise(async move {
            let state = state.try_borrow().map_err(|_| JsValue::from(busy()))?;
            generate(&state, &prompt, &settings, &on_token)
                .await
                .map_err(JsValue::from)
        }))
    }
}

async fn generate(
    state: &State,
    prompt: &str,
    s: &GenerateSettings,
    on_token: &js_sys::Function,
) -> Result<JsValue, JsError> {
    let file = &state.file;
    let tok = &file.tokenizer;
    let text = if s.chat {
        let template = file.chat_template.as_ref().ok_or_else(|| {
            JsError::new(&format!(
                "{} has no chat template: untick “chat”",
                file.path().display()
            ))
        })?;
        template
            .user_turn(s.system.as_deref(), prompt)
            .map_err(|e| js_error(&e))?
    } else {
        prompt.to_string()
    };
    let prompt_ids = tok.encode(&text).map_err(|e| js_error(&e))?;
    if prompt_ids.is_empty() {
        return Err(JsError::new("the prompt encodes to no tokens"));
    }
    let opts = GenerateOptions {
        max_new_tokens: s.max_new_tokens,
        sampling: SamplingParams {
            temperature: s.temperature,
            top_k: s.top_k,
            top_p: s.top_p,
            seed: s.seed,
            first_stream: 0,
        },
        stop_ids: tok.stop_ids.clone(),
    };
    let start = now_ms();
    let mut first_token = None;
    let mut stream = TextStream::new();
    let gens = state
        .model
        .generate_async(std::slice::from_ref(&prompt_ids), &opts, |_, id| {
            first_token.get_or_insert_with(|| now_ms() - start);
            let piece = stream.push(tok, id);
            let _ = on_token.call2(&JsValue::NULL, &piece.into(), &id.into());
        })
        .await
        .map_err(|e| js_error(&e))?;
    let total_ms = now_ms() - start;
    let g = &gens[0];
    let n = g.output_ids.len();
    let first_token_ms = first_token.unwrap_or(total_ms);
    to_js(&GenerateReport {
        text: tok.decode(&g.output_ids).map_err(|e| js_error(&e))?,
        prompt_tokens: prompt_ids.len(),
        output_ids: g.output_ids.clone(),
        new_tokens: n,
        finish: match g.finish {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        },
        adapter: state.adapter_on(),
        first_token_ms,
        total_ms,
        tokens_per_s: n as f64 / (total_ms / 1e3),
        decode_tokens_per_s: n.saturating_sub(1) as f64 / ((total_ms - first_token_ms) / 1e3),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

    #[wasm_bindgen_test::wasm_bindgen_test]
    fn model_files_past_the_module_memory_are_refused_by_name() {
        assert!(check_model_bytes("m.gguf", 491_400_064).is_ok());
        assert!(check_model_bytes("m.gguf", MAX_MODEL_FILE_BYTES).is_ok());
        let e = check_model_bytes("Qwen2.5-7B.gguf", 15_200_000_000).unwrap_err();
        assert!(
            e.starts_with("Qwen2.5-7B.gguf: the model's files are 15.20 GB"),
            "{e}"
        );
        assert!(e.contains("at most 3.22 GB fit"), "{e}");
    }
}
