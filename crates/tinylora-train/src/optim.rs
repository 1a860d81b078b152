//! AdamW over the adapter's trainable values, kept on the host in f32 (they are a handful of
//! numbers), with global-norm gradient clipping and a warm-up learning-rate schedule.

use serde::{Deserialize, Serialize};

/// AdamW state; serialisable so that a resumed run continues exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdamW {
    /// β₁.
    pub beta1: f32,
    /// β₂.
    pub beta2: f32,
    /// ε.
    pub eps: f32,
    /// Decoupled weight decay.
    pub weight_decay: f32,
    /// First moments.
    pub m: Vec<f32>,
    /// Second moments.
    pub v: Vec<f32>,
    /// Steps taken.
    pub t: u64,
}

impl AdamW {
    /// Fresh state for `n` parameters.
    pub fn new(n: usize, weight_decay: f32) -> Self {
        AdamW {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
            m: vec![0.0; n],
            v: vec![0.0; n],
            t: 0,
        }
    }

    /// One update of `params` with `grads` at learning rate `lr`.
    pub fn step(&mut self, params: &mut [f32], grads: &[f32], lr: f32) {
        assert_eq!(params.len(), grads.len());
        self.t += 1;
        let (c1, c2) = (
            1.0 - self.beta1.powi(self.t as i32),
            1.0 - self.beta2.powi(self.t as i32),
        );
        for i in 0..params.len() {
            self.m[i] = self.beta1 * self.m[i] + (1.0 - self.beta1) * grads[i];
            self.v[i] = self.beta2 * self.v[i] + (1.0 - self.beta2) * grads[i] * grads[i];
            let (m_hat, v_hat) = (self.m[i] / c1, self.v[i] / c2);
            params[i] -= lr * (m_hat / (v_hat.sqrt() + self.eps) + self.weight_decay * params[i]);
        }
    }
}

/// Scale `grads` so that their global L2 norm is at most `max_norm` (0: no clipping); returns
/// the norm before clipping.
pub fn clip_grad_norm(grads: &mut [f32], max_norm: f32) -> f32 {
    let norm = grads.iter().map(|g| g * g).sum::<f32>().sqrt();
    if max_norm > 0.0 && norm > max_norm {
        grads.iter_mut().for_each(|g| *g *= max_norm / norm);
    }
    norm
}

/// Learning rate at `step` (0-based): linear warm-up over `warmup` steps, then constant.
pub fn learning_rate(base: f32, step: usize, warmup: usize) -> f32 {
    if step < warmup {
        base * (step + 1) as f32 / (warmup + 1) as f32
    } else {
        base
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_adam_step_moves_each_parameter_by_lr_against_its_gradient_sign() {
        let mut p = vec![1.0f32, -2.0, 0.5];
        let mut opt = AdamW::new(3, 0.0);
        opt.step(&mut p, &[0.3, -4.0, 0.0], 0.1);
        // m̂ = g, v̂ = g²: the step is lr · g / (|g| + ε)
        assert!(
            (p[0] - 0.9).abs() < 1e-6 && (p[1] + 1.9).abs() < 1e-6 && p[2] == 0.5,
            "{p:?}"
        );
        let mut q = vec![1.0f32];
        AdamW::new(1, 0.5).step(&mut q, &[0.0], 0.1);
        assert!((q[0] - 0.95).abs() < 1e-6, "decoupled decay: {q:?}");
    }

    #[test]
    fn clipping_and_warmup() {
        let mut g = vec![3.0f32, 4.0];
        assert_eq!(clip_grad_norm(&mut g, 1.0), 5.0);
        assert!((g[0] - 0.6).abs() < 1e-6 && (g[1] - 0.8).abs() < 1e-6);
        let mut h = vec![0.3f32, 0.4];
        clip_grad_norm(&mut h, 1.0);
        assert_eq!(h, [0.3, 0.4]);
        assert_eq!(learning_rate(1.0, 0, 3), 0.25);
        assert_eq!(learning_rate(1.0, 2, 3), 0.75);
        assert_eq!(learning_rate(1.0, 3, 3), 1.0);
    }
}
