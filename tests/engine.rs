//! The engine, on the GPU (lavapipe here) and on the CPU (burn's Flex backend), against
//! independent references: a plain-Rust forward on tiny random models, numpy logits for
//! SmolLM2-135M-Instruct and Qwen2.5-Coder-0.5B-Instruct, and itself alone vs. batched.

mod common;

use burn::tensor::Device;
use common::devices;
use common::reference::reference_logits;
use common::tiny_model::{
    Weights, random_weights, round_bf16, tiny_config, write_tiny_gguf, write_tiny_hf_dir,
};
use tinylora::engine::{GenerateOptions, Generation, SamplingParams, Transformer};
use tinylora::formats::{Architecture, ModelConfig, ModelFile, WeightFormat};

fn load(path: &std::path::Path, dev: &Device) -> (ModelFile, Transformer) {
    let file = ModelFile::open(path).unwrap();
    let model = Transformer::load(&file, dev).unwrap();
    (file, model)
}

fn max_abs_diff(got: &[f32], want: &[f64]) -> f64 {
    got.iter()
        .zip(want)
        .map(|(&g, &w)| (g as f64 - w).abs())
        .fold(0.0, f64::max)
}

const PROMPTS: [&[u32]; 3] = [
    &[5, 17, 200, 3, 99, 42, 7, 7, 1],
    &[250, 11],
    &[64, 65, 66, 67, 68],
];

#[test]
fn tiny_llama_gguf_logits_match_plain_rust_reference() {
    for (device, dev) in devices() {
        let dir = common::temp_dir("ref-llama");
        let c = tiny_config(Architecture::Llama, true);
        let w = random_weights(&c, 10);
        write_tiny_gguf(&dir.join("m.gguf"), &c, &w);
        let (_, model) = load(&dir.join("m.gguf"), &dev);
        let prompts: Vec<Vec<u32>> = PROMPTS.iter().map(|p| p.to_vec()).collect();
        let got = model.forward_logits(&prompts).unwrap();
        for (p, g) in prompts.iter().zip(&got) {
            let want: Vec<f64> = reference_logits(&c, &w, p).concat();
            assert_eq!(g.len(), want.len());
            let d = max_abs_diff(g, &want);
            assert!(d < 2e-4, "{device}: max |Δlogit| = {d}");
        }
    }
}

#[test]
fn tiny_qwen2_hf_dir_logits_match_plain_rust_reference() {
    for (device, dev) in devices() {
        let dir = common::temp_dir("ref-qwen");
        let c = tiny_config(Architecture::Qwen2, false);
        let w = random_weights(&c, 11);
        write_tiny_hf_dir(&dir, &c, &w, true);
        let w = round_bf16(&w);
        let (_, model) = load(&dir, &dev);
        let prompts: Vec<Vec<u32>> = PROMPTS.iter().map(|p| p.to_vec()).collect();
        for (p, g) in prompts.iter().zip(model.forward_logits(&prompts).unwrap()) {
            let d = max_abs_diff(&g, &reference_logits(&c, &w, p).concat());
            assert!(d < 2e-4, "{device}: max |Δlogit| = {d}");
        }
    }
}

fn greedy(max_new_tokens: usize, stop_ids: Vec<u32>) -> GenerateOptions {
    GenerateOptions {
        max_new_tokens,
        sampling: SamplingParams::greedy(),
        stop_ids,
    }
}

/// `g`'s first token, generated greedily after `prompt`, is the plain-Rust reference's choice
/// (its logit within 1e-3 of the best) with the reference's log-probability (within 1e-3).
fn first_token_is_the_references(c: &ModelConfig, w: &Weights, prompt: &[u32], g: &Generation, what: &str) {
    let want = reference_logits(c, w, prompt);
    let row = &want[prompt.len() - 1];
    let best = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let id = g.output_ids[0] as usize;
    assert!(best - row[id] < 1e-3, "{what}: chose {id}, reference best {best}");
    let lse = row.iter().map(|v| v.exp()).sum::<f64>().ln();
    assert!(
        (g.logprobs[0] as f64 - (row[id] - lse)).abs() < 1e-3,
        "{what}: log-probability"
    );
}

