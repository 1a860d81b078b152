//! GRPO end to end on a tiny random llama built so that its first answer token is one of
//! t0..t9 about uniformly: the reward "the answer is 7" (flexible extraction of `t7`) is mixed,
//! and a 14-parameter TinyLoRA adapter must raise it far beyond sampling noise. All through the
//! training library's run ([`Training`]) as the CLI drives it. Also: the adapter file
//! reproduces the gain in a fresh model, a resumed run ends where an uninterrupted one does,
//! a resume with other settings is refused, μ = 2 updates per batch match a hand-computed
//! loss, and batched evaluation equals answering each problem alone.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use common::digit_task::{digit_model, grpo_config, no_instruction, problems};
use tinylora::adapter::{AdaptedModel, AdapterConfig, AdapterFile, initial_values, plan};
use tinylora::engine::{DeltaMode, GenerateOptions, SamplingParams, Transformer, default_device};
use tinylora::formats::ModelFile;
use tinylora::train::prompt::{PromptStyle, render_prompt};
use tinylora::train::{
    EvalSettings, ExtractMode, GrpoTrainer, Problem, Quiet, RunFiles, RunOutcome, RunSettings, ScaleRewards,
    Single, StepMetrics, TrainError, Training, TrainingMethod, evaluate, extract, is_correct,
};

fn grpo(seed: u64, steps: usize) -> GrpoTrainer {
    GrpoTrainer::new(grpo_config(seed, steps)).unwrap()
}

fn adapter() -> AdapterConfig {
    AdapterConfig::default() // TinyLoRA r = 2, u = 1, untied: 2 layers × 7 modules = 14 values
}

/// Run `method` into `dir` as `tinylora train` does (no held-out problems).
fn train(
    file: &ModelFile,
    model: &mut AdaptedModel,
    method: &mut dyn TrainingMethod,
    dir: &Path,
    resume: bool,
) -> Result<RunOutcome, TrainError> {
    train_until(
        file,
        model,
        method,
        dir,
        resume,
        vec![],
        Arc::new(AtomicBool::new(false)),
    )
}

/// [`train`] with held-out problems and a stop flag.
fn train_until(
    file: &ModelFile,
    model: &mut AdaptedModel,
    method: &mut dyn TrainingMethod,
    dir: &Path,
    resume: bool,
    held_out: Vec<Problem>,
    stop: Arc<AtomicBool>,
) -> Result<RunOutcome, TrainError> {
    Training {
        file,
        model,
        adapter: adapter(),
        method,
        train: problems(),
        held_out,
        settings: RunSettings {
            dir: dir.to_path_buf(),
            resume,
            overwrite: false,
            eval_every: 0,
            eval: EvalSettings {
                prompt: no_instruction(),
                max_new_tokens: 1,
                batch: 16,
                extract: ExtractMode::Flexible,
            },
            record: serde_json::json!({ "data": "problems()" }),
        },
        stop,
        collective: &Single,
    }
    .run(&Quiet)
}

fn metrics(dir: &Path) -> Vec<StepMetrics> {
    std::fs::read_to_string(RunFiles { dir: dir.into() }.metrics())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Mean reward of 64 samples per problem at temperature 1 (fixed seed), merged weights.
fn mean_reward(model: &mut AdaptedModel, file: &ModelFile) -> f64 {
    if model.adapter().is_some() {
        model.set_mode(DeltaMode::Merged).unwrap();
    }
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
            first_stream: 0,
        },
        stop_ids: vec![],
    };
    let gens = model.generate(&prompts, &opts, |_, _| {}).unwrap();
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

