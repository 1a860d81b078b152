//! GRPO end to end on a tiny random llama built so that its first answer token is one of
//! t0..t9 about uniformly: the reward "the answer is 7" (flexible extraction of `t7`) is mixed,
//! and a 14-parameter TinyLoRA adapter must raise it far beyond sampling noise. Also: the
//! adapter file reproduces the gain in a fresh model, a resumed run ends where an
//! uninterrupted one does, and batched evaluation equals answering each problem alone.

mod common;

use std::path::Path;

use common::tiny_model::{random_weights, tiny_config, write_tiny_hf_dir};
use tinylora::adapter::{AdapterConfig, AdapterFile, initial_values, plan};
use tinylora::engine::{AdapterMode, GenerateOptions, SamplingParams, Transformer, default_device};
use tinylora::formats::{Architecture, ModelFile};
use tinylora::train::optim::AdamW;
use tinylora::train::prompt::{PromptStyle, render_prompt};
use tinylora::train::{
    AdapterRun, Aggregation, ExtractMode, GrpoConfig, GrpoTrainer, LossConfig, Problem, RunFiles, TrainState,
    evaluate, extract, is_correct,
};

/// A tiny model whose answers are mostly the tokens t0..t9.
fn digit_model(dir: &Path) {
    let c = tiny_config(Architecture::Llama, false);
    let mut w = random_weights(&c, 5);
    let h = c.hidden_size;
    // a constant +10 in coordinate 0 of every embedding survives the residual stream …
    let emb = &mut w.get_mut("model.embed_tokens.weight").unwrap().1;
    (0..c.vocab_size).for_each(|t| emb[t * h] = 10.0);
    w.get_mut("model.norm.weight").unwrap().1[0] = 1.0;
    // … and the LM head reads it as a bias towards t0..t9, whose rows are made 4× larger so
    // that which digit comes out depends clearly on the hidden state
    let head = &mut w.get_mut("lm_head.weight").unwrap().1;
    for t in 0..c.vocab_size {
        let row = &mut head[t * h..(t + 1) * h];
        if t < 10 {
            row.iter_mut().for_each(|x| *x *= 4.0);
        }
        row[0] = if t < 10 { 0.6 } else { -0.6 };
    }
    write_tiny_hf_dir(dir, &c, &w, false);
}

fn problems() -> Vec<Problem> {
    (0..8)
        .map(|i| Problem {
            question: format!("t{} t{} t{}", 20 + i, 40 + 2 * i, 100 + 3 * i),
            gold: "7".into(),
            solution: "t7".into(),
        })
        .collect()
}

fn grpo_config(seed: u64) -> GrpoConfig {
    GrpoConfig {
        group_size: 8,
        prompts_per_step: 4,
        max_new_tokens: 1,
        temperature: 1.0,
        steps: 0,
        lr: 0.3,
        warmup: 0,
        max_grad_norm: 0.0,
        weight_decay: 0.0,
        scale_advantages: true,
        loss: LossConfig {
            eps_low: 0.2,
            eps_high: 0.28,
            beta: 0.0,
            aggregation: Aggregation::Grpo,
        },
        extract: ExtractMode::Flexible,
        prompt: PromptStyle {
            instruction: String::new(),
            answer_prefix: String::new(),
        },
        seed,
    }
}

fn adapter() -> AdapterConfig {
    AdapterConfig::default() // TinyLoRA r = 2, u = 1, untied: 2 layers × 7 modules = 14 values
}

/// Mean reward of 64 samples per problem at temperature 1 (fixed seed), merged weights.
fn mean_reward(model: &mut Transformer, file: &ModelFile) -> f64 {
    model.set_adapter_mode(AdapterMode::Merged);
    let ps = problems();
    let prompts: Vec<Vec<u32>> = ps
        .iter()
        .flat_map(|p| std::iter::repeat_n(file.tokenizer.encode(&p.question).unwrap(), 64))
        .collect();
    let opts = GenerateOptions {
        max_new_tokens: 1,
        sampling: SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            seed: 12345,
        },
        stop_ids: vec![],
    };
    let gens = model.generate(&prompts, &opts, |_, _| {});
    let right = gens
        .iter()
        .filter(|g| {
            is_correct(
                &file.tokenizer.decode(&g.output_ids).unwrap(),
                "7",
                ExtractMode::Flexible,
            )
        })
        .count();
    right as f64 / gens.len() as f64
}

fn setup(name: &str) -> (std::path::PathBuf, ModelFile, Transformer) {
    let dir = common::temp_dir(name);
    digit_model(&dir);
    let file = ModelFile::open(&dir).unwrap();
    let mut model = Transformer::load(&file, &default_device()).unwrap();
    model
        .attach_adapter(
            &file,
            &adapter(),
            &initial_values(&file.config, &adapter()),
            &|| {},
        )
        .unwrap();
    (dir, file, model)
}

