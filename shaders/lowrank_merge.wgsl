// Merge or unmerge the low-rank update into a frozen weight, in place:
//
//   Wᵀ ← Wᵀ ± (U M Vᵀ)ᵀ,   M = Σᵢ vᵢ P̃ᵢ                        (SPEC.md §1)
//
// The weight is stored transposed and split by output columns (see engine `Linear`): this
// launch updates the chunk holding output columns col0 .. col0 + cols.
//
// Inputs:  w       [d_in, cols]        Wᵀ chunk, updated in place (or copied to `out`)
//          factors [d_out + d_in, R]   U (rows 0..d_out) then V (rows d_out..)
//          basis   [n_v, R, R]         P̃ᵢ
//          coef    [n_v]               v
//          info    [5] u32             d_in, d_out, col0, cols, n_v
// Output:  {{ target }} [d_in, cols]   Wᵀ ± ΔWᵀ (sign {{ sign }})
//
// R = {{ r }}, WG = {{ wg }}. Workgroup i takes row i of Wᵀ (2-D grid): invocation 0 forms
// b = M V_iᵀ (R numbers), then ΔWᵀ[i, o] = U_o · b for o = lid, lid + WG, …
@group(0) @binding(0) var<storage, read_write> w: array<f32>;
@group(0) @binding(1) var<storage, read_write> factors: array<f32>;
@group(0) @binding(2) var<storage, read_write> basis: array<f32>;
@group(0) @binding(3) var<storage, read_write> coef: array<f32>;
@group(0) @binding(4) var<storage, read_write> info: array<u32>;
{{ out_binding }}

const R: u32 = {{ r }}u;
const WG: u32 = {{ wg }}u;
const SIGN: f32 = {{ sign }};

var<workgroup> b: array<f32, {{ r }}>;

@compute @workgroup_size({{ wg }}, 1, 1)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let d_in = info[0];
    let d_out = info[1];
    let col0 = info[2];
    let cols = info[3];
    let n_v = info[4];
    let i_raw = wid.x + wid.y * nwg.x;
    let valid = i_raw < d_in;
    let i = min(i_raw, d_in - 1u);
    if (lid == 0u) {
        for (var j = 0u; j < R; j++) {
            var acc = 0.0;
            for (var k = 0u; k < R; k++) {
                var m = 0.0;
                for (var p = 0u; p < n_v; p++) {
                    m = fma(coef[p], basis[(p * R + j) * R + k], m);
                }
                acc = fma(m, factors[(d_out + i) * R + k], acc);
            }
            b[j] = acc;
        }
    }
    workgroupBarrier();
    if (valid) {
        for (var o = lid; o < cols; o += WG) {
            var delta = 0.0;
            for (var j = 0u; j < R; j++) {
                delta = fma(factors[(col0 + o) * R + j], b[j], delta);
            }
            {{ target }}[i * cols + o] = w[i * cols + o] + SIGN * delta;
        }
    }
}
