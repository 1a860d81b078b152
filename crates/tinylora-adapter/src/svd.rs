//! Rank-r truncated SVD of a frozen weight, W ≈ U Σ Vᵀ, by randomized block Lanczos
//! (block Krylov subspace iteration, Musco & Musco 2015), deterministic for a seed, with
//! canonical signs.
//!
//! The top right singular vectors of W are the top eigenvectors of A = WᵀW `[n, n]`. Starting
//! from a seeded random block Ω `[r, n]`, the Krylov basis Q = [Ω, AΩ, A²Ω, …] grows by one
//! block per pass over W (each new block orthonormalised against all earlier ones); the
//! Rayleigh–Ritz step takes the eigenpairs (θ, e) of T = Qᵀ A Q, so that V = Q e and
//! σ = √θ, until the top r residuals ‖A v − θ v‖ are below [`RESIDUAL_TOLERANCE`] θ₁ (or the
//! basis reaches [`MAX_COLUMNS`], where the Ritz pairs are the best the basis holds);
//! finally U = W V / σ. Weights' spectra are flat (σ₂/σ₃ ≈ 1.05 is common): subspace
//! iteration with 10 columns is still 2% off the second singular vector after 6 passes, the
//! Krylov basis matches numpy's SVD to |cos| > 1 − 10⁻⁷ in 13–37 (tests/adapter.rs).
//!
//! An adapter of a few bytes is only meaningful with the same U, V: the sketch comes from a
//! seeded ChaCha stream, the arithmetic runs in a fixed order, and each singular pair is
//! signed so that the largest-magnitude entry of its U column is positive.
//!
//! The products with W (all but a sliver of the work) multiply in f32, W's own precision,
//! [`LANES`] lanes at a time, and hand each partial sum of at most [`F32_BLOCK`] terms to an f64
//! total; the basis and the small eigenproblem (nalgebra) are f64. Blocks are column-major
//! (`[b, len]`:
//! each column contiguous), so every inner loop is a unit-stride dot or axpy that the
//! compiler vectorizes (AVX2 where the CPU has it).

use nalgebra::{DMatrix, SymmetricEigen};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tinylora_kernels::lane_sums;

/// Columns of the Krylov basis at most (rank-2 SVDs of SmolLM2's and Qwen2.5-Coder's
/// weights converge within 26–74).
const MAX_COLUMNS: usize = 128;
/// Stop once every top-r Ritz pair has ‖A v − θ v‖ ≤ this × θ₁ (the angle of v to the
/// true singular vector is at most that over the relative gap to the next eigenvalue).
const RESIDUAL_TOLERANCE: f64 = 1e-5;
/// QR iterations of the small eigenproblem at most (a finite T of ≤ 128 columns takes a few
/// hundred).
const EIGEN_ITERATIONS: usize = 100_000;
/// Terms an f32 partial sum takes before it joins the f64 total (bounds the rounding of a
/// product to ~√(F32_BLOCK / LANES) f32 ulps, whatever the length of W's rows and columns).
const F32_BLOCK: usize = 512;
/// Independent f32 partial sums of a dot product (eight AVX2 vectors: enough chains to hide
/// the latency of the additions).
const LANES: usize = 64;
/// Independent f64 partial sums of a dot product of the basis (four AVX2 vectors).
const LANES_F64: usize = 16;

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

/// Σ a_t b_t over equal-length slices: f32 lanes, f64 across blocks.
#[inline(always)]
fn dot_f32(a: &[f32], b: &[f32]) -> f64 {
    let mut total = 0.0f64;
    for (ab, bb) in a.chunks(F32_BLOCK).zip(b.chunks(F32_BLOCK)) {
        let (acc, tail) = lane_sums::<f32, LANES>(ab, bb);
        total += acc.iter().map(|&s| s as f64).sum::<f64>() + tail as f64;
    }
    total
}

/// Σ a_t b_t in f64 with [`LANES_F64`] partial sums.
#[inline(always)]
fn dot_f64(a: &[f64], b: &[f64]) -> f64 {
    let (acc, tail) = lane_sums::<f64, LANES_F64>(a, b);
    acc.iter().sum::<f64>() + tail
}

/// Y `[k, m]` = (W X)ᵀ: row i of W `[m, n]` dotted with each of X's k columns `[k, n]`.
#[inline(always)]
fn w_times(w: &[f32], m: usize, n: usize, x: &[f64]) -> Vec<f64> {
    let x: Vec<f32> = x.iter().map(|&v| v as f32).collect();
    let mut y = vec![0.0; x.len() / n * m];
    for (i, row) in w.chunks_exact(n).enumerate() {
        for (c, xc) in x.chunks_exact(n).enumerate() {
            y[c * m + i] = dot_f32(row, xc);
        }
    }
    y
}

