//! [`TokenChoiceBackend`] on burn's Flex CPU backend: the steps of `shaders/token_choice.wgsl`
//! in id order, one row a task, the sums in f64, the walk skipping whole blocks of ids.

use burn::backend::Flex;
use burn::backend::TensorMetadata;
use burn::backend::flex::FlexTensor;
use rayon::prelude::*;

use crate::flex_f32::{best, contiguous, tensor};
use crate::fused_cpu::exp;
use crate::token_choice::{TokenChoiceBackend, check_shapes, inverse_temperature, is_greedy};

/// Ids a step of the walk skips at once when their total stays at or below u.
const BLOCK: usize = 64;

/// The loops of one row, compiled once for the baseline CPU and once with AVX2 + FMA.
macro_rules! kernels {
    ($module:ident $(, $feature:literal)?) => {
        mod $module {
            use super::*;

            /// (id, log-probability) of one row of logits `l` `[V]` with z = l · `inv_t`: the
            /// largest z (the lowest id among equals) when `greedy`, else the id at which the
            /// running total of p = softmax(z) in id order first passes `u`, or where rounding
            /// leaves `u` past the total, the last id with p > 0.
            $(#[target_feature(enable = $feature)])?
            pub(super) fn choose_row(l: &[f32], inv_t: f32, greedy: bool, u: f32) -> (u32, f32) {
                let z = |x: f32| x * inv_t;
                // 1. the largest z in sixteen lanes, then the first id holding it
                let chunks = l.chunks_exact(16);
                let mut m = chunks.remainder().iter().fold(f32::NEG_INFINITY, |m, &x| m.max(z(x)));
                let mut lanes = [f32::NEG_INFINITY; 16];
                for c in chunks {
                    for k in 0..16 {
                        lanes[k] = lanes[k].max(z(c[k]));
                    }
                }
                m = lanes.iter().fold(m, |m, &x| m.max(x));
                let argmax = l.iter().position(|&x| z(x) == m).unwrap_or(0);
                // 2. lse = m + ln Σ exp(z − m), summed in f64
                let lse = m + mass(l, |x| exp(z(x) - m)).ln() as f32;
                if greedy {
                    return (argmax as u32, m - lse);
                }
                // 3. the walk: whole blocks while their total stays at or below u, then id by id
                let p = |x: f32| exp(z(x) - lse);
                let (u, mut run) = (f64::from(u), 0.0f64);
                for (b, block) in l.chunks(BLOCK).enumerate() {
                    let block_mass = mass(block, p);
                    if u >= run + block_mass {
                        run += block_mass;
                        continue;
                    }
                    for (i, &x) in block.iter().enumerate() {
                        run += f64::from(p(x));
                        if u < run {
                            return ((b * BLOCK + i) as u32, z(x) - lse);
                        }
                    }
                }
                let last = (0..l.len()).rev().find(|&i| p(l[i]) > 0.0).unwrap_or(l.len() - 1);
                (last as u32, z(l[last]) - lse)
            }
        }
    };
}

kernels!(portable);
#[cfg(target_arch = "x86_64")]
kernels!(avx2, "avx2,fma");

/// Σ f(x) over `x` in eight f64 lanes (vectorized by the compiler).
#[inline(always)]
fn mass(x: &[f32], f: impl Fn(f32) -> f32) -> f64 {
    let chunks = x.chunks_exact(8);
    let tail: f64 = chunks.remainder().iter().map(|&v| f64::from(f(v))).sum();
    let mut acc = [0.0f64; 8];
    for c in chunks {
        for k in 0..8 {
            acc[k] += f64::from(f(c[k]));
        }
    }
    acc.iter().sum::<f64>() + tail
}

/// One row's (id, log-probability): see `portable::choose_row`.
fn choose_row(l: &[f32], inv_t: f32, greedy: bool, u: f32) -> (u32, f32) {
    best!(choose_row(l, inv_t, greedy, u))
}

impl TokenChoiceBackend for Flex {
    fn choose_tokens(logits: FlexTensor, draws: FlexTensor, temperature: f32) -> FlexTensor {
        let (b, v) = check_shapes(&logits.shape().to_vec(), &draws.shape().to_vec());
        let (logits, draws) = (
            contiguous(&logits, "choose_tokens"),
            contiguous(&draws, "choose_tokens"),
        );
        let (l, u) = (logits.storage::<f32>(), draws.storage::<f32>());
        let (greedy, inv_t) = (is_greedy(temperature), inverse_temperature(temperature));
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
