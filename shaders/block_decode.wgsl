// Decode a weight matrix kept in ggml blocks to f32, for the stock tiled matmul where a software
// rasterizer takes it (more than 16 rows of the other operand: prefill, training, the backward's
// ∂L/∂x = G W; see `block_tiled.wgsl` for the product that decodes inside). The layouts are
// ggml's (`ggml-common.h`), as `crates/tinylora-formats/src/quant.rs` decodes them on the host:
// the same formulas in the same order, so both give the same numbers.
//
// Inputs:  blocks [rows, words]    u32 words, each row d_in / QK blocks of TS bytes, padded
//                                  to whole words
//          info   [3] u32          rows, d_in, words (per row)
// Output:  out    [rows, d_in]     f32: W's values
//
// TY = {{ ty }} (the ggml type id: 1 F16, 30 BF16, 2 Q4_0, 3 Q4_1, 6 Q5_0, 7 Q5_1, 8 Q8_0,
// 12 Q4_K, 13 Q5_K, 14 Q6_K), QK = {{ qk }} values a block, TS = {{ ts }} bytes a block,
// WG = {{ wg }}. One invocation per quad of a row (d_in / 4 rounded up a row): `value4()` and
// `half_value()` are shared with `block_matvec.wgsl` and `block_tiled.wgsl`.
@group(0) @binding(0) var<storage, read_write> blocks: array<u32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<storage, read_write> info: array<u32>;

{{ decode }}

@compute @workgroup_size({{ wg }}, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let rows = info[0];
    let d_in = info[1];
    let words = info[2];
    let quads = (d_in + 3u) / 4u;
    let i = gid.x + gid.y * nwg.x * {{ wg }}u;
    if (i >= rows * quads) {
        return;
    }
    let row = i / quads;
    let row0 = row * words * 4u;
    let k = (i % quads) * 4u;
    let o = row * d_in + k;
    if (k + 4u <= d_in) {
        let v = value4(row0, k);
        out[o] = v.x;
        out[o + 1u] = v.y;
        out[o + 2u] = v.z;
        out[o + 3u] = v.w;
        return;
    }
    // the last, partial quad of a row of halves
    for (var t = k; t < d_in; t++) {
        out[row * d_in + t] = half_value(row0, t);
    }
}
