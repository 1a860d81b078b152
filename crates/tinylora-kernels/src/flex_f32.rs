//! What the Rust ops on burn's Flex CPU backend share: f32 tensors in and out, the size of a
//! parallel task, the loops the compiler vectorizes (a dot product, a scaled addition), and
//! the choice between a kernel's AVX2 + FMA build and its portable one.

use burn::backend::flex::{FlexTensor, Layout};
use burn::tensor::{Bytes, DType, Shape};

use crate::lane_sums::lane_sums;

/// Values one task handles at least (smaller work is not worth a task of its own).
pub(crate) const VALUES_PER_TASK: usize = 1 << 14;

/// Whole rows of `width` values per task.
pub(crate) fn task_rows(width: usize) -> usize {
    VALUES_PER_TASK.div_ceil(width.max(1))
}

/// `t` as a contiguous f32 tensor (copied only when its layout is not), checked to be f32.
pub(crate) fn contiguous(t: &FlexTensor, op: &str) -> FlexTensor {
    assert_eq!(
        t.dtype(),
        DType::F32,
        "{op}: f32 tensors only, not {:?}",
        t.dtype()
    );
    t.to_contiguous()
}

/// A contiguous f32 tensor holding `values`.
pub(crate) fn tensor(values: Vec<f32>, shape: impl Into<Shape>) -> FlexTensor {
    FlexTensor::new(
        Bytes::from_elems(values),
        Layout::contiguous(shape.into()),
        DType::F32,
    )
}

/// Σ a_k b_k with sixteen independent partial sums (vectorized by the compiler).
#[inline(always)]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let (acc, tail) = lane_sums::<f32, 16>(a, b);
    acc.iter().sum::<f32>() + tail
}

/// out += s · row.
#[inline(always)]
pub(crate) fn add_scaled(out: &mut [f32], s: f32, row: &[f32]) {
    for (o, &v) in out.iter_mut().zip(row) {
        *o += s * v;
    }
}

/// Call the AVX2 + FMA build of a kernel (`avx2::kernel`, beside the call) where the CPU has
/// them, else the portable one (`portable::kernel`).
macro_rules! best {
    ($kernel:ident($($arg:expr),*)) => {{
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the features were just detected
            return unsafe { avx2::$kernel($($arg),*) };
        }
        portable::$kernel($($arg),*)
    }};
}
pub(crate) use best;
