// Gradient of the trainable coefficients of one module (SPEC.md §1):
//
//   S = ∂L/∂M = Σ_t w_tᵀ z_t            ∂L/∂vᵢ = Σ_{j,k} P̃ᵢ[j, k] S[j, k]
//
// (with P̃ᵢ = Σ Pᵢ this is ∂L/∂R = Σ ∂L/∂M contracted with the Pᵢ). Modules of a tie group
// each produce their ∂L/∂v; burn's autodiff adds them up on the shared v.
//
// Inputs:  z      [T, R]       z_t = x_t V (from `lowrank_down.wgsl` on x)
//          w      [T, R]       w_t = G_t U (from `lowrank_down.wgsl` on G)
//          basis  [n_v, R, R]  P̃ᵢ
//          info   [2] u32      T, n_v
// Output:  dcoef  [n_v]
//
// R = {{ r }}, WG = {{ wg }}. A single workgroup: invocation jk sums S[j, k] over all tokens
// (entries jk, jk + WG, … when R² > WG) into workgroup memory; after the one barrier,
// invocation i contracts S with P̃ᵢ.
@group(0) @binding(0) var<storage, read_write> z: array<f32>;
@group(0) @binding(1) var<storage, read_write> w: array<f32>;
@group(0) @binding(2) var<storage, read_write> basis: array<f32>;
@group(0) @binding(3) var<storage, read_write> dcoef: array<f32>;
@group(0) @binding(4) var<storage, read_write> info: array<u32>;

const R: u32 = {{ r }}u;
const WG: u32 = {{ wg }}u;

var<workgroup> s: array<f32, {{ r_r }}>;

@compute @workgroup_size({{ wg }}, 1, 1)
fn main(@builtin(local_invocation_index) lid: u32) {
    let n_t = info[0];
    let n_v = info[1];
    for (var jk = lid; jk < R * R; jk += WG) {
        let j = jk / R;
        let k = jk % R;
        var acc = 0.0;
        for (var t = 0u; t < n_t; t++) {
            acc = fma(w[t * R + j], z[t * R + k], acc);
        }
        s[jk] = acc;
    }
    workgroupBarrier();
    for (var i = lid; i < n_v; i += WG) {
        var acc = 0.0;
        for (var jk = 0u; jk < R * R; jk++) {
            acc = fma(basis[i * R * R + jk], s[jk], acc);
        }
        dcoef[i] = acc;
    }
}
