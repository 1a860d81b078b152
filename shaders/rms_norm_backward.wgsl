// ∂L/∂x of RMSNorm (the norm's weight w is frozen): with ĝ = g ⊙ w and
// r = (Σⱼ xⱼ² / H + ε)^(−1/2), ∂L/∂x = r ĝ − x r³ (Σⱼ ĝⱼ xⱼ) / H.
//
// Inputs:  x    [N, H] f32
//          w    [H]    f32
//          g    [N, H] f32, ∂L/∂y
//          info [3] u32 N, H, the bits of ε as an f32
// Output:  dx   [N, H] f32
//
// WG = {{ wg }}. One workgroup per row: Σ x² and Σ ĝ x in one strided pass and one tree in
// workgroup memory, then every invocation writes its share.
@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> w: array<f32>;
@group(0) @binding(2) var<storage, read_write> g: array<f32>;
@group(0) @binding(3) var<storage, read_write> dx: array<f32>;
@group(0) @binding(4) var<storage, read_write> info: array<u32>;

const WG: u32 = {{ wg }}u;

// per invocation: (Σ x², Σ ĝ x) of its share
var<workgroup> sums: array<vec2<f32>, {{ wg }}>;
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
    var acc = vec2<f32>(0.0);
    for (var j = lid; j < h; j += WG) {
        let v = x[base + j];
        acc += vec2<f32>(v * v, g[base + j] * w[j] * v);
    }
    sums[lid] = acc;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            sums[lid] += sums[lid + s];
        }
        workgroupBarrier();
    }
    let hf = f32(h);
    let r = inverseSqrt(sums[0].x / hf + bitcast<f32>(info[2]));
    let k = r * r * r * sums[0].y / hf;
    for (var j = lid; j < h; j += WG) {
        dx[base + j] = r * g[base + j] * w[j] - x[base + j] * k;
    }
}
