// The SwiGLU gate: y = silu(a) ⊙ u = a σ(a) ⊙ u, elementwise.
//
// Inputs:  a    [n] f32, the gate projection
//          u    [n] f32, the up projection
//          info [1] u32 n
// Output:  y    [n] f32
//
// WG = {{ wg }}. One invocation per element.
@group(0) @binding(0) var<storage, read_write> a: array<f32>;
@group(0) @binding(1) var<storage, read_write> u: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> info: array<u32>;

@compute @workgroup_size({{ wg }}, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * {{ wg }}u;
    if (i >= info[0]) {
        return;
    }
    let ai = a[i];
    y[i] = ai / (1.0 + exp(-ai)) * u[i];
}
