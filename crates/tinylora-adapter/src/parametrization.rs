//! The three parametrizations of ΔW (SPEC.md §1), behind one trait: what a tie group trains,
//! what is frozen and where training starts. Each becomes the engine's low-rank delta
//! ΔW = U (Σᵢ cᵢ Bᵢ) Vᵀ (see [`crate::AdaptedModel`]): with frozen factors the values are the
//! coefficients c, without (LoRA) they are the factors themselves.
//!
//! | method   | ΔW                 | trainable per group | factors [U; V]   | basis B, coef c       |
//! |----------|--------------------|---------------------|------------------|-----------------------|
//! | TinyLoRA | U Σ (Σᵢ vᵢ Pᵢ) Vᵀ  | v ∈ R^u             | frozen SVD       | P̃ᵢ = core(Σ, Pᵢ), v   |
//! | LoRA-XS  | U Σ R Vᵀ           | vec R ∈ R^(r²)      | frozen SVD       | core(Σ, E_jk), vec R  |
//! | LoRA     | B A                | [B; Aᵀ]             | trainable [B; Aᵀ]| I, 1                  |

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use serde::{Deserialize, Serialize};
use tinylora_formats::{UnknownName, parse_name};

use crate::projection::projections;

/// The parametrization of the update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// ΔW = B A with trainable B `[d_out, r]`, A `[r, d_in]` (untied only).
    Lora,
    /// ΔW = U Σ R Vᵀ with a trainable R `[r, r]` per tie group.
    LoraXs,
    /// ΔW = U Σ (Σᵢ vᵢ Pᵢ) Vᵀ with trainable v ∈ R^u per tie group.
    Tinylora,
}

impl std::str::FromStr for Method {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, UnknownName> {
        let table = [
            ("lora", Method::Lora),
            ("lora-xs", Method::LoraXs),
            ("tinylora", Method::Tinylora),
        ];
        parse_name("method", "lora, lora-xs, tinylora", &table, s)
    }
}

/// One way to parametrize ΔW.
pub trait Parametrization: Sync {
    /// Trainable numbers per tie group at frozen rank r with u (TinyLoRA) whose modules have
    /// shape (d_out, d_in).
    fn params_per_group(&self, r: usize, u: usize, d_out: usize, d_in: usize) -> usize;

    /// Whether several modules may share one group's values.
    fn tieable(&self) -> bool {
        true
    }

    /// The r × r matrices the values mix for adapted module `module` (layer order), with the
    /// projections' `seed`, before the Σ convention; `None` when the factors themselves are
    /// trained (no frozen SVD).
    fn mixing_matrices(&self, r: usize, u: usize, seed: u64, module: usize) -> Option<Vec<Vec<f32>>>;

    /// Values that module `module` `[d_out, d_in]` starts from (its group's, when it is the
    /// group's first module): ΔW = 0.
    fn initial_values(
        &self,
        r: usize,
        u: usize,
        seed: u64,
        module: usize,
        d_out: usize,
        d_in: usize,
    ) -> Vec<f32>;
}

/// ΔW = U Σ (Σᵢ vᵢ Pᵢ) Vᵀ: u trainable numbers per group, fixed random Pᵢ.
pub struct TinyLora;
/// ΔW = U Σ R Vᵀ: R `[r, r]` trainable per group.
pub struct LoraXs;
/// ΔW = B A: the factors themselves trainable, stored as [B; Aᵀ] `[d_out + d_in, r]`.
pub struct Lora;

impl Method {
    /// The parametrization of this method.
    pub fn parametrization(self) -> &'static dyn Parametrization {
        match self {
            Method::Tinylora => &TinyLora,
            Method::LoraXs => &LoraXs,
            Method::Lora => &Lora,
        }
    }
}

impl Parametrization for TinyLora {
    fn params_per_group(&self, _: usize, u: usize, _: usize, _: usize) -> usize {
        u
    }
    fn mixing_matrices(&self, r: usize, u: usize, seed: u64, module: usize) -> Option<Vec<Vec<f32>>> {
        let p = projections(seed, module, u, r);
        Some(p.chunks_exact(r * r).map(<[f32]>::to_vec).collect())
    }
    fn initial_values(&self, _: usize, u: usize, _: u64, _: usize, _: usize, _: usize) -> Vec<f32> {
        vec![0.0; u]
    }
}

impl Parametrization for LoraXs {
    fn params_per_group(&self, r: usize, _: usize, _: usize, _: usize) -> usize {
        r * r
    }
    fn mixing_matrices(&self, r: usize, _: usize, _: u64, _: usize) -> Option<Vec<Vec<f32>>> {
        // the unit matrices E_jk, so that v = vec R
        let rr = r * r;
        Some(
            (0..rr)
                .map(|jk| (0..rr).map(|e| f32::from(u8::from(e == jk))).collect())
                .collect(),
        )
    }
    fn initial_values(&self, r: usize, _: usize, _: u64, _: usize, _: usize, _: usize) -> Vec<f32> {
        vec![0.0; r * r]
    }
}

impl Parametrization for Lora {
    fn params_per_group(&self, r: usize, _: usize, d_out: usize, d_in: usize) -> usize {
        r * (d_in + d_out)
    }
    fn tieable(&self) -> bool {
        false
    }
    fn mixing_matrices(&self, _: usize, _: usize, _: u64, _: usize) -> Option<Vec<Vec<f32>>> {
        None
    }
    /// B = 0 and A ~ U(−1/√d_in, 1/√d_in) (PEFT's Kaiming-uniform bound), so that ΔW = B A = 0
    /// but ∂L/∂B ≠ 0; seeded by the projection seed and the module.
    fn initial_values(
        &self,
        r: usize,
        _: usize,
        seed: u64,
        module: usize,
        d_out: usize,
        d_in: usize,
    ) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(module as u64);
        let bound = 1.0 / (d_in as f32).sqrt();
        let a_t = (0..d_in * r).map(|_| rng.random_range(-bound..bound));
        std::iter::repeat_n(0.0, d_out * r).chain(a_t).collect()
    }
}

/// ΔW `[d_out, d_in]` = B A of a LoRA module from its values [B; Aᵀ] `[d_out + d_in, r]`.
pub fn lora_delta(values: &[f32], d_out: usize, d_in: usize, r: usize) -> Vec<f32> {
    assert_eq!(
        values.len(),
        (d_out + d_in) * r,
        "LoRA values of a [{d_out}, {d_in}] module at rank {r}"
    );
    let (b, a_t) = values.split_at(d_out * r);
    (0..d_out * d_in)
        .map(|oi| {
            let (o, i) = (oi / d_in, oi % d_in);
            (0..r).map(|j| b[o * r + j] * a_t[i * r + j]).sum()
        })
        .collect()
}