/// The digit model, loaded, with no adapter.
fn setup(name: &str) -> (common::TestDir, ModelFile, AdaptedModel) {
    let dir = common::temp_dir(name);
    digit_model(&dir);
    let file = ModelFile::open(&dir).unwrap();
    let model = AdaptedModel::new(Transformer::load(&file, &default_device()).unwrap());
    (dir, file, model)
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
    let run_dir = dir.join("run");
    let outcome = train(&file, &mut model, &mut grpo(1, 20), &run_dir, false).unwrap();
    assert_eq!((outcome.step, outcome.interrupted), (20, false));
    for m in metrics(&run_dir) {
        println!(
            "step {}: reward {:.3}, values {:?}",
            m.step, m.reward_mean, m.values
        );
        assert_eq!(
            m.rewards["correct"], m.reward_mean,
            "one reward: the total is its mean"
        );
    }
    let after = mean_reward(&mut model, &file);
    println!("mean reward {before:.3} → {after:.3}");
    // 512 samples: the standard error of each mean is below 0.022
    assert!(
        after > before + 0.15,
        "GRPO did not raise the reward enough: {before:.3} → {after:.3}"
    );

    // the adapter file, applied to a freshly loaded model, gives the same improvement
    let saved = AdapterFile::load(&RunFiles { dir: run_dir.clone() }.adapter()).unwrap();
    saved.check_base(&dir, &file.fingerprint()).unwrap();
    assert_eq!(saved.values, outcome.values);
    let mut fresh = AdaptedModel::new(Transformer::load(&file, &default_device()).unwrap());
    fresh
        .attach_adapter(&file, &saved.config, &saved.values, &|| {})
        .unwrap();
    let again = mean_reward(&mut fresh, &file);
    assert!(
        (again - after).abs() < 0.03,
        "adapter file: {again:.3} vs trained model {after:.3}"
    );

    // the run directory is not overwritten by accident
    let e = train(&file, &mut model, &mut grpo(1, 20), &run_dir, false).unwrap_err();
    assert!(e.to_string().contains("already holds a run"), "{e}");
}

#[test]
fn resumed_run_ends_with_the_same_adapter_and_other_settings_are_refused() {
    let (dir, file, mut model) = setup("train-resume");
    let straight = train(&file, &mut model, &mut grpo(3, 4), &dir.join("a"), false).unwrap();
    // stopped after 2 steps; a new process continues the run to 4 steps
    train(&file, &mut model, &mut grpo(3, 2), &dir.join("b"), false).unwrap();
    let mut resumed_model = AdaptedModel::new(Transformer::load(&file, &default_device()).unwrap());
    let resumed = train(&file, &mut resumed_model, &mut grpo(3, 4), &dir.join("b"), true).unwrap();
    assert_eq!(resumed.step, 4);
    assert_ne!(
        straight.values,
        initial_values(&file.config, &adapter()),
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
    let (ma, mb) = (metrics(&dir.join("a")), metrics(&dir.join("b")));
    assert_eq!(mb.iter().map(|m| m.step).collect::<Vec<_>>(), [1, 2, 3, 4]);
    for (x, y) in ma.iter().zip(&mb) {
        assert_eq!(
            x.reward_mean, y.reward_mean,
            "step {}: same samples, same rewards",
            x.step
        );
    }

    // fewer steps than the checkpoint holds: refused, not recorded
    let e = train(&file, &mut resumed_model, &mut grpo(3, 2), &dir.join("b"), true).unwrap_err();
    assert!(
        e.to_string()
            .contains("the checkpoint is at step 4, past the 2 steps"),
        "{e}"
    );

    // another learning rate or projection seed: refused, naming the keys
    let mut other = grpo_config(3, 6);
    other.lr = 0.1;
    let e = train(
        &file,
        &mut resumed_model,
        &mut GrpoTrainer::new(other).unwrap(),
        &dir.join("b"),
        true,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("config.json") && e.contains("config.lr: 0.3"), "{e}");
    assert!(!e.contains("steps"), "steps may change: {e}");
    let state = std::fs::read(dir.join("b/state.json")).unwrap();
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&state).unwrap()["step"],
        4,
        "a refused resume leaves the checkpoint as it was"
    );
}

