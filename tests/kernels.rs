//! The WGSL kernels of the low-rank update against the same math in stock burn ops (forward,
//! and gradients through burn's own autodiff), on lavapipe, for ranks 1, 2, 4, 8, 12, 16 and shapes
//! that are not multiples of the 64-wide workgroup; and the same ops on burn's Flex CPU
//! backend (`--device cpu`), where they run as stock ops behind the same custom backward.

mod common;

use burn::tensor::{Device, Distribution, Tensor};
use common::devices;
use tinylora::engine::default_device;
use tinylora::kernels::{lowrank_merge, lowrank_update, lowrank_update_merged};

/// One module's inputs: x [T, d_in], base [T, d_out], factors [d_out + d_in, r], basis, coef.
struct Case {
    x: Tensor<2>,
    base: Tensor<2>,
    factors: Tensor<2>,
    basis: Tensor<3>,
    coef: Tensor<1>,
    d_out: usize,
}

/// Entries scaled like a real module's: unit activations, orthonormal-sized factor columns.
fn case(t: usize, d_in: usize, d_out: usize, r: usize, n_v: usize, dev: &Device) -> Case {
    let n = |std: f64| Distribution::Normal(0.0, std);
    Case {
        x: Tensor::random([t, d_in], n(1.0), dev),
        base: Tensor::random([t, d_out], n(1.0), dev),
        factors: Tensor::random([d_out + d_in, r], n(1.0 / (d_in.min(d_out) as f64).sqrt()), dev),
        basis: Tensor::random([n_v, r, r], n(1.0 / (r as f64).sqrt()), dev),
        coef: Tensor::random([n_v], n(1.0), dev),
        d_out,
    }
}

/// M = Σᵢ vᵢ P̃ᵢ `[r, r]` in stock ops.
fn core(basis: Tensor<3>, coef: Tensor<1>) -> Tensor<2> {
    let [n_v, r, _] = basis.dims();
    (basis * coef.reshape([n_v, 1, 1])).sum_dim(0).reshape([r, r])
}

/// y = base + ((x V) Mᵀ) Uᵀ in stock ops.
fn reference(c: &Case, x: Tensor<2>, base: Tensor<2>, factors: Tensor<2>, coef: Tensor<1>) -> Tensor<2> {
    let rows = factors.dims()[0];
    let u = factors.clone().slice(0..c.d_out);
    let v = factors.slice(c.d_out..rows);
    base + x
        .matmul(v)
        .matmul(core(c.basis.clone(), coef).transpose())
        .matmul(u.transpose())
}

/// max |got − want| ≤ tol · max |want| (f32 sums of hundreds of terms, compared at their scale).
fn assert_close<const D: usize>(got: Tensor<D>, want: Tensor<D>, tol: f32, what: &str) {
    assert_close_at(got, want, tol, 0.0, what);
}

/// max |got − want| ≤ tol · max(max |want|, `terms`): `terms` is the size of the summed terms
/// where they can cancel to a result much smaller than themselves (rounding scales with them).
fn assert_close_at<const D: usize>(got: Tensor<D>, want: Tensor<D>, tol: f32, terms: f32, what: &str) {
    let (g, w) = (
        got.into_data().try_into_vec::<f32>().unwrap(),
        want.into_data().try_into_vec::<f32>().unwrap(),
    );
    assert_eq!(g.len(), w.len(), "{what}: sizes");
    let scale = w.iter().fold(terms, |m, x| m.max(x.abs())).max(1e-12);
    let err = g.iter().zip(&w).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        err <= tol * scale,
        "{what}: max error {err:e} > {tol:e} × {scale:e}"
    );
}

/// (T, d_in, d_out): single rows, exact and off-by-one multiples of 64, a wider case, and
/// widths that are multiples of 4 (the vec4 kernels, for r = 4, 8, 16) with T past a
/// workgroup's rows.
const SHAPES: [(usize, usize, usize); 5] = [
    (1, 5, 3),
    (3, 64, 65),
    (7, 130, 63),
    (33, 577, 200),
    (37, 256, 132),
];
/// 12: a multiple of 4 whose down half is not vec4 (TT·r = 32 needs r | 32) but whose up half is.
const RANKS: [usize; 6] = [1, 2, 4, 8, 16, 12];