/// Z' `[k, n]` = (Wᵀ W Z)ᵀ for Z's k columns `[k, n]` in one pass over W: row i's k dots
/// yᵢ = Wᵢ · Z, then the row added to k f32 accumulators with those coefficients while it is
/// still in the core's cache; the accumulators are emptied into Z' every [`F32_BLOCK`] rows.
#[inline(always)]
fn gram_times(w: &[f32], m: usize, n: usize, z: &[f64]) -> Vec<f64> {
    let zs: Vec<f32> = z.iter().map(|&v| v as f32).collect();
    let mut out = vec![0.0f64; z.len()];
    let mut acc = vec![0.0f32; z.len()];
    for first in (0..m).step_by(F32_BLOCK) {
        for row in w[first * n..(first + F32_BLOCK).min(m) * n].chunks_exact(n) {
            for (zc, ac) in zs.chunks_exact(n).zip(acc.chunks_exact_mut(n)) {
                let y = dot_f32(row, zc) as f32;
                for (s, &wj) in ac.iter_mut().zip(row) {
                    *s += y * wj;
                }
            }
        }
        for (o, a) in out.iter_mut().zip(acc.iter_mut()) {
            *o += *a as f64;
            *a = 0.0;
        }
    }
    out
}

/// Orthonormalise columns `from..` of a column-major `[k, rows]` matrix in place, against
/// the orthonormal columns before them and each other (modified Gram–Schmidt, twice for
/// stability). A column with nothing left after the projections stays zero.
#[inline(always)]
fn orthonormalize(a: &mut [f64], rows: usize, from: usize) {
    let k = a.len() / rows;
    for _ in 0..2 {
        for c in from..k {
            let (done, rest) = a.split_at_mut(c * rows);
            let col = &mut rest[..rows];
            for p in done.chunks_exact(rows) {
                let dot = dot_f64(col, p);
                col.iter_mut().zip(p).for_each(|(x, y)| *x -= dot * y);
            }
            let norm = dot_f64(col, col).sqrt().max(1e-300);
            col.iter_mut().for_each(|x| *x /= norm);
        }
    }
}

/// Σ_j cols[j] e[j]: the combination `e` `[k]` of the columns of a `[k, len]` matrix.
fn combine(cols: &[f64], e: &[f64]) -> Vec<f64> {
    let len = cols.len() / e.len();
    let mut out = vec![0.0; len];
    for (col, &ej) in cols.chunks_exact(len).zip(e) {
        out.iter_mut().zip(col).for_each(|(o, x)| *o += ej * x);
    }
    out
}

/// The Krylov basis Q `[K, n]`, AQ `[K, n]` and the products qa[i][j] = qᵢ · (A q)ⱼ so far.
struct Krylov {
    q: Vec<f64>,
    aq: Vec<f64>,
    qa: Vec<Vec<f64>>,
    n: usize,
}

impl Krylov {
    /// Columns of the basis that have their product with A.
    fn len(&self) -> usize {
        self.aq.len() / self.n
    }

    /// Records A times the newest columns of Q (the ones AQ lacks) and their products.
    fn push_products(&mut self, a_block: Vec<f64>) {
        let old = self.len();
        self.aq.extend(a_block);
        let n = self.n;
        let (q, aq) = (&self.q, &self.aq);
        let dot = |i: usize, j: usize| -> f64 { dot_f64(&q[i * n..(i + 1) * n], &aq[j * n..(j + 1) * n]) };
        let k = aq.len() / n;
        for (i, row) in self.qa.iter_mut().enumerate() {
            row.extend((old..k).map(|j| dot(i, j)));
        }
        for i in old..k {
            self.qa.push((0..k).map(|j| dot(i, j)).collect());
        }
    }

    /// Ritz pairs (θ, e) of A on the basis, θ descending: the eigenpairs of
    /// T = Qᵀ A Q `[K, K]` (symmetrised: the f32 products leave it a rounding off).
    fn ritz(&self) -> Vec<(f64, Vec<f64>)> {
        let k = self.len();
        let t = DMatrix::from_fn(k, k, |i, j| (self.qa[i][j] + self.qa[j][i]) / 2.0);
        // a weight with NaN or ∞ makes T non-finite, where the QR iteration would never
        // converge: NaN pairs instead (the loop stops on them)
        let eigen = t
            .iter()
            .all(|x| x.is_finite())
            .then(|| SymmetricEigen::try_new(t, f64::EPSILON, EIGEN_ITERATIONS))
            .flatten();
        let Some(eigen) = eigen else {
            return vec![(f64::NAN, vec![f64::NAN; k]); k];
        };
        let mut pairs: Vec<(f64, Vec<f64>)> = (0..k)
            .map(|i| {
                let e = eigen.eigenvectors.column(i);
                (eigen.eigenvalues[i], e.iter().copied().collect())
            })
            .collect();
        pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
        pairs
    }

    /// ‖A v − θ v‖ for v = Q e.
    fn residual(&self, theta: f64, e: &[f64]) -> f64 {
        let k = e.len();
        let (av, v) = (combine(&self.aq, e), combine(&self.q[..k * self.n], e));
        av.iter()
            .zip(&v)
            .map(|(a, x)| (a - theta * x).powi(2))
            .sum::<f64>()
            .sqrt()
    }
}

/// Top-r singular values, right `[r, n]` and left `[r, m]` singular vectors (column-major).
type Triplets = (Vec<f64>, Vec<f64>, Vec<f64>);

