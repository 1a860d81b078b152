// y = x Wᵀ for a few rows of x (decoding: one token per sequence), W kept in ggml blocks and
// decoded in registers: W is read once, never written out as f32.
//
// Inputs:  x      [N, d_in]        f32, N ≤ NMAX
//          blocks [rows, words]    u32 words, each row d_in / QK blocks of TS bytes, padded
//                                  to whole words
//          info   [4] u32          N, rows, d_in, words (per row)
// Output:  y      [N, rows]        f32
//
// TY = {{ ty }}, QK = {{ qk }}, TS = {{ ts }} (see `block_value.wgsl`), NMAX = {{ nmax }},
// WG = {{ wg }}. One workgroup per row of W: its invocations split the row's values, keep N
// partial sums each, and add them up in workgroup memory.
@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> blocks: array<u32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> info: array<u32>;

{{ decode }}

const NMAX: u32 = {{ nmax }}u;
const WGS: u32 = {{ wg }}u;

var<workgroup> partial: array<f32, {{ wg_nmax }}>;

@compute @workgroup_size({{ wg }}, 1, 1)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let n = info[0];
    let rows = info[1];
    let d_in = info[2];
    let words = info[3];
    let row = wid.x + wid.y * nwg.x;
    // every invocation of a workgroup takes the same branch: the barriers below stay uniform
    let live = row < rows;
    var acc: array<f32, {{ nmax }}>;
    if (live) {
        for (var k = lid; k < d_in; k += WGS) {
            let w = value(row * words * 4u, k);
            for (var t = 0u; t < n; t++) {
                acc[t] = fma(w, x[t * d_in + k], acc[t]);
            }
        }
    }
    for (var t = 0u; t < NMAX; t++) {
        partial[t * WGS + lid] = acc[t];
    }
    workgroupBarrier();
    for (var s = WGS / 2u; s > 0u; s = s / 2u) {
        if (lid < s) {
            for (var t = 0u; t < NMAX; t++) {
                partial[t * WGS + lid] += partial[t * WGS + lid + s];
            }
        }
        workgroupBarrier();
    }
    if (live && lid < n) {
        y[lid * rows + row] = partial[lid * WGS];
    }
}
