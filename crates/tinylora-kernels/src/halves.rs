//! Launches of the two halves every low-rank kernel is made of: `lowrank_down.wgsl` (project
//! rows onto r directions and apply the core M) and `lowrank_up.wgsl` (expand r numbers per
//! row through a factor, onto a base).

use burn_cubecl::tensor::CubeTensor;

use crate::launch::{WG, Wgsl, empty, launch, launch_bindings, rank_values};

/// Rows per invocation of `lowrank_up.wgsl` (its `ROWS`).
const UP_ROWS: usize = 32;

/// Most rows per workgroup of `lowrank_down_tiled.wgsl` (its `TT`).
const DOWN_ROWS: usize = 8;

/// Most partial sums per invocation of `lowrank_down_tiled.wgsl` (TT·r, held in registers).
const DOWN_SUMS: usize = 32;

/// Partial sums per invocation of `lowrank_down_vec4.wgsl` (TT·r).
const VEC4_DOWN_SUMS: usize = 32;

/// Row groups per workgroup of `lowrank_down_vec4.wgsl` (its `G`).
const VEC4_DOWN_GROUPS: usize = 8;

/// Invocations splitting each row's inputs in `lowrank_down_vec4.wgsl` (its `S`).
const VEC4_DOWN_SPLITS: usize = 8;

// The vec4 down half's layout: G·S invocations per workgroup, and G·TT·R/4 = G·SUMS/4
// reduction slots, exactly one per invocation.
const _: () = assert!(VEC4_DOWN_GROUPS * VEC4_DOWN_SPLITS == WG as usize);
const _: () = assert!(VEC4_DOWN_GROUPS * VEC4_DOWN_SUMS / 4 == WG as usize);

/// Neighbouring output columns per invocation of `lowrank_up.wgsl` (its vec4 width).
const UP_COLS: usize = 4;

/// What `up` writes onto.
pub(crate) enum Init<'a> {
    /// out = Δ.
    Zero,
    /// out = base + Δ, into a new tensor.
    Base(&'a CubeTensor),
    /// out = out ± Δ in place (the tensor's buffer must not be shared).
    InPlace(Box<CubeTensor>),
}

/// Rows to project in `down`.
pub(crate) enum Rows<'a> {
    /// s_t = a_t F for `a` `[T, d]`.
    Of(&'a CubeTensor),
    /// s_t = F_t: the factor's own rows (`count` of them).
    Own(usize),
}

/// (q, s) `[T, r]` with s_t = a_t F (F = factor rows `row0..`) and q_t = M s_t, or Mᵀ s_t
/// when `transpose`.
pub(crate) fn down(
    rows: Rows,
    factors: &CubeTensor,
    basis: &CubeTensor,
    coef: &CubeTensor,
    row0: usize,
    transpose: bool,
) -> (CubeTensor, CubeTensor) {
    let r = factors.meta.shape()[1];
    let n_v = coef.meta.shape()[0];
    let mut values = rank_values(r);
    let n_t = match rows {
        Rows::Of(a) => a.meta.shape()[0],
        Rows::Own(n_t) => n_t,
    };
    let q = empty(factors, vec![n_t, r]);
    let s = empty(factors, vec![n_t, r]);
    match rows {
        Rows::Of(a) => {
            let d = a.meta.shape()[1];
            // the vec4 file for r ∈ {4, 8, 16}, where TT·r = 32 makes the workgroup's
            // G·TT·r/4 reduction slots one per invocation; the scalar one otherwise
            let (source, rows_per_group) =
                if r.is_multiple_of(4) && VEC4_DOWN_SUMS.is_multiple_of(r) && d.is_multiple_of(4) {
                    let tt = VEC4_DOWN_SUMS / r;
                    values.extend([
                        ("tt", tt.to_string()),
                        ("tt_r4", (tt * r / 4).to_string()),
                        ("r_r4", (r * r / 4).to_string()),
                        ("g", VEC4_DOWN_GROUPS.to_string()),
                        ("s", VEC4_DOWN_SPLITS.to_string()),
                        ("wg_s", (WG as usize * VEC4_DOWN_SPLITS).to_string()),
                    ]);
                    (
                        include_str!("../../../shaders/lowrank_down_vec4.wgsl"),
                        VEC4_DOWN_GROUPS * tt,
                    )
                } else {
                    let tt = (DOWN_SUMS / r).clamp(1, DOWN_ROWS);
                    values.extend([
                        ("tt", tt.to_string()),
                        ("tt_r", (tt * r).to_string()),
                        ("tt_r_wg", (tt * r * WG as usize).to_string()),
                    ]);
                    (include_str!("../../../shaders/lowrank_down_tiled.wgsl"), tt)
                };
            let info = [n_t, d, row0, n_v, usize::from(transpose)].map(|n| n as u32);
            launch(
                Wgsl { source, values },
                n_t.div_ceil(rows_per_group),
                &[a, factors, basis, coef, &q, &s],
                &info,
            );
        }
        Rows::Own(_) => {
            let kernel = Wgsl {
                source: include_str!("../../../shaders/lowrank_down.wgsl"),
                values,
            };
            let info = [n_t, 0, row0, n_v, usize::from(transpose)].map(|n| n as u32);
            launch(
                kernel,
                n_t.div_ceil(WG as usize),
                &[factors, basis, coef, &q, &s],
                &info,
            );
        }
    }
    (q, s)
}

