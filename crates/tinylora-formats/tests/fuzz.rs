//! Property ("fuzz") tests of the GGUF and safetensors (Hugging Face directory) loaders on
//! hostile input: random byte edits, 8-byte writes of boundary values (0, 2^31, 2^64 − 16, ...),
//! insertions, deletions and truncations of a small valid file, and random values for the
//! configuration's sizes. Opening must succeed or return an error, never panic; every tensor
//! of a file that opens must then read or fail cleanly.
//!
//! Allocation bound: the loaders refuse any tensor, string, array or count that the rest of
//! the file cannot hold, and any configuration size beyond sane bounds or not backed by the
//! file's tensors, so memory follows the bytes actually present, whatever a header claims.
//! A counting global allocator checks it: the peak of live bytes allocated on the test's
//! thread while opening and reading one input stays below `ALLOC_FACTOR` (64) times the
//! input's size plus `ALLOC_SLACK` (8 MiB). A parsed metadata value takes at most 32 bytes per
//! byte of file, a tensor read as f32 at most ~7 bytes per stored byte (Q4_0), the tokenizer a
//! few copies of its vocabulary; the slack covers fixed costs such as compiled regexes.
//!
//! CI runs proptest's default of 256 cases per property (a few seconds in release). A long
//! run, e.g. overnight:
//!
//! ```text
//! PROPTEST_CASES=1000000 cargo test --release -p tinylora-formats --test fuzz
//! ```

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::HashMap;

use common::*;
use proptest::collection::vec;
use proptest::prelude::*;
use serde_json::{Value, json};
use tinylora_formats::{ModelFile, Result, hf_tensor_names};

/// Bytes of memory allowed per byte of input.
const ALLOC_FACTOR: usize = 64;
/// Bytes of memory allowed whatever the input.
const ALLOC_SLACK: usize = 8 << 20;

thread_local! {
    /// Live bytes allocated on this thread since the last reset (frees of older blocks make
    /// it negative), and its peak.
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

struct Counting;

impl Counting {
    fn add(delta: isize) {
        // `try_with`: the thread's locals may be gone while it exits
        let _ = LIVE.try_with(|live| {
            live.set(live.get() + delta);
            let _ = PEAK.try_with(|peak| peak.set(peak.get().max(live.get())));
        });
    }
}

// SAFETY: every call is forwarded to the system allocator unchanged; only sizes are counted.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::add(layout.size() as isize);
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Self::add(layout.size() as isize);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        Self::add(-(layout.size() as isize));
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        Self::add(new_size as isize - layout.size() as isize);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Run `open` on an input of `input_len` bytes and read whatever opens; check the allocation
/// bound.
fn open_and_read(input_len: usize, open: impl FnOnce() -> Result<ModelFile>) {
    LIVE.with(|l| l.set(0));
    PEAK.with(|p| p.set(0));
    if let Ok(m) = open() {
        let _ = m.fingerprint();
        let _ = m.dtype_summary();
        for name in hf_tensor_names(&m.config) {
            let _ = m.load_any(&name);
        }
        let _ = m.tokenizer.encode("abc a");
    }
    let peak = PEAK.with(Cell::get).max(0) as usize;
    let bound = ALLOC_FACTOR * input_len + ALLOC_SLACK;
    assert!(
        peak <= bound,
        "{peak} bytes allocated for an input of {input_len} bytes (bound {bound})"
    );
}

/// One edit of a file's bytes; positions are reduced modulo the file (or header) length.
#[derive(Debug, Clone)]
enum Edit {
    Byte(usize, u8),
    Word(usize, u64),
    Insert(usize, Vec<u8>),
    Remove(usize, usize),
    Truncate(usize),
}

fn boundary_u64() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(1),
        Just(u32::MAX as u64),
        Just(1 << 31),
        Just(1 << 32),
        Just(1 << 40),
        Just(1 << 62),
        Just(1 << 63),
        Just(u64::MAX - 15),
        Just(u64::MAX),
        0u64..4096,
        any::<u64>(),
    ]
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        4 => (any::<usize>(), any::<u8>()).prop_map(|(p, b)| Edit::Byte(p, b)),
        4 => (any::<usize>(), boundary_u64()).prop_map(|(p, v)| Edit::Word(p, v)),
        1 => (any::<usize>(), vec(any::<u8>(), 1..16)).prop_map(|(p, b)| Edit::Insert(p, b)),
        1 => (any::<usize>(), 1usize..64).prop_map(|(p, n)| Edit::Remove(p, n)),
        1 => any::<usize>().prop_map(Edit::Truncate),
    ]
}

/// Apply `edits` to `bytes`; half the positions fall in the first `focus` bytes (the header).
fn apply(mut bytes: Vec<u8>, edits: &[Edit], focus: usize) -> Vec<u8> {
    let at = |p: usize, len: usize| {
        let span = if p & 1 == 0 { focus.min(len) } else { len };
        (p >> 1) % span.max(1)
    };
    for e in edits {
        let len = bytes.len();
        match e {
            Edit::Byte(p, b) if len > 0 => bytes[at(*p, len)] = *b,
            Edit::Word(p, v) if len > 0 => {
                let i = at(*p, len);
                let end = (i + 8).min(len);
                bytes[i..end].copy_from_slice(&v.to_le_bytes()[..end - i]);
            }
            Edit::Insert(p, b) => {
                let i = at(*p, len + 1);
                bytes.splice(i..i, b.iter().copied());
            }
            Edit::Remove(p, n) if len > 0 => {
                let i = at(*p, len);
                bytes.drain(i..(i + n).min(len));
            }
            Edit::Truncate(p) => bytes.truncate(at(*p, len + 1)),
            _ => {}
        }
    }
    bytes
}

