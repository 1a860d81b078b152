//! Rank-r truncated SVD of a frozen weight, W ≈ U Σ Vᵀ, by randomized subspace iteration
//! (Halko, Martinsson & Tropp 2011), deterministic for a seed, with canonical signs.
//!
//! An adapter of a few bytes is only meaningful with the same U, V: the sketch matrix comes
//! from a seeded ChaCha stream, all arithmetic is f64 in a fixed order, and each singular pair
//! is signed so that the largest-magnitude entry of its U column is positive.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Extra sketch columns beyond r.
const OVERSAMPLE: usize = 8;
/// Power iterations (sharpen the spectrum before the small SVD).
const POWER_ITERATIONS: usize = 4;

/// The top-r singular triplets of a `[m, n]` matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct TruncatedSvd {
    /// Left singular vectors U `[m, r]`, row-major.
    pub u: Vec<f32>,
    /// Singular values σ₁ ≥ … ≥ σ_r.
    pub s: Vec<f32>,
    /// Right singular vectors V `[n, r]`, row-major.
    pub v: Vec<f32>,
    /// Rows of W (d_out).
    pub m: usize,
    /// Columns of W (d_in).
    pub n: usize,
    /// Rank.
    pub r: usize,
}

/// y `[m, k]` = W `[m, n]` · x `[n, k]`.
fn w_times(w: &[f32], m: usize, n: usize, x: &[f64], k: usize) -> Vec<f64> {
    let mut y = vec![0.0; m * k];
    for (row, yr) in w.chunks_exact(n).zip(y.chunks_exact_mut(k)) {
        for (j, &wj) in row.iter().enumerate() {
            let wj = wj as f64;
            for (yc, xc) in yr.iter_mut().zip(&x[j * k..(j + 1) * k]) {
                *yc += wj * xc;
            }
        }
    }
    y
}

/// z `[n, k]` = Wᵀ · y `[m, k]`.
fn wt_times(w: &[f32], n: usize, y: &[f64], k: usize) -> Vec<f64> {
    let mut z = vec![0.0; n * k];
    for (row, yr) in w.chunks_exact(n).zip(y.chunks_exact(k)) {
        for (j, &wj) in row.iter().enumerate() {
            let wj = wj as f64;
            for (zc, yc) in z[j * k..(j + 1) * k].iter_mut().zip(yr) {
                *zc += wj * yc;
            }
        }
    }
    z
}

/// Orthonormalise the k columns of a row-major `[rows, k]` matrix in place (modified
/// Gram–Schmidt, twice for stability).
fn orthonormalize(a: &mut [f64], rows: usize, k: usize) {
    for _ in 0..2 {
        for c in 0..k {
            for p in 0..c {
                let dot: f64 = (0..rows).map(|i| a[i * k + c] * a[i * k + p]).sum();
                (0..rows).for_each(|i| a[i * k + c] -= dot * a[i * k + p]);
            }
            let norm = (0..rows)
                .map(|i| a[i * k + c].powi(2))
                .sum::<f64>()
                .sqrt()
                .max(1e-300);
            (0..rows).for_each(|i| a[i * k + c] /= norm);
        }
    }
}

