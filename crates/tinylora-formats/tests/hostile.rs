//! Hostile or odd model files: each malformed header is refused with an error that names the
//! file and the problem; none panics, none makes the loader allocate more than the file holds.

mod common;

use std::path::Path;

use common::*;
use serde_json::{Value, json};
use tinylora_formats::{GgufFile, ModelFile, hf_tensor_names};

const GGUF: &str = "hostile.gguf";

fn gguf_err(bytes: Vec<u8>) -> String {
    ModelFile::from_gguf_bytes(GGUF, bytes)
        .expect_err("expected an error")
        .to_string()
}

fn hf_err(config: Value) -> String {
    ModelFile::from_hf_bytes("tiny", hf_files_with(&config))
        .expect_err("expected an error")
        .to_string()
}

/// The tiny config with `key` set to `value`.
fn config_with(key: &str, value: Value) -> Value {
    let mut c = hf_config();
    c[key] = value;
    c
}

fn assert_has(e: &str, parts: &[&str]) {
    for p in parts {
        assert!(e.contains(p), "`{p}` not in: {e}");
    }
}

#[test]
fn tiny_files_open_and_every_tensor_loads() {
    let (bytes, _) = gguf_bytes(&tiny_gguf_meta(), &tiny_gguf_tensors());
    for m in [
        ModelFile::from_gguf_bytes(GGUF, bytes).unwrap(),
        ModelFile::from_hf_bytes("tiny", hf_files()).unwrap(),
    ] {
        assert_eq!((m.config.head_dim, m.config.vocab_size), (16, VOCAB));
        for name in hf_tensor_names(&m.config) {
            m.load_any(&name).unwrap();
        }
        assert_eq!(m.fingerprint().len(), 16);
    }
}

// item 7: head counts of 0 (a division by zero before)

#[test]
fn gguf_head_count_zero_is_an_error() {
    let e = gguf_err(gguf_with("llama.attention.head_count", Meta::U32(0)));
    assert_has(&e, &[GGUF, "`llama.attention.head_count` = 0 is invalid"]);
}

#[test]
fn gguf_head_count_kv_zero_is_an_error() {
    let e = gguf_err(gguf_with("llama.attention.head_count_kv", Meta::U32(0)));
    assert_has(&e, &[GGUF, "`llama.attention.head_count_kv` = 0 is invalid"]);
}

#[test]
fn hf_num_attention_heads_zero_is_an_error() {
    let e = hf_err(config_with("num_attention_heads", json!(0)));
    assert_has(&e, &["tiny/config.json", "`num_attention_heads` = 0 is invalid"]);
    let e = hf_err(config_with("num_key_value_heads", json!(0)));
    assert_has(&e, &["`num_key_value_heads` = 0 is invalid"]);
}

// item 8: sizes that would size runaway allocations, zero or inconsistent sizes

#[test]
fn gguf_block_count_2_pow_31_is_refused() {
    let e = gguf_err(gguf_with("llama.block_count", Meta::U32(1 << 31)));
    assert_has(&e, &[GGUF, "`llama.block_count` = 2147483648 is absurdly large"]);
    let e = gguf_err(gguf_with("llama.block_count", Meta::U64(u64::MAX)));
    assert_has(
        &e,
        &["`llama.block_count` = 18446744073709551615 is absurdly large"],
    );
}

#[test]
fn layer_counts_beyond_the_files_tensors_are_refused() {
    let e = gguf_err(gguf_with("llama.block_count", Meta::U32(4096)));
    assert_has(
        &e,
        &[
            GGUF,
            "`llama.block_count` = 4096, but the weights hold no tensors for layer 1",
        ],
    );
    let e = hf_err(config_with("num_hidden_layers", json!(3)));
    assert_has(
        &e,
        &["tiny: `num_hidden_layers` in config.json = 3, but the weights hold no tensors for layer 1"],
    );
}

#[test]
fn hf_num_hidden_layers_2_pow_40_is_refused() {
    let e = hf_err(config_with("num_hidden_layers", json!(1u64 << 40)));
    assert_has(
        &e,
        &[
            "tiny/config.json",
            "`num_hidden_layers` = 1099511627776 is absurdly large",
        ],
    );
}