fn fresh_state(file: &ModelFile) -> TrainState {
    let n = plan(&file.config, &adapter()).params;
    TrainState {
        step: 0,
        values: initial_values(&file.config, &adapter()),
        optimizer: AdamW::new(n, 0.0),
    }
}

#[test]
fn grpo_raises_the_reward_and_the_adapter_file_reproduces_it() {
    let (dir, file, mut model) = setup("train-learn");
    assert!(plan(&file.config, &adapter()).params <= 16);
    let before = mean_reward(&mut model, &file);
    assert!(
        (0.02..0.5).contains(&before),
        "the base model's reward should be mixed, got {before}"
    );
    let mut trainer = GrpoTrainer {
        run: AdapterRun {
            file: &file,
            model: &mut model,
            adapter: adapter(),
            state: fresh_state(&file),
            files: RunFiles { dir: dir.clone() },
        },
        config: grpo_config(1),
        problems: problems(),
    };
    for _ in 0..20 {
        let m = trainer.step().unwrap();
        println!(
            "step {}: reward {:.3}, values {:?}",
            m.step, m.reward_mean, m.values
        );
    }
    trainer.run.checkpoint().unwrap();
    let after = mean_reward(trainer.run.model, &file);
    println!("mean reward {before:.3} → {after:.3}");
    // 512 samples: the standard error of each mean is below 0.022
    assert!(
        after > before + 0.15,
        "GRPO did not raise the reward enough: {before:.3} → {after:.3}"
    );

    // the adapter file, applied to a freshly loaded model, gives the same improvement
    let saved = AdapterFile::load(&RunFiles { dir: dir.clone() }.adapter()).unwrap();
    saved.check_base(&dir, &file.fingerprint()).unwrap();
    let mut fresh = Transformer::load(&file, &default_device()).unwrap();
    fresh
        .attach_adapter(&file, &saved.config, &saved.values, &|| {})
        .unwrap();
    let again = mean_reward(&mut fresh, &file);
    assert!(
        (again - after).abs() < 0.03,
        "adapter file: {again:.3} vs trained model {after:.3}"
    );
}

#[test]
fn resumed_run_ends_with_the_same_adapter() {
    let (dir, file, mut model) = setup("train-resume");
    let run = |model: &mut Transformer, state: TrainState, steps: usize, dir: &Path| -> TrainState {
        std::fs::create_dir_all(dir).unwrap();
        let mut t = GrpoTrainer {
            run: AdapterRun {
                file: &file,
                model,
                adapter: adapter(),
                state,
                files: RunFiles {
                    dir: dir.to_path_buf(),
                },
            },
            config: grpo_config(3),
            problems: problems(),
        };
        for _ in 0..steps {
            t.step().unwrap();
        }
        t.run.checkpoint().unwrap();
        t.run.state
    };
    let straight = run(&mut model, fresh_state(&file), 4, &dir.join("a"));
    // interrupted after 2 steps: a new process would read state.json and attach the values
    let half = run(&mut model, fresh_state(&file), 2, &dir.join("b"));
    let saved: TrainState =
        serde_json::from_slice(&std::fs::read(dir.join("b/state.json")).unwrap()).unwrap();
    assert_eq!(saved, half);
    let mut resumed_model = Transformer::load(&file, &default_device()).unwrap();
    resumed_model
        .attach_adapter(&file, &adapter(), &saved.values, &|| {})
        .unwrap();
    let resumed = run(&mut resumed_model, saved, 2, &dir.join("b"));
    assert_eq!(resumed.step, 4);
    assert_ne!(
        straight.values,
        fresh_state(&file).values,
        "training moved nothing"
    );
    // equal up to float rounding: burn may pick another matmul kernel in another process (or
    // while other tests autotune), which changes the last bits of a gradient
    for (a, b) in straight.values.iter().zip(&resumed.values) {
        assert!(
            (a - b).abs() < 1e-4,
            "resumed {:?} vs uninterrupted {:?}",
            resumed.values,
            straight.values
        );
    }
}

/// The trainer's teacher-forced log-probabilities of sampled completions equal the ones the
/// sampler reported (so the importance ratio starts at 1).
#[test]
fn completion_logprobs_equal_the_samplers() {
    use tinylora::train::policy::{CompletionBatch, token_logprobs};
    let (_, file, mut model) = setup("train-logprobs");
    model.set_adapter_mode(AdapterMode::Off);
    let prompts: Vec<Vec<u32>> = problems()
        .iter()
        .map(|p| file.tokenizer.encode(&p.question).unwrap())
        .collect();
    let opts = GenerateOptions {
        max_new_tokens: 5,
        sampling: SamplingParams {
            temperature: 0.7,
            top_k: 0,
            top_p: 1.0,
            seed: 9,
        },
        stop_ids: vec![],
    };
    let gens = model.generate(&prompts, &opts, |_, _| {});
    let batch = CompletionBatch::new(
        &gens.iter().map(|g| g.prompt_ids.clone()).collect::<Vec<_>>(),
        &gens.iter().map(|g| g.output_ids.clone()).collect::<Vec<_>>(),
    );
    let got = token_logprobs(&model, &batch, 0.7)
        .into_data()
        .try_into_vec::<f32>()
        .unwrap();
    let want = batch.scatter(&gens.iter().map(|g| g.logprobs.clone()).collect::<Vec<_>>());
    let mask = batch.mask();
    for i in 0..got.len() {
        if mask[i] == 1.0 {
            assert!(
                (got[i] - want[i]).abs() < 1e-3,
                "position {i}: {} vs sampler {}",
                got[i],
                want[i]
            );
        }
    }
    assert!(mask.iter().sum::<f32>() == (gens.len() * 5) as f32);
}

