// Products with a weight matrix kept in ggml blocks, for more rows of the other operand than
// `block_matvec.wgsl` takes (prefill, training's forward, the backward's ∂L/∂x, decoding large
// batches): W is decoded tile by tile into workgroup memory inside the product, never written
// out as f32.
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
// {{ transpose }}, WG = {{ wg }} = 64 invocations laid out IN × IO = {{ inv_n }} × {{ inv_o }},
// each computing a piece of y of RQ × OQ_I = {{ rq }} × {{ oq_i }} quads (4 × 4 values, as outer
// products of quads): a workgroup computes a tile of TN = 4 IN RQ rows × TO = 4 IO OQ_I outputs.
// Every step of the contraction stages TK = {{ tk }} values of it in workgroup memory, as quads:
// TK × TN values of `a` and TK × TO of W, decoded four at a time with `value4()`. Values outside
// the matrices are staged as 0. W's tile holds WQ = {{ wq }}: f16 for F16 weights where the
// adapter offers shader-f16 (the same values in half the bytes), else f32; the products are f32.
{{ enable }}
@group(0) @binding(0) var<storage, read_write> a: array<f32>;
@group(0) @binding(1) var<storage, read_write> blocks: array<u32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> info: array<u32>;

{{ decode }}

const WGS: u32 = {{ wg }}u;
const TRANSPOSE: u32 = {{ transpose }}u;
const TK: u32 = {{ tk }}u;
const IN: u32 = {{ inv_n }}u;
const IO: u32 = {{ inv_o }}u;
const RQ: u32 = {{ rq }}u;
const OQ_I: u32 = {{ oq_i }}u;
// quads of rows of `a` and quads of outputs in a tile, rows and outputs of a tile
const NQ: u32 = IN * RQ;
const OQ: u32 = IO * OQ_I;
const TN: u32 = 4u * NQ;
const TO: u32 = 4u * OQ;

// at[c * NQ + q] = a[n0 + 4q .. n0 + 4q + 4, c0 + c]
var<workgroup> at: array<vec4<f32>, {{ tk_nq }}>;
// wt[c * OQ + q] = the factors of outputs o0 + 4q .. o0 + 4q + 4 at contraction index c0 + c:
// W[o, c] for y = x Wᵀ, W[c, o] for y = g W
var<workgroup> wt: array<vec4<{{ wq }}>, {{ tk_oq }}>;
// steps of the contraction, read from `info` by one invocation and handed to all through
// workgroupUniformLoad: the loop holding the barriers must be uniform
var<workgroup> steps_wg: u32;

// a[r, c], 0 outside [n, c_len]
fn a_at(r: u32, c: u32, n: u32, c_len: u32) -> f32 {
    if (r < n && c < c_len) {
        return a[r * c_len + c];
    }
    return 0.0;
}

