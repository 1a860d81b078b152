// RMSNorm of each row, times the norm's weight: y = x r ⊙ w with r = (Σⱼ xⱼ² / H + ε)^(−1/2).
//
// Inputs:  x    [N, H] f32
//          w    [H]    f32
//          info [3] u32 N, H, the bits of ε as an f32
// Output:  y    [N, H] f32
//
// WG = {{ wg }}. One workgroup per row: each invocation sums the squares of a strided share of
// the row, a tree in workgroup memory adds the shares, then every invocation scales its share.
@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> w: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> info: array<u32>;

const WG: u32 = {{ wg }}u;

var<workgroup> sums: array<f32, {{ wg }}>;
// N and H, loaded once so that every invocation sees them as uniform values
var<workgroup> size: vec2<u32>;

@compute @workgroup_size({{ wg }}, 1, 1)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    if (lid == 0u) {
        size = vec2<u32>(info[0], info[1]);
    }
    let nh = workgroupUniformLoad(&size);
    let row = wid.x + wid.y * nwg.x;
    if (row >= nh.x) {
        return;
    }
    let h = nh.y;
    let base = row * h;
    var acc = 0.0;
    for (var j = lid; j < h; j += WG) {
        let v = x[base + j];
        acc += v * v;
    }
    sums[lid] = acc;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            sums[lid] += sums[lid + s];
        }
        workgroupBarrier();
    }
    let r = inverseSqrt(sums[0] / f32(h) + bitcast<f32>(info[2]));
    for (var j = lid; j < h; j += WG) {
        y[base + j] = x[base + j] * r * w[j];
    }
}
