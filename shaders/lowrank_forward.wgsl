// Projected low-rank update on the activation path (forward), without materialising ΔW:
//
//   y = base + ((x V) Mᵀ) Uᵀ,   M = Σᵢ vᵢ P̃ᵢ                       (SPEC.md §1)
//
// P̃ᵢ are the module's projections with the Σ convention folded in on the host (paper:
// P̃ᵢ = Σ Pᵢ, so ΔW = U Σ R(v) Vᵀ); LoRA-XS uses the unit basis (v = vec R), LoRA one P̃ = s·I.
//
// Inputs:  x       [T, d_in]           activations (T = all tokens of the batch)
//          base    [T, d_out]          x Wᵀ (+ b) from the frozen layer
//          factors [d_out + d_in, R]   U (rows 0..d_out) then V (rows d_out..)
//          basis   [n_v, R, R]         P̃ᵢ
//          coef    [n_v]               the trainable v
//          info    [4] u32             T, d_in, d_out, n_v
// Output:  y       [T, d_out]
//
// R = {{ r }} and the workgroup size WG = {{ wg }} are template constants. Workgroup t (of a
// 2-D grid, to allow T > 65535) handles token t: each invocation sums part of z = x_t V, a
// tree reduction in workgroup memory completes z, invocation 0 forms q = M z, and every
// invocation writes outputs o, o + WG, … Workgroups past T compute on row T − 1 and write
// nothing, so every barrier is reached by the whole workgroup.
@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> base: array<f32>;
@group(0) @binding(2) var<storage, read_write> factors: array<f32>;
@group(0) @binding(3) var<storage, read_write> basis: array<f32>;
@group(0) @binding(4) var<storage, read_write> coef: array<f32>;
@group(0) @binding(5) var<storage, read_write> y: array<f32>;
@group(0) @binding(6) var<storage, read_write> info: array<u32>;

const R: u32 = {{ r }}u;
const WG: u32 = {{ wg }}u;

var<workgroup> red: array<f32, {{ wg_r }}>;
var<workgroup> q: array<f32, {{ r }}>;

@compute @workgroup_size({{ wg }}, 1, 1)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let n_t = info[0];
    let d_in = info[1];
    let d_out = info[2];
    let n_v = info[3];
    let t_raw = wid.x + wid.y * nwg.x;
    let valid = t_raw < n_t;
    let t = min(t_raw, n_t - 1u);
    let v_row0 = d_out; // V starts after U's rows

    // z = x_t V: partial sums, then a tree reduction over the workgroup
    var zp: array<f32, {{ r }}>;
    for (var k = 0u; k < R; k++) {
        zp[k] = 0.0;
    }
    for (var i = lid; i < d_in; i += WG) {
        let xi = x[t * d_in + i];
        for (var k = 0u; k < R; k++) {
            zp[k] = fma(xi, factors[(v_row0 + i) * R + k], zp[k]);
        }
    }
    for (var k = 0u; k < R; k++) {
        red[k * WG + lid] = zp[k];
    }
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride = stride / 2u) {
        if (lid < stride) {
            for (var k = 0u; k < R; k++) {
                red[k * WG + lid] += red[k * WG + lid + stride];
            }
        }
        workgroupBarrier();
    }

    // q = M z with M = Σᵢ vᵢ P̃ᵢ
    if (lid == 0u) {
        for (var j = 0u; j < R; j++) {
            var acc = 0.0;
            for (var k = 0u; k < R; k++) {
                var m = 0.0;
                for (var i = 0u; i < n_v; i++) {
                    m = fma(coef[i], basis[(i * R + j) * R + k], m);
                }
                acc = fma(m, red[k * WG], acc);
            }
            q[j] = acc;
        }
    }
    workgroupBarrier();

    // y_t = base_t + U q
    if (valid) {
        for (var o = lid; o < d_out; o += WG) {
            var acc = base[t * d_out + o];
            for (var j = 0u; j < R; j++) {
                acc = fma(factors[o * R + j], q[j], acc);
            }
            y[t * d_out + o] = acc;
        }
    }
}
