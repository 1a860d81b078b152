//! [`TokenChoiceBackend`] on burn's Flex CPU backend: the steps of `shaders/token_choice.wgsl`
//! in id order, one row a task, the sums in f64.

use burn::backend::Flex;
use burn::backend::TensorMetadata;
use burn::backend::flex::FlexTensor;
use rayon::prelude::*;

use crate::flex_f32::{contiguous, tensor};
use crate::fused_cpu::exp;
use crate::token_choice::{TokenChoiceBackend, check_shapes, inverse_temperature};

/// (id, log-probability) of one row of logits `l` `[V]` with z = l · `inv_t`: the largest z
/// (the lowest id among equals) when `greedy`, else the id at which the running total of
/// p = softmax(z) in id order first passes `u`, or where rounding leaves `u` past the total,
/// the last id with p > 0.
pub(crate) fn choose_row(l: &[f32], inv_t: f32, greedy: bool, u: f32) -> (u32, f32) {
    let z = |i: usize| l[i] * inv_t;
    let mut argmax = 0;
    for i in 1..l.len() {
        if z(i) > z(argmax) {
            argmax = i;
        }
    }
    let m = z(argmax);
    let sum: f64 = (0..l.len()).map(|i| f64::from(exp(z(i) - m))).sum();
    let lse = m + sum.ln() as f32;
    if greedy {
        return (argmax as u32, m - lse);
    }
    let (u, mut run, mut last_positive) = (f64::from(u), 0.0f64, l.len() - 1);
    for i in 0..l.len() {
        let p = exp(z(i) - lse);
        if p > 0.0 {
            last_positive = i;
        }
        run += f64::from(p);
        if u < run {
            return (i as u32, z(i) - lse);
        }
    }
    (last_positive as u32, z(last_positive) - lse)
}

impl TokenChoiceBackend for Flex {
    fn choose_tokens(logits: FlexTensor, draws: FlexTensor, temperature: f32) -> FlexTensor {
        let (b, v) = check_shapes(&logits.shape().to_vec(), &draws.shape().to_vec());
        let (logits, draws) = (
            contiguous(&logits, "choose_tokens"),
            contiguous(&draws, "choose_tokens"),
        );
        let (l, u) = (logits.storage::<f32>(), draws.storage::<f32>());
        let (greedy, inv_t) = (temperature <= 0.0, inverse_temperature(temperature));
        let mut chosen = vec![0.0f32; b * 2];
        chosen
            .par_chunks_mut(2)
            .zip(l.par_chunks(v).zip(u.par_iter()))
            .for_each(|(out, (row, &u))| {
                let (id, logprob) = choose_row(row, inv_t, greedy, u);
                out.copy_from_slice(&[id as f32, logprob]);
            });
        tensor(chosen, [b, 2])
    }
}
