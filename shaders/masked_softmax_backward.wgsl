// ∂L/∂z of the masked softmax from its output y: ∂L/∂z = y ⊙ (g − Σⱼ gⱼ yⱼ) per row.
//
// Inputs:  y    [rows, S] f32, the forward's output
//          g    [rows, S] f32, ∂L/∂y
//          info [2] u32 rows, S
// Output:  dz   [rows, S] f32
//
// WG = {{ wg }}. One workgroup per row: Σ g y as a strided pass and a tree in workgroup memory,
// then every invocation writes its share.
@group(0) @binding(0) var<storage, read_write> y: array<f32>;
@group(0) @binding(1) var<storage, read_write> g: array<f32>;
@group(0) @binding(2) var<storage, read_write> dz: array<f32>;
@group(0) @binding(3) var<storage, read_write> info: array<u32>;

const WG: u32 = {{ wg }}u;

var<workgroup> sums: array<f32, {{ wg }}>;
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
    let rs = workgroupUniformLoad(&size);
    let row = wid.x + wid.y * nwg.x;
    if (row >= rs.x) {
        return;
    }
    let s = rs.y;
    let base = row * s;
    var acc = 0.0;
    for (var j = lid; j < s; j += WG) {
        acc += g[base + j] * y[base + j];
    }
    sums[lid] = acc;
    workgroupBarrier();
    for (var k = WG / 2u; k > 0u; k >>= 1u) {
        if (lid < k) {
            sums[lid] += sums[lid + k];
        }
        workgroupBarrier();
    }
    let gy = sums[0];
    for (var j = lid; j < s; j += WG) {
        dz[base + j] = y[base + j] * (g[base + j] - gy);
    }
}