/// Eigen-decomposition of a symmetric `[k, k]` matrix by cyclic Jacobi rotations:
/// returns eigenvalues and the eigenvectors as columns of a row-major `[k, k]` matrix.
fn symmetric_eigen(mut g: Vec<f64>, k: usize) -> (Vec<f64>, Vec<f64>) {
    let mut e = vec![0.0; k * k];
    (0..k).for_each(|i| e[i * k + i] = 1.0);
    for _sweep in 0..100 {
        let off: f64 = (0..k)
            .flat_map(|i| (0..k).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| g[i * k + j].powi(2))
            .sum();
        if off < 1e-30 {
            break;
        }
        for p in 0..k {
            for q in p + 1..k {
                let gpq = g[p * k + q];
                if gpq.abs() < 1e-300 {
                    continue;
                }
                let theta = (g[q * k + q] - g[p * k + p]) / (2.0 * gpq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let (c, s) = (1.0 / (t * t + 1.0).sqrt(), t / (t * t + 1.0).sqrt());
                for i in 0..k {
                    let (gip, giq) = (g[i * k + p], g[i * k + q]);
                    g[i * k + p] = c * gip - s * giq;
                    g[i * k + q] = s * gip + c * giq;
                }
                for i in 0..k {
                    let (gpi, gqi) = (g[p * k + i], g[q * k + i]);
                    g[p * k + i] = c * gpi - s * gqi;
                    g[q * k + i] = s * gpi + c * gqi;
                }
                for i in 0..k {
                    let (eip, eiq) = (e[i * k + p], e[i * k + q]);
                    e[i * k + p] = c * eip - s * eiq;
                    e[i * k + q] = s * eip + c * eiq;
                }
            }
        }
    }
    ((0..k).map(|i| g[i * k + i]).collect(), e)
}

/// The rank-`r` truncated SVD of W `[m, n]` (row-major), deterministic for `seed`.
pub fn truncated_svd(w: &[f32], m: usize, n: usize, r: usize, seed: u64) -> TruncatedSvd {
    assert_eq!(
        w.len(),
        m * n,
        "truncated_svd: W has {} values, not {m}×{n}",
        w.len()
    );
    assert!(
        r >= 1 && r <= m.min(n),
        "truncated_svd: rank {r} for a {m}×{n} matrix"
    );
    let k = (r + OVERSAMPLE).min(m.min(n));
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let omega: Vec<f64> = (0..n * k).map(|_| rng.random::<f64>() * 2.0 - 1.0).collect(); // [n, k]
    let mut q = w_times(w, m, n, &omega, k); // [m, k]
    orthonormalize(&mut q, m, k);
    for _ in 0..POWER_ITERATIONS {
        let mut z = wt_times(w, n, &q, k); // [n, k]
        orthonormalize(&mut z, n, k);
        q = w_times(w, m, n, &z, k);
        orthonormalize(&mut q, m, k);
    }
    // B = Qᵀ W = Zᵀ with Z = Wᵀ Q [n, k]; B Bᵀ = Zᵀ Z [k, k]
    let z = wt_times(w, n, &q, k);
    let gram: Vec<f64> = (0..k * k)
        .map(|ij| (0..n).map(|t| z[t * k + ij / k] * z[t * k + ij % k]).sum())
        .collect();
    let (eigenvalues, e) = symmetric_eigen(gram, k);
    let mut order: Vec<usize> = (0..k).collect();
    order.sort_by(|&a, &b| eigenvalues[b].total_cmp(&eigenvalues[a]));
    let (mut u, mut v, mut s) = (vec![0.0f32; m * r], vec![0.0f32; n * r], vec![0.0f32; r]);
    for (c, &i) in order.iter().take(r).enumerate() {
        let sigma = eigenvalues[i].max(0.0).sqrt();
        // u = Q e_i, v = Z e_i / σ (the right singular vector of B)
        let uc: Vec<f64> = (0..m)
            .map(|t| (0..k).map(|j| q[t * k + j] * e[j * k + i]).sum())
            .collect();
        let vc: Vec<f64> = (0..n)
            .map(|t| (0..k).map(|j| z[t * k + j] * e[j * k + i]).sum::<f64>() / sigma.max(1e-300))
            .collect();
        let pivot = uc
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()).then(b.0.cmp(&a.0)))
            .unwrap()
            .0;
        let sign = if uc[pivot] < 0.0 { -1.0 } else { 1.0 };
        (0..m).for_each(|t| u[t * r + c] = (sign * uc[t]) as f32);
        (0..n).for_each(|t| v[t * r + c] = (sign * vc[t]) as f32);
        s[c] = sigma as f32;
    }
    TruncatedSvd { u, s, v, m, n, r }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `[rows, k]` matrix with orthonormal columns from a seeded stream.
    fn random_orthonormal(rows: usize, k: usize, seed: u64) -> Vec<f64> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut a: Vec<f64> = (0..rows * k).map(|_| rng.random::<f64>() - 0.5).collect();
        orthonormalize(&mut a, rows, k);
        a
    }

    /// W = U₀ diag(σ) V₀ᵀ with a known spectrum.
    fn known(m: usize, n: usize, sigma: &[f64]) -> (Vec<f32>, Vec<f64>, Vec<f64>) {
        let k = sigma.len();
        let (u0, v0) = (random_orthonormal(m, k, 1), random_orthonormal(n, k, 2));
        let w = (0..m * n)
            .map(|ij| {
                (0..k)
                    .map(|c| u0[ij / n * k + c] * sigma[c] * v0[ij % n * k + c])
                    .sum::<f64>() as f32
            })
            .collect();
        (w, u0, v0)
    }

    #[test]
    fn recovers_a_known_spectrum_and_subspaces() {
        let sigma = [10.0, 5.0, 2.0, 1.0, 0.5, 0.25];
        let (m, n) = (120, 90);
        let (w, u0, v0) = known(m, n, &sigma);
        for r in [1, 2, 4] {
            let svd = truncated_svd(&w, m, n, r, 7);
            for c in 0..r {
                assert!(
                    (svd.s[c] as f64 - sigma[c]).abs() < 1e-4 * sigma[c],
                    "σ{c} = {}",
                    svd.s[c]
                );
                let du: f64 = (0..m).map(|t| svd.u[t * r + c] as f64 * u0[t * 6 + c]).sum();
                let dv: f64 = (0..n).map(|t| svd.v[t * r + c] as f64 * v0[t * 6 + c]).sum();
                assert!(
                    (du.abs() - 1.0).abs() < 1e-5 && (dv.abs() - 1.0).abs() < 1e-5,
                    "r={r} c={c}: {du} {dv}"
                );
                assert!(du * dv > 0.0, "U and V signs agree");
            }
        }
    }

    #[test]
    fn deterministic_with_canonical_signs() {
        let (w, _, _) = known(64, 48, &[3.0, 2.0, 1.0]);
        let a = truncated_svd(&w, 64, 48, 2, 11);
        assert_eq!(a, truncated_svd(&w, 64, 48, 2, 11), "same seed, same bits");
        let b = truncated_svd(&w, 64, 48, 2, 12);
        for (x, y) in a.u.iter().zip(&b.u).chain(a.v.iter().zip(&b.v)) {
            assert!(
                (x - y).abs() < 1e-5,
                "another seed gives the same factors, signs included"
            );
        }
        for c in 0..2 {
            let col: Vec<f32> = (0..64).map(|t| a.u[t * 2 + c]).collect();
            let big = col
                .iter()
                .cloned()
                .fold(0.0f32, |m, x| if x.abs() > m.abs() { x } else { m });
            assert!(big > 0.0);
        }
    }
}