/// Every rank with two shapes, so that each shape meets two ranks, and every rank with the
/// last shape (whose widths are multiples of 4: the vec4 kernels from r = 4 on).
fn cases() -> impl Iterator<Item = (usize, (usize, usize, usize))> {
    let n = SHAPES.len();
    RANKS.into_iter().enumerate().flat_map(move |(i, r)| {
        let (this, next) = (i % n, (i + 1) % n);
        [(r, SHAPES[this]), (r, SHAPES[next])]
            .into_iter()
            .chain((this != n - 1 && next != n - 1).then_some((r, SHAPES[n - 1])))
    })
}

#[test]
fn forward_matches_stock_burn_ops() {
    for (device, dev) in devices() {
        for (r, (t, d_in, d_out)) in cases() {
            let c = case(t, d_in, d_out, r, 3, &dev);
            let want = reference(&c, c.x.clone(), c.base.clone(), c.factors.clone(), c.coef.clone());
            let got = lowrank_update(c.x, c.base, c.factors, c.basis, c.coef);
            assert_close(
                got,
                want,
                1e-5,
                &format!("{device} r={r} T={t} d_in={d_in} d_out={d_out}"),
            );
        }
    }
}

#[test]
fn zero_coefficients_return_base_exactly() {
    for (device, dev) in devices() {
        let c = case(9, 100, 70, 2, 1, &dev);
        let zero = Tensor::<1>::zeros([1], &dev);
        let got = lowrank_update(c.x, c.base.clone(), c.factors, c.basis, zero);
        assert_eq!(got.to_data(), c.base.to_data(), "{device}");
    }
}

/// An op of (x, base, factors, basis, coef), like `lowrank_update`.
type Op = fn(Tensor<2>, Tensor<2>, Tensor<2>, Tensor<3>, Tensor<1>) -> Tensor<2>;

/// Gradients of Σ y ⊙ probe through `op` and through the stock composition: those of base,
/// coef and (when `train_factors`) the factors are compared, frozen factors must get none;
/// returns x's gradient through `op` (if any) and through the stock composition.
fn compare_gradients(c: &Case, op: Op, train_factors: bool, what: &str) -> (Option<Tensor<2>>, Tensor<2>) {
    let [t, d_out] = c.base.dims();
    let probe_plain = Tensor::<2>::random([t, d_out], Distribution::Normal(0.0, 1.0), &c.base.device());
    let probe = probe_plain.clone().autodiff();
    let track = |x: &Tensor<2>| x.clone().autodiff().require_grad();
    let factors = || {
        let f = c.factors.clone().autodiff();
        if train_factors { f.require_grad() } else { f }
    };
    let coef = || c.coef.clone().autodiff().require_grad();

    let (xk, bk, fk, ck) = (track(&c.x), track(&c.base), factors(), coef());
    let yk = op(
        xk.clone(),
        bk.clone(),
        fk.clone(),
        c.basis.clone().autodiff(),
        ck.clone(),
    );
    let gk = (yk * probe.clone()).sum().backward();

    let (xr, br, fr, cr) = (track(&c.x), track(&c.base), factors(), coef());
    let yr = reference(c, xr.clone(), br.clone(), fr.clone(), cr.clone());
    let gr = (yr * probe).sum().backward();

    let tol = 1e-5;
    let base = (bk.grad(&gk).unwrap(), br.grad(&gr).unwrap());
    assert_close(base.0, base.1, tol, &format!("{what}: dbase"));
    // ∂L/∂vᵢ = Σₜ Σₐᵦ P̃ᵢ[a, b] wₜ[a] zₜ[b] (w = G U, z = x V): terms that can cancel, in the
    // outer sum and inside w and z, so rounding scales with Σ |P̃| (|G| |U|) (|x| |V|)
    let (u, v) = (
        c.factors.clone().slice(0..c.d_out).abs(),
        c.factors.clone().slice(c.d_out..).abs(),
    );
    let (w, z) = (probe_plain.abs().matmul(u), c.x.clone().abs().matmul(v)); // [T, r]
    let terms: f32 = (w.transpose().matmul(z).sum() * c.basis.clone().abs().max()).into_scalar();
    let coef = (ck.grad(&gk).unwrap(), cr.grad(&gr).unwrap());
    assert_close_at(coef.0, coef.1, tol, terms, &format!("{what}: dcoef"));
    if train_factors {
        let (a, b) = (fk.grad(&gk).unwrap(), fr.grad(&gr).unwrap());
        assert_close(a, b, tol, &format!("{what}: dfactors"));
    } else {
        assert!(fk.grad(&gk).is_none(), "{what}: frozen factors got a gradient");
    }
    (xk.grad(&gk), xr.grad(&gr).unwrap())
}