/// μ = 2 updates on one batch of rollouts: the second update's loss, recomputed by hand in f64
/// from the model's own log-probabilities after the first update, the rollouts' log-probabilities
/// and the advantages, equals the reported mean loss's second half.
#[test]
fn two_iterations_per_batch_match_a_hand_computed_loss() {
    let (dir, file, mut model) = setup("train-iterations");
    let mut one = grpo_config(5, 1);
    one.lr = 0.5;
    // one step, μ = 1: its loss is the first update's (ρ = 1 up to sampling vs scoring)
    let l1 = {
        let mut m = AdaptedModel::new(Transformer::load(&file, &default_device()).unwrap());
        train(
            &file,
            &mut m,
            &mut GrpoTrainer::new(one.clone()).unwrap(),
            &dir.join("mu1"),
            false,
        )
        .unwrap();
        metrics(&dir.join("mu1"))[0].clone()
    };
    let mut two = one.clone();
    two.num_iterations = 2;
    // in passes of 3 sequences whose gradients add up: the hand-computed loss is the whole batch's
    two.micro_batch = 3;
    let out = train(
        &file,
        &mut model,
        &mut GrpoTrainer::new(two).unwrap(),
        &dir.join("mu2"),
        false,
    )
    .unwrap();
    let m2 = metrics(&dir.join("mu2"))[0].clone();
    assert_eq!(m2.reward_mean, l1.reward_mean, "the same rollouts");

    // the rollouts of step 1 again (same seed and values), and the values after update 1
    let values_after_1 = l1.values.clone();
    let mut probe = AdaptedModel::new(Transformer::load(&file, &default_device()).unwrap());
    probe
        .attach_adapter(
            &file,
            &adapter(),
            &initial_values(&file.config, &adapter()),
            &|| {},
        )
        .unwrap();
    probe.set_mode(DeltaMode::Merged).unwrap();
    let chosen = tinylora::train::run::step_problems(&problems(), 4, 5, 0);
    let settings = tinylora::train::rollout::RolloutSettings {
        group_size: 8,
        max_new_tokens: 1,
        temperature: 1.0,
        prompt: &no_instruction(),
        seed: 5,
    };
    let r = pollster::block_on(tinylora::train::rollout::generate(
        &probe, &file, chosen, &settings, 0, 0,
    ))
    .unwrap();
    let rewards: Vec<f32> = r
        .texts
        .iter()
        .enumerate()
        .map(|(i, t)| {
            f32::from(u8::from(is_correct(
                t,
                &r.problems[i / 8].gold,
                ExtractMode::Flexible,
            )))
        })
        .collect();
    let adv = tinylora::train::advantages(&rewards, 8, ScaleRewards::Group);
    // log π(y) after update 1: the model's logits for each prompt, in f64
    probe.set_values(&values_after_1, false).unwrap();
    let logits = probe
        .forward_logits(
            &r.generations
                .iter()
                .map(|g| g.prompt_ids.clone())
                .collect::<Vec<_>>(),
        )
        .unwrap();
    let v = file.config.vocab_size;
    // GRPO aggregation, one token per completion, as TRL normalises it: the sum over the
    // sequences with A ≠ 0 of −min(ρA, clip(ρ, 0.8, 1.28)A), ρ = exp(logp_new − logp_rollout),
    // over all B sequences of the batch (those with A = 0 add 0)
    let mut terms = Vec::new();
    for (i, g) in r.generations.iter().enumerate() {
        if adv[i] == 0.0 {
            continue;
        }
        let row = &logits[i][logits[i].len() - v..];
        let max = row.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x as f64));
        let lse = max + row.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln();
        let logp_new = row[g.output_ids[0] as usize] as f64 - lse;
        let ratio = (logp_new - g.logprobs[0] as f64).exp();
        let a = adv[i] as f64;
        terms.push(-(ratio * a).min(ratio.clamp(0.8, 1.28) * a));
    }
    assert!(!terms.is_empty(), "some groups carry signal");
    let loss2 = terms.iter().sum::<f64>() / r.generations.len() as f64;
    // the reported loss is the mean of the two updates' losses
    let reported2 = 2.0 * m2.loss as f64 - l1.loss as f64;
    println!(
        "update 2: reported {reported2:.6}, by hand {loss2:.6}; update 1 {:.6}",
        l1.loss
    );
    assert!(
        (reported2 - loss2).abs() < 2e-4,
        "update 2's loss {reported2} vs hand-computed {loss2}"
    );
    assert!(
        (loss2 - l1.loss as f64).abs() > 1e-3,
        "the ratio moved off 1 in update 2"
    );
    assert_ne!(out.values, values_after_1, "two updates move further than one");
}

