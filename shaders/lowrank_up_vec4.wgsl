// The "up" half of the projected low-rank update when r and the output width are multiples
// of 4: every load and store of q, out and the base moves a vec4 (SPEC.md §1):
//
//   out[t, o] = init[t, o] ± Σ_j F[row0 + o, j] q[t, j]
//
// with F = rows row0.. of the stacked factors [U; V]; the same op as `lowrank_up.wgsl`
// (forward: F = U onto the base; backward: F = V from zero; merge: F = U in place on Wᵀ).
//
// Inputs:  q       [T, R]              read as [T, R/4] vec4s
//          factors [d_out + d_in, R]   U (rows 0..d_out) then V (rows d_out..)
//          {{ init_doc }}
//          info    [4] u32             T, cols, row0, ⌈cols / 4⌉ rounded up to WG
// Output:  out     [T, cols]           written as [T, cols/4] vec4s (sign {{ sign }})
//
// R = {{ r }}, R4 = R/4, WG = {{ wg }}, ROWS = {{ rows }}. One invocation per 4 neighbouring output
// columns o0 .. o0 + 3 and a block of ROWS rows: it keeps F's rows o0 .. o0 + 3 in registers
// (f[j] = F[o0 .. o0 + 3, j]) and walks down the rows, reading q_t as R4 vec4s and writing one
// vec4 per row.
@group(0) @binding(0) var<storage, read_write> q: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> factors: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> info: array<u32>;
{{ init_binding }}

const R: u32 = {{ r }}u;
const R4: u32 = R / 4u;
const ROWS: u32 = {{ rows }}u;

@compute @workgroup_size({{ wg }}, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let n_t = info[0];
    let cols4 = info[1] / 4u;
    let row0 = info[2];
    let cols_padded = info[3];
    let chunk = gid.x + gid.y * nwg.x * {{ wg }}u;
    let o4 = chunk % cols_padded;
    let t0 = (chunk / cols_padded) * ROWS;
    if (o4 >= cols4 || t0 >= n_t) {
        return;
    }
    var f: array<vec4<f32>, {{ r }}>;
    for (var j = 0u; j < R; j++) {
        let o = row0 + o4 * 4u;
        f[j] = vec4<f32>(
            factors[o * R + j],
            factors[(o + 1u) * R + j],
            factors[(o + 2u) * R + j],
            factors[(o + 3u) * R + j],
        );
    }
    for (var t = t0; t < min(t0 + ROWS, n_t); t++) {
        var delta = vec4<f32>(0.0);
        for (var j4 = 0u; j4 < R4; j4++) {
            let v = q[t * R4 + j4];
            delta = fma(f[4u * j4], vec4<f32>(v.x), delta);
            delta = fma(f[4u * j4 + 1u], vec4<f32>(v.y), delta);
            delta = fma(f[4u * j4 + 2u], vec4<f32>(v.z), delta);
            delta = fma(f[4u * j4 + 3u], vec4<f32>(v.w), delta);
        }
        let idx = t * cols4 + o4;
        out[idx] = {{ init }} + {{ sign }} * delta;
    }
}
