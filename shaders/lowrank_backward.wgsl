// Backward of the projected low-rank update, per token: ∂L/∂x and the per-token factors of
// ∂L/∂M (SPEC.md §1). With G = ∂L/∂y:
//
//   z_t = x_t V        w_t = G_t U        ∂L/∂x_t += (w_t M) Vᵀ        ∂L/∂M = Σ_t w_tᵀ z_t
//
// The sum over tokens is left to `lowrank_grad_coef.wgsl`, which reads z and w.
//
// Inputs:  x       [T, d_in]           activations saved by the forward
//          g       [T, d_out]          ∂L/∂y
//          factors [d_out + d_in, R]   U (rows 0..d_out) then V (rows d_out..)
//          basis   [n_v, R, R]         P̃ᵢ (M = Σᵢ vᵢ P̃ᵢ)
//          coef    [n_v]               v
//          info    [4] u32             T, d_in, d_out, n_v
// Outputs: dx      [T, d_in]           the low-rank path's share of ∂L/∂x
//          zw      [T, 2R]             z_t (columns 0..R) and w_t (columns R..2R)
//
// R = {{ r }}, WG = {{ wg }}. One workgroup per token (2-D grid), as in the forward.
@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> g: array<f32>;
@group(0) @binding(2) var<storage, read_write> factors: array<f32>;
@group(0) @binding(3) var<storage, read_write> basis: array<f32>;
@group(0) @binding(4) var<storage, read_write> coef: array<f32>;
@group(0) @binding(5) var<storage, read_write> dx: array<f32>;
@group(0) @binding(6) var<storage, read_write> zw: array<f32>;
@group(0) @binding(7) var<storage, read_write> info: array<u32>;

const R: u32 = {{ r }}u;
const WG: u32 = {{ wg }}u;

var<workgroup> red: array<f32, {{ wg_2r }}>;
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
    let v_row0 = d_out;

    // partial z (slots 0..R) and w (slots R..2R)
    var part: array<f32, {{ two_r }}>;
    for (var k = 0u; k < 2u * R; k++) {
        part[k] = 0.0;
    }
    for (var i = lid; i < d_in; i += WG) {
        let xi = x[t * d_in + i];
        for (var k = 0u; k < R; k++) {
            part[k] = fma(xi, factors[(v_row0 + i) * R + k], part[k]);
        }
    }
    for (var o = lid; o < d_out; o += WG) {
        let go = g[t * d_out + o];
        for (var j = 0u; j < R; j++) {
            part[R + j] = fma(go, factors[o * R + j], part[R + j]);
        }
    }
    for (var k = 0u; k < 2u * R; k++) {
        red[k * WG + lid] = part[k];
    }
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride = stride / 2u) {
        if (lid < stride) {
            for (var k = 0u; k < 2u * R; k++) {
                red[k * WG + lid] += red[k * WG + lid + stride];
            }
        }
        workgroupBarrier();
    }

    // q = w M (a row vector), and the token's z, w for the coefficient gradient
    if (lid == 0u) {
        for (var k = 0u; k < R; k++) {
            var acc = 0.0;
            for (var j = 0u; j < R; j++) {
                var m = 0.0;
                for (var i = 0u; i < n_v; i++) {
                    m = fma(coef[i], basis[(i * R + j) * R + k], m);
                }
                acc = fma(red[(R + j) * WG], m, acc);
            }
            q[k] = acc;
        }
        if (valid) {
            for (var k = 0u; k < 2u * R; k++) {
                zw[t * 2u * R + k] = red[k * WG];
            }
        }
    }
    workgroupBarrier();

    // ∂L/∂x_t = q Vᵀ
    if (valid) {
        for (var i = lid; i < d_in; i += WG) {
            var acc = 0.0;
            for (var k = 0u; k < R; k++) {
                acc = fma(q[k], factors[(v_row0 + i) * R + k], acc);
            }
            dx[t * d_in + i] = acc;
        }
    }
}