// W[row, k .. k + 4], 0 outside [rows, d_in]
fn quad(row: u32, k: u32, rows: u32, d_in: u32, words: u32) -> vec4<f32> {
    if (row >= rows) {
        return vec4<f32>();
    }
    let row0 = row * words * 4u;
    if (k + 4u <= d_in) {
        return value4(row0, k);
    }
    // the last, partial quad of a row of halves (block types hold whole quads)
    var v = vec4<f32>();
    for (var i = 0u; i < 4u; i++) {
        if (k + i < d_in) {
            v[i] = half_value(row0, k + i);
        }
    }
    return v;
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
    // contraction length and output width
    let c_len = select(d_in, rows, TRANSPOSE == 1u);
    let o_len = select(rows, d_in, TRANSPOSE == 1u);
    let tiles_o = (o_len + TO - 1u) / TO;
    let tile = wid.x + wid.y * nwg.x;
    let n0 = (tile / tiles_o) * TN;
    let o0 = (tile % tiles_o) * TO;
    // every invocation of a workgroup takes the same branch: the barriers below stay uniform
    let live = n0 < n;
    // this invocation's piece: quads of rows tn + IN qi, quads of outputs to + IO qo (strided,
    // so that neighbouring invocations read neighbouring quads of workgroup memory)
    let tn = lid / IO;
    let to = lid % IO;
    // acc[(4 qi + i) OQ_I + qo][j] = y[n0 + 4 (tn + IN qi) + i, o0 + 4 (to + IO qo) + j]
    var acc: array<vec4<f32>, {{ acc_len }}>;
    var wv: array<vec4<f32>, {{ oq_i }}>;
    if (lid == 0u) {
        steps_wg = (c_len + TK - 1u) / TK;
    }
    let steps = workgroupUniformLoad(&steps_wg);
    for (var step = 0u; step < steps; step++) {
        let c0 = step * TK;
        if (live) {
            // `a`: 4 × 4 pieces (4 rows, 4 contraction indices), written as 4 quads of rows
            for (var u = lid; u < NQ * (TK / 4u); u += WGS) {
                let q = u / (TK / 4u);
                let c = 4u * (u % (TK / 4u));
                let r = n0 + 4u * q;
                for (var i = 0u; i < 4u; i++) {
                    at[(c + i) * NQ + q] = vec4<f32>(a_at(r, c0 + c + i, n, c_len),
                        a_at(r + 1u, c0 + c + i, n, c_len), a_at(r + 2u, c0 + c + i, n, c_len),
                        a_at(r + 3u, c0 + c + i, n, c_len));
                }
            }
            if (TRANSPOSE == 1u) {
                // W rows c0 + c along the contraction: a quad of a row is a quad of outputs
                for (var u = lid; u < TK * OQ; u += WGS) {
                    let c = u / OQ;
                    let q = u % OQ;
                    wt[u] = vec4<{{ wq }}>(quad(c0 + c, o0 + 4u * q, rows, d_in, words));
                }
            } else {
                // W rows o0 + 4q .. + 4 along the outputs: a 4 × 4 piece (4 rows, a quad of
                // each along the contraction), transposed into 4 quads of outputs
                for (var u = lid; u < OQ * (TK / 4u); u += WGS) {
                    let q = u / (TK / 4u);
                    let c = 4u * (u % (TK / 4u));
                    let o = o0 + 4u * q;
                    let w0 = quad(o, c0 + c, rows, d_in, words);
                    let w1 = quad(o + 1u, c0 + c, rows, d_in, words);
                    let w2 = quad(o + 2u, c0 + c, rows, d_in, words);
                    let w3 = quad(o + 3u, c0 + c, rows, d_in, words);
                    wt[c * OQ + q] = vec4<{{ wq }}>(vec4<f32>(w0.x, w1.x, w2.x, w3.x));
                    wt[(c + 1u) * OQ + q] = vec4<{{ wq }}>(vec4<f32>(w0.y, w1.y, w2.y, w3.y));
                    wt[(c + 2u) * OQ + q] = vec4<{{ wq }}>(vec4<f32>(w0.z, w1.z, w2.z, w3.z));
                    wt[(c + 3u) * OQ + q] = vec4<{{ wq }}>(vec4<f32>(w0.w, w1.w, w2.w, w3.w));
                }
            }
        }
        workgroupBarrier();
        if (live) {
            for (var c = 0u; c < TK; c++) {
                for (var qo = 0u; qo < OQ_I; qo++) {
                    wv[qo] = vec4<f32>(wt[c * OQ + to + IO * qo]);
                }
                for (var qi = 0u; qi < RQ; qi++) {
                    let av = at[c * NQ + tn + IN * qi];
                    for (var qo = 0u; qo < OQ_I; qo++) {
                        let i = 4u * qi * OQ_I + qo;
                        acc[i] = fma(vec4<f32>(av.x), wv[qo], acc[i]);
                        acc[i + OQ_I] = fma(vec4<f32>(av.y), wv[qo], acc[i + OQ_I]);
                        acc[i + 2u * OQ_I] = fma(vec4<f32>(av.z), wv[qo], acc[i + 2u * OQ_I]);
                        acc[i + 3u * OQ_I] = fma(vec4<f32>(av.w), wv[qo], acc[i + 3u * OQ_I]);
                    }
                }
            }
        }
        workgroupBarrier();
    }
    if (!live) {
        return;
    }
    for (var ri = 0u; ri < 4u * RQ; ri++) {
        let r = n0 + 4u * (tn + IN * (ri / 4u)) + ri % 4u;
        for (var qo = 0u; qo < OQ_I; qo++) {
            let v = acc[ri * OQ_I + qo];
            for (var j = 0u; j < 4u; j++) {
                let o = o0 + 4u * (to + IO * qo) + j;
                if (r < n && o < o_len) {
                    y[r * o_len + o] = v[j];
                }
            }
        }
    }
}