#[test]
fn a_model_with_no_layers_is_an_error() {
    let e = gguf_err(gguf_with("llama.block_count", Meta::U32(0)));
    assert_has(&e, &["`llama.block_count` = 0 is invalid: it must be at least 1"]);
    let e = hf_err(config_with("num_hidden_layers", json!(0)));
    assert_has(&e, &["`num_hidden_layers` = 0 is invalid: it must be at least 1"]);
}

#[test]
fn gguf_inconsistent_zero_or_absurd_sizes_are_refused() {
    let cases: [(&str, Meta, &str); 8] = [
        (
            "llama.embedding_length",
            Meta::U32(33),
            "`llama.embedding_length` = 33 is not divisible by `llama.attention.head_count` = 2",
        ),
        (
            "llama.attention.head_count_kv",
            Meta::U32(3),
            "`llama.attention.head_count` = 2 is not a multiple of `llama.attention.head_count_kv` = 3",
        ),
        (
            "llama.vocab_size",
            Meta::U32(0),
            "`llama.vocab_size` = 0 is invalid",
        ),
        (
            "llama.feed_forward_length",
            Meta::U32(0),
            "`llama.feed_forward_length` = 0 is invalid",
        ),
        (
            "llama.embedding_length",
            Meta::U64(1 << 40),
            "`llama.embedding_length` = 1099511627776 is absurdly large",
        ),
        (
            "llama.attention.key_length",
            Meta::U32(15),
            "`llama.attention.key_length` = 15 is odd",
        ),
        (
            "llama.rope.freq_base",
            Meta::F32(f32::NAN),
            "`llama.rope.freq_base` = NaN is invalid",
        ),
        (
            "llama.attention.layer_norm_rms_epsilon",
            Meta::F32(f32::NEG_INFINITY),
            "`llama.attention.layer_norm_rms_epsilon` = -inf is invalid",
        ),
    ];
    for (key, value, expected) in cases {
        assert_has(&gguf_err(gguf_with(key, value)), &[GGUF, expected]);
    }
    // a vocabulary of no tokens
    let e = gguf_err(gguf_with("tokenizer.ggml.tokens", Meta::Strs(vec![])));
    assert_has(
        &e,
        &["the vocabulary size (`tokenizer.ggml.tokens`) = 0 is invalid"],
    );
}

#[test]
fn hf_inconsistent_zero_or_absurd_sizes_are_refused() {
    let cases: [(&str, Value, &str); 6] = [
        (
            "hidden_size",
            json!(33),
            "`hidden_size` = 33 is not divisible by `num_attention_heads` = 2 (and no `head_dim` is given)",
        ),
        (
            "num_key_value_heads",
            json!(3),
            "`num_attention_heads` = 2 is not a multiple of `num_key_value_heads` = 3",
        ),
        ("vocab_size", json!(0), "`vocab_size` = 0 is invalid"),
        (
            "intermediate_size",
            json!(0),
            "`intermediate_size` = 0 is invalid",
        ),
        (
            "intermediate_size",
            json!(1u64 << 62),
            "`intermediate_size` = 4611686018427387904 is absurdly large",
        ),
        (
            "head_dim",
            json!(1 << 20),
            "`head_dim` = 1048576 is absurdly large: 2 heads × 1048576",
        ),
    ];
    for (key, value, expected) in cases {
        assert_has(&hf_err(config_with(key, value)), &["tiny/config.json", expected]);
    }
}

// item 10: offsets and sizes that overflow

/// The tiny GGUF with the index entry of `name` changed by `edit`.
fn gguf_with_tensor(name: &str, edit: impl Fn(&mut Tensor)) -> Vec<u8> {
    let mut tensors = tiny_gguf_tensors();
    edit(tensors.iter_mut().find(|t| t.name == name).unwrap());
    gguf_bytes(&tiny_gguf_meta(), &tensors).0
}

