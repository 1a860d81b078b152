//! The decoder-only transformer shared by `llama` (SmolLM2, Llama) and `qwen2` (QKV bias).
//!
//! Shapes: B batch, T new tokens, S cached + new tokens, H hidden, F MLP width,
//! n_h query heads, n_kv key/value heads, r = n_h / n_kv, d_h head width, V vocabulary.

use burn::tensor::{Device, Tensor, TensorData};
use tinylora_formats::{
    BlockMatrix, FormatError, HostTensor, ModelConfig, ModelFile, ModuleKind, WeightFormat,
};
use tinylora_kernels::{masked_softmax, rms_norm, rope, swiglu};

use crate::delta::DeltaMode;
use crate::kv_cache::KvCache;
use crate::linear::Linear;
use crate::rope::RopeBatch;

/// RMSNorm: y = x / sqrt(mean(x²) + ε) · w.
#[derive(Debug, Clone)]
pub struct RmsNorm {
    /// Scale w `[H]`.
    pub weight: Tensor<1>,
    /// ε.
    pub eps: f32,
}

impl RmsNorm {
    /// x `[B, T, H]` → `[B, T, H]` (one fused op: `tinylora_kernels::rms_norm`).
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let [b, t, h] = x.dims();
        rms_norm(x.reshape([b * t, h]), self.weight.clone(), self.eps).reshape([b, t, h])
    }
}

/// Grouped-query self-attention.
#[derive(Debug, Clone)]
pub struct Attention {
    /// `[n_h·d_h, H]` (+ bias for qwen2).
    pub q_proj: Linear,
    /// `[n_kv·d_h, H]`.
    pub k_proj: Linear,
    /// `[n_kv·d_h, H]`.
    pub v_proj: Linear,
    /// `[H, n_h·d_h]`.
    pub o_proj: Linear,
    n_heads: usize,
    n_kv: usize,
    head_dim: usize,
}

/// What every layer of one forward step needs besides its input.
#[derive(Debug, Clone)]
pub struct StepInputs {
    /// RoPE tables of the step's positions.
    pub rope: RopeBatch,
    /// Additive attention mask `[B, 1, r·T, S]` (0 visible, −1e9 hidden).
    pub mask: Tensor<4>,
    /// How the projections' deltas apply.
    pub delta: DeltaMode,
}

impl Attention {
    /// x `[B, T, H]` → `[B, T, H]`; appends this step's k, v to `cache`.
    pub fn forward(&self, x: Tensor<3>, step: &StepInputs, cache: &mut KvCache, layer: usize) -> Tensor<3> {
        let [b, t, _] = x.dims();
        let (nh, nkv, dh) = (self.n_heads, self.n_kv, self.head_dim);
        let heads = |y: Tensor<3>, n: usize| y.reshape([b, t, n, dh]); // [B, T, n, d_h]
        let d = step.delta;
        let (cos, sin) = (step.rope.cos.clone(), step.rope.sin.clone());
        // RoPE (queries pre-scaled by 1/√d_h) → [B, n, T, d_h]
        let q = rope(
            heads(self.q_proj.forward(x.clone(), d), nh),
            cos.clone(),
            sin.clone(),
            1.0 / (dh as f32).sqrt(),
        );
        let k = rope(heads(self.k_proj.forward(x.clone(), d), nkv), cos, sin, 1.0);
        let v = heads(self.v_proj.forward(x, d), nkv).swap_dims(1, 2);
        let (k, v) = cache.append(layer, k, v); // [B, n_kv, S, d_h]
        // Query heads of one group are adjacent: [B, n_h, T, d_h] = [B, n_kv, r·T, d_h].
        let rep = nh / nkv;
        let q = q.reshape([b, nkv, rep * t, dh]);
        let scores = q.matmul(k.swap_dims(2, 3)); // [B, n_kv, r·T, S]
        let out = masked_softmax(scores, step.mask.clone()).matmul(v); // [B, n_kv, r·T, d_h]
        let out = out
            .reshape([b, nh, t, dh])
            .swap_dims(1, 2)
            .reshape([b, t, nh * dh]);
        self.o_proj.forward(out, d)
    }
}

