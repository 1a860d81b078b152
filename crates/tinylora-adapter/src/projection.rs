//! The fixed random projections of TinyLoRA and the update they produce.
//!
//! Module k of a model (in layer order) gets u matrices Pᵢ `[r, r]` with N(0, 1/r) entries from
//! ChaCha stream k of the projection seed. The trainable vector v of its tie group mixes them,
//! R(v) = Σᵢ vᵢ Pᵢ, and the update is ΔW = U M Vᵀ with the core M from the Σ convention:
//! paper Σ R, LoRA-XS R Σ, PEFT √Σ R √Σ.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use serde::{Deserialize, Serialize};

use crate::svd::TruncatedSvd;

/// Where Σ sits in the frozen factors (all agree at v = 0, train differently).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SigmaConvention {
    /// The paper: U Σ R Vᵀ (default).
    Paper,
    /// LoRA-XS code: U R Σ Vᵀ.
    LoraXs,
    /// Hugging Face PEFT: U √Σ R √Σ Vᵀ.
    Peft,
}

/// The u projections of module `module`: row-major `[u, r, r]`, entries N(0, 1/r).
pub fn projections(seed: u64, module: usize, u: usize, r: usize) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(module as u64);
    let std = (1.0 / r as f64).sqrt();
    (0..u * r * r)
        .map(|_| {
            // Box–Muller from two uniforms in (0, 1]
            let (a, b): (f64, f64) = (1.0 - rng.random::<f64>(), rng.random::<f64>());
            ((-2.0 * a.ln()).sqrt() * (2.0 * std::f64::consts::PI * b).cos() * std) as f32
        })
        .collect()
}

/// R(v) = Σᵢ vᵢ Pᵢ, `[r, r]`.
pub fn mix(v: &[f32], p: &[f32], r: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; r * r];
    for (vi, pi) in v.iter().zip(p.chunks_exact(r * r)) {
        out.iter_mut().zip(pi).for_each(|(o, &x)| *o += vi * x);
    }
    out
}

/// How a Σ convention splits Σ around R: M = diag(left) R diag(right).
pub fn sigma_split(sigma: &[f32], convention: SigmaConvention) -> (Vec<f32>, Vec<f32>) {
    let ones = vec![1.0; sigma.len()];
    match convention {
        SigmaConvention::Paper => (sigma.to_vec(), ones),
        SigmaConvention::LoraXs => (ones, sigma.to_vec()),
        SigmaConvention::Peft => {
            let root: Vec<f32> = sigma.iter().map(|s| s.sqrt()).collect();
            (root.clone(), root)
        }
    }
}

/// The core M `[r, r]` of ΔW = U M Vᵀ for a trainable R under a Σ convention.
pub fn core(sigma: &[f32], rmat: &[f32], convention: SigmaConvention) -> Vec<f32> {
    let r = sigma.len();
    let (left, right) = sigma_split(sigma, convention);
    (0..r * r)
        .map(|ij| left[ij / r] * rmat[ij] * right[ij % r])
        .collect()
}

/// ΔW `[m, n]` = U M Vᵀ.
pub fn delta_weight(svd: &TruncatedSvd, m_core: &[f32]) -> Vec<f32> {
    let (m, n, r) = (svd.m, svd.n, svd.r);
    // UM [m, r]
    let um: Vec<f32> = (0..m * r)
        .map(|ai| {
            (0..r)
                .map(|k| svd.u[ai / r * r + k] * m_core[k * r + ai % r])
                .sum()
        })
        .collect();
    (0..m * n)
        .map(|ab| (0..r).map(|j| um[ab / n * r + j] * svd.v[ab % n * r + j]).sum())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projections_are_normal_with_variance_one_over_r() {
        let r = 4;
        let p = projections(3, 0, 2000, r);
        let n = p.len() as f64;
        let mean = p.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = p.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 0.25).abs() < 0.01, "variance {var}");
        assert_eq!(p, projections(3, 0, 2000, r), "reproducible");
        assert_ne!(projections(3, 1, 1, r), projections(3, 0, 1, r), "modules differ");
    }

    #[test]
    fn zero_v_is_a_no_op_and_conventions_agree_on_identity_scaling() {
        let svd = TruncatedSvd {
            u: vec![1.0, 0.0, 0.0, 1.0, 0.0, 0.0],
            s: vec![4.0, 1.0],
            v: vec![1.0, 0.0, 0.0, 1.0],
            m: 3,
            n: 2,
            r: 2,
        };
        let p = projections(0, 0, 3, 2);
        let zero = delta_weight(
            &svd,
            &core(&svd.s, &mix(&[0.0; 3], &p, 2), SigmaConvention::Paper),
        );
        assert!(zero.iter().all(|&x| x == 0.0));
        // with R = I every convention gives U Σ Vᵀ
        let eye = [1.0, 0.0, 0.0, 1.0];
        for c in [
            SigmaConvention::Paper,
            SigmaConvention::LoraXs,
            SigmaConvention::Peft,
        ] {
            assert_eq!(
                delta_weight(&svd, &core(&svd.s, &eye, c)),
                [4.0, 0.0, 0.0, 1.0, 0.0, 0.0]
            );
        }
        // paper: U Σ R Vᵀ puts σ on the rows of R; LoRA-XS on the columns
        let off = [0.0, 1.0, 0.0, 0.0];
        assert_eq!(core(&svd.s, &off, SigmaConvention::Paper), [0.0, 4.0, 0.0, 0.0]);
        assert_eq!(core(&svd.s, &off, SigmaConvention::LoraXs), [0.0, 1.0, 0.0, 0.0]);
        assert_eq!(core(&svd.s, &off, SigmaConvention::Peft), [0.0, 2.0, 0.0, 0.0]);
    }
}