#[test]
fn gguf_tensor_offset_near_u64_max_is_refused() {
    // data start + 2^64 − 16 wrapped to 16 bytes before the data section: header bytes as weights
    let bytes = gguf_with_tensor("blk.0.attn_q.weight", |t| t.offset = Some(u64::MAX - 15));
    let e = GgufFile::parse(Path::new(GGUF), bytes.into())
        .unwrap_err()
        .to_string();
    assert_has(
        &e,
        &[
            GGUF,
            "truncated: the data of tensor `blk.0.attn_q.weight` (offset 18446744073709551600 in the data section)",
        ],
    );
    for offset in [u64::MAX, 1 << 63, 1 << 40] {
        let bytes = gguf_with_tensor("token_embd.weight", |t| t.offset = Some(offset));
        assert_has(
            &gguf_err(bytes),
            &["truncated: the data of tensor `token_embd.weight`"],
        );
    }
}

#[test]
fn gguf_dims_that_overflow_are_refused() {
    for (ne, type_id) in [
        (vec![1u64 << 62, 4], 0), // 2^64 values
        (vec![1 << 62], 0),       // 2^64 bytes of f32
        (vec![1 << 61, 2], 8),    // 2^62 Q8_0 values: 2^57 blocks of 34 bytes
        (vec![u64::MAX], 1),
    ] {
        let bytes = gguf_with_tensor("output_norm.weight", |t| {
            t.ne = ne.clone();
            t.type_id = type_id;
        });
        assert_has(&gguf_err(bytes), &[GGUF, "`output_norm.weight`"]);
    }
}

/// A GGUF header: magic, version 3, tensor count, metadata count.
fn header(n_tensors: u64, n_kv: u64) -> Vec<u8> {
    let mut out = b"GGUF".to_vec();
    out.extend(3u32.to_le_bytes());
    out.extend(n_tensors.to_le_bytes());
    out.extend(n_kv.to_le_bytes());
    out
}

fn key(out: &mut Vec<u8>, k: &str) {
    out.extend((k.len() as u64).to_le_bytes());
    out.extend(k.as_bytes());
}

fn parse_err(bytes: Vec<u8>) -> String {
    GgufFile::parse(Path::new(GGUF), bytes.into())
        .expect_err("expected an error")
        .to_string()
}

#[test]
fn gguf_counts_and_lengths_larger_than_the_file_are_refused() {
    // counts that would size the tensor index and the metadata map
    assert_has(
        &parse_err(header(u64::MAX, 0)),
        &[GGUF, "truncated: the tensor index"],
    );
    assert_has(
        &parse_err(header(0, 1 << 40)),
        &[GGUF, "truncated: metadata (1099511627776 items)"],
    );
    // a string of 2^64 − 1 bytes
    let mut b = header(0, 1);
    b.extend(u64::MAX.to_le_bytes());
    b.extend([0; 16]);
    assert_has(
        &parse_err(b),
        &["truncated: metadata key #0 (18446744073709551615 items)"],
    );
    // arrays longer than the rest of the file: 2^62 u32 (2^64 bytes), 2^40 strings
    for (item_ty, n) in [(4u32, 1u64 << 62), (8, 1 << 40), (9, 1 << 60)] {
        let mut b = header(0, 1);
        key(&mut b, "k");
        b.extend(9u32.to_le_bytes());
        b.extend(item_ty.to_le_bytes());
        b.extend(n.to_le_bytes());
        b.extend([0; 64]);
        assert_has(&parse_err(b), &[GGUF, "truncated: metadata `k`"]);
    }
}

#[test]
fn gguf_deeply_nested_arrays_are_refused() {
    let mut b = header(0, 1);
    key(&mut b, "deep");
    b.extend(9u32.to_le_bytes());
    for _ in 0..10_000 {
        b.extend(9u32.to_le_bytes()); // items are arrays
        b.extend(1u64.to_le_bytes()); // of one item
    }
    b.extend(4u32.to_le_bytes());
    b.extend(1u64.to_le_bytes());
    b.extend(7u32.to_le_bytes());
    assert_has(
        &parse_err(b),
        &[GGUF, "metadata `deep` nests arrays more than 8 deep"],
    );
}

#[test]
fn gguf_huge_alignment_leaves_every_tensor_outside_the_file() {
    let e = gguf_err(gguf_with("general.alignment", Meta::U64(1 << 63)));
    assert_has(&e, &[GGUF, "truncated: the data of tensor"]);
    let e = gguf_err(gguf_with("general.alignment", Meta::U32(48)));
    assert_has(&e, &["general.alignment = 48 is not a power of two"]);
}

