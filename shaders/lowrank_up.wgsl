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
//          info    [4] u32             T, cols, row0 + col0 (first factor row), ⌈cols / 4⌉ rounded up to WG
// Output:  out     [T, cols]           (sign {{ sign }})
//
// R = {{ r }}, WG = {{ wg }}, ROWS = {{ rows }}. One invocation per 4 neighbouring output columns
// o0..o0 + 3 and a block of ROWS rows: it keeps F's rows o0..o0 + 3 in registers (R vec4s) and
// walks down the rows, reading q_t once per row for its 4 outputs; neighbouring invocations
// touch neighbouring columns. No workgroup memory, no barriers. (Measured on lavapipe against
// one invocation per 4 outputs of one row: the rank-8 merge went from 0.52–0.65× to 0.97× of
// stock burn ops; benches/README.md.)
@group(0) @binding(0) var<storage, read_write> q: array<f32>;
@group(0) @binding(1) var<storage, read_write> factors: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read_write> info: array<u32>;
{{ init_binding }}

const R: u32 = {{ r }}u;
const ROWS: u32 = {{ rows }}u;

@compute @workgroup_size({{ wg }}, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let n_t = info[0];
    let cols = info[1];
    let row0 = info[2];
    let cols_padded = info[3];
    let chunk = gid.x + gid.y * nwg.x * {{ wg }}u;
    let o0 = (chunk % cols_padded) * 4u;
    let t0 = (chunk / cols_padded) * ROWS;
    if (o0 >= cols || t0 >= n_t) {
        return;
    }
    // F's rows o0 .. o0 + 3 (a missing row past the end reads as 0 and is never written)
    var f: array<vec4<f32>, {{ r }}>;
    for (var j = 0u; j < R; j++) {
        var v = vec4<f32>(0.0);
        for (var c = 0u; c < 4u; c++) {
            if (o0 + c < cols) {
                v[c] = factors[(row0 + o0 + c) * R + j];
            }
        }
        f[j] = v;
    }
    for (var t = t0; t < min(t0 + ROWS, n_t); t++) {
        var delta = vec4<f32>(0.0);
        for (var j = 0u; j < R; j++) {
            delta = fma(f[j], vec4<f32>(q[t * R + j]), delta);
        }
        for (var c = 0u; c < min(4u, cols - o0); c++) {
            let idx = t * cols + o0 + c;
            out[idx] = {{ init }} + {{ sign }} * delta[c];
        }
    }
}