/// 48 prompts of 448 tokens: prefilled at once, attention's scores `[48, 4, 448, 448]` f32
/// would take 147 MiB, past the 128 MiB lavapipe and browsers bind (it failed so:
/// "can't allocate buffer of size: 154140672"); the prefill takes chunks that fit (192, 192
/// and 64 positions, at most 54 MiB of scores), and the
/// first token of three prompts (first, middle, last) is the plain-Rust reference's choice
/// with its log-probability. One layer with heads 4 wide keeps the work small; lavapipe's
/// time (~45 s) is mostly compiling and tuning the shapes.
#[test]
fn a_batch_too_wide_for_one_prefill_binding_is_prefilled_in_chunks_that_fit() {
    for (device, dev) in devices() {
        let dir = common::temp_dir("wide-prefill");
        let c = ModelConfig {
            hidden_size: 16,
            intermediate_size: 32,
            num_hidden_layers: 1,
            head_dim: 4,
            ..tiny_config(Architecture::Llama, false)
        };
        let w = random_weights(&c, 33);
        write_tiny_gguf(&dir.join("m.gguf"), &c, &w);
        let (_, model) = load(&dir.join("m.gguf"), &dev);
        let prompts: Vec<Vec<u32>> = (0..48u32)
            .map(|i| (0..448u32).map(|t| (i * 31 + t * 7) % 250 + 3).collect())
            .collect();
        let gens = model.generate(&prompts, &greedy(1, vec![]), |_, _| {}).unwrap();
        for i in [0, 23, 47] {
            first_token_is_the_references(&c, &w, &prompts[i], &gens[i], &format!("{device}: prompt {i}"));
        }
    }
}

/// 768 prompts of 2 tokens, 4 new tokens each, with a vocabulary of 131,072 tokens and 12
/// key/value heads 64 wide, past the 128 MiB lavapipe and browsers bind twice over: the
/// next-token logits `[768, 131072]` would take 384 MiB and one layer's cached keys
/// `[768, 12, 64, 64]` (one block of 64 slots) 144 MiB, in f32 (it failed so on lavapipe:
/// "can't allocate buffer of size: 402653184", and, with the logits chunked, a cache past
/// 128 MiB failed the same way). The batch is generated in groups whose cache fits 64 MiB
/// (three of 256 rows), each group's logits made 128 rows (64 MiB) at a time; every sequence
/// gets its 4 tokens, streamed under its own index, and the first token of prompts on both
/// sides of each group and chunk boundary is the plain-Rust reference's choice with its
/// probability. On the CPU, sampling with top-k (the host's path, a read per chunk) draws for
/// prompts of each group what they draw alone from their own stream.
#[test]
fn a_batch_past_a_binding_is_generated_in_groups_and_chooses_in_row_chunks() {
    for (device, dev) in devices() {
        let dir = common::temp_dir("wide-batch");
        let c = ModelConfig {
            hidden_size: 16,
            intermediate_size: 32,
            num_hidden_layers: 1,
            num_attention_heads: 24,
            num_key_value_heads: 12,
            head_dim: 64,
            vocab_size: 131_072,
            ..tiny_config(Architecture::Llama, false)
        };
        let w = random_weights(&c, 34);
        write_tiny_hf_dir(&dir, &c, &w, false);
        let (_, model) = load(&dir, &dev);
        let prompts: Vec<Vec<u32>> = (0..768u32)
            .map(|i| vec![i * 97 % 131_072, i * 31 % 250 + 3])
            .collect();
        let mut streamed = vec![vec![]; prompts.len()];
        let gens = model
            .generate(&prompts, &greedy(4, vec![]), |i, id| streamed[i].push(id))
            .unwrap();
        assert!(
            gens.iter().all(|g| g.output_ids.len() == 4),
            "{device}: 4 tokens each"
        );
        let each_its_own = gens.iter().zip(&streamed).all(|(g, s)| &g.output_ids == s);
        assert!(
            each_its_own,
            "{device}: each token streamed under its prompt's index"
        );
        for i in [0, 127, 128, 255, 256, 383, 384, 511, 512, 639, 640, 767] {
            first_token_is_the_references(&c, &w, &prompts[i], &gens[i], &format!("{device}: prompt {i}"));
        }
        if device == "cpu" {
            // lavapipe would compile every single-row shape again
            let sampling = SamplingParams {
                temperature: 1.0,
                top_k: 50,
                seed: 7,
                ..SamplingParams::default()
            };
            let opts = GenerateOptions {
                sampling,
                ..greedy(4, vec![])
            };
            let batch = model.generate(&prompts, &opts, |_, _| {}).unwrap();
            for i in [0, 300, 767] {
                let alone = GenerateOptions {
                    sampling: SamplingParams {
                        first_stream: i as u64,
                        ..sampling
                    },
                    ..opts.clone()
                };
                let g = model.generate(&prompts[i..=i], &alone, |_, _| {}).unwrap();
                assert_eq!(g[0].output_ids, batch[i].output_ids, "prompt {i}: drawn alone");
            }
        }
    }
}