#[test]
fn safetensors_offsets_that_overflow_are_refused() {
    for offsets in [
        json!([u64::MAX - 7, 0]),
        json!([0, u64::MAX]),
        json!([u64::MAX - 3, u64::MAX]),
    ] {
        let head =
            json!({"model.norm.weight": {"dtype": "F32", "shape": [2], "data_offsets": offsets}}).to_string();
        let mut st = (head.len() as u64).to_le_bytes().to_vec();
        st.extend(head.as_bytes());
        st.extend([0; 8]);
        let mut files = hf_files();
        files.insert("model.safetensors".into(), st);
        let e = ModelFile::from_hf_bytes("tiny", files).unwrap_err().to_string();
        assert_has(&e, &["tiny/model.safetensors: invalid safetensors file"]);
    }
    // a header length of 2^64 − 1
    let mut files = hf_files();
    files.insert("model.safetensors".into(), u64::MAX.to_le_bytes().to_vec());
    let e = ModelFile::from_hf_bytes("tiny", files).unwrap_err().to_string();
    assert_has(&e, &["tiny/model.safetensors: invalid safetensors file"]);
}

// item 12: fields present but invalid are not "missing"

#[test]
fn present_but_invalid_fields_say_so_with_their_value() {
    let e = hf_err(config_with("num_hidden_layers", json!(-1)));
    assert_has(
        &e,
        &[
            "tiny/config.json",
            "field `num_hidden_layers` is present but invalid: -1 is not a non-negative integer",
        ],
    );
    let e = hf_err(config_with("hidden_size", json!("576")));
    assert_has(
        &e,
        &["field `hidden_size` is present but invalid: \"576\" is not"],
    );
    let e = hf_err(config_with("num_key_value_heads", json!(1.5)));
    assert_has(&e, &["field `num_key_value_heads` is present but invalid: 1.5"]);
    let e = hf_err(config_with("model_type", json!(7)));
    assert_has(
        &e,
        &["field `model_type` is present but invalid: 7 is not a string"],
    );
    let mut c = hf_config();
    c.as_object_mut().unwrap().remove("hidden_size");
    assert_has(&hf_err(c), &["tiny/config.json: missing field `hidden_size`"]);

    let e = gguf_err(gguf_with("llama.block_count", Meta::I32(-1)));
    assert_has(
        &e,
        &[
            GGUF,
            "metadata `llama.block_count` = -1 is not a non-negative integer",
        ],
    );
    let e = gguf_err(gguf_with("llama.attention.head_count_kv", Meta::Str("2".into())));
    assert_has(
        &e,
        &["metadata `llama.attention.head_count_kv` = \"2\" is not a non-negative integer"],
    );
}

// the tokenizers crate panics on some malformed tokenizer.json files (found by tests/fuzz.rs)

#[test]
fn malformed_tokenizer_json_is_an_error_not_a_panic() {
    let text = String::from_utf8(hf_tokenizer()).unwrap();
    // a syntax error inside `decoder` (tokenizers: `expect("Helper")`)
    let bad_decoder = text.replace("\"decoder\":null", "\"decoder\":{\"type\":tru}");
    // well-formed JSON, but a `Precompiled` normalizer without a charsmap (`expect("Precompiled")`)
    let bad_normalizer = text.replace(
        "\"normalizer\":null",
        "\"normalizer\":{\"type\":\"Precompiled\",\"precompiled_charsmap\":7}",
    );
    for (tokenizer, expected) in [
        (
            bad_decoder,
            "tiny/tokenizer.json: cannot load tokenizer: invalid JSON",
        ),
        (bad_normalizer, "tiny/tokenizer.json: cannot load tokenizer"),
    ] {
        assert_ne!(tokenizer, text);
        let mut files = hf_files();
        files.insert("tokenizer.json".into(), tokenizer.into_bytes());
        let e = ModelFile::from_hf_bytes("tiny", files).unwrap_err().to_string();
        assert_has(&e, &[expected]);
    }
}