/// out `[T, cols]` = init ± Σ_j F[row0 + o, j] q[t, j] with q `[T, r]`.
pub(crate) fn up(
    q: &CubeTensor,
    factors: &CubeTensor,
    row0: usize,
    cols: usize,
    init: Init,
    subtract: bool,
) -> CubeTensor {
    let (n_t, r) = (q.meta.shape()[0], q.meta.shape()[1]);
    let mut values = rank_values(r);
    values.push(("sign", if subtract { "-1.0" } else { "1.0" }.to_string()));
    values.push(("rows", UP_ROWS.to_string()));
    // vec4 loads and stores when both q's rows and out's rows are whole vec4s
    let vec4 = r.is_multiple_of(4) && cols.is_multiple_of(4);
    let (init_expr, init_binding, init_doc) = match &init {
        Init::Zero if vec4 => ("vec4<f32>(0.0)", "", "(out starts at 0)"),
        Init::Zero => ("0.0", "", "(out starts at 0)"),
        Init::Base(_) => (
            "base[idx]",
            if vec4 {
                "@group(0) @binding(4) var<storage, read_write> base: array<vec4<f32>>;"
            } else {
                "@group(0) @binding(4) var<storage, read_write> base: array<f32>;"
            },
            "base    [T, cols]           added to",
        ),
        Init::InPlace(_) => ("out[idx]", "", "(out is updated in place)"),
    };
    values.push(("init", init_expr.to_string()));
    values.push(("init_binding", init_binding.to_string()));
    values.push(("init_doc", init_doc.to_string()));
    let kernel = Wgsl {
        source: if vec4 {
            include_str!("../../../shaders/lowrank_up_vec4.wgsl")
        } else {
            include_str!("../../../shaders/lowrank_up.wgsl")
        },
        values,
    };
    // UP_COLS columns per invocation; one workgroup never spans two row blocks
    let cols_padded = cols.div_ceil(UP_COLS).next_multiple_of(WG as usize);
    let info = [n_t, cols, row0, cols_padded].map(|n| n as u32);
    let groups = cols_padded / WG as usize * n_t.div_ceil(UP_ROWS);
    match init {
        Init::Zero => {
            let out = empty(q, vec![n_t, cols]);
            launch(kernel, groups, &[q, factors, &out], &info);
            out
        }
        Init::Base(base) => {
            let out = empty(q, vec![n_t, cols]);
            launch_bindings(kernel, groups, &[q, factors, &out], &info, Some(base));
            out
        }
        Init::InPlace(out) => {
            launch(kernel, groups, &[q, factors, &out], &info);
            *out
        }
    }
}
