//! Products with weights kept in ggml blocks (`shaders/block_*.wgsl` on lavapipe, the Rust
//! twin on the CPU) against the host decoder of `tinylora_formats::quant` and stock burn
//! matmuls, for every block type, every product path (the matrix–vector one, the tiled one and
//! the decoded copy, by rows of x) and rows that are not a multiple of the workgroup; and the
//! backward ∂L/∂x = G W on both of its paths.

mod common;

use burn::tensor::{Device, Distribution, Tensor, TensorData};
use common::devices;
use tinylora::formats::BlockMatrix;
use tinylora::formats::quant::{GgmlType, dequantize};
use tinylora::kernels::{
    DeviceBlocks, MATVEC_MAX_ROWS, SOFTWARE_TILED_MAX_ROWS, ShaderF16, block_decode, block_matmul,
    block_matmul_fused, set_shader_f16, shader_f16_offered,
};

/// Byte offsets of a block's f16 scale fields (kept finite and small; every other byte is
/// random, so every code of every field occurs).
fn f16_fields(ty: GgmlType) -> &'static [usize] {
    use GgmlType::*;
    match ty {
        Q4_0 | Q5_0 | Q8_0 => &[0],
        Q4_1 | Q5_1 | Q4_K | Q5_K => &[0, 2],
        Q6_K => &[208],
        _ => &[],
    }
}

/// A random `rows × cols` matrix of type `ty`.
fn random_matrix(ty: GgmlType, rows: usize, cols: usize, seed: u64) -> BlockMatrix {
    let mut s = seed;
    let mut next = move || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (s >> 33) as u32
    };
    if ty.block_size() == 1 {
        let values: Vec<f32> = (0..rows * cols)
            .map(|_| next() as f32 / u32::MAX as f32 - 0.5)
            .collect();
        return BlockMatrix::quantize(ty, &values, rows, cols).unwrap();
    }
    let n = ty.bytes_for(cols).unwrap() * rows;
    let mut bytes: Vec<u8> = (0..n).map(|_| next() as u8).collect();
    for block in bytes.chunks_exact_mut(ty.type_size()) {
        for &f in f16_fields(ty) {
            let v = half::f16::from_f32((next() % 1000) as f32 * 1e-5 - 2e-3);
            block[f..f + 2].copy_from_slice(&v.to_le_bytes());
        }
    }
    BlockMatrix::new(ty, rows, cols, bytes).unwrap()
}

const TYPES: [GgmlType; 10] = {
    use GgmlType::*;
    [F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K]
};

fn values(t: Tensor<2>) -> Vec<f32> {
    t.into_data().try_into_vec::<f32>().unwrap()
}

/// max |got − want| ≤ tol · max |want|.
fn assert_close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: sizes");
    let scale = want.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-12);
    let err = got.iter().zip(want).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        err <= tol * scale,
        "{what}: max error {err:e} > {tol:e} × {scale:e}"
    );
}

/// (W as the host decoder reads it `[rows, cols]` on `dev`, the blocks on `dev`).
fn upload(ty: GgmlType, rows: usize, cols: usize, dev: &Device) -> (Tensor<2>, DeviceBlocks) {
    let m = random_matrix(ty, rows, cols, ty.id() as u64 + 7);
    let w = dequantize(ty, &m.bytes).unwrap();
    assert!(w.iter().all(|v| v.is_finite()), "{ty:?}: test matrix");
    let w = Tensor::from_data(TensorData::new(w, [rows, cols]), dev);
    (w, DeviceBlocks::upload(&m, 0..rows, dev))
}

/// The first `n` rows of the `size × size` identity.
fn one_hot(n: usize, size: usize, dev: &Device) -> Tensor<2> {
    let mut v = vec![0f32; n * size];
    (0..n).for_each(|i| v[i * size + i] = 1.0);
    Tensor::from_data(TensorData::new(v, [n, size]), dev)
}