/// Gradients of Σ y ⊙ probe with respect to every input, through the kernels and through burn.
#[test]
fn gradients_match_burn_autodiff() {
    for (device, dev) in devices() {
        for (r, (t, d_in, d_out)) in cases() {
            for train_factors in [false, true] {
                let c = case(t, d_in, d_out, r, 5, &dev);
                let what =
                    format!("{device} r={r} T={t} d_in={d_in} d_out={d_out} factors trained={train_factors}");
                let (dx, want) = compare_gradients(&c, lowrank_update, train_factors, &what);
                assert_close(dx.unwrap(), want, 1e-5, &format!("{what}: dx"));
            }
        }
    }
}

/// The update already merged into the weights: `base` comes back unchanged, with the same
/// gradients for base, coef and factors as the stock composition gives, and none for x.
#[test]
fn merged_update_passes_base_through_with_the_update_s_gradients() {
    for (device, dev) in devices() {
        for (r, (t, d_in, d_out)) in [(2, SHAPES[3]), (8, SHAPES[4]), (4, SHAPES[2])] {
            for train_factors in [false, true] {
                let c = case(t, d_in, d_out, r, 5, &dev);
                let what =
                    format!("{device} r={r} T={t} d_in={d_in} d_out={d_out} factors trained={train_factors}");
                let y = lowrank_update_merged(
                    c.x.clone(),
                    c.base.clone(),
                    c.factors.clone(),
                    c.basis.clone(),
                    c.coef.clone(),
                );
                assert_eq!(y.to_data(), c.base.to_data(), "{what}: y = base");
                let (dx, _) = compare_gradients(&c, lowrank_update_merged, train_factors, &what);
                assert!(dx.is_none(), "{what}: x got a gradient");
            }
        }
    }
}

/// A coefficient shared by two modules (a tie group) gets the sum of their gradients.
#[test]
fn tied_coefficients_accumulate_both_modules() {
    for (device, dev) in devices() {
        let (a, b) = (case(6, 70, 90, 2, 3, &dev), case(6, 90, 40, 2, 3, &dev));
        let run = |c: &Case, v: &Tensor<1>| {
            lowrank_update(
                c.x.clone(),
                c.base.clone(),
                c.factors.clone(),
                c.basis.clone(),
                v.clone(),
            )
            .sum()
        };
        let shared = a.coef.clone().autodiff().require_grad();
        let both = shared
            .grad(&(run(&a, &shared) + run(&b, &shared)).backward())
            .unwrap();
        let alone = |c: &Case| {
            let v = a.coef.clone().autodiff().require_grad();
            v.grad(&run(c, &v).backward()).unwrap()
        };
        let sum = alone(&a) + alone(&b);
        assert_close(both, sum, 1e-6, &format!("{device}: tied gradient"));
    }
}

#[test]
fn merge_and_unmerge_match_stock_burn_ops_on_column_chunks() {
    for (device, dev) in devices() {
        for r in RANKS {
            let (d_in, d_out) = (131, 150);
            let c = case(1, d_in, d_out, r, 4, &dev);
            let w = Tensor::<2>::random([d_out, d_in], Distribution::Normal(0.0, 1.0), &dev);
            let u = c.factors.clone().slice(0..d_out);
            let v = c.factors.clone().slice(d_out..d_out + d_in);
            let delta = u
                .matmul(core(c.basis.clone(), c.coef.clone()))
                .matmul(v.transpose()); // [d_out, d_in]
            let want = (w.clone() + delta).transpose();
            let merge = |chunk: Tensor<2>, col0: usize, subtract: bool| {
                lowrank_merge(
                    chunk,
                    c.factors.clone(),
                    c.basis.clone(),
                    c.coef.clone(),
                    col0,
                    subtract,
                )
            };
            // Wᵀ in two column chunks, as the engine stores a large weight
            for (col0, cols) in [(0, 64), (64, d_out - 64)] {
                let part = |t: &Tensor<2>| t.clone().slice([0..d_in, col0..col0 + cols]);
                let original = part(&w.clone().transpose());
                // a fresh, unshared buffer: merged in place
                let merged = merge(Tensor::from_data(original.to_data(), &dev), col0, false);
                assert_close(
                    merged.clone(),
                    part(&want),
                    1e-6,
                    &format!("{device}: merge r={r} col0={col0}"),
                );
                // unmerging restores W up to rounding
                let restored = merge(merged, col0, true);
                assert_close(
                    restored,
                    original.clone(),
                    1e-6,
                    &format!("{device}: unmerge r={r} col0={col0}"),
                );
                // a buffer still held elsewhere is copied, never modified
                let copy = merge(original.clone(), col0, false);
                assert_close(
                    copy,
                    part(&want),
                    1e-6,
                    &format!("{device}: merge of a shared chunk r={r}"),
                );
                assert_eq!(
                    original.to_data(),
                    part(&w.clone().transpose()).to_data(),
                    "{device}: shared chunk modified"
                );
            }
        }
    }
}