/// SwiGLU MLP: down(silu(gate(x)) ⊙ up(x)).
#[derive(Debug, Clone)]
pub struct Mlp {
    /// `[F, H]`.
    pub gate_proj: Linear,
    /// `[F, H]`.
    pub up_proj: Linear,
    /// `[H, F]`.
    pub down_proj: Linear,
}

impl Mlp {
    /// x `[B, T, H]` → `[B, T, H]`.
    pub fn forward(&self, x: Tensor<3>, d: DeltaMode) -> Tensor<3> {
        let (gate, up) = (self.gate_proj.forward(x.clone(), d), self.up_proj.forward(x, d)); // [B, T, F]
        let [b, t, f] = gate.dims();
        let h = swiglu(gate.reshape([b * t, f]), up.reshape([b * t, f])).reshape([b, t, f]); // silu(gate) ⊙ up
        self.down_proj.forward(h, d)
    }
}

/// One pre-norm decoder layer.
#[derive(Debug, Clone)]
pub struct DecoderLayer {
    /// Norm before attention.
    pub input_layernorm: RmsNorm,
    /// Self-attention.
    pub self_attn: Attention,
    /// Norm before the MLP.
    pub post_attention_layernorm: RmsNorm,
    /// The MLP.
    pub mlp: Mlp,
}

/// The whole model: embedding (host), layers, final norm, LM head (device).
#[derive(Debug, Clone)]
pub struct Transformer {
    /// Hyper-parameters.
    pub config: ModelConfig,
    /// Token embedding `[V, H]`, kept in host memory in the weights' storage; rows are
    /// gathered (and decoded) per step.
    pub embed_tokens: BlockMatrix,
    /// Decoder layers.
    pub layers: Vec<DecoderLayer>,
    /// Final norm.
    pub norm: RmsNorm,
    /// LM head `[V, H]` (the embedding itself when tied).
    pub lm_head: Linear,
    /// The device everything lives on.
    pub device: Device,
    /// How the projections' deltas apply (see [`crate::delta`]).
    pub(crate) delta_mode: DeltaMode,
    /// Whether merging keeps the base weights aside (see [`Transformer::keep_base_weights`]).
    pub(crate) keep_base: bool,
    /// Most prompt slots one prefill forward takes ([`PREFILL_CHUNK`] unless changed): longer
    /// prompts are prefilled in chunks, bounding attention's scratch memory; a wide batch takes
    /// fewer, so that attention's scores and the MLP's activations each fit a binding
    /// ([`crate::generate::prefill_slots`]).
    pub prefill_chunk: usize,
}

/// Default [`Transformer::prefill_chunk`].
pub const PREFILL_CHUNK: usize = 512;

impl Transformer {
    /// Load every weight from `file` in f32, checking each shape against the configuration.
    pub fn load(file: &ModelFile, device: &Device) -> Result<Self, FormatError> {
        Self::load_with(file, device, WeightFormat::F32)
    }