/// The trainer's teacher-forced log-probabilities of sampled completions equal the ones the
/// sampler reported (so the importance ratio starts at 1).
#[test]
fn completion_logprobs_equal_the_samplers() {
    use tinylora::train::policy::{CompletionBatch, token_logprobs};
    let (_dir, file, model) = setup("train-logprobs");
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
            first_stream: 0,
        },
        stop_ids: vec![],
    };
    let gens = model.generate(&prompts, &opts, |_, _| {}).unwrap();
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

/// The log-probabilities made from the logits a few rows at a time equal stock burn ops on the
/// whole `[N, V]` logits (`log_softmax` and `gather`, differentiated by burn's autodiff), in
/// value and in the gradient of the adapter values, on the GPU and on the CPU backend, merged
/// and on the activation path; uneven chunks (3 rows) cut across sequences.
#[test]
fn logprobs_in_chunks_equal_whole_logits_in_value_and_gradient() {
    use burn::tensor::activation::log_softmax;
    use burn::tensor::{Int, Tensor, TensorData};
    use tinylora::engine::cpu_device;
    use tinylora::train::policy::{CompletionBatch, token_logprobs_in_chunks};
    let dir = common::temp_dir("train-chunked-logprobs");
    digit_model(&dir);
    let file = ModelFile::open(&dir).unwrap();
    let prompts: Vec<Vec<u32>> = problems()
        .iter()
        .map(|p| file.tokenizer.encode(&p.question).unwrap())
        .collect();
    // completions of different lengths, so that rows differ in padding and window
    let completions: Vec<Vec<u32>> = (0..prompts.len())
        .map(|i| (0..2 + i % 3).map(|j| (7 * i + 3 * j) as u32 % 40 + 1).collect())
        .collect();
    let batch = CompletionBatch::new(&prompts, &completions);
    let (b, w) = (batch.rows.len(), batch.window());
    // a loss Σ cᵢ ℓᵢ with fixed weights of both signs over the completion positions
    let weights: Vec<f32> = batch
        .mask()
        .iter()
        .enumerate()
        .map(|(i, m)| m * (((i * 37) % 11) as f32 / 5.0 - 1.0))
        .collect();
    let cfg = adapter();
    let values: Vec<f32> = (0..initial_values(&file.config, &cfg).len())
        .map(|i| 0.02 * (i as f32 - 6.5))
        .collect();
    for device in [default_device(), cpu_device()] {
        let mut model = AdaptedModel::new(Transformer::load(&file, &device).unwrap());
        model.attach_adapter(&file, &cfg, &values, &|| {}).unwrap();
        for mode in [DeltaMode::Merged, DeltaMode::Activation] {
            let run = |model: &mut AdaptedModel, chunk: Option<usize>| {
                model.set_values(&values, true).unwrap();
                model.set_mode(mode).unwrap();
                let logp = match chunk {
                    Some(rows) => token_logprobs_in_chunks(model, &batch, 0.7, rows),
                    None => {
                        // stock ops on the whole logits [B·W, V]
                        let hidden = model.hidden_states(&batch.rows, &batch.pads);
                        let h = hidden.dims()[2];
                        let hidden = hidden
                            .slice([0..b, batch.first..batch.len, 0..h])
                            .reshape([b * w, h]);
                        let next: Vec<i64> = batch
                            .rows
                            .iter()
                            .flat_map(|r| {
                                (batch.first..batch.len).map(|t| r.get(t + 1).copied().unwrap_or(0) as i64)
                            })
                            .collect();
                        let idx = Tensor::<2, Int>::from_data(TensorData::new(next, [b * w, 1]), &device);
                        log_softmax(model.logits(hidden) / 0.7, 1)
                            .gather(1, idx)
                            .reshape([b, w])
                    }
                };
                let c = batch.tensor(weights.clone(), &device).autodiff();
                let loss = (logp.clone() * c).sum();
                let grads = loss.backward();
                let g = pollster::block_on(model.gradient(&grads)).unwrap();
                (logp.into_data().try_into_vec::<f32>().unwrap(), g)
            };
            let (want, want_g) = run(&mut model, None);
            let (got, got_g) = run(&mut model, Some(3));
            let mask = batch.mask();
            for i in 0..got.len() {
                if mask[i] == 1.0 {
                    assert!(
                        (got[i] - want[i]).abs() <= 1e-5 * want[i].abs().max(1.0),
                        "{device:?} {mode:?} position {i}: {} vs whole logits {}",
                        got[i],
                        want[i]
                    );
                }
            }
            let scale = want_g.iter().fold(0.0f32, |m, x| m.max(x.abs()));
            assert!(scale > 1e-3, "the loss reaches the adapter values");
            for (k, (a, e)) in got_g.iter().zip(&want_g).enumerate() {
                assert!(
                    (a - e).abs() <= 1e-4 * scale,
                    "{device:?} {mode:?} ∂L/∂v[{k}]: {a} vs whole logits {e}"
                );
            }
        }
    }
}