/// A prompt prefilled in chunks of 3 slots (each attending to the cache of the chunks before)
/// gives the plain-Rust reference's next-token distribution; a prompt that fills the context is
/// refused, and generation stops at the context's end.
#[test]
fn chunked_prefill_matches_the_reference_and_the_context_bounds_generation() {
    for (device, dev) in devices() {
        let dir = common::temp_dir("prefill");
        let c = tiny_config(Architecture::Llama, false);
        let w = random_weights(&c, 31);
        write_tiny_gguf(&dir.join("m.gguf"), &c, &w);
        let (_, mut model) = load(&dir.join("m.gguf"), &dev);
        model.prefill_chunk = 3;
        let prompts: Vec<Vec<u32>> = PROMPTS.iter().map(|p| p.to_vec()).collect();
        let gens = model.generate(&prompts, &greedy(1, vec![]), |_, _| {}).unwrap();
        for (p, g) in prompts.iter().zip(&gens) {
            first_token_is_the_references(&c, &w, p, g, &format!("{device}: chunked prefill"));
        }
        model.config.max_position_embeddings = 12;
        let e = model
            .generate(&[vec![7; 12]], &greedy(4, vec![]), |_, _| {})
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "prompt 0 has 12 tokens; the model's context holds 12 (prompt and answer together)"
        );
        let g = model
            .generate(&prompts[..1], &greedy(10, vec![]), |_, _| {})
            .unwrap();
        assert_eq!(
            g[0].output_ids.len(),
            12 - prompts[0].len(),
            "{device}: stops at the context"
        );
    }
}

#[test]
fn kv_cache_decode_equals_full_recompute_and_batching_changes_nothing() {
    for (device, dev) in devices() {
        let dir = common::temp_dir("kv");
        let c = tiny_config(Architecture::Qwen2, true);
        let w = random_weights(&c, 12);
        write_tiny_gguf(&dir.join("m.gguf"), &c, &w);
        let (_, model) = load(&dir.join("m.gguf"), &dev);
        let prompts: Vec<Vec<u32>> = PROMPTS.iter().map(|p| p.to_vec()).collect();
        let opts = greedy(12, vec![]);
        let batched = model.generate(&prompts, &opts, |_, _| {}).unwrap();
        for (p, b) in prompts.iter().zip(&batched) {
            let alone = &model.generate(std::slice::from_ref(p), &opts, |_, _| {}).unwrap()[0];
            assert_eq!(
                alone.output_ids, b.output_ids,
                "{device}: batched differs from alone"
            );
            // each cached decode step chose the argmax of the plain-Rust reference on the full text
            let full: Vec<u32> = p
                .iter()
                .chain(&b.output_ids[..b.output_ids.len() - 1])
                .copied()
                .collect();
            let want = reference_logits(&c, &w, &full);
            for (k, &id) in b.output_ids.iter().enumerate() {
                let row = &want[p.len() - 1 + k];
                let best = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                assert!(
                    best - row[id as usize] < 1e-3,
                    "{device} step {k}: chose {id}, reference best is {best}"
                );
            }
            // logprobs are the model's log-softmax at the chosen ids
            let row = &want[p.len() - 1];
            let lse = row.iter().map(|v| v.exp()).sum::<f64>().ln();
            assert!(
                (b.logprobs[0] as f64 - (row[b.output_ids[0] as usize] - lse)).abs() < 1e-3,
                "{device}: logprob"
            );
        }
    }
}

