// Skinny matrix product for decoding: y = x · Wt with few rows in x.
//
// Inputs:  x    [M, K]  f32, row-major, M = {{ m }} (a template constant, 1 ≤ M ≤ 16)
//          wt   [K, N]  f32, row-major (a weight W [N, K] stored transposed)
//          info [2]     u32: K, N
// Output:  y    [M, N]  f32, row-major
//
// One invocation per output column j keeps the M partial sums in registers and walks K once,
// so every weight is read exactly once however many rows there are: the product is bound by
// reading Wt, which is what decoding a batch of M sequences needs. Neighbouring invocations
// read neighbouring columns.
@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> wt: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> info: array<u32>;

const M: u32 = {{ m }}u;

@compute @workgroup_size({{ wg }}, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let j = gid.x;
    let k = info[0];
    let n = info[1];
    if (j >= n) {
        return;
    }
    var acc: array<f32, {{ m }}>;
    for (var r = 0u; r < M; r++) {
        acc[r] = 0.0;
    }
    for (var i = 0u; i < k; i++) {
        let w = wt[i * n + j];
        for (var r = 0u; r < M; r++) {
            acc[r] = fma(x[r * k + i], w, acc[r]);
        }
    }
    for (var r = 0u; r < M; r++) {
        y[r * n + j] = acc[r];
    }
}
