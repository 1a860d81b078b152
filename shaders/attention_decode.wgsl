// Decode-step attention: one new query per sequence against that sequence's cached keys and
// values, softmax(q·kⱼ/√d_h) weighted sum of vⱼ, in one launch.
//
// Inputs:  q     [B, n_h, d_h]       f32, the step's queries (RoPE applied)
//          k, v  [B, n_kv, S, d_h]   f32, the KV cache buffers (S = capacity)
//          info  [5 + B]             u32: B, n_h, n_kv, S, len, then first[b] for each row
// Output:  o     [B, n_h, d_h]       f32
//
// Row b attends to slots j ∈ [first[b], len): first[b] is its left padding, len the filled
// length of the cache including this step. Query head h reads kv head h / (n_h / n_kv)
// (grouped-query attention). d_h = {{ head_dim }} and the workgroup size {{ wg }} are template
// constants. One workgroup per (b, h): thread t takes slots first + t, first + t + WG, …;
// pass 1 finds the maximum score, pass 2 accumulates exp(s − max) and exp(s − max)·vⱼ;
// a tree reduction in workgroup memory combines the threads.
@group(0) @binding(0) var<storage, read_write> q: array<f32>;
@group(0) @binding(1) var<storage, read_write> k: array<f32>;
@group(0) @binding(2) var<storage, read_write> v: array<f32>;
@group(0) @binding(3) var<storage, read_write> o: array<f32>;
@group(0) @binding(4) var<storage, read_write> info: array<u32>;

const WG: u32 = {{ wg }}u;
const D: u32 = {{ head_dim }}u;

var<workgroup> red: array<f32, {{ wg }}>;
var<workgroup> acc_sh: array<f32, {{ acc_len }}>;

@compute @workgroup_size({{ wg }}, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let n_h = info[1];
    let n_kv = info[2];
    let s_cap = info[3];
    let len = info[4];
    let b = wid.x / n_h;
    let h = wid.x % n_h;
    let kvh = h / (n_h / n_kv);
    let first = info[5u + b];
    let t = lid.x;
    let q_base = (b * n_h + h) * D;
    let kv_base = (b * n_kv + kvh) * s_cap * D;
    let scale = inverseSqrt(f32(D));

    var qr: array<f32, {{ head_dim }}>;
    for (var d = 0u; d < D; d++) {
        qr[d] = q[q_base + d] * scale;
    }

    // pass 1: the largest score
    var m = -3.0e38;
    for (var j = first + t; j < len; j += WG) {
        var s = 0.0;
        for (var d = 0u; d < D; d++) {
            s = fma(qr[d], k[kv_base + j * D + d], s);
        }
        m = max(m, s);
    }
    red[t] = m;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride = stride / 2u) {
        if (t < stride) {
            red[t] = max(red[t], red[t + stride]);
        }
        workgroupBarrier();
    }
    m = red[0];
    workgroupBarrier();

    // pass 2: softmax weights and the weighted sum of values
    var l = 0.0;
    var acc: array<f32, {{ head_dim }}>;
    for (var d = 0u; d < D; d++) {
        acc[d] = 0.0;
    }
    for (var j = first + t; j < len; j += WG) {
        var s = 0.0;
        for (var d = 0u; d < D; d++) {
            s = fma(qr[d], k[kv_base + j * D + d], s);
        }
        let p = exp(s - m);
        l += p;
        for (var d = 0u; d < D; d++) {
            acc[d] = fma(p, v[kv_base + j * D + d], acc[d]);
        }
    }
    red[t] = l;
    for (var d = 0u; d < D; d++) {
        acc_sh[t * D + d] = acc[d];
    }
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride = stride / 2u) {
        if (t < stride) {
            red[t] += red[t + stride];
            for (var d = 0u; d < D; d++) {
                acc_sh[t * D + d] += acc_sh[(t + stride) * D + d];
            }
        }
        workgroupBarrier();
    }
    for (var d = t; d < D; d += WG) {
        o[q_base + d] = acc_sh[d] / red[0];
    }
}
