// y = x Wᵀ for a few rows of x (decoding: one token per sequence), W kept in ggml blocks and
// decoded in registers: W is read once, never written out as f32.
//
// Inputs:  x      [N, d_in]        f32, N ≤ NMAX
//          blocks [rows, words]    u32 words, each row d_in / QK blocks of TS bytes, padded
//                                  to whole words
//          info   [4] u32          N, rows, d_in, words (per row)
// Output:  y      [N, rows]        f32
//
// TY = {{ ty }}, QK = {{ qk }}, TS = {{ ts }} (see `block_value.wgsl`), NMAX = {{ nmax }} (N
// rounded up to a power of two, at most 8), WG = {{ wg }}, LANES = {{ lanes }}. A workgroup
// takes WG / LANES rows of W, LANES invocations each: they split the row's quads of values
// (`value4()`), keep NMAX partial sums each, and add them up in workgroup memory.
@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> blocks: array<u32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> info: array<u32>;

{{ decode }}

const NMAX: u32 = {{ nmax }}u;
const WGS: u32 = {{ wg }}u;
const LANES: u32 = {{ lanes }}u;

// partial[t * WGS + lid]: the partial sum of row t of x of invocation `lid`
var<workgroup> partial: array<f32, {{ wg_nmax }}>;

// x[t, k .. k + 4] (k + 4 ≤ d_in)
fn x4(t: u32, k: u32, d_in: u32) -> vec4<f32> {
    let i = t * d_in + k;
    return vec4<f32>(x[i], x[i + 1u], x[i + 2u], x[i + 3u]);
}

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
    let lane = lid % LANES;
    let row = (wid.x + wid.y * nwg.x) * (WGS / LANES) + lid / LANES;
    var acc: array<f32, {{ nmax }}>;
    // no barrier inside: invocations of rows past the end skip it
    if (row < rows) {
        let row0 = row * words * 4u;
        let whole = d_in & ~3u;
        for (var k = 4u * lane; k < whole; k += 4u * LANES) {
            let w = value4(row0, k);
            for (var t = 0u; t < NMAX; t++) {
                if (t < n) {
                    acc[t] += dot(w, x4(t, k, d_in));
                }
            }
        }
        // the tail of a row of halves whose length is not a multiple of 4
        for (var k = whole + lane; k < d_in; k += LANES) {
            let w = half_value(row0, k);
            for (var t = 0u; t < NMAX; t++) {
                if (t < n) {
                    acc[t] = fma(w, x[t * d_in + k], acc[t]);
                }
            }
        }
    }
    for (var t = 0u; t < NMAX; t++) {
        partial[t * WGS + lid] = acc[t];
    }
    workgroupBarrier();
    for (var s = LANES / 2u; s > 0u; s = s / 2u) {
        if (lane < s) {
            for (var t = 0u; t < NMAX; t++) {
                partial[t * WGS + lid] += partial[t * WGS + lid + s];
            }
        }
        workgroupBarrier();
    }
    if (row < rows && lane < n) {
        y[lane * rows + row] = partial[lane * WGS + lid - lane];
    }
}
