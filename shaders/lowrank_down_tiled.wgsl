// The "down" half of the projected low-rank update for rows of activations or gradients,
// one workgroup per TT rows (SPEC.md §1):
//
//   s_t = a_t F          (F = rows row0 .. row0 + d of the stacked factors [U; V])
//   q_t = M s_t   or   Mᵀ s_t (transpose = 1),   M = Σᵢ vᵢ P̃ᵢ
//
// Forward: a = x, F = V → z and q = M z. Backward: a = G, F = U → w and q' = Mᵀ w = (w M)ᵀ.
//
// Inputs:  a       [T, d]              rows to project
//          factors [d_out + d_in, R]   U (rows 0..d_out) then V (rows d_out..)
//          basis   [n_v, R, R]         P̃ᵢ
//          coef    [n_v]               v
//          info    [5] u32             T, d, row0, n_v, transpose
// Outputs: q       [T, R]              M s_t (or Mᵀ s_t)
//          s       [T, R]              s_t
//
// R = {{ r }}, WG = {{ wg }}, TT = {{ tt }} (TT·R ≤ 32 ≤ WG). The invocations of a workgroup split
// the d inputs (invocation l takes i = l, l + WG, …): neighbouring invocations read
// neighbouring entries of a, and each factor row is read once for all TT rows. Each keeps
// TT·R partial sums; one barrier, then TT·R invocations add up the WG partials of one entry
// each; a second barrier, then they apply M.
@group(0) @binding(0) var<storage, read_write> a: array<f32>;
@group(0) @binding(1) var<storage, read_write> factors: array<f32>;
@group(0) @binding(2) var<storage, read_write> basis: array<f32>;
@group(0) @binding(3) var<storage, read_write> coef: array<f32>;
@group(0) @binding(4) var<storage, read_write> q: array<f32>;
@group(0) @binding(5) var<storage, read_write> s: array<f32>;
@group(0) @binding(6) var<storage, read_write> info: array<u32>;

const R: u32 = {{ r }}u;
const WG: u32 = {{ wg }}u;
const TT: u32 = {{ tt }}u;

var<workgroup> m: array<f32, {{ r_r }}>;
// partials[e * WG + l]: invocation l's partial sum of entry e = tt·R + k
var<workgroup> partials: array<f32, {{ tt_r_wg }}>;
var<workgroup> sums: array<f32, {{ tt_r }}>;

@compute @workgroup_size({{ wg }}, 1, 1)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
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
    let t0 = (wid.x + wid.y * nwg.x) * TT;
    let n_tt = min(TT, max(n_t, t0) - t0);
    let last = max(n_t, 1u) - 1u;
    var acc: array<f32, {{ tt_r }}>;
    for (var e = 0u; e < TT * R; e++) {
        acc[e] = 0.0;
    }
    for (var i = lid; i < d; i += WG) {
        var f: array<f32, {{ r }}>;
        for (var k = 0u; k < R; k++) {
            f[k] = factors[(row0 + i) * R + k];
        }
        // a fixed trip count keeps acc in registers; rows past the end re-read the last row
        for (var tt = 0u; tt < TT; tt++) {
            let ai = a[min(t0 + tt, last) * d + i];
            for (var k = 0u; k < R; k++) {
                acc[tt * R + k] = fma(ai, f[k], acc[tt * R + k]);
            }
        }
    }
    for (var e = 0u; e < TT * R; e++) {
        partials[e * WG + lid] = acc[e];
    }
    workgroupBarrier();
    if (lid < TT * R) {
        var total = 0.0;
        for (var l = 0u; l < WG; l++) {
            total += partials[lid * WG + l];
        }
        sums[lid] = total;
    }
    workgroupBarrier();
    let tt = lid / R;
    let j = lid % R;
    if (lid < TT * R && tt < n_tt) {
        let t = t0 + tt;
        s[t * R + j] = sums[lid];
        var out = 0.0;
        for (var k = 0u; k < R; k++) {
            // M[j, k] for q = M s; M[k, j] for q = Mᵀ s
            out = fma(select(m[j * R + k], m[k * R + j], transpose), sums[tt * R + k], out);
        }
        q[t * R + j] = out;
    }
}
