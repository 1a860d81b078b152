//! Rotary position embedding (Hugging Face "rotate half" convention).
//!
//! For position p and i < d_h/2: θ_i = base^(−2i/d_h), and
//! rope(x)[i] = x[i] cos(pθ_i) − x[i + d_h/2] sin(pθ_i),
//! rope(x)[i + d_h/2] = x[i + d_h/2] cos(pθ_i) + x[i] sin(pθ_i).
//!
//! The rotation itself is one fused op, `tinylora_kernels::rope`; this module builds its tables.

use burn::tensor::{Device, Tensor, TensorData};

/// cos/sin tables for a batch of positions, `[B, T, d_h]` each (halves duplicated).
#[derive(Debug, Clone)]
pub struct RopeBatch {
    /// cos(p θ), `[B, T, d_h]`.
    pub cos: Tensor<3>,
    /// sin(p θ), `[B, T, d_h]`.
    pub sin: Tensor<3>,
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
    let shape = [b, t, head_dim];
    RopeBatch {
        cos: Tensor::from_data(TensorData::new(cos, shape), device),
        sin: Tensor::from_data(TensorData::new(sin, shape), device),
    }
}
