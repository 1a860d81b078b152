// The "down" half of the merge: apply the r×r core to the factor's own rows (SPEC.md §1):
//
//   q_t = M F_tᵀ   or   Mᵀ F_tᵀ (transpose = 1),   M = Σᵢ vᵢ P̃ᵢ,
//
// F = rows row0 .. row0 + T of the stacked factors [U; V]. Merge: F = V, q_i = M V_iᵀ, which
// `lowrank_up.wgsl` then expands through U onto Wᵀ. (Activations and gradients are projected
// by `lowrank_down_tiled.wgsl`.)
//
// Inputs:  factors [d_out + d_in, R]   U (rows 0..d_out) then V (rows d_out..)
//          basis   [n_v, R, R]         P̃ᵢ
//          coef    [n_v]               v
//          info    [5] u32             T, (unused), row0, n_v, transpose
// Outputs: q       [T, R]              M F_tᵀ (or Mᵀ F_tᵀ)
//          s       [T, R]              F_t
//
// R = {{ r }}, WG = {{ wg }}. One invocation per row t. The workgroup first forms M = Σᵢ vᵢ P̃ᵢ
// in workgroup memory (one entry per invocation, one barrier); after that no invocation waits
// for another.
@group(0) @binding(0) var<storage, read_write> factors: array<f32>;
@group(0) @binding(1) var<storage, read_write> basis: array<f32>;
@group(0) @binding(2) var<storage, read_write> coef: array<f32>;
@group(0) @binding(3) var<storage, read_write> q: array<f32>;
@group(0) @binding(4) var<storage, read_write> s: array<f32>;
@group(0) @binding(5) var<storage, read_write> info: array<u32>;

const R: u32 = {{ r }}u;
const WG: u32 = {{ wg }}u;

var<workgroup> m: array<f32, {{ r_r }}>;

@compute @workgroup_size({{ wg }}, 1, 1)
fn main(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let n_t = info[0];
    let row0 = info[2];
    let n_v = info[3];
    let transpose = info[4] == 1u;
    for (var jk = lid; jk < R * R; jk += WG) {
        var acc = 0.0;
        for (var i = 0u; i < n_v; i++) {
            acc = fma(coef[i], basis[i * R * R + jk], acc);
        }
        m[jk] = acc;
    }
    workgroupBarrier();
    let t = gid.x + gid.y * nwg.x * WG;
    if (t >= n_t) {
        return;
    }
    var acc: array<f32, {{ r }}>;
    for (var k = 0u; k < R; k++) {
        acc[k] = 0.0;
    }
    for (var k = 0u; k < R; k++) {
        acc[k] = factors[(row0 + t) * R + k];
    }
    for (var k = 0u; k < R; k++) {
        s[t * R + k] = acc[k];
    }
    for (var j = 0u; j < R; j++) {
        var out = 0.0;
        for (var k = 0u; k < R; k++) {
            // M[j, k] for q = M s; M[k, j] for q = Mᵀ s
            out = fma(select(m[j * R + k], m[k * R + j], transpose), acc[k], out);
        }
        q[t * R + j] = out;
    }
}