#[test]
fn generation_stops_at_stop_tokens_and_max_new_tokens() {
    for (device, dev) in devices() {
        let dir = common::temp_dir("stop");
        let c = tiny_config(Architecture::Llama, true);
        write_tiny_gguf(&dir.join("m.gguf"), &c, &random_weights(&c, 13));
        let (_, model) = load(&dir.join("m.gguf"), &dev);
        let prompts = vec![vec![1u32, 2, 3]];
        let free = model.generate(&prompts, &greedy(6, vec![]), |_, _| {}).unwrap();
        assert_eq!(free[0].output_ids.len(), 6, "{device}");
        let stop = free[0].output_ids[2];
        let first = free[0].output_ids.iter().position(|&t| t == stop).unwrap();
        let stopped = model
            .generate(&prompts, &greedy(6, vec![stop]), |_, _| {})
            .unwrap();
        assert_eq!(stopped[0].output_ids, free[0].output_ids[..=first]);
        assert_eq!(
            stopped[0].finish,
            tinylora::engine::FinishReason::Stop,
            "{device}"
        );
    }
}

/// Teacher-forced logits of a real model against `tests/reference/<name>_logits.json`
/// (numpy, weights dequantized by llama.cpp's `gguf` package): top-1 agreement ≥ 99% and the
/// largest difference over the top-5 and 64 probe logits of every position. The weights kept
/// in the file's own blocks (`--weights auto`, the default) on both devices (the WGSL decoder
/// on lavapipe, the Rust one on the CPU), and dequantized to f32 on the CPU: the same numbers,
/// so the same tolerance. (The dense f32 path on the GPU is the same matmuls as the CPU's, and
/// is checked against the f64 reference on the tiny models above.)
fn assert_matches_numpy(model_path: &std::path::Path, name: &str, max_allowed: f64) {
    for (device, dev) in devices() {
        assert_matches_numpy_on(model_path, name, max_allowed, device, &dev, WeightFormat::Auto);
    }
    let (device, dev) = &devices()[1];
    assert_matches_numpy_on(model_path, name, max_allowed, device, dev, WeightFormat::F32);
}

fn assert_matches_numpy_on(
    model_path: &std::path::Path,
    name: &str,
    max_allowed: f64,
    device: &str,
    dev: &Device,
    weights: WeightFormat,
) {
    let path = common::repo().join(format!("tests/reference/{name}_logits.json"));
    let reference: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let model = Transformer::load_with(&ModelFile::open(model_path).unwrap(), dev, weights).unwrap();
    let v = model.config.vocab_size;
    let ids = |x: &serde_json::Value| -> Vec<u64> {
        x.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap())
            .collect()
    };
    let probes = ids(&reference["probe_ids"]);
    let cases = reference["prompts"].as_array().unwrap();
    let prompts: Vec<Vec<u32>> = cases
        .iter()
        .map(|p| ids(&p["ids"]).into_iter().map(|x| x as u32).collect())
        .collect();
    let got = model.forward_logits(&prompts).unwrap();
    let (mut positions, mut agree, mut max_diff) = (0, 0, 0.0f64);
    for (p, g) in cases.iter().zip(&got) {
        for (t, row) in g.chunks_exact(v).enumerate() {
            let top = ids(&p["top5_ids"][t]);
            let ours = row
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .unwrap()
                .0;
            positions += 1;
            agree += (ours as u64 == top[0]) as usize;
            let checked = top
                .iter()
                .zip(p["top5_logits"][t].as_array().unwrap())
                .chain(probes.iter().zip(p["probe_logits"][t].as_array().unwrap()));
            for (&id, want) in checked {
                max_diff = max_diff.max((row[id as usize] as f64 - want.as_f64().unwrap()).abs());
            }
        }
    }
    let rate = agree as f64 / positions as f64;
    eprintln!(
        "{name} on the {device}, {weights} weights, vs numpy: top-1 agreement {agree}/{positions} = {rate:.4}, max |Δlogit| = {max_diff:.5}"
    );
    assert!(rate >= 0.99, "{device} {weights}: top-1 agreement {rate}");
    assert!(
        max_diff < max_allowed,
        "{device} {weights}: max |Δlogit| = {max_diff}"
    );
}

