// Products with a weight matrix kept in ggml blocks, for many rows of the other operand
// (prefill, training's forward, and the backward's ∂L/∂x): W is decoded tile by tile into
// workgroup memory inside the product, never written out as f32.
//
//   TRANSPOSE = 0:  y = x Wᵀ   x [N, d_in] f32   →  y [N, rows]   (contraction over d_in)
//   TRANSPOSE = 1:  y = g W    g [N, rows] f32   →  y [N, d_in]   (contraction over rows)
//
// Inputs:  a      [N, C]           f32: x (C = d_in) or g (C = rows)
//          blocks [rows, words]    u32 words, each row d_in / QK blocks of TS bytes, padded
//                                  to whole words
//          info   [4] u32          N, rows, d_in, words (per row)
// Output:  y      [N, O]           f32: O = rows (TRANSPOSE = 0) or d_in (TRANSPOSE = 1)
//
// TY = {{ ty }}, QK = {{ qk }}, TS = {{ ts }} (see `block_value.wgsl`), TRANSPOSE =
// {{ transpose }}, WG = {{ wg }} = 64. A workgroup computes a T × T = 32 × 32 tile of y, each
// invocation a 4 × 4 piece of it; every step of the contraction stages T values of it: a tile
// of `a` [T n, T c] and a tile of W [T rows, T columns] decoded with `value()` (each
// invocation decodes 16 neighbouring values of one row), then accumulates from workgroup
// memory. Values outside the matrices are staged as 0.
@group(0) @binding(0) var<storage, read_write> a: array<f32>;
@group(0) @binding(1) var<storage, read_write> blocks: array<u32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> info: array<u32>;

{{ decode }}

const T: u32 = 32u;
const TRANSPOSE: u32 = {{ transpose }}u;

// a's tile: at [i * T + c], row n0 + i, contraction index c0 + c
var<workgroup> at: array<f32, 1024>;
// W's tile: at [r * T + k], row r0 + r, column k0 + k of W
var<workgroup> wt: array<f32, 1024>;
// steps of the contraction, read from `info` by one invocation and handed to all through
// workgroupUniformLoad: the loop holding the barriers must be uniform
var<workgroup> steps_wg: u32;

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
    // contraction length and output width
    let c_len = select(d_in, rows, TRANSPOSE == 1u);
    let o_len = select(rows, d_in, TRANSPOSE == 1u);
    let tiles_o = (o_len + T - 1u) / T;
    let tile = wid.x + wid.y * nwg.x;
    let n0 = (tile / tiles_o) * T;
    let o0 = (tile % tiles_o) * T;
    // every invocation of a workgroup takes the same branch: the barriers below stay uniform
    let live = n0 < n;
    // this invocation's 4 × 4 piece: rows n0 + ti + 8 i, outputs o0 + to + 8 j (strided, so that
    // neighbouring invocations read neighbouring words of workgroup memory)
    let ti = lid / 8u;
    let to = lid % 8u;
    // what this invocation stages: row `sr` of both tiles, 16 values from column `sc`
    let sr = lid / 2u;
    let sc = (lid % 2u) * 16u;
    // acc[i][j]: y[n0 + ti + 8 i, o0 + to + 8 j]
    var acc0 = vec4<f32>();
    var acc1 = vec4<f32>();
    var acc2 = vec4<f32>();
    var acc3 = vec4<f32>();
    if (lid == 0u) {
        steps_wg = (c_len + T - 1u) / T;
    }
    let steps = workgroupUniformLoad(&steps_wg);
    for (var step = 0u; step < steps; step++) {
        let c0 = step * T;
        if (live) {
            // a [n0 + sr, c0 + sc ..]
            let ar = n0 + sr;
            for (var i = 0u; i < 16u; i++) {
                let c = c0 + sc + i;
                var v = 0.0;
                if (ar < n && c < c_len) {
                    v = a[ar * c_len + c];
                }
                at[sr * T + sc + i] = v;
            }
            // W [r0 + sr, k0 + sc ..]: rows along the contraction when transposed, else along
            // the output
            let wr = select(o0, c0, TRANSPOSE == 1u) + sr;
            let wk = select(c0, o0, TRANSPOSE == 1u) + sc;
            for (var i = 0u; i < 16u; i++) {
                var v = 0.0;
                if (wr < rows && wk + i < d_in) {
                    v = value(wr * words * 4u, wk + i);
                }
                wt[sr * T + sc + i] = v;
            }
        }
        workgroupBarrier();
        if (live) {
            for (var c = 0u; c < T; c++) {
                let av = vec4<f32>(at[ti * T + c], at[(ti + 8u) * T + c], at[(ti + 16u) * T + c],
                    at[(ti + 24u) * T + c]);
                // y = x Wᵀ: W[o, c]; y = g W: W[c, o]
                var wv: vec4<f32>;
                if (TRANSPOSE == 1u) {
                    wv = vec4<f32>(wt[c * T + to], wt[c * T + to + 8u], wt[c * T + to + 16u],
                        wt[c * T + to + 24u]);
                } else {
                    wv = vec4<f32>(wt[to * T + c], wt[(to + 8u) * T + c], wt[(to + 16u) * T + c],
                        wt[(to + 24u) * T + c]);
                }
                acc0 = fma(vec4<f32>(av.x), wv, acc0);
                acc1 = fma(vec4<f32>(av.y), wv, acc1);
                acc2 = fma(vec4<f32>(av.z), wv, acc2);
                acc3 = fma(vec4<f32>(av.w), wv, acc3);
            }
        }
        workgroupBarrier();
    }
    if (!live) {
        return;
    }
    let accs = array<vec4<f32>, 4>(acc0, acc1, acc2, acc3);
    for (var i = 0u; i < 4u; i++) {
        let r = n0 + ti + 8u * i;
        for (var j = 0u; j < 4u; j++) {
            let o = o0 + to + 8u * j;
            if (r < n && o < o_len) {
                y[r * o_len + o] = accs[i][j];
            }
        }
    }
}
