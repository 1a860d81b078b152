// The SwiGLU gate's backward, elementwise, with s = σ(a):
// ∂L/∂a = g ⊙ u ⊙ s (1 + a (1 − s)), ∂L/∂u = g ⊙ a s.
//
// Inputs:  a    [n] f32
//          u    [n] f32
//          g    [n] f32, ∂L/∂y
//          info [1] u32 n
// Outputs: da   [n] f32
//          du   [n] f32
//
// WG = {{ wg }}. One invocation per element.
@group(0) @binding(0) var<storage, read_write> a: array<f32>;
@group(0) @binding(1) var<storage, read_write> u: array<f32>;
@group(0) @binding(2) var<storage, read_write> g: array<f32>;
@group(0) @binding(3) var<storage, read_write> da: array<f32>;
@group(0) @binding(4) var<storage, read_write> du: array<f32>;
@group(0) @binding(5) var<storage, read_write> info: array<u32>;

@compute @workgroup_size({{ wg }}, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * {{ wg }}u;
    if (i >= info[0]) {
        return;
    }
    let ai = a[i];
    let gi = g[i];
    let s = 1.0 / (1.0 + exp(-ai));
    da[i] = gi * u[i] * s * (1.0 + ai * (1.0 - s));
    du[i] = gi * ai * s;
}