/// More tokens than one row of the dispatch grid holds (the 2-D grid path).
#[test]
fn forward_handles_more_tokens_than_a_grid_row() {
    let dev = default_device();
    let c = case(65_600, 8, 6, 1, 1, &dev);
    let want = reference(&c, c.x.clone(), c.base.clone(), c.factors.clone(), c.coef.clone());
    assert_close(
        lowrank_update(c.x, c.base, c.factors, c.basis, c.coef),
        want,
        1e-5,
        "T = 65600",
    );
}

/// The fused ops past one side of the dispatch grid (65,535 workgroups), on the GPU: 65,600
/// rows for the row kernels (RMSNorm, the masked softmax), 65,535 · 64 + 100 elements for the
/// element kernels (the SwiGLU gate), against stock burn ops. A kernel that reads only the
/// grid's first side leaves the last rows unwritten. The softmax bound is two f32 softmaxes'
/// (each within 16 ε: `fused_masked_softmax_matches_f64_and_autodiff`).
#[test]
fn fused_ops_cover_a_two_dimensional_grid() {
    use burn::tensor::activation::{silu, softmax};
    use tinylora::kernels::{masked_softmax, rms_norm, swiglu};
    let dev = default_device();
    let rows = 65_600;
    let x = Tensor::<2>::random([rows, 3], Distribution::Normal(0.0, 1.0), &dev);
    let w = Tensor::<1>::from_floats([1.0, 2.0, 0.5], &dev);
    let inv_rms = (x.clone().square().mean_dim(1) + 1e-5).sqrt().recip();
    let want = x.clone() * inv_rms * w.clone().unsqueeze::<2>();
    assert_close(rms_norm(x.clone(), w, 1e-5), want, 1e-6, "rms_norm, 65600 rows");
    let z = x.reshape([1, 1, rows, 3]);
    let mask = Tensor::<4>::zeros([1, 1, rows, 3], &dev);
    assert_close(
        masked_softmax(z.clone(), mask),
        softmax(z, 3),
        32.0 * f32::EPSILON,
        "masked_softmax, 65600 rows",
    );
    let n = 65_535 * 64 + 100;
    let a = Tensor::<2>::random([n, 1], Distribution::Normal(0.0, 3.0), &dev);
    let u = Tensor::<2>::random([n, 1], Distribution::Normal(0.0, 1.0), &dev);
    assert_close(
        swiglu(a.clone(), u.clone()),
        silu(a) * u,
        1e-6,
        "swiglu, 4194340 values",
    );
}

