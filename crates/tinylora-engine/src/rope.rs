//! Rotary position embedding (Hugging Face "rotate half" convention).
//!
//! For position p and i < d_h/2: θ_i = base^(−2i/d_h), and
//! rope(x)[i] = x[i] cos(pθ_i) − x[i + d_h/2] sin(pθ_i),
//! rope(x)[i + d_h/2] = x[i + d_h/2] cos(pθ_i) + x[i] sin(pθ_i).

use burn::tensor::{Device, Tensor, TensorData};

/// cos/sin tables for a batch of positions, `[B, 1, T, d_h]` each (halves duplicated).
#[derive(Debug, Clone)]
pub struct RopeBatch {
    /// cos(p θ), `[B, 1, T, d_h]`.
    pub cos: Tensor<4>,
    /// sin(p θ), `[B, 1, T, d_h]`.
    pub sin: Tensor<4>,
}

/// Build the tables for `positions[b][t]`.
pub fn rope_tables(positions: &[Vec<usize>], head_dim: usize, theta: f32, device: &Device) -> RopeBatch {
    let (b, t) = (positions.len(), positions[0].len());
    let half = head_dim / 2;
    let inv_freq: Vec<f64> = (0..half)
        .map(|i| 1.0 / (theta as f64).powf(2.0 * i as f64 / head_dim as f64))
        .collect();
    let mut cos = Vec::with_capacity(b * t * head_dim);
    let mut sin = Vec::with_capacity(b * t * head_dim);
    for row in positions {
        for &p in row {
            for _half in 0..2 {
                for f in &inv_freq {
                    let angle = p as f64 * f;
                    cos.push(angle.cos() as f32);
                    sin.push(angle.sin() as f32);
                }
            }
        }
    }
    let shape = [b, 1, t, head_dim];
    RopeBatch {
        cos: Tensor::from_data(TensorData::new(cos, shape), device),
        sin: Tensor::from_data(TensorData::new(sin, shape), device),
    }
}

/// Apply RoPE to x `[B, heads, T, d_h]`.
pub fn apply_rope(x: Tensor<4>, rope: &RopeBatch) -> Tensor<4> {
    let half = x.dims()[3] / 2;
    let x1 = x.clone().narrow(3, 0, half);
    let x2 = x.clone().narrow(3, half, half);
    let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
    x * rope.cos.clone() + rotated * rope.sin.clone()
}
