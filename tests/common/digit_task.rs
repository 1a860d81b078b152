//! A task GRPO can learn in seconds: a tiny random llama built so that its first answer token
//! is one of t0..t9 about uniformly, and problems whose gold answer is 7 (flexible extraction
//! of `t7`), so the reward is mixed and a 14-parameter TinyLoRA adapter can raise it.

use std::path::Path;

use tinylora::formats::Architecture;
use tinylora::train::prompt::PromptStyle;
use tinylora::train::{ExtractMode, GrpoConfig, LossConfig, Problem, ScaleRewards};

use super::tiny_model::{random_weights, tiny_config, write_tiny_hf_dir};

/// A tiny model whose answers are mostly the tokens t0..t9.
pub fn digit_model(dir: &Path) {
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

pub fn problems() -> Vec<Problem> {
    (0..8)
        .map(|i| Problem {
            question: format!("t{} t{} t{}", 20 + i, 40 + 2 * i, 100 + 3 * i),
            gold: "7".into(),
            solution: "t7".into(),
            line: i + 1,
        })
        .collect()
}

pub fn no_instruction() -> PromptStyle {
    PromptStyle {
        instruction: String::new(),
        answer_prefix: String::new(),
    }
}

pub fn grpo_config(seed: u64, steps: usize) -> GrpoConfig {
    GrpoConfig {
        group_size: 8,
        prompts_per_step: 4,
        max_new_tokens: 1,
        temperature: 1.0,
        steps,
        num_iterations: 1,
        lr: 0.3,
        warmup: 0,
        max_grad_norm: 0.0,
        weight_decay: 0.0,
        micro_batch: 0,
        scale_rewards: ScaleRewards::Group,
        mask_truncated: false,
        loss: LossConfig::default(),
        rewards: vec!["correct:1".parse().unwrap()],
        format_pattern: None,
        reward_cmd: None,
        extract: ExtractMode::Flexible,
        prompt: no_instruction(),
        seed,
    }
}