#[test]
fn decode_and_products_match_the_host_decoder() {
    for (device, dev) in devices() {
        for ty in TYPES {
            // 67 rows: not a multiple of the workgroup; rows of 3 blocks (37 values for halves)
            let cols = if ty.block_size() == 1 {
                37
            } else {
                3 * ty.block_size()
            };
            let (w, blocks) = upload(ty, 67, cols, &dev);
            let what = format!("{device} {ty:?}");
            assert_eq!(
                values(block_decode(&blocks)),
                values(w.clone()),
                "{what}: decoded values"
            );
            // the kernels decode exactly the host decoder's numbers: one-hot rows of x (or of g)
            // pick W's columns (or rows) exactly, in the matrix–vector kernel and both tilings
            let wt = values(w.clone().transpose());
            for n in [MATVEC_MAX_ROWS, 20, cols] {
                let got = values(block_matmul_fused(one_hot(n, cols, &dev), &blocks, false));
                assert_eq!(got, wt[..n * 67], "{what} N={n}: one-hot rows of x");
            }
            let wv = values(w.clone());
            for n in [20, 67] {
                let got = values(block_matmul_fused(one_hot(n, 67, &dev), &blocks, true));
                assert_eq!(got, wv[..n * cols], "{what} N={n}: one-hot rows of g");
            }
            // each product path and its edges, partial second tiles of both tilings, and (on
            // lavapipe) the decoded copy beyond SOFTWARE_TILED_MAX_ROWS
            let (m, t) = (MATVEC_MAX_ROWS, SOFTWARE_TILED_MAX_ROWS);
            // (32 and 33: either side of the tiled kernel's change of tiling)
            // (1, 2, 3 and 8: the matrix–vector kernel's variants for 1, 2, 4 and 8 rows)
            for n in [1, 2, 3, m, m + 1, t, t + 1, 20, 32, 33, 70] {
                let x = Tensor::<2>::random([n, cols], Distribution::Normal(0.0, 1.0), &dev);
                let want = values(x.clone().matmul(w.clone().transpose()));
                let what = format!("{what} N={n}");
                assert_close(&values(block_matmul(x.clone(), &blocks)), &want, 1e-5, &what);
                if n > t {
                    let fused = values(block_matmul_fused(x, &blocks, false));
                    assert_close(&fused, &want, 1e-5, &format!("{what} fused"));
                }
            }
        }
    }
}

#[test]
fn backward_is_the_gradient_times_the_weights() {
    for (device, dev) in devices() {
        for ty in [GgmlType::Q4_1, GgmlType::Q6_K, GgmlType::F16] {
            // 45 rows and (for halves) 37 columns: partial tiles along both sides of W
            let cols = if ty.block_size() == 1 {
                37
            } else {
                2 * ty.block_size()
            };
            let (w, blocks) = upload(ty, 45, cols, &dev);
            for n in [2, 20, SOFTWARE_TILED_MAX_ROWS + 8, 70] {
                let x = Tensor::<2>::random([n, cols], Distribution::Normal(0.0, 1.0), &dev)
                    .autodiff()
                    .require_grad();
                let probe = Tensor::<2>::random([n, 45], Distribution::Normal(0.0, 1.0), &dev);
                let loss = (block_matmul(x.clone(), &blocks) * probe.clone().autodiff()).sum();
                let grads = loss.backward();
                let got = values(x.grad(&grads).expect("x gets a gradient"));
                let want = values(probe.clone().matmul(w.clone()));
                let what = format!("{device} {ty:?} N={n}: ∂L/∂x");
                assert_close(&got, &want, 1e-5, &what);
                // the decoded copy took it on lavapipe beyond SOFTWARE_TILED_MAX_ROWS
                let fused = values(block_matmul_fused(probe, &blocks, true));
                assert_close(&fused, &want, 1e-5, &format!("{what} fused"));
            }
        }
    }
}

/// On the CPU, 17 to 1024 rows of x take the panel product: W decoded a panel of rows at a time
/// (51 rows of 1280 values here), each panel's columns of y by gemm. Twelve panels, the last
/// one partial, at the smallest, a middle and the largest N it takes, and N = 1025 past it (W
/// decoded whole), against the stock matmul on the decoded weights; one-hot rows of x must
/// give W's columns exactly.
#[test]
fn panels_of_w_cover_every_row() {
    // the CPU's own path: the GPU's kernels meet these row counts in the tests above
    for (device, dev) in devices().into_iter().filter(|(device, _)| *device == "cpu") {
        let (rows, cols) = (600, 1280);
        let (w, blocks) = upload(GgmlType::Q4_1, rows, cols, &dev);
        let wt = values(w.clone().transpose());
        for n in [17, 64, 1024, 1025] {
            let what = format!("{device} Q4_1 [{rows}, {cols}] N={n}");
            let x = Tensor::<2>::random([n, cols], Distribution::Normal(0.0, 1.0), &dev);
            let want = values(x.clone().matmul(w.clone().transpose()));
            assert_close(&values(block_matmul(x, &blocks)), &want, 1e-5, &what);
            let got = values(block_matmul(one_hot(n, cols, &dev), &blocks));
            assert_eq!(got, wt[..n * rows], "{what}: one-hot rows of x");
        }
    }
}

