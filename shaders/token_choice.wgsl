// The next token of each row of logits: the largest logit (greedy), or a draw from
// softmax(logits / T) by inverse transform sampling with one uniform number per row. A decoding
// step then reads back two numbers per sequence instead of its V logits.
//
// Inputs:  logits [B, V]   f32
//          draws  [B]      f32, u ∈ [0, 1) per row (unused when greedy)
//          info   [3] u32  B, V, the bits of 1/T as an f32 (1 when greedy)
// Output:  chosen [B, 2]   f32 per row: the id (an integer, exact as V ≤ 2^24) and its
//                          log-probability z_id − lse under the distribution it was drawn from
//                          (greedy: the model's own log-softmax)
//
// GREEDY = {{ greedy }}, WG = {{ wg }}. One workgroup per row, with z = l / T:
// 1. m = max z and the lowest id holding it (strided over the row, then a tree in workgroup
//    memory);
// 2. lse = m + ln Σ exp(z − m) (the same way);
// 3. greedy: that id. Sampling, with unnormalized masses e = exp(z − m) and the goal u·S
//    (S = Σ e): invocation k owns the ids [k·C, (k+1)·C), C = ⌈V / WG⌉, and sums their masses;
//    invocation 0 finds the first chunk at which the running total passes the goal, and that
//    chunk's owner walks it in id order to the first id at which it does: the id whose interval
//    [P(< id), P(≤ id)) of the CDF holds u. Every running sum within a chunk restarts from
//    zero every SUB ids (f32 sums of many small terms onto a large one would round by ~1e-5 of
//    the total at V = 151,936). Where rounding leaves the goal at or past every total, the
//    last id with e > 0 (of that chunk, or of the last chunk holding any probability).
@group(0) @binding(0) var<storage, read_write> logits: array<f32>;
@group(0) @binding(1) var<storage, read_write> draws: array<f32>;
@group(0) @binding(2) var<storage, read_write> chosen: array<f32>;
@group(0) @binding(3) var<storage, read_write> info: array<u32>;

const GREEDY: bool = {{ greedy }};
const WG: u32 = {{ wg }}u;
// no id yet
const NONE: u32 = 0xffffffffu;
// ids a run of the sampling walk sums from zero
const SUB: u32 = 64u;

// per invocation: its largest z and the id holding it, then its partial sums
var<workgroup> best: array<f32, {{ wg }}>;
var<workgroup> best_id: array<u32, {{ wg }}>;
var<workgroup> sums: array<f32, {{ wg }}>;
// B and V, loaded once so that every invocation sees them as uniform values
var<workgroup> size: vec2<u32>;
// sampling: the chunk to walk and the running total before it
var<workgroup> pick: u32;
var<workgroup> before: f32;

// Σ exp(z − m) over ids s0..s1 of the row at `base`, from zero
fn run_mass(base: u32, s0: u32, s1: u32, inv_t: f32, m: f32) -> f32 {
    var acc = 0.0;
    for (var i = s0; i < s1; i++) {
        acc += exp(logits[base + i] * inv_t - m);
    }
    return acc;
}

// the tree sum of `sums` into sums[0]
fn sum_tree(lid: u32) {
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            sums[lid] += sums[lid + s];
        }
        workgroupBarrier();
    }
}

@compute @workgroup_size({{ wg }}, 1, 1)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    if (lid == 0u) {
        size = vec2<u32>(info[0], info[1]);
    }
    let bv = workgroupUniformLoad(&size);
    let row = wid.x + wid.y * nwg.x;
    if (row >= bv.x) {
        return;
    }
    let v = bv.y;
    let inv_t = bitcast<f32>(info[2]);
    let base = row * v;

    // 1. the largest z; an invocation's ids rise, so a strict > keeps the lowest of equals
    var m = 0.0;
    var mi = NONE;
    for (var i = lid; i < v; i += WG) {
        let zi = logits[base + i] * inv_t;
        if (mi == NONE || zi > m) {
            m = zi;
            mi = i;
        }
    }
    best[lid] = m;
    best_id[lid] = mi;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            let oi = best_id[lid + s];
            let om = best[lid + s];
            let mine = best[lid];
            let my_id = best_id[lid];
            if (oi != NONE && (my_id == NONE || om > mine || (om == mine && oi < my_id))) {
                best[lid] = om;
                best_id[lid] = oi;
            }
        }
        workgroupBarrier();
    }
    let mx = best[0];
    let argmax = best_id[0];

    // 2. lse = m + ln Σ exp(z − m)
    var acc = 0.0;
    for (var i = lid; i < v; i += WG) {
        acc += exp(logits[base + i] * inv_t - mx);
    }
    sums[lid] = acc;
    sum_tree(lid);
    let lse = mx + log(sums[0]);

    if (GREEDY) {
        if (lid == 0u) {
            chosen[2u * row] = f32(argmax);
            chosen[2u * row + 1u] = mx - lse;
        }
        return;
    }

    // 3. unnormalized masses e = exp(z − m) against the goal u·S (S = Σ e): each chunk's as
    //    the sum of its runs of SUB ids, each run summed from zero, so that every f32 running
    //    sum stays small next to the total and rounds by ~1e-9 of it
    let total = sums[0];
    let c = (v + WG - 1u) / WG;
    let lo = min(lid * c, v);
    let hi = min(lo + c, v);
    var mass = 0.0;
    for (var s0 = lo; s0 < hi; s0 += SUB) {
        mass += run_mass(base, s0, min(s0 + SUB, hi), inv_t, mx);
    }
    workgroupBarrier(); // every invocation has read sums[0]
    sums[lid] = mass;
    workgroupBarrier();
    let goal = draws[row] * total;
    if (lid == 0u) {
        var passed = 0.0;
        var k = WG;
        // where the goal passes no total: the last chunk holding probability, or the last one
        var last = (v - 1u) / c;
        var last_before = 0.0;
        for (var j = 0u; j < WG; j++) {
            if (sums[j] > 0.0) {
                last = j;
                last_before = passed;
            }
            let next = passed + sums[j];
            if (goal < next) {
                k = j;
                break;
            }
            passed = next;
        }
        if (k == WG) {
            k = last;
            passed = last_before;
        }
        pick = k;
        before = passed;
    }
    workgroupBarrier();
    if (lid == pick) {
        var run = before;
        var id = NONE;
        for (var s0 = lo; s0 < hi && id == NONE; s0 += SUB) {
            let s1 = min(s0 + SUB, hi);
            let run_e = run_mass(base, s0, s1, inv_t, mx);
            if (goal < run + run_e) {
                // this run of ids, summed from zero again against what is left of the goal
                let rest = goal - run;
                var acc = 0.0;
                for (var i = s0; i < s1; i++) {
                    acc += exp(logits[base + i] * inv_t - mx);
                    if (rest < acc) {
                        id = i;
                        break;
                    }
                }
            }
            run += run_e;
        }
        if (id == NONE) {
            // rounding left the goal past every total: the chunk's last id with e > 0
            id = hi - 1u;
            for (var i = hi; i > lo; i--) {
                if (exp(logits[base + i - 1u] * inv_t - mx) > 0.0) {
                    id = i - 1u;
                    break;
                }
            }
        }
        chosen[2u * row] = f32(id);
        chosen[2u * row + 1u] = logits[base + id] * inv_t - lse;
    }
}