/// The fused RMSNorm and SwiGLU gate (`tinylora::kernels::{rms_norm, swiglu}`) against the
/// same math in stock burn ops, forward and gradients through burn's autodiff, on both
/// devices; rows of odd widths, a gate with values far into both tails of the sigmoid, and a
/// NaN that must come through.
#[test]
fn fused_norm_and_gate_match_stock_burn_ops_and_autodiff() {
    use burn::tensor::activation::silu;
    use tinylora::kernels::{rms_norm, swiglu};
    let stock_norm = |x: Tensor<2>, w: Tensor<1>| {
        let inv_rms = (x.clone().square().mean_dim(1) + 1e-5).sqrt().recip();
        x * inv_rms * w.unsqueeze::<2>()
    };
    for (device, dev) in devices() {
        for (n, h) in [(1, 5), (3, 64), (37, 577), (130, 1536)] {
            let what = format!("{device} [{n}, {h}]");
            let normal = |std: f64| Tensor::<2>::random([n, h], Distribution::Normal(0.0, std), &dev);
            let (x, a, u, probe) = (normal(1.0), normal(6.0), normal(1.0), normal(1.0));
            let a = a.slice_assign([0..1, 0..2], Tensor::from_floats([[95.0, -95.0]], &dev));
            let w = Tensor::<1>::random([h], Distribution::Normal(1.0, 0.2), &dev);

            assert_close(
                rms_norm(x.clone(), w.clone(), 1e-5),
                stock_norm(x.clone(), w.clone()),
                1e-6,
                &what,
            );
            assert_close(
                swiglu(a.clone(), u.clone()),
                silu(a.clone()) * u.clone(),
                1e-6,
                &what,
            );

            let track = |t: &Tensor<2>| t.clone().autodiff().require_grad();
            let probe = probe.autodiff();
            let (xk, xr) = (track(&x), track(&x));
            let gk = (rms_norm(xk.clone(), w.clone().autodiff(), 1e-5) * probe.clone())
                .sum()
                .backward();
            let gr = (stock_norm(xr.clone(), w.clone().autodiff()) * probe.clone())
                .sum()
                .backward();
            let (dk, dr) = (xk.grad(&gk).unwrap(), xr.grad(&gr).unwrap());
            assert_close(dk, dr, 1e-5, &format!("{what}: rms_norm dx"));

            let (ak, uk, ar, ur) = (track(&a), track(&u), track(&a), track(&u));
            let gk = (swiglu(ak.clone(), uk.clone()) * probe.clone()).sum().backward();
            let gr = (silu(ar.clone()) * ur.clone() * probe).sum().backward();
            assert_close(
                ak.grad(&gk).unwrap(),
                ar.grad(&gr).unwrap(),
                1e-5,
                &format!("{what}: swiglu da"),
            );
            assert_close(
                uk.grad(&gk).unwrap(),
                ur.grad(&gr).unwrap(),
                1e-5,
                &format!("{what}: swiglu du"),
            );
        }
        let nan = Tensor::<2>::from_floats([[f32::NAN, 1.0, 2.0]], &dev);
        let y = swiglu(nan.clone(), Tensor::ones([1, 3], &dev))
            .into_data()
            .try_into_vec::<f32>()
            .unwrap();
        assert!(
            y[0].is_nan() && y[1..].iter().all(|v| v.is_finite()),
            "{device}: swiglu {y:?}"
        );
        let y = rms_norm(nan, Tensor::ones([3], &dev), 1e-5)
            .into_data()
            .try_into_vec::<f32>()
            .unwrap();
        assert!(y.iter().all(|v| v.is_nan()), "{device}: rms_norm {y:?}");
    }
}

/// The fused RoPE (`tinylora::kernels::rope`: rotate, scale, heads before tokens) against the
/// stock-op rotation on both devices, forward and ∂L/∂x through burn's autodiff; odd batch,
/// token and head counts, one token (decoding) and a block wider than one CPU task.
#[test]
fn fused_rope_matches_stock_burn_ops_and_autodiff() {
    use tinylora::kernels::rope;
    // x [B, T, n, d_h], tables [B, T, d_h]: σ (x cos + rotate_half(x) sin), as [B, n, T, d_h]
    let stock = |x: Tensor<4>, cos: Tensor<3>, sin: Tensor<3>, scale: f32| {
        let x = x.swap_dims(1, 2);
        let half = x.dims()[3] / 2;
        let rotated = Tensor::cat(
            vec![
                x.clone().narrow(3, half, half).neg(),
                x.clone().narrow(3, 0, half),
            ],
            3,
        );
        (x * cos.unsqueeze_dim::<4>(1) + rotated * sin.unsqueeze_dim::<4>(1)) * scale
    };
    for (device, dev) in devices() {
        for (b, t, n, dh, scale) in [
            (1, 1, 1, 2, 1.0),
            (3, 1, 9, 64, 0.125),
            (2, 7, 3, 64, 1.0),
            (5, 130, 3, 32, 0.3),
        ] {
            let what = format!("{device} [{b}, {t}, {n}, {dh}] σ={scale}");
            let angle = Tensor::<3>::random([b, t, dh], Distribution::Uniform(-3.2, 3.2), &dev);
            let (cos, sin) = (angle.clone().cos(), angle.sin());
            let x = Tensor::<4>::random([b, t, n, dh], Distribution::Normal(0.0, 1.0), &dev);
            let probe = Tensor::<4>::random([b, n, t, dh], Distribution::Normal(0.0, 1.0), &dev).autodiff();
            let want = stock(x.clone(), cos.clone(), sin.clone(), scale);
            assert_close(
                rope(x.clone(), cos.clone(), sin.clone(), scale),
                want,
                1e-6,
                &what,
            );

            let (xk, xr) = (x.clone().autodiff().require_grad(), x.autodiff().require_grad());
            let (ca, sa) = (cos.autodiff(), sin.autodiff());
            let gk = (rope(xk.clone(), ca.clone(), sa.clone(), scale) * probe.clone())
                .sum()
                .backward();
            let gr = (stock(xr.clone(), ca, sa, scale) * probe).sum().backward();
            assert_close(
                xk.grad(&gk).unwrap(),
                xr.grad(&gr).unwrap(),
                1e-5,
                &format!("{what}: dx"),
            );
        }
    }
}