    /// Load every weight from `file`, the matrices kept as `format` says
    /// ([`WeightFormat::kept_as`]), norms and biases in f32; each shape is checked against
    /// the configuration. One matrix is read and converted at a time.
    pub fn load_with(file: &ModelFile, device: &Device, format: WeightFormat) -> Result<Self, FormatError> {
        let c = &file.config;
        let h = c.hidden_size;
        let vec1 = |t: HostTensor, n: usize| Tensor::<1>::from_data(TensorData::new(t.data, [n]), device);
        let norm = |name: &str| -> Result<RmsNorm, FormatError> {
            Ok(RmsNorm {
                weight: vec1(file.load(name, &[h])?, h),
                eps: c.rms_norm_eps,
            })
        };
        let linear = |prefix: &str, d_out: usize, d_in: usize, bias: bool| -> Result<Linear, FormatError> {
            let w = file.load_blocks(&format!("{prefix}.weight"), [d_out, d_in], format)?;
            let b = if bias {
                Some(file.load(&format!("{prefix}.bias"), &[d_out])?)
            } else {
                None
            };
            Ok(Linear::from_blocks(&w, b.as_ref(), device))
        };
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for i in 0..c.num_hidden_layers {
            let p = format!("model.layers.{i}");
            let bias = c.attention_bias;
            // projection `kind` of this layer, [d_out, d_in] as the configuration says
            let proj = |kind: ModuleKind| {
                let (d_out, d_in) = kind.shape(c);
                let bias = bias && matches!(kind, ModuleKind::Q | ModuleKind::K | ModuleKind::V);
                linear(&format!("{p}.{}", kind.hf_path()), d_out, d_in, bias)
            };
            layers.push(DecoderLayer {
                input_layernorm: norm(&format!("{p}.input_layernorm.weight"))?,
                self_attn: Attention {
                    q_proj: proj(ModuleKind::Q)?,
                    k_proj: proj(ModuleKind::K)?,
                    v_proj: proj(ModuleKind::V)?,
                    o_proj: proj(ModuleKind::O)?,
                    n_heads: c.num_attention_heads,
                    n_kv: c.num_key_value_heads,
                    head_dim: c.head_dim,
                },
                post_attention_layernorm: norm(&format!("{p}.post_attention_layernorm.weight"))?,
                mlp: Mlp {
                    gate_proj: proj(ModuleKind::Gate)?,
                    up_proj: proj(ModuleKind::Up)?,
                    down_proj: proj(ModuleKind::Down)?,
                },
            });
        }
        let embed = file.load_blocks("model.embed_tokens.weight", [c.vocab_size, h], format)?;
        let lm_head = if c.tie_word_embeddings {
            Linear::from_blocks(&embed, None, device)
        } else {
            linear("lm_head", c.vocab_size, h, false)?
        };
        Ok(Transformer {
            config: c.clone(),
            embed_tokens: embed,
            layers,
            norm: norm("model.norm.weight")?,
            lm_head,
            device: device.clone(),
            delta_mode: DeltaMode::Off,
            keep_base: false,
            prefill_chunk: PREFILL_CHUNK,
        })
    }

    /// Gather embedding rows for `tokens[b][t]` → `[B, T, H]`.
    pub fn embed(&self, tokens: &[Vec<u32>]) -> Tensor<3> {
        let h = self.config.hidden_size;
        let (b, t) = (tokens.len(), tokens[0].len());
        let mut data = vec![0.0; b * t * h];
        for (&id, row) in tokens.iter().flatten().zip(data.chunks_exact_mut(h)) {
            let id = id as usize;
            self.embed_tokens.dequantize_rows(id..id + 1, row);
        }
        Tensor::from_data(TensorData::new(data, [b, t, h]), &self.device)
    }

    /// Run the layers and the final norm: x `[B, T, H]` → hidden `[B, T, H]`.
    pub fn forward_hidden(&self, mut x: Tensor<3>, step: &StepInputs, cache: &mut KvCache) -> Tensor<3> {
        for (i, layer) in self.layers.iter().enumerate() {
            let a = layer
                .self_attn
                .forward(layer.input_layernorm.forward(x.clone()), step, cache, i);
            x = x + a;
            x = x.clone()
                + layer
                    .mlp
                    .forward(layer.post_attention_layernorm.forward(x), step.delta);
        }
        self.norm.forward(x)
    }

    /// Bytes the weight matrices take on the device (the LM head once, also when tied) and
    /// in host memory (the embedding).
    pub fn weight_bytes(&self) -> (usize, usize) {
        let device = self
            .layers
            .iter()
            .flat_map(|l| {
                let (a, m) = (&l.self_attn, &l.mlp);
                [
                    &a.q_proj,
                    &a.k_proj,
                    &a.v_proj,
                    &a.o_proj,
                    &m.gate_proj,
                    &m.up_proj,
                    &m.down_proj,
                ]
            })
            .chain([&self.lm_head])
            .map(Linear::weight_bytes)
            .sum();
        (device, self.embed_tokens.bytes.len())
    }

    /// Whether the matrices are held in blocks (deltas then run on the activation path).
    pub fn is_compressed(&self) -> bool {
        self.lm_head.is_compressed() || self.layers.iter().any(|l| l.self_attn.q_proj.is_compressed())
    }

    /// LM head: hidden `[N, H]` → logits `[N, V]`.
    pub fn logits(&self, hidden: Tensor<2>) -> Tensor<2> {
        self.lm_head.forward2(hidden, self.delta_mode)
    }
}
