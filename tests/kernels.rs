//! Custom WGSL kernels against the same math in stock burn ops.

use burn::tensor::activation::softmax;
use burn::tensor::{Distribution, Tensor, TensorData, Tolerance};
use tinylora::engine::default_device;
use tinylora::engine::kernels::attention_decode;

/// The same attention with stock ops: GQA by repeating kv heads, masked softmax.
fn reference(q: Tensor<3>, k: Tensor<4>, v: Tensor<4>, first: &[usize], len: usize) -> Tensor<3> {
    let [b, nh, d] = q.dims();
    let [_, nkv, s, _] = k.dims();
    let rep = nh / nkv;
    let expand = |t: Tensor<4>| t.unsqueeze_dim::<5>(2).repeat_dim(2, rep).reshape([b, nh, s, d]);
    let (k, v) = (expand(k), expand(v));
    let mask: Vec<f32> = first
        .iter()
        .flat_map(|&f| (0..s).map(move |j| if j >= f && j < len { 0.0 } else { -1e9 }))
        .collect();
    let mask = Tensor::<4>::from_data(TensorData::new(mask, [b, 1, 1, s]), &q.device());
    let scores = q.unsqueeze_dim::<4>(2).matmul(k.swap_dims(2, 3)) / (d as f32).sqrt() + mask;
    softmax(scores, 3).matmul(v).reshape([b, nh, d])
}

#[test]
fn attention_decode_matches_stock_ops() {
    let dev = default_device();
    // (B, n_h, n_kv, S, d_h, len, first): slot counts below, at and above the workgroup width
    let cases: [(usize, usize, usize, usize, usize, usize, &[usize]); 4] = [
        (1, 9, 3, 64, 64, 37, &[0]),
        (3, 4, 2, 128, 16, 100, &[0, 5, 99]),
        (2, 14, 2, 64, 64, 1, &[0, 0]),
        (4, 2, 1, 320, 128, 257, &[3, 0, 200, 256]),
    ];
    for (b, nh, nkv, s, d, len, first) in cases {
        let q = Tensor::<3>::random([b, nh, d], Distribution::Normal(0.0, 1.0), &dev);
        let k = Tensor::<4>::random([b, nkv, s, d], Distribution::Normal(0.0, 1.0), &dev);
        let v = Tensor::<4>::random([b, nkv, s, d], Distribution::Normal(0.0, 1.0), &dev);
        let got = attention_decode(q.clone(), k.clone(), v.clone(), first, len);
        let want = reference(q, k, v, first, len);
        got.to_data().assert_approx_eq::<f32>(&want.to_data(), Tolerance::rel_abs(1e-4, 1e-5));
    }
}
