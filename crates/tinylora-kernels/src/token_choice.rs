//! The next token of each sequence, chosen where the logits are: for logits l `[B, V]` of the
//! last positions and z = l / T,
//!
//! - greedy (T = 0): id = argmax z (the lowest id among equals), log-probability z_id − lse(l);
//! - sampling (T > 0): with one uniform draw u ∈ [0, 1) per row, the id whose interval
//!   [P(< id), P(≤ id)) of the CDF of p = softmax(z), in id order, holds u (inverse transform
//!   sampling), log-probability z_id − lse(z).
//!
//! A decoding step then reads back `[B, 2]` (id, log-probability) instead of `[B, V]` logits
//! (12.6 MB at B = 64 for a 49152-token vocabulary) and samples nothing on the host. Top-k and
//! top-p, which need the sorted logits, stay on the host (`tinylora_engine::sampling`).
//!
//! On the cube backend `shaders/token_choice.wgsl`, one workgroup a row; on Flex the same steps
//! in Rust (`crate::token_choice_cpu`), rows over the cores. Not differentiable.

use burn::backend::autodiff::{Autodiff, checkpoint::strategy::CheckpointStrategy};
use burn::backend::{AutodiffBackend, Dispatch, backend_extension, tensor::FloatTensor};
use burn::tensor::Tensor;
use burn_cubecl::{CubeBackend, tensor::CubeTensor};

use crate::launch::{WG, Wgsl, dims, empty, input, launch};

/// Largest vocabulary: ids travel as f32 values, exact up to 2^24.
pub const MAX_VOCAB: usize = 1 << 24;

/// Backend extension: the choice of the next tokens.
#[backend_extension(Autodiff, Cube, Flex: cfg(not(target_family = "wasm")))]
pub trait TokenChoiceBackend: burn::backend::Backend {
    /// `[B, 2]`: per row of `logits` `[B, V]` the chosen id (as an f32) and its log-probability,
    /// greedy unless `temperature` > 0, else drawn with `draws[b]` `[B]` (see the module).
    fn choose_tokens(
        logits: FloatTensor<Self>,
        draws: FloatTensor<Self>,
        temperature: f32,
    ) -> FloatTensor<Self>;
}

/// Logits `[B, V]` of the last positions and one uniform draw per row `[B]` → `[B, 2]`: the
/// chosen id (an f32 holding an integer) and its log-probability; greedy unless `temperature`
/// > 0 (the draws are then unused).
pub fn choose_tokens(logits: Tensor<2>, draws: Tensor<1>, temperature: f32) -> Tensor<2> {
    Tensor::from_dispatch(Dispatch::choose_tokens(
        logits.into_dispatch(),
        draws.into_dispatch(),
        temperature,
    ))
}

/// (B, V) of `logits` `[B, V]` with `draws` `[B]`, checked.
pub(crate) fn check_shapes(logits: &[usize], draws: &[usize]) -> (usize, usize) {
    let [b, v] = logits[..] else {
        panic!("choose_tokens: logits must be [B, V], not {logits:?}")
    };
    assert!(
        draws == [b],
        "choose_tokens: draws must be [{b}] for logits [{b}, {v}], not {draws:?}"
    );
    assert!(
        (1..=MAX_VOCAB).contains(&v),
        "choose_tokens: V = {v} is outside 1..={MAX_VOCAB}"
    );
    (b, v)
}

/// Whether `temperature` means greedy: anything but a positive number (NaN included, as the
/// engine then draws nothing).
pub(crate) fn is_greedy(temperature: f32) -> bool {
    temperature.is_nan() || temperature <= 0.0
}

/// 1/T, or 1 when greedy.
pub(crate) fn inverse_temperature(temperature: f32) -> f32 {
    if is_greedy(temperature) {
        1.0
    } else {
        1.0 / temperature
    }
}

impl TokenChoiceBackend for CubeBackend {
    fn choose_tokens(logits: CubeTensor, draws: CubeTensor, temperature: f32) -> CubeTensor {
        let (b, v) = check_shapes(&dims(&logits), &dims(&draws));
        assert!(
            b.checked_mul(v).is_some_and(|n| n <= u32::MAX as usize),
            "choose_tokens: [{b}, {v}] logits are past u32 indices"
        );
        let logits = input(logits, "choose_tokens", "logits");
        let draws = input(draws, "choose_tokens", "draws");
        let chosen = empty(&logits, vec![b, 2]);
        let kernel = Wgsl {
            source: include_str!("../../../shaders/token_choice.wgsl"),
            values: vec![
                ("greedy", is_greedy(temperature).to_string()),
                ("wg", WG.to_string()),
            ],
        };
        let info = [b as u32, v as u32, inverse_temperature(temperature).to_bits()];
        launch(kernel, b, &[&logits, &draws, &chosen], &info);
        chosen
    }
}

impl<B: TokenChoiceBackend, C: CheckpointStrategy> TokenChoiceBackend for Autodiff<B, C> {
    fn choose_tokens(
        logits: FloatTensor<Self>,
        draws: FloatTensor<Self>,
        temperature: f32,
    ) -> FloatTensor<Self> {
        <Self as AutodiffBackend>::from_inner(B::choose_tokens(
            <Self as AutodiffBackend>::inner(logits),
            <Self as AutodiffBackend>::inner(draws),
            temperature,
        ))
    }
}
