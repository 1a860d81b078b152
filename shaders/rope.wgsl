// Rotary position embedding of queries or keys ("rotate half", h = d_h / 2), times a scale σ
// (the attention's 1/√d_h for queries, 1 for keys), with the heads axis moved before the
// tokens axis in the same pass: for i < h,
//   y[b, k, t, i]     = σ (x[b, t, k, i] c[b, t, i] − x[b, t, k, i + h] s[b, t, i]),
//   y[b, k, t, i + h] = σ (x[b, t, k, i + h] c[b, t, i + h] + x[b, t, k, i] s[b, t, i + h]).
//
// Inputs:  x    [B, T, n, d_h] f32
//          c, s [B, T, d_h]    f32, the cos and sin tables of each row's positions
//          info [5] u32 B, T, n, d_h, the bits of σ as an f32
// Output:  y    [B, n, T, d_h] f32
//
// WG = {{ wg }}. One invocation per element of y.
@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> c: array<f32>;
@group(0) @binding(2) var<storage, read_write> s: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read_write> info: array<u32>;

@compute @workgroup_size({{ wg }}, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let o = gid.x + gid.y * nwg.x * {{ wg }}u;
    let tt = info[1];
    let n = info[2];
    let dh = info[3];
    if (o >= info[0] * n * tt * dh) {
        return;
    }
    // o = ((b · n + k) · T + t) · d_h + i
    let i = o % dh;
    let t = (o / dh) % tt;
    let k = (o / (dh * tt)) % n;
    let b = o / (dh * tt * n);
    let half = dh / 2u;
    let xrow = ((b * tt + t) * n + k) * dh;
    let trow = (b * tt + t) * dh;
    var v: f32;
    if (i < half) {
        v = x[xrow + i] * c[trow + i] - x[xrow + i + half] * s[trow + i];
    } else {
        v = x[xrow + i] * c[trow + i] + x[xrow + i - half] * s[trow + i];
    }
    y[o] = bitcast<f32>(info[4]) * v;
}
