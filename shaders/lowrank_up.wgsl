// The "up" half of the projected low-rank update: expand r numbers per row back to full
// width through a factor (SPEC.md §1):
//
//   out[t, o] = init[t, o] ± Σ_j F[col0 + o, j] q[t, j]
//
// with F = rows row0.. of the stacked factors [U; V]. Forward: F = U, init = base (x Wᵀ),
// q = M z, so y = base + ((x V) Mᵀ) Uᵀ. Backward: F = V, init = 0, q = (w M)ᵀ, so
// ∂L/∂x = (w M) Vᵀ. Merge: t runs over the rows i of Wᵀ, F = U (one column chunk), init = Wᵀ
// itself (in place) or a copy of it, q_i = M V_iᵀ, so Wᵀ ± (U M Vᵀ)ᵀ.
//
// Inputs:  q       [T, R]
//          factors [d_out + d_in, R]   U (rows 0..d_out) then V (rows d_out..)
//          {{ init_doc }}
//          info    [4] u32             T, cols, row0 + col0 (first factor row), unused
// Output:  out     [T, cols]           (sign {{ sign }})
//
// R = {{ r }}, WG = {{ wg }}. One invocation per OUT = 4 consecutive outputs of a row (q_t is
// read once for them), neighbours along o: no workgroup memory, no barriers.
@group(0) @binding(0) var<storage, read_write> q: array<f32>;
@group(0) @binding(1) var<storage, read_write> factors: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read_write> info: array<u32>;
{{ init_binding }}

const R: u32 = {{ r }}u;
const OUT: u32 = 4u;

@compute @workgroup_size({{ wg }}, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let n_t = info[0];
    let cols = info[1];
    let row0 = info[2];
    let chunk = gid.x + gid.y * nwg.x * {{ wg }}u;
    let per_row = (cols + OUT - 1u) / OUT;
    if (chunk >= n_t * per_row) {
        return;
    }
    let t = chunk / per_row;
    var qt: array<f32, {{ r }}>;
    for (var j = 0u; j < R; j++) {
        qt[j] = q[t * R + j];
    }
    let o0 = (chunk % per_row) * OUT;
    for (var o = o0; o < min(o0 + OUT, cols); o++) {
        var delta = 0.0;
        for (var j = 0u; j < R; j++) {
            delta = fma(factors[(row0 + o) * R + j], qt[j], delta);
        }
        let idx = t * cols + o;
        out[idx] = {{ init }} + {{ sign }} * delta;
    }
}