/// More than 65,535 workgroups (the most along one side of the grid) take a 2-D grid; the
/// kernels must read their workgroup's index from both sides. 262,148 rows of W: 65,537
/// workgroups of 4 rows for the matrix–vector kernel, and of 64 quads for the decoding one.
#[test]
fn grids_beyond_one_side_cover_every_row() {
    let (_, dev) = &devices()[0];
    let rows = 262_148;
    let (w, blocks) = upload(GgmlType::Q8_0, rows, 64, dev);
    let (got, want) = (values(block_decode(&blocks)), values(w.clone()));
    let wrong = got.iter().zip(&want).position(|(a, b)| a != b);
    assert!(wrong.is_none(), "decoded values differ from value {wrong:?} on");
    let x = Tensor::<2>::random([3, 64], Distribution::Normal(0.0, 1.0), dev);
    let want = values(x.clone().matmul(w.transpose()));
    assert_close(&values(block_matmul(x, &blocks)), &want, 1e-5, "N=3");
}

/// With shader-f16 (lavapipe offers it), the tiled kernel can stage F16 weights in workgroup
/// memory as f16: the same values as the f32 staging, so both give bit-equal products, forward
/// and backward, in both tilings, and one-hot rows pick W's values exactly, subnormal halves
/// and ±65504 included (an adapter that flushed f16 denormals would fail here).
/// (The only test that sets the process-wide choice; both choices give the same numbers.)
#[test]
fn f16_staging_gives_the_f32_stagings_numbers() {
    let (device, dev) = &devices()[0];
    assert!(
        shader_f16_offered(dev),
        "{device}: the adapter (lavapipe in CI) should offer shader-f16, or the f16 path goes untested"
    );
    let (rows, cols) = (70, 37);
    let special = [
        half::f16::from_bits(0x0001), // the smallest subnormal
        half::f16::from_bits(0x03FF), // the largest subnormal
        half::f16::from_bits(0x8155), // a negative subnormal
        half::f16::MAX,
        half::f16::MIN,
    ];
    let w: Vec<f32> = (0..rows * cols)
        .map(|i| match i % 5 {
            0 => special[(i / 5) % special.len()].to_f32(),
            _ => half::f16::from_f32(((i * 7919 % 1000) as f32 - 500.0) * 1e-3).to_f32(),
        })
        .collect();
    let m = BlockMatrix::quantize(GgmlType::F16, &w, rows, cols).unwrap();
    assert!(
        dequantize(GgmlType::F16, &m.bytes).unwrap() == w,
        "the halves hold w exactly"
    );
    let blocks = DeviceBlocks::upload(&m, 0..rows, dev);
    // x [N, 37] (y = x Wᵀ) and g [N, 70] (y = g W), in both tilings (N ≤ 32 and beyond), random
    // and one-hot
    let mut operands: Vec<(Tensor<2>, bool)> = [
        (20, cols, false),
        (40, cols, false),
        (20, rows, true),
        (40, rows, true),
    ]
    .map(|(n, c, t)| {
        (
            Tensor::<2>::random([n, c], Distribution::Normal(0.0, 1.0), dev),
            t,
        )
    })
    .into();
    operands.push((one_hot(cols, cols, dev), false));
    operands.push((one_hot(rows, rows, dev), true));
    let products = |choice| {
        set_shader_f16(choice);
        let out: Vec<Vec<f32>> = operands
            .iter()
            .map(|(a, t)| values(block_matmul_fused(a.clone(), &blocks, *t)))
            .collect();
        set_shader_f16(ShaderF16::Auto);
        out
    };
    let (f16, f32_) = (products(ShaderF16::Always), products(ShaderF16::Never));
    for (i, (a, b)) in f16.iter().zip(&f32_).enumerate() {
        let same = a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
        assert!(same, "{device}: product {i}, f16 staging against f32 staging");
    }
    // one-hot rows of x give Wᵀ, of g give W: bit for bit
    let wt: Vec<f32> = (0..cols * rows)
        .map(|i| w[(i % rows) * cols + i / rows])
        .collect();
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(
        bits(&f16[4]),
        bits(&wt),
        "{device}: one-hot rows of x, f16 staging"
    );
    assert_eq!(
        bits(&f16[5]),
        bits(&w),
        "{device}: one-hot rows of g, f16 staging"
    );
}