/// SFT on the gold solution (`t7`, then end-of-sequence) raises the probability of the target
/// tokens and, with it, the sampled reward.
#[test]
fn sft_baseline_learns_the_solution_tokens() {
    use tinylora::train::{SftConfig, SftTrainer};
    let (dir, file, mut model) = setup("train-sft");
    let before = mean_reward(&mut model, &file);
    let mut sft = SftTrainer {
        config: SftConfig {
            batch_size: 8,
            steps: 10,
            lr: 0.3,
            warmup: 0,
            max_grad_norm: 0.0,
            weight_decay: 0.0,
            micro_batch: 3,
            prompt: no_instruction(),
            seed: 0,
        },
    };
    train(&file, &mut model, &mut sft, &dir.join("sft"), false).unwrap();
    let metrics = metrics(&dir.join("sft"));
    let (first, last) = (metrics[0].reward_mean, metrics[9].reward_mean);
    println!("SFT target probability {first:.3} → {last:.3}");
    assert!(last > first * 1.3, "target probability {first:.3} → {last:.3}");
    assert!(metrics[9].loss < metrics[0].loss);
    let after = mean_reward(&mut model, &file);
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
            line: i + 1,
        })
        .collect();
    let style = PromptStyle {
        instruction: String::new(),
        answer_prefix: String::new(),
    };
    let mut calls = Vec::new();
    let settings = EvalSettings {
        prompt: style.clone(),
        max_new_tokens: 2,
        batch: 3,
        extract: ExtractMode::Flexible,
    };
    let report = evaluate(&model, &file, &problems, &settings, |done, tokens| {
        calls.push((done, tokens))
    })
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
        let alone = model.generate(&[prompt], &greedy, |_, _| {}).unwrap();
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

/// The external reward program end to end: `scripts/rewards/answer_reward.py` scores like the
/// built-in flexible `correct` reward (same rewards at every step), and a program that exits
/// or prints garbage in step 2 stops the run with an error naming it and the line, leaving the
/// checkpoint of step 1 intact.
#[test]
fn external_reward_program_scores_and_its_failures_keep_the_checkpoint() {
    let (dir, file, mut model) = setup("train-reward-cmd");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/rewards/answer_reward.py");
    let with_program = |cmd: String| {
        let mut c = grpo_config(7, 2);
        c.rewards = vec!["cmd:1".parse().unwrap()];
        c.reward_cmd = Some(cmd);
        GrpoTrainer::new(c).unwrap()
    };
    train(&file, &mut model, &mut grpo(7, 2), &dir.join("builtin"), false).unwrap();
    let mut m = AdaptedModel::new(Transformer::load(&file, &default_device()).unwrap());
    let cmd = format!("python3 {}", script.display());
    train(&file, &mut m, &mut with_program(cmd), &dir.join("program"), false).unwrap();
    let (a, b) = (metrics(&dir.join("builtin")), metrics(&dir.join("program")));
    assert_eq!(a.len(), 2);
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.reward_mean, y.reward_mean, "step {}", x.step);
        assert_eq!(y.rewards["cmd"], y.reward_mean);
    }
    // 32 completions a step: these programs fail on the 40th, in step 2
    let scripts = [
        (
            "exits",
            "import sys\nfor i, line in enumerate(sys.stdin):\n    if i == 39: sys.exit(3)\n    print(0.0, flush=True)\n",
        ),
        (
            "garbage",
            "import sys\nfor i, line in enumerate(sys.stdin):\n    print('oops' if i == 39 else 0.0, flush=True)\n",
        ),
    ];
    for (name, body) in scripts {
        let path = dir.join(format!("{name}.py"));
        std::fs::write(&path, body).unwrap();
        let run = dir.join(name);
        let cmd = format!("python3 {}", path.display());
        let e = train(&file, &mut m, &mut with_program(cmd.clone()), &run, false).unwrap_err();
        let chain = tinylora::formats::error_chain(&e);
        assert!(
            chain.contains("scoring step 2") && chain.contains(&cmd),
            "{name}: {chain}"
        );
        match name {
            "exits" => assert!(chain.contains("exited") && chain.contains("7 of 32"), "{chain}"),
            _ => assert!(chain.contains("line 40") && chain.contains("`oops`"), "{chain}"),
        }
        let state: serde_json::Value =
            serde_json::from_slice(&std::fs::read(run.join("state.json")).unwrap()).unwrap();
        assert_eq!(state["step"], 1, "{name}: the checkpoint of step 1 is intact");
        assert_eq!(metrics(&run).len(), 1);
        AdapterFile::load(&run.join("adapter.safetensors")).unwrap();
    }
}