/// The fused masked softmax against softmax(z + mask) in f64 (plain Rust), and its ∂L/∂z
/// against burn's autodiff of the stock `softmax(z + mask)`; causal masks, rows of 1, 64 and
/// 200 keys. Inputs come from a seeded generator, so every run checks the same numbers.
///
/// The forward bound is 16 ε of the largest probability: e^x to 4 ε (`fused_cpu::exp`'s own
/// test; WGSL's `exp` to 3 + 2|x| ulp, whose absolute error e^x (3 + 2|x|) ε peaks near 3.3 ε
/// at x = 0), the sum of ≤ 200 positive terms in sixteen lanes to about 13 ε, one division.
/// Two f32 softmaxes may differ by twice that, which is why the reference is f64.
#[test]
fn fused_masked_softmax_matches_f64_and_autodiff() {
    use burn::tensor::TensorData;
    use burn::tensor::activation::softmax;
    use rand::{Rng, SeedableRng};
    use tinylora::kernels::masked_softmax;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed_50f7);
    for (device, dev) in devices() {
        for (b, h, r, s) in [(1, 1, 1, 1), (2, 3, 7, 64), (3, 2, 130, 200)] {
            let what = format!("{device} [{b}, {h}, {r}, {s}]");
            // query row i sees the keys j ≤ i + s − r (causal, the newest row sees all)
            let mask: Vec<f32> = (0..b * r * s)
                .map(|k| if k % s <= (k / s) % r + s - r { 0.0 } else { -1e9 })
                .collect();
            // scores spread like attention logits (|z| ≲ 9), a probe of unit size
            let z: Vec<f32> = (0..b * h * r * s).map(|_| rng.random_range(-9.0..9.0)).collect();
            let probe: Vec<f32> = (0..z.len()).map(|_| rng.random_range(-1.0..1.0)).collect();
            let want: Vec<f32> = z
                .chunks(s)
                .enumerate()
                .flat_map(|(row, zr)| {
                    let (bi, qi) = (row / (h * r), row % r);
                    let m = &mask[(bi * r + qi) * s..][..s];
                    let masked: Vec<f32> = zr.iter().zip(m).map(|(a, b)| a + b).collect();
                    log_softmax64(&masked, 1.0).into_iter().map(|l| l.exp() as f32)
                })
                .collect();
            let tensor =
                |v: Vec<f32>, shape: [usize; 4]| Tensor::<4>::from_data(TensorData::new(v, shape), &dev);
            let (z, probe) = (tensor(z, [b, h, r, s]), tensor(probe, [b, h, r, s]).autodiff());
            let mask = tensor(mask, [b, 1, r, s]);
            let want = tensor(want, [b, h, r, s]);
            assert_close(
                masked_softmax(z.clone(), mask.clone()),
                want,
                16.0 * f32::EPSILON,
                &what,
            );

            let (zk, zr, m) = (
                z.clone().autodiff().require_grad(),
                z.autodiff().require_grad(),
                mask.autodiff(),
            );
            let gk = (masked_softmax(zk.clone(), m.clone()) * probe.clone())
                .sum()
                .backward();
            let gr = (softmax(zr.clone() + m, 3) * probe).sum().backward();
            assert_close(
                zk.grad(&gk).unwrap(),
                zr.grad(&gr).unwrap(),
                1e-5,
                &format!("{what}: dz"),
            );
        }
    }
}

