// The "down" half of the projected low-rank update: project each row onto r directions and
// apply the r×r core (SPEC.md §1):
//
//   s_t = a_t F          (F = rows row0 .. row0 + d of the stacked factors [U; V])
//   q_t = M s_t   or   Mᵀ s_t (transpose = 1),   M = Σᵢ vᵢ P̃ᵢ
//
// Forward: a = x, F = V → z and q = M z. Backward: a = G, F = U → w and q' = Mᵀ w = (w M)ᵀ.
// Merge: the rows of V themselves (a = I), q_i = M V_iᵀ; the template value `source` picks the
// case (a dot product over a_t, or a copy of factor row row0 + t).
//
// Inputs:  a       [T, d]              rows to project (unused when projecting V's own rows)
//          factors [d_out + d_in, R]   U (rows 0..d_out) then V (rows d_out..)
//          basis   [n_v, R, R]         P̃ᵢ
//          coef    [n_v]               v
//          info    [5] u32             T, d, row0, n_v, transpose
// Outputs: q       [T, R]              M s_t (or Mᵀ s_t)
//          s       [T, R]              s_t
//
// R = {{ r }}, WG = {{ wg }}. One invocation per row t. The workgroup first forms M = Σᵢ vᵢ P̃ᵢ
// in workgroup memory (one entry per invocation, one barrier); after that no invocation waits
// for another.
@group(0) @binding(0) var<storage, read_write> a: array<f32>;
@group(0) @binding(1) var<storage, read_write> factors: array<f32>;
@group(0) @binding(2) var<storage, read_write> basis: array<f32>;
@group(0) @binding(3) var<storage, read_write> coef: array<f32>;
@group(0) @binding(4) var<storage, read_write> q: array<f32>;
@group(0) @binding(5) var<storage, read_write> s: array<f32>;
@group(0) @binding(6) var<storage, read_write> info: array<u32>;

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
    let d = info[1];
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
    {{ source }}
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