/// Where the safetensors header ends (8 + its stated length, within the file).
fn safetensors_header_len(bytes: &[u8]) -> usize {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    (8 + n).min(bytes.len())
}

/// What to do to one field of a configuration: keep it, set it, or remove it.
#[derive(Debug, Clone)]
enum Change<T> {
    Keep,
    Set(T),
    Remove,
}

/// Mostly keep a field (so that other fields' values reach the deeper checks), else set it to
/// `value` or remove it.
fn change<T: std::fmt::Debug + Clone>(value: impl Strategy<Value = T>) -> impl Strategy<Value = Change<T>> {
    prop_oneof![
        6 => Just(Change::Keep),
        3 => value.prop_map(Change::Set),
        1 => Just(Change::Remove),
    ]
}

/// A JSON value for a configuration size: a power of two (often consistent), small, huge,
/// negative, fractional, a string or null.
fn json_size() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => (0u32..7).prop_map(|e| json!(1 << e)),
        2 => (0u64..80).prop_map(|v| json!(v)),
        2 => boundary_u64().prop_map(|v| json!(v)),
        1 => any::<i64>().prop_map(|v| json!(v)),
        1 => any::<f64>().prop_map(|v| json!(v)),
        1 => Just(json!("32")),
        1 => Just(Value::Null),
    ]
}

/// A GGUF metadata value for a size: a power of two (often consistent), small, huge,
/// negative, a float or a string.
fn gguf_size() -> impl Strategy<Value = Meta> {
    prop_oneof![
        3 => (0u32..7).prop_map(|e| Meta::U32(1 << e)),
        2 => (0u32..80).prop_map(Meta::U32),
        2 => boundary_u64().prop_map(Meta::U64),
        1 => any::<i32>().prop_map(Meta::I32),
        1 => any::<f32>().prop_map(Meta::F32),
        1 => Just(Meta::Str("32".into())),
    ]
}

const GGUF_SIZE_KEYS: [&str; 7] = [
    "llama.embedding_length",
    "llama.feed_forward_length",
    "llama.block_count",
    "llama.attention.head_count",
    "llama.attention.head_count_kv",
    "llama.attention.key_length",
    "llama.vocab_size",
];

const HF_SIZE_KEYS: [&str; 7] = [
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "vocab_size",
];

#[test]
fn the_unedited_files_open_within_the_bound() {
    let (gguf, _) = gguf_bytes(&tiny_gguf_meta(), &tiny_gguf_tensors());
    let len = gguf.len();
    open_and_read(len, || Ok(ModelFile::from_gguf_bytes("tiny.gguf", gguf).unwrap()));
    let files = hf_files();
    let len = files.values().map(Vec::len).sum();
    open_and_read(len, || Ok(ModelFile::from_hf_bytes("tiny", files).unwrap()));
}

proptest! {
    // cases: proptest's default (256) or PROPTEST_CASES; no regression files in the source tree
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn edited_gguf_files_open_or_fail_cleanly(edits in vec(edit(), 1..8)) {
        let (gguf, data_start) = gguf_bytes(&tiny_gguf_meta(), &tiny_gguf_tensors());
        let bytes = apply(gguf, &edits, data_start);
        open_and_read(bytes.len(), || ModelFile::from_gguf_bytes("fuzz.gguf", bytes));
    }

    #[test]
    fn edited_hf_directories_open_or_fail_cleanly(
        which in prop_oneof![3 => Just("model.safetensors"), 2 => Just("config.json"), 1 => Just("tokenizer.json")],
        edits in vec(edit(), 1..8),
    ) {
        let mut files = hf_files();
        let file = files.remove(which).unwrap();
        let focus = if which == "model.safetensors" { safetensors_header_len(&file) } else { file.len() };
        files.insert(which.to_string(), apply(file, &edits, focus));
        let len = files.values().map(Vec::len).sum();
        open_and_read(len, || ModelFile::from_hf_bytes("fuzz", files));
    }

    #[test]
    fn any_gguf_sizes_open_or_fail_cleanly(changes in vec(change(gguf_size()), 7)) {
        let mut meta = tiny_gguf_meta();
        for (k, c) in GGUF_SIZE_KEYS.iter().zip(changes) {
            let at = meta.iter().position(|(key, _)| key == k);
            match (c, at) {
                (Change::Keep, _) | (Change::Remove, None) => {}
                (Change::Set(v), Some(i)) => meta[i].1 = v,
                (Change::Set(v), None) => meta.push((k.to_string(), v)),
                (Change::Remove, Some(i)) => {
                    meta.remove(i);
                }
            }
        }
        let (bytes, _) = gguf_bytes(&meta, &tiny_gguf_tensors());
        open_and_read(bytes.len(), || ModelFile::from_gguf_bytes("sizes.gguf", bytes));
    }

    #[test]
    fn any_config_json_sizes_open_or_fail_cleanly(changes in vec(change(json_size()), 7)) {
        let mut config = hf_config();
        let fields = config.as_object_mut().unwrap();
        for (k, c) in HF_SIZE_KEYS.iter().zip(changes) {
            match c {
                Change::Keep => None,
                Change::Set(v) => fields.insert(k.to_string(), v),
                Change::Remove => fields.remove(*k),
            };
        }
        let files: HashMap<String, Vec<u8>> = hf_files_with(&config);
        let len = files.values().map(Vec::len).sum();
        open_and_read(len, || ModelFile::from_hf_bytes("sizes", files));
    }
}