/// The frozen weight's product (a one-row matrix–vector product on the CPU, else a matmul)
/// against burn's matmul, its ∂L/∂x against burn's autodiff of it; rows 1 and more, widths
/// around the CPU kernel's 4096-column panels.
#[test]
fn frozen_matmul_matches_stock_matmul_and_autodiff() {
    use tinylora::kernels::frozen_matmul;
    for (device, dev) in devices() {
        for (n, d_in, d_out) in [
            (1, 5, 3),
            (1, 576, 4099),
            (1, 64, 9000),
            (3, 576, 192),
            (17, 33, 65),
        ] {
            let what = format!("{device} x [{n}, {d_in}], Wᵀ [{d_in}, {d_out}]");
            let x = Tensor::<2>::random([n, d_in], Distribution::Normal(0.0, 1.0), &dev);
            let wt = Tensor::<2>::random([d_in, d_out], Distribution::Normal(0.0, 0.1), &dev);
            let probe = Tensor::<2>::random([n, d_out], Distribution::Normal(0.0, 1.0), &dev);
            let want = x.clone().matmul(wt.clone());
            assert_close(frozen_matmul(x.clone(), wt.clone()), want, 1e-5, &what);

            let (xk, xr) = (x.clone().autodiff().require_grad(), x.autodiff().require_grad());
            let (wt, probe) = (wt.autodiff(), probe.autodiff());
            let gk = (frozen_matmul(xk.clone(), wt.clone()) * probe.clone())
                .sum()
                .backward();
            let gr = (xr.clone().matmul(wt) * probe).sum().backward();
            assert_close(
                xk.grad(&gk).unwrap(),
                xr.grad(&gr).unwrap(),
                1e-5,
                &format!("{what}: dx"),
            );
        }
    }
}

/// Logits whose choice is known in f64: ties (greedy takes the lowest id), a peak, a row mostly
/// of −∞ (tokens that must never be drawn) with u = 1 (past every total: the last finite id), a
/// maximum held twice, and random rows; at 5 tokens (fewer than the workgroup's 64 invocations:
/// empty chunks), at 3001 (no multiple of 64) and at Qwen's 151,936. Greedy must give the f64
/// argmax exactly; a draw u must land in the chosen id's interval [P(< id), P(≤ id)) of the f64
/// CDF (up to 1e-6, the f32 sums' rounding: below the 6.6e-6 of a token among 151,936 equals),
/// on a token of nonzero probability; the log-probabilities within 1e-4 of ln p. Draws from the
/// sequences' seeded streams must land in their intervals too, and the host's sampler with the
/// same streams must pick the same ids but where u is within 1e-6 of an interval's end.
#[test]
fn token_choice_matches_an_f64_inverse_cdf() {
    use burn::tensor::TensorData;
    use rand::Rng;
    use tinylora::engine::SamplingParams;
    use tinylora::engine::sampling::sample;
    use tinylora::kernels::choose_tokens;
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut uniform = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32
    };
    let mut rows_of = |v: usize, b: usize| -> Vec<Vec<f32>> {
        (0..b)
            .map(|r| {
                let mut row: Vec<f32> = (0..v).map(|_| 6.0 * uniform() - 3.0).collect();
                match r {
                    0 => row.fill(0.25),
                    1 => row[v / 3] = 30.0,
                    2 => (0..v)
                        .filter(|i| i % 3 != 1)
                        .for_each(|i| row[i] = f32::NEG_INFINITY),
                    3 => (row[1], row[v - 1]) = (9.0, 9.0),
                    _ => {}
                }
                row
            })
            .collect()
    };
    let cases = [
        (5, rows_of(5, 5)),
        (3001, rows_of(3001, 9)),
        (151_936, rows_of(151_936, 5)),
    ];
    let draws: Vec<f32> = [0.0, 0.5, 1.0, 0.25, 0.75, 0.1, 0.9, 0.33, 0.66].to_vec();
    for (device, dev) in devices() {
        for (v, rows) in &cases {
            let b = rows.len();
            let flat: Vec<f32> = rows.concat();
            let logits = Tensor::<2>::from_data(TensorData::new(flat.clone(), [b, *v]), &dev);
            let u = Tensor::<1>::from_data(TensorData::new(draws[..b].to_vec(), [b]), &dev);
            for temperature in [0.0f32, 0.7, 1.0, 1.3] {
                let got = choose_tokens(logits.clone(), u.clone(), temperature)
                    .into_data()
                    .try_into_vec::<f32>()
                    .unwrap();
                for (r, row) in rows.iter().enumerate() {
                    let what = format!("{device} V = {v} T = {temperature} row {r}");
                    let (id, logprob) = (got[2 * r] as usize, got[2 * r + 1]);
                    assert_eq!(got[2 * r], id as f32, "{what}: id {} not an integer", got[2 * r]);
                    assert!(id < *v, "{what}: id {id} past the vocabulary");
                    let lp = log_softmax64(row, temperature);
                    if temperature == 0.0 {
                        let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                        let want = row.iter().position(|&l| l == m).unwrap();
                        assert_eq!(id, want, "{what}: greedy id");
                    } else {
                        let (below, p) = interval(row, temperature, id);
                        let u = f64::from(draws[r]);
                        assert!(p > 0.0, "{what}: drew id {id} of probability 0");
                        assert!(
                            below - 1e-6 <= u && u < below + p + 1e-6,
                            "{what}: u = {u} outside id {id}'s interval [{below}, {})",
                            below + p
                        );
                    }
                    let want = lp[id];
                    assert!(
                        (f64::from(logprob) - want).abs() <= 1e-4,
                        "{what}: log-probability {logprob} against {want}"
                    );
                }
                if temperature == 0.0 {
                    continue;
                }
                // the sequences' own streams: one draw each, as the engine takes them; the
                // host's sampler (f32 exponentials, f64 sums) picks the same id unless u lies
                // within 1e-6 of that id's interval's ends, where the f32 exponentials decide
                let params = SamplingParams {
                    temperature,
                    seed: 7,
                    ..SamplingParams::default()
                };
                let streams: Vec<f32> = (0..b).map(|r| params.rng(r).random()).collect();
                let seeded = Tensor::<1>::from_data(TensorData::new(streams.clone(), [b]), &dev);
                let got = choose_tokens(logits.clone(), seeded, temperature)
                    .into_data()
                    .try_into_vec::<f32>()
                    .unwrap();
                for (r, row) in rows.iter().enumerate() {
                    let what = format!("{device} V = {v} T = {temperature} row {r}, seeded");
                    let id = got[2 * r] as usize;
                    let (below, p) = interval(row, temperature, id);
                    let u = f64::from(streams[r]);
                    assert!(
                        p > 0.0 && below - 1e-6 <= u && u < below + p + 1e-6,
                        "{what}: u = {u} outside id {id}'s interval [{below}, {})",
                        below + p
                    );
                    let (host, _) = sample(row, &params, &mut params.rng(r));
                    let near_an_end = (u - below).abs() < 1e-6 || (u - below - p).abs() < 1e-6;
                    assert!(
                        host as usize == id || near_an_end,
                        "{what}: the host's sampler took {host}, the device {id}, u = {u} inside [{below}, {})",
                        below + p
                    );
                }
            }
        }
    }
}

