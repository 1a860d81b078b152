// The "down" half of the projected low-rank update for rows of activations or gradients,
// when r and d are multiples of 4: every load and store moves a vec4 (SPEC.md §1):
//
//   s_t = a_t F          (F = rows row0 .. row0 + d of the stacked factors [U; V])
//   q_t = M s_t   or   Mᵀ s_t (transpose = 1),   M = Σᵢ vᵢ P̃ᵢ
//
// Forward: a = x, F = V → z and q = M z. Backward: a = G, F = U → w and q' = Mᵀ w = (w M)ᵀ.
//
// Inputs:  a       [T, d]              rows to project (read as [T, d/4] vec4s)
//          factors [d_out + d_in, R]   U (rows 0..d_out) then V (rows d_out..); read as vec4s:
//                                      factor rows 4c .. 4c + 3 are R vec4s
//          basis   [n_v, R, R]         P̃ᵢ
//          coef    [n_v]               v
//          info    [5] u32             T, d, row0, n_v, transpose
// Outputs: q       [T, R]              M s_t (or Mᵀ s_t), written as [T, R/4] vec4s
//          s       [T, R]              s_t, written as [T, R/4] vec4s
//
// R = {{ r }}, R4 = R/4, TT = {{ tt }} (TT·R = 32), WG = {{ wg }} = G·S with G = {{ g }} row groups and
// S = {{ s }} splits (all from the Rust side, halves.rs, which checks these identities). A workgroup takes G·TT rows; invocation (g, l) = (lid / S, lid % S) takes the
// TT rows t0 + g·TT + tt and the inputs 4·i4 .. 4·i4 + 3 for i4 = l, l + S, …: neighbouring
// invocations read neighbouring vec4s of a row, and each factor vec4 serves TT rows. It keeps
// TT·R4 vec4 partial sums; after one barrier invocation lid adds up the S partials of slot
// lid = (row ρ, k4) of the workgroup's G·TT·R4 = WG slots, and after a second barrier applies
// M to it. (On llvmpipe every load or store of a storage or workgroup buffer is a loop over
// the SIMD lanes, so moving vec4s instead of scalars is what counts; shaders/README.md.)
@group(0) @binding(0) var<storage, read_write> a: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> factors: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> basis: array<f32>;
@group(0) @binding(3) var<storage, read_write> coef: array<f32>;
@group(0) @binding(4) var<storage, read_write> q: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> s: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> info: array<u32>;

const R: u32 = {{ r }}u;
const R4: u32 = R / 4u;
const TT: u32 = {{ tt }}u;
const G: u32 = {{ g }}u;
const S: u32 = {{ s }}u;
const WG: u32 = {{ wg }}u;

// m[j·R4 + k4] = (M[j, 4k4], …, M[j, 4k4 + 3]), or the same of Mᵀ when transposing
var<workgroup> m: array<vec4<f32>, {{ r_r4 }}>;
// partials[slot · S + l]: invocation l's partial sums of slot = (g·TT + tt)·R4 + k4
var<workgroup> partials: array<vec4<f32>, {{ wg_s }}>;
var<workgroup> sums: array<vec4<f32>, {{ wg }}>;

@compute @workgroup_size({{ wg }}, 1, 1)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let n_t = info[0];
    let d4 = info[1] / 4u;
    let f0 = info[2] * R4;
    let n_v = info[3];
    let transpose = info[4] == 1u;
    for (var e = lid; e < R * R4; e += WG) {
        let j = e / R4;
        var acc = vec4<f32>(0.0);
        for (var i = 0u; i < n_v; i++) {
            for (var c = 0u; c < 4u; c++) {
                let k = (e % R4) * 4u + c;
                acc[c] = fma(coef[i], basis[i * R * R + select(j * R + k, k * R + j, transpose)], acc[c]);
            }
        }
        m[e] = acc;
    }
    let t0 = (wid.x + wid.y * nwg.x) * G * TT;
    let g = lid / S;
    let l = lid % S;
    let last = max(n_t, 1u) - 1u;
    var acc: array<vec4<f32>, {{ tt_r4 }}>;
    for (var e = 0u; e < TT * R4; e++) {
        acc[e] = vec4<f32>(0.0);
    }
    for (var i4 = l; i4 < d4; i4 += S) {
        // f[c·R4 + k4] = (F[4·i4 + c, 4k4], …, F[4·i4 + c, 4k4 + 3])
        var f: array<vec4<f32>, {{ r }}>;
        for (var k = 0u; k < R; k++) {
            f[k] = factors[f0 + i4 * R + k];
        }
        // a fixed trip count keeps acc in registers; rows past the end re-read the last row
        for (var tt = 0u; tt < TT; tt++) {
            let x = a[min(t0 + g * TT + tt, last) * d4 + i4];
            for (var k4 = 0u; k4 < R4; k4++) {
                var p = acc[tt * R4 + k4];
                p = fma(vec4<f32>(x.x), f[k4], p);
                p = fma(vec4<f32>(x.y), f[R4 + k4], p);
                p = fma(vec4<f32>(x.z), f[2u * R4 + k4], p);
                p = fma(vec4<f32>(x.w), f[3u * R4 + k4], p);
                acc[tt * R4 + k4] = p;
            }
        }
    }
    for (var e = 0u; e < TT * R4; e++) {
        partials[(g * TT * R4 + e) * S + l] = acc[e];
    }
    workgroupBarrier();
    var total = vec4<f32>(0.0);
    for (var k = 0u; k < S; k++) {
        total += partials[lid * S + k];
    }
    sums[lid] = total;
    workgroupBarrier();
    // slot lid: row t0 + ρ, outputs j = 4k4 .. 4k4 + 3
    let rho = lid / R4;
    let k4 = lid % R4;
    let t = t0 + rho;
    if (t < n_t) {
        var out = vec4<f32>(0.0);
        for (var c = 0u; c < 4u; c++) {
            let j = k4 * 4u + c;
            for (var k = 0u; k < R4; k++) {
                out[c] += dot(m[j * R4 + k], sums[rho * R4 + k]);
            }
        }
        s[t * R4 + k4] = total;
        q[t * R4 + k4] = out;
    }
}