/// SFT on the gold solution (`t7`, then end-of-sequence) raises the probability of the target
/// tokens and, with it, the sampled reward.
#[test]
fn sft_baseline_learns_the_solution_tokens() {
    use tinylora::train::{SftConfig, SftTrainer};
    let (dir, file, mut model) = setup("train-sft");
    let before = mean_reward(&mut model, &file);
    let mut sft = SftTrainer {
        run: AdapterRun {
            file: &file,
            model: &mut model,
            adapter: adapter(),
            state: fresh_state(&file),
            files: RunFiles { dir },
        },
        config: SftConfig {
            batch_size: 8,
            steps: 10,
            lr: 0.3,
            warmup: 0,
            max_grad_norm: 0.0,
            prompt: PromptStyle {
                instruction: String::new(),
                answer_prefix: String::new(),
            },
            seed: 0,
        },
        problems: problems(),
    };
    let metrics: Vec<_> = (0..10).map(|_| sft.step().unwrap()).collect();
    let (first, last) = (metrics[0].reward_mean, metrics[9].reward_mean);
    println!("SFT target probability {first:.3} → {last:.3}");
    assert!(last > first * 1.3, "target probability {first:.3} → {last:.3}");
    assert!(metrics[9].loss < metrics[0].loss);
    let after = mean_reward(sft.run.model, &file);
    println!("SFT mean reward {before:.3} → {after:.3}");
    // 512 samples each: standard errors below 0.022
    assert!(after > before + 0.08, "SFT mean reward {before:.3} → {after:.3}");
}

#[test]
fn batched_evaluation_equals_each_problem_alone_in_file_order() {
    let (_dir, file, model) = setup("eval");
    // questions of 1 to 7 tokens, out of length order, so that the length-grouped batches of 3
    // mix the file order; gold "8": this model's greedy answers end in t8 or t9, so some are
    // right and some wrong
    let problems: Vec<Problem> = [5, 1, 7, 2, 6, 3, 4]
        .iter()
        .enumerate()
        .map(|(i, &n)| Problem {
            question: (0..n)
                .map(|k| format!("t{}", 20 + 9 * i + k))
                .collect::<Vec<_>>()
                .join(" "),
            gold: "8".into(),
            solution: String::new(),
        })
        .collect();
    let style = PromptStyle {
        instruction: String::new(),
        answer_prefix: String::new(),
    };
    let mut calls = Vec::new();
    let report = evaluate(
        &model,
        &file,
        &problems,
        &style,
        2,
        3,
        ExtractMode::Flexible,
        |done, tokens| calls.push((done, tokens)),
    )
    .unwrap();
    let greedy = GenerateOptions {
        max_new_tokens: 2,
        sampling: SamplingParams::greedy(),
        stop_ids: file.tokenizer.stop_ids.clone(),
    };
    let mut right = 0;
    for (p, r) in problems.iter().zip(&report.records) {
        let prompt = file
            .tokenizer
            .encode(&render_prompt(&file, &p.question, &style).unwrap())
            .unwrap();
        let alone = model.generate(&[prompt], &greedy, |_, _| {});
        let output = file.tokenizer.decode(&alone[0].output_ids).unwrap();
        assert_eq!(r.question, p.question, "records follow the problems' order");
        assert_eq!(r.output, output, "{}: batched vs alone", p.question);
        assert_eq!(r.extracted, extract(&output, ExtractMode::Flexible));
        assert_eq!(r.correct, is_correct(&output, &p.gold, ExtractMode::Flexible));
        right += usize::from(r.correct);
    }
    assert_eq!(report.problems, 7);
    assert_eq!(report.accuracy(ExtractMode::Flexible), right as f64 / 7.0);
    assert!(
        right > 0 && right < 7,
        "a mixed result makes the check mean something: {right}/7"
    );
    // progress: per token, then 3, 6 and 7 problems done
    let batch_ends: Vec<usize> = calls
        .windows(2)
        .filter(|w| w[1].0 > w[0].0)
        .map(|w| w[1].0)
        .collect();
    assert_eq!(batch_ends, [3, 6, 7]);
    assert!(
        calls.windows(2).all(|w| w[1].1 >= w[0].1),
        "token counts never go back"
    );
}
