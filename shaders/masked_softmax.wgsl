// Attention weights: y = softmax(z + m) over each row of scores, with an additive mask
// (0 where a key is visible, −1e9 where it is hidden) shared by the heads.
//
// Inputs:  z    [B, h, R, S] f32, scores
//          mask [B, 1, R, S] f32
//          info [4] u32 B·h·R (rows), h·R, R, S
// Output:  y    [B, h, R, S] f32
//
// WG = {{ wg }}. One workgroup per row (b, head, r), which reads the mask's row (b, r): the
// largest z + m, then Σ exp(z + m − max), each as a strided pass and a tree in workgroup
// memory, then every invocation writes its share.
@group(0) @binding(0) var<storage, read_write> z: array<f32>;
@group(0) @binding(1) var<storage, read_write> mask: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> info: array<u32>;

const WG: u32 = {{ wg }}u;

var<workgroup> part: array<f32, {{ wg }}>;
// rows and S, loaded once so that every invocation sees them as uniform values
var<workgroup> size: vec2<u32>;

// the tree of `part` into part[0], by `op` (0: max, 1: sum)
fn tree(lid: u32, op: u32) {
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            if (op == 0u) {
                part[lid] = max(part[lid], part[lid + s]);
            } else {
                part[lid] += part[lid + s];
            }
        }
        workgroupBarrier();
    }
}

@compute @workgroup_size({{ wg }}, 1, 1)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    if (lid == 0u) {
        size = vec2<u32>(info[0], info[3]);
    }
    let rs = workgroupUniformLoad(&size);
    let row = wid.x + wid.y * nwg.x;
    if (row >= rs.x) {
        return;
    }
    let s = rs.y;
    let base = row * s;
    // (b · h + head) · R + r → the mask's row b · R + r
    let mbase = ((row / info[1]) * info[2] + row % info[2]) * s;
    var m = -3.4e38;
    for (var j = lid; j < s; j += WG) {
        m = max(m, z[base + j] + mask[mbase + j]);
    }
    part[lid] = m;
    tree(lid, 0u);
    let mx = part[0];
    workgroupBarrier();
    var acc = 0.0;
    for (var j = lid; j < s; j += WG) {
        acc += exp(z[base + j] + mask[mbase + j] - mx);
    }
    part[lid] = acc;
    tree(lid, 1u);
    let inv = 1.0 / part[0];
    for (var j = lid; j < s; j += WG) {
        y[base + j] = exp(z[base + j] + mask[mbase + j] - mx) * inv;
    }
}