/// Block Lanczos on A = WᵀW from the start block Ω `[b, n]`; see the module docs.
#[inline(always)]
fn lanczos_body(w: &[f32], m: usize, n: usize, omega: &[f64], r: usize) -> Triplets {
    let b = omega.len() / n;
    let mut basis = Krylov {
        q: omega.to_vec(),
        aq: vec![],
        qa: vec![],
        n,
    };
    orthonormalize(&mut basis.q, n, 0);
    let pairs = loop {
        let newest = basis.len();
        basis.push_products(gram_times(w, m, n, &basis.q[newest * n..]));
        let pairs = basis.ritz();
        if pairs[0].0.is_nan() {
            break pairs; // W is not finite
        }
        let tolerance = RESIDUAL_TOLERANCE * pairs[0].0.max(0.0);
        let converged = pairs[..r]
            .iter()
            .all(|(theta, e)| basis.residual(*theta, e) <= tolerance);
        if converged || basis.len() + b > MAX_COLUMNS.max(4 * b) || basis.len() + b > n {
            break pairs;
        }
        // the next block: A times the newest one, orthonormalised against the basis
        let k = basis.len();
        basis.q.extend_from_slice(&basis.aq[newest * n..]);
        orthonormalize(&mut basis.q, n, k);
    };
    // θ ≥ 0 up to rounding; NaN (a non-finite W) stays NaN
    let sigma: Vec<f64> = pairs[..r]
        .iter()
        .map(|&(t, _)| if t < 0.0 { 0.0 } else { t.sqrt() })
        .collect();
    let v: Vec<f64> = pairs[..r]
        .iter()
        .flat_map(|(_, e)| combine(&basis.q, e))
        .collect();
    let mut u = w_times(w, m, n, &v);
    for (uc, s) in u.chunks_exact_mut(m).zip(&sigma) {
        uc.iter_mut().for_each(|x| *x /= s.max(1e-300));
    }
    (sigma, v, u)
}

/// [`lanczos_body`] compiled for AVX2.
///
/// # Safety
/// The CPU must have AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn lanczos_avx2(w: &[f32], m: usize, n: usize, omega: &[f64], r: usize) -> Triplets {
    lanczos_body(w, m, n, omega, r)
}

/// [`lanczos_body`], with AVX2 where the CPU has it.
fn lanczos(w: &[f32], m: usize, n: usize, omega: &[f64], r: usize) -> Triplets {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 was just detected
        return unsafe { lanczos_avx2(w, m, n, omega, r) };
    }
    lanczos_body(w, m, n, omega, r)
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
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let omega: Vec<f64> = (0..r * n).map(|_| rng.random::<f64>() * 2.0 - 1.0).collect(); // [r, n]
    let (sigma, vs, us) = lanczos(w, m, n, &omega, r); // [r], [r, n], [r, m]
    let (mut u, mut v) = (vec![0.0f32; m * r], vec![0.0f32; n * r]);
    for c in 0..r {
        let (uc, vc) = (&us[c * m..(c + 1) * m], &vs[c * n..(c + 1) * n]);
        let pivot = uc
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()).then(b.0.cmp(&a.0)))
            .unwrap()
            .0;
        let sign = if uc[pivot] < 0.0 { -1.0 } else { 1.0 };
        (0..m).for_each(|t| u[t * r + c] = (sign * uc[t]) as f32);
        (0..n).for_each(|t| v[t * r + c] = (sign * vc[t]) as f32);
    }
    let s = sigma.iter().map(|&x| x as f32).collect();
    TruncatedSvd { u, s, v, m, n, r }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `[rows, k]` matrix with orthonormal columns from a seeded stream.
    fn random_orthonormal(rows: usize, k: usize, seed: u64) -> Vec<f64> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut a: Vec<f64> = (0..rows * k).map(|_| rng.random::<f64>() - 0.5).collect();
        orthonormalize(&mut a, rows, 0); // columns [k, rows]
        (0..rows * k).map(|ij| a[ij % k * rows + ij / k]).collect()
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
        // small; and rows and columns longer than an f32 block, not a multiple of the lanes
        for (m, n, ranks) in [(120, 90, &[1, 2, 4][..]), (1100, 700, &[2][..])] {
            known_spectrum_case(m, n, &sigma, ranks);
        }
    }

    fn known_spectrum_case(m: usize, n: usize, sigma: &[f64], ranks: &[usize]) {
        let (w, u0, v0) = known(m, n, sigma);
        for &r in ranks {
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
    fn zero_and_non_finite_weights_end_without_hanging() {
        let zero = truncated_svd(&[0.0; 30 * 20], 30, 20, 2, 1);
        assert!(zero.s.iter().all(|&s| s == 0.0), "σ = {:?}", zero.s);
        assert!(zero.u.iter().chain(&zero.v).all(|x| x.is_finite()));
        for bad in [f32::NAN, f32::INFINITY] {
            let mut w = vec![0.5f32; 30 * 20];
            w[77] = bad;
            let svd = truncated_svd(&w, 30, 20, 2, 1);
            assert!(svd.s.iter().all(|s| !s.is_finite()), "{bad}: σ = {:?}", svd.s);
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
