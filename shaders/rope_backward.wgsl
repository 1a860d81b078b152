// The backward of `rope.wgsl`, the heads axis moved back after the tokens axis: for i < h,
//   dx[b, t, k, i]     = σ (g[b, k, t, i] c[b, t, i] + g[b, k, t, i + h] s[b, t, i + h]),
//   dx[b, t, k, i + h] = σ (g[b, k, t, i + h] c[b, t, i + h] − g[b, k, t, i] s[b, t, i]).
//
// Inputs:  g    [B, n, T, d_h] f32, ∂L/∂y
//          c, s [B, T, d_h]    f32
//          info [5] u32 B, T, n, d_h, the bits of σ as an f32
// Output:  dx   [B, T, n, d_h] f32
//
// WG = {{ wg }}. One invocation per element of dx.
@group(0) @binding(0) var<storage, read_write> g: array<f32>;
@group(0) @binding(1) var<storage, read_write> c: array<f32>;
@group(0) @binding(2) var<storage, read_write> s: array<f32>;
@group(0) @binding(3) var<storage, read_write> dx: array<f32>;
@group(0) @binding(4) var<storage, read_write> info: array<u32>;

@compute @workgroup_size({{ wg }}, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let o = gid.x + gid.y * nwg.x * {{ wg }}u;
    let tt = info[1];
    let n = info[2];
    let dh = info[3];
    if (o >= info[0] * tt * n * dh) {
        return;
    }
    // o = ((b · T + t) · n + k) · d_h + i
    let i = o % dh;
    let k = (o / dh) % n;
    let t = (o / (dh * n)) % tt;
    let b = o / (dh * n * tt);
    let half = dh / 2u;
    let grow = ((b * n + k) * tt + t) * dh;
    let trow = (b * tt + t) * dh;
    var v: f32;
    if (i < half) {
        v = g[grow + i] * c[trow + i] + g[grow + i + half] * s[trow + i + half];
    } else {
        v = g[grow + i] * c[trow + i] - g[grow + i - half] * s[trow + i - half];
    }
    dx[o] = bitcast<f32>(info[4]) * v;
}