/// Ctrl-C (the stop flag) during the base model's evaluation stops the run before any step,
/// with a checkpoint of step 0 that `--resume` continues from.
#[test]
fn stopping_during_the_first_evaluation_leaves_a_resumable_run() {
    let (dir, file, mut model) = setup("train-stop");
    let run = dir.join("run");
    let stop = Arc::new(AtomicBool::new(true)); // as if Ctrl-C came as the evaluation began
    let out = train_until(&file, &mut model, &mut grpo(2, 3), &run, false, problems(), stop).unwrap();
    assert_eq!((out.step, out.interrupted), (0, true));
    assert!(out.before.is_none() && out.after.is_none());
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("state.json")).unwrap()).unwrap();
    assert_eq!(state["step"], 0);
    assert!(!run.join("metrics.jsonl").exists(), "no step ran");
    let go = Arc::new(AtomicBool::new(false));
    let out = train_until(&file, &mut model, &mut grpo(2, 3), &run, true, problems(), go).unwrap();
    assert_eq!((out.step, out.interrupted), (3, false));
    assert!(
        out.before.is_some() && out.after.is_some(),
        "resumed at step 0: both evaluations"
    );
    assert_eq!(metrics(&run).len(), 3);
}

/// A run that fails before its first checkpoint (here: an adapter rank no kernel takes, found
/// while attaching) leaves no empty run directory behind.
#[test]
fn a_run_failing_before_its_first_checkpoint_leaves_no_directory() {
    let (dir, file, mut model) = setup("train-fail-early");
    let run = dir.join("run");
    let e = Training {
        file: &file,
        model: &mut model,
        adapter: AdapterConfig {
            rank: 1000,
            ..adapter()
        },
        method: &mut grpo(1, 2),
        train: problems(),
        held_out: vec![],
        settings: RunSettings {
            dir: run.clone(),
            resume: false,
            overwrite: false,
            eval_every: 0,
            eval: EvalSettings {
                prompt: no_instruction(),
                max_new_tokens: 1,
                batch: 16,
                extract: ExtractMode::Flexible,
            },
            record: serde_json::json!({}),
        },
        stop: Arc::new(AtomicBool::new(false)),
        collective: &Single,
    }
    .run(&Quiet)
    .unwrap_err();
    assert!(e.to_string().contains("rank 1000"), "{e}");
    assert!(!run.exists(), "the directory it created is removed again");

    // what a run killed before its first checkpoint leaves (a config, an adapter, the lock
    // file) is no run: a new run replaces it without --overwrite
    std::fs::create_dir_all(&run).unwrap();
    for name in ["config.json", "adapter.safetensors", "run.lock"] {
        std::fs::write(run.join(name), b"left by a killed run").unwrap();
    }
    let out = train(&file, &mut model, &mut grpo(1, 1), &run, false).unwrap();
    assert_eq!(out.step, 1);
}