/// ln softmax(row / T) in f64 (T ≤ 0: the row's own log-softmax, as greedy reports).
fn log_softmax64(row: &[f32], temperature: f32) -> Vec<f64> {
    let t = if temperature > 0.0 {
        f64::from(temperature)
    } else {
        1.0
    };
    let z: Vec<f64> = row.iter().map(|&l| f64::from(l) / t).collect();
    let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let lse = m + z.iter().map(|&x| (x - m).exp()).sum::<f64>().ln();
    z.iter().map(|&x| x - lse).collect()
}

/// (P(< id), p_id) of softmax(row / T) in f64.
fn interval(row: &[f32], temperature: f32, id: usize) -> (f64, f64) {
    let lp = log_softmax64(row, temperature);
    (lp[..id].iter().map(|&x| x.exp()).sum(), lp[id].exp())
}

/// Rows that are all NaN (a broken model) or mix NaN with numbers still give an id inside the
/// vocabulary, greedy and sampled, on both devices: a wrong id would index past the embedding.
#[test]
fn token_choice_stays_in_the_vocabulary_on_nan_logits() {
    use burn::tensor::TensorData;
    use tinylora::kernels::choose_tokens;
    let v = 130;
    let mut rows = vec![f32::NAN; 2 * v];
    (0..v).step_by(2).for_each(|i| rows[v + i] = i as f32 * 0.01);
    for (device, dev) in devices() {
        let logits = Tensor::<2>::from_data(TensorData::new(rows.clone(), [2, v]), &dev);
        let u = Tensor::<1>::from_data(TensorData::new(vec![0.3f32, 0.999], [2]), &dev);
        for temperature in [0.0f32, 1.0] {
            let got = choose_tokens(logits.clone(), u.clone(), temperature)
                .into_data()
                .try_into_vec::<f32>()
                .unwrap();
            for r in 0..2 {
                let id = got[2 * r];
                assert!(
                    id >= 0.0 && id < v as f32 && id.fract() == 0.0,
                    "{device} T = {temperature} row {r}: id {id} outside 0..{v}"
                );
            }
        }
    }
}