#[test]
fn smollm2_teacher_forced_logits_match_numpy_reference() {
    assert_matches_numpy(&common::smollm2(), "smollm2", 0.005);
}

#[test]
fn qwen05_teacher_forced_logits_match_numpy_reference() {
    assert_matches_numpy(&common::qwen05(), "qwen05", 0.005);
}

#[test]
fn smollm2_batched_greedy_equals_alone() {
    for (device, dev) in devices() {
        let (file, model) = load(&common::smollm2(), &dev);
        let tok = &file.tokenizer;
        let texts = [
            "The capital of France is",
            "1, 2, 3, 4,",
            "Once upon a time, in a small village by the sea, there lived",
        ];
        let prompts: Vec<Vec<u32>> = texts.iter().map(|t| tok.encode(t).unwrap()).collect();
        let opts = greedy(16, tok.stop_ids.clone());
        let batched = model.generate(&prompts, &opts, |_, _| {}).unwrap();
        for (p, b) in prompts.iter().zip(&batched) {
            let alone = model.generate(std::slice::from_ref(p), &opts, |_, _| {}).unwrap();
            assert_eq!(alone[0].output_ids, b.output_ids, "{device}");
        }
        let text = tok.decode(&batched[1].output_ids).unwrap();
        assert!(text.contains('5'), "{device}: counting continues: {text:?}");
    }
}

#[test]
fn sequences_ending_at_different_steps_leave_the_batch_unchanged() {
    for (device, dev) in devices() {
        let dir = common::temp_dir("ragged");
        let c = tiny_config(Architecture::Llama, true);
        write_tiny_gguf(&dir.join("m.gguf"), &c, &random_weights(&c, 14));
        let (_, model) = load(&dir.join("m.gguf"), &dev);
        let prompts: Vec<Vec<u32>> = vec![
            vec![3, 4, 5],
            vec![100, 7],
            vec![9; 20],
            vec![42, 43, 44, 45, 46, 47],
        ];
        let free = model.generate(&prompts, &greedy(10, vec![]), |_, _| {}).unwrap();
        // stop on the 1st token of prompt 0 and the 4th of prompt 2: rows end at different steps;
        // on the CPU the batch sheds each as it ends, on a GPU they ride along while most of
        // the batch is live, then the batch shrinks
        let stops = vec![free[0].output_ids[0], free[2].output_ids[3]];
        let batched = model
            .generate(&prompts, &greedy(10, stops.clone()), |_, _| {})
            .unwrap();
        for (p, b) in prompts.iter().zip(&batched) {
            let alone = model
                .generate(std::slice::from_ref(p), &greedy(10, stops.clone()), |_, _| {})
                .unwrap();
            assert_eq!(alone[0].output_ids, b.output_ids);
            assert_eq!(alone[0].finish, b.finish);
            for (x, y) in alone[0].logprobs.iter().zip(&b.logprobs) {
                assert!(
                    (x - y).abs() < 1e-4,
                    "{device}: log-probability {x} alone, {y} batched"
                );
            }
        }
        assert_eq!(batched[0].output_ids.len(), 1, "{device}");
    }
}
