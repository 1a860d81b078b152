//! Left-padded batches: positions and attention masks for prompts of different lengths.
//!
//! Row b holds `pad[b]` padding slots, then its tokens. Slot s of row b has RoPE position
//! `s − pad[b]`; a query in slot s sees key slots j with `pad[b] ≤ j ≤ s`.

use burn::tensor::{Device, Tensor, TensorData};

/// Additive mask value for hidden keys: finite, so fully masked padding rows stay NaN-free.
pub const MASKED: f32 = -1e9;

/// RoPE positions `[B][T]` of the T slots after `past` cached ones.
pub fn positions(pads: &[usize], past: usize, t: usize) -> Vec<Vec<usize>> {
    pads.iter()
        .map(|&p| (past..past + t).map(|s| s.saturating_sub(p)).collect())
        .collect()
}

/// Attention mask `[B, 1, r·T, S]` for T new slots after `past` cached ones over a key buffer
/// of S ≥ past + T slots, with rows in the grouped-query order (r copies of the T query slots).
pub fn attention_mask(
    pads: &[usize],
    past: usize,
    t: usize,
    s: usize,
    rep: usize,
    device: &Device,
) -> Tensor<4> {
    let mut data = Vec::with_capacity(pads.len() * rep * t * s);
    for &pad in pads {
        for _ in 0..rep {
            for q in 0..t {
                data.extend((0..s).map(|j| if j >= pad && j <= past + q { 0.0 } else { MASKED }));
            }
        }
    }
    Tensor::from_data(TensorData::new(data, [pads.len(), 1, rep * t, s]), device)
}

/// Prompt lengths are padded up to a multiple of this, so that batches of similar prompts
/// share shapes (and compiled shaders).
pub const PROMPT_BLOCK: usize = 16;

/// The length of `prompts`' left-padded rows: the longest, rounded up to [`PROMPT_BLOCK`].
pub fn padded_len(prompts: &[Vec<u32>]) -> usize {
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    longest.div_ceil(PROMPT_BLOCK) * PROMPT_BLOCK
}

/// Left-pad `prompts` with `pad_id` to [`padded_len`]; returns the rows and each row's
/// padding.
pub fn left_pad(prompts: &[Vec<u32>], pad_id: u32) -> (Vec<Vec<u32>>, Vec<usize>) {
    let t = padded_len(prompts);
    let pads: Vec<usize> = prompts.iter().map(|p| t - p.len()).collect();
    let rows = prompts
        .iter()
        .zip(&pads)
        .map(|(p, &pad)| {
            std::iter::repeat_n(pad_id, pad)
                .chain(p.iter().copied())
                .collect()
        })
        .collect();
    (rows, pads)
}
