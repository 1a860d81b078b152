//! Initial trainable values: TinyLoRA and LoRA-XS start at v = 0 (ΔW = 0, the base model);
//! LoRA starts at B = 0 and A ~ U(−1/√d_in, 1/√d_in) (PEFT's Kaiming-uniform bound), so that
//! ΔW = B A = 0 but ∂L/∂B ≠ 0.
//!
//! A LoRA module's values are its factors stacked as the kernels read them, [B; Aᵀ]
//! `[d_out + d_in, r]`, row-major.

use tinylora_formats::ModelConfig;

use crate::config::AdapterConfig;

/// The values a new adapter starts from, `[Σ group sizes]` in group order: each group's first
/// module's [`crate::Parametrization::initial_values`].
pub fn initial_values(model: &ModelConfig, adapter: &AdapterConfig) -> Vec<f32> {
    let groups = adapter.tie_groups(model.num_hidden_layers);
    let p = adapter.parametrization();
    (0..groups.num_groups)
        .flat_map(|g| {
            let first = groups.members(g)[0];
            let (d_out, d_in) = groups.modules[first].kind.shape(model);
            p.initial_values(
                adapter.rank,
                adapter.u,
                adapter.projection_seed,
                first,
                d_out,
                d_in,
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Method;
    use crate::parametrization::lora_delta;
    use tinylora_formats::Architecture;

    fn model() -> ModelConfig {
        ModelConfig {
            architecture: Architecture::Llama,
            hidden_size: 8,
            intermediate_size: 12,
            num_hidden_layers: 2,
            num_attention_heads: 2,
            num_key_value_heads: 1,
            head_dim: 4,
            vocab_size: 10,
            rope_theta: 1e4,
            rms_norm_eps: 1e-5,
            tie_word_embeddings: true,
            attention_bias: false,
            max_position_embeddings: 64,
        }
    }

    #[test]
    fn lora_starts_at_zero_update_with_bounded_random_a() {
        let m = model();
        let cfg = AdapterConfig {
            method: Method::Lora,
            rank: 2,
            ..AdapterConfig::default()
        };
        let v = initial_values(&m, &cfg);
        assert_eq!(v.len(), crate::plan(&m, &cfg).params);
        // the first module is q [8, 8]: B (16 zeros) then Aᵀ (16 values within 1/√8)
        assert!(v[..16].iter().all(|&x| x == 0.0));
        assert!(v[16..32].iter().all(|&x| x != 0.0 && x.abs() < 1.0 / 8f32.sqrt()));
        assert!(lora_delta(&v[..32], 8, 8, 2).iter().all(|&x| x == 0.0));
        assert_eq!(v, initial_values(&m, &cfg), "seeded");
        let tiny = AdapterConfig::default();
        assert!(initial_values(&m, &tiny).iter().all(|&x| x == 0.0));
    }

    #[test]
    fn lora_delta_is_b_times_a() {
        // B = [[1, 2]], Aᵀ = [[3, 4], [5, 6], [7, 8]] → B A = [[11, 17, 23]]
        let v = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
        assert_eq!(lora_delta(&v, 1, 3, 2), [11.0, 17.0, 23.0]);
    }
}
