//! Attaching an adapter to a loaded [`Transformer`]: the frozen factors of every target module
//! on the device, the trainable v of every tie group, and the three ways to run with it
//! (base model, update on the activation path, update merged into the weights).
//!
//! For target module k (layer order) with W `[d_out, d_in]` ≈ U Σ Vᵀ (rank r, SPEC.md §1):
//! factors = [U; V] `[d_out + d_in, r]`, basis P̃ `[n_v, r, r]` with the Σ convention folded
//! in (TinyLoRA: P̃ᵢ = Σ Pᵢ for the paper's U Σ R Vᵀ; LoRA-XS: P̃_(j,k) = Σ E_jk, so v = vec R),
//! and the module's tie group's v `[n_v]`. Then ΔW = U (Σᵢ vᵢ P̃ᵢ) Vᵀ. LoRA runs through the
//! same op with trainable factors [B; Aᵀ], basis I and v = 1: ΔW = B A.

use burn::tensor::{Device, Tensor, TensorData};
use tinylora_adapter::adapter_file::round_to;
use tinylora_adapter::{
    AdapterConfig, MODULE_TYPES, Method, ModuleSlot, PeftAdapter, PeftMethod, SigmaConvention, TieGroups,
    frozen_modules, group_sizes,
};
use tinylora_formats::{FormatError, ModelFile};
use tinylora_kernels::{MAX_RANK, lowrank_merge};

use crate::linear::{Linear, LowRankUpdate};
use crate::transformer::Transformer;

/// Why an adapter cannot be attached.
#[derive(Debug, thiserror::Error)]
pub enum AdapterError {
    /// Reading a base weight failed.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// The configuration asks for something the engine does not run.
    #[error("{0}")]
    Unsupported(String),
    /// The trainable values do not fit the configuration and model.
    #[error("adapter values: {0}")]
    Values(String),
}

/// How the model runs with its adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdapterMode {
    /// The base model (ΔW switched off, weights untouched).
    Off,
    /// y = x Wᵀ + ((x V) Mᵀ) Uᵀ on the activation path: differentiable in v (training).
    Activation,
    /// W ← W + ΔW in place: plain-speed inference (rollouts, evaluation), and training at
    /// the same speed: v still gets its gradient (`lowrank_update_merged`), while ∂L/∂x comes
    /// from the merged weights themselves.
    Merged,
}

/// The adapter attached to a model.
#[derive(Debug, Clone)]
pub struct AttachedAdapter {
    /// Its configuration.
    pub config: AdapterConfig,
    /// Module → tie group.
    pub tie_groups: TieGroups,
    /// The trainable values of each tie group (v, vec R, or LoRA's [B; Aᵀ] flattened); the
    /// modules hold clones of these, so tied modules share one tensor.
    pub trainable: Vec<Tensor<1>>,
    /// Current mode.
    pub mode: AdapterMode,
}

impl Transformer {
    /// The linear layer of target type `kind` in `layer`.
    pub fn target_mut(&mut self, layer: usize, kind: &str) -> &mut Linear {
        let l = &mut self.layers[layer];
        match kind {
            "q" => &mut l.self_attn.q_proj,
            "k" => &mut l.self_attn.k_proj,
            "v" => &mut l.self_attn.v_proj,
            "o" => &mut l.self_attn.o_proj,
            "gate" => &mut l.mlp.gate_proj,
            "up" => &mut l.mlp.up_proj,
            "down" => &mut l.mlp.down_proj,
            _ => panic!("unknown module type `{kind}`"),
        }
    }

    /// Compute the frozen factors of every target module of `config` from the weights in
    /// `file` (the file this model was loaded from) and attach them with the trainable values
    /// `values` (group order, see `group_sizes`; `initial_values` gives ΔW = 0). The adapter
    /// starts on the activation path ([`AdapterMode::Activation`]); a previously attached
    /// adapter is removed first. `on_module` is called as each module's SVD finishes.
    pub fn attach_adapter(
        &mut self,
        file: &ModelFile,
        config: &AdapterConfig,
        values: &[f32],
        on_module: &(dyn Fn() + Sync),
    ) -> Result<(), AdapterError> {
        if config.rank > MAX_RANK {
            return Err(AdapterError::Unsupported(format!(
                "rank {} is above the kernels' maximum of {MAX_RANK}",
                config.rank
            )));
        }
        let groups = TieGroups::new(self.config.num_hidden_layers, config.targets.len(), config.tying);
        let sizes = group_sizes(&self.config, config);
        let needed: usize = sizes.iter().sum();
        if values.len() != needed {
            return Err(AdapterError::Values(format!(
                "{} values given, the configuration needs {needed} ({} tie groups) on this model",
                values.len(),
                sizes.len()
            )));
        }
        let trainable = group_tensors(values, &sizes, config, &self.device, false);
        let r = config.rank;
        let frozen = if config.method == Method::Lora {
            vec![]
        } else {
            frozen_modules(file, config, &groups, on_module)?
        };
        self.detach_adapter();
        let device = self.device.clone();
        for (k, (slot, &g)) in groups.modules.iter().zip(&groups.group).enumerate() {
            let linear = self.target_mut(slot.layer, &config.targets[slot.kind]);
            let rows = linear.d_out + linear.d_in;
            linear.update = Some(match frozen.get(k) {
                Some(m) => LowRankUpdate::frozen(
                    m.stacked_factors(),
                    m.basis.clone(),
                    rows,
                    r,
                    trainable[g].clone(),
                    &device,
                ),
                None => LowRankUpdate {
                    factors: trainable[g].clone().reshape([rows, r]),
                    basis: Tensor::<2>::eye(r, &device).reshape([1, r, r]),
                    coef: Tensor::ones([1], &device),
                    mode: AdapterMode::Activation,
                },
            });
        }
        self.adapter = Some(AttachedAdapter {
            config: config.clone(),
            tie_groups: groups,
            trainable,
            mode: AdapterMode::Activation,
        });
        Ok(())
    }

    /// Attach a PEFT adapter (TinyLoRA or LoRA) with its stored factors as they are: no SVD
    /// is recomputed, so ΔW is exactly PEFT's. Starts on the activation path; for inference
    /// (the values are not trainable through [`Self::set_adapter_trainable`]).
    pub fn attach_peft(&mut self, peft: &PeftAdapter) -> Result<(), AdapterError> {
        let r = peft.rank;
        if r > MAX_RANK {
            return Err(AdapterError::Unsupported(format!(
                "{}: rank {r} is above the kernels' maximum of {MAX_RANK}",
                peft.dir.display()
            )));
        }
        let n_layers = self.layers.len();
        for m in &peft.modules {
            let mismatch = if m.layer >= n_layers {
                Some(format!("layer {} (the model has {n_layers})", m.layer))
            } else {
                let linear = self.target_mut(m.layer, m.kind);
                ((linear.d_out, linear.d_in) != (m.d_out, m.d_in)).then(|| {
                    format!(
                        "layers.{}.{}_proj is [{}, {}] in the adapter but [{}, {}] in the model",
                        m.layer, m.kind, m.d_out, m.d_in, linear.d_out, linear.d_in
                    )
                })
            };
            if let Some(what) = mismatch {
                return Err(AdapterError::Values(format!(
                    "{} was made for another model: {what}",
                    peft.dir.display()
                )));
            }
        }
        self.detach_adapter();
        let device = self.device.clone();
        let trainable: Vec<Tensor<1>> = peft
            .values
            .iter()
            .map(|v| Tensor::from_data(TensorData::new(v.clone(), [v.len()]), &device))
            .collect();
        for m in &peft.modules {
            let coef = match m.group {
                Some(g) => trainable[g].clone(),
                None => Tensor::ones([1], &device),
            };
            self.target_mut(m.layer, m.kind).update = Some(LowRankUpdate::frozen(
                m.factors.clone(),
                m.basis.clone(),
                m.d_out + m.d_in,
                r,
                coef,
                &device,
            ));
        }
        let (method, u) = match peft.method {
            PeftMethod::TinyLora { u, .. } => (Method::Tinylora, u),
            PeftMethod::Lora { .. } => (Method::Lora, 1),
        };
        let targets: Vec<String> = MODULE_TYPES
            .iter()
            .filter(|k| peft.modules.iter().any(|m| m.kind == **k))
            .map(|k| k.to_string())
            .collect();
        let modules: Vec<ModuleSlot> = peft
            .modules
            .iter()
            .map(|p| ModuleSlot {
                layer: p.layer,
                kind: targets.iter().position(|t| t == p.kind).unwrap_or(0),
            })
            .collect();
        let group: Vec<usize> = peft
            .modules
            .iter()
            .enumerate()
            .map(|(k, p)| p.group.unwrap_or(k))
            .collect();
        let num_groups = group.iter().max().map_or(0, |g| g + 1);
        self.adapter = Some(AttachedAdapter {
            config: AdapterConfig {
                method,
                rank: r,
                u,
                targets,
                sigma: SigmaConvention::Peft,
                ..AdapterConfig::default()
            },
            tie_groups: TieGroups {
                modules,
                group,
                num_groups,
            },
            trainable,
            mode: AdapterMode::Activation,
        });
        Ok(())
    }

    /// Remove the adapter (unmerging it first), leaving the base model.
    pub fn detach_adapter(&mut self) {
        self.set_adapter_mode(AdapterMode::Off);
        for layer in 0..self.layers.len() {
            for kind in MODULE_TYPES {
                self.target_mut(layer, kind).update = None;
            }
        }
        self.adapter = None;
    }

    /// Switch between the base model, the update on the activation path and merged weights.
    /// Does nothing without an adapter.
    pub fn set_adapter_mode(&mut self, mode: AdapterMode) {
        let Some(current) = self.adapter.as_ref().map(|a| a.mode) else {
            return;
        };
        if current == AdapterMode::Merged && mode != AdapterMode::Merged {
            self.for_each_update(|linear| linear.merge_update(true));
        }
        if mode == AdapterMode::Merged && current != AdapterMode::Merged {
            self.for_each_update(|linear| linear.merge_update(false));
        }
        self.for_each_update(|linear| {
            if let Some(u) = linear.update.as_mut() {
                u.mode = mode;
            }
        });
        if let Some(a) = self.adapter.as_mut() {
            a.mode = mode;
        }
    }

    /// Replace every tie group's trainable values (e.g. by tensors that require gradients,
    /// for training). Merged weights are unmerged with the old values and merged again.
    pub fn set_adapter_trainable(&mut self, trainable: Vec<Tensor<1>>) {
        let Some(adapter) = self.adapter.as_ref() else {
            panic!("set_adapter_trainable: no adapter attached");
        };
        assert_eq!(
            trainable.len(),
            adapter.trainable.len(),
            "set_adapter_trainable: one tensor per tie group"
        );
        let mode = adapter.mode;
        self.set_adapter_mode(AdapterMode::Off);
        let adapter = self.adapter.as_mut().unwrap();
        let (groups, config) = (adapter.tie_groups.clone(), adapter.config.clone());
        adapter.trainable = trainable.clone();
        for (slot, &g) in groups.modules.iter().zip(&groups.group) {
            let linear = self.target_mut(slot.layer, &config.targets[slot.kind]);
            let rows = linear.d_out + linear.d_in;
            if let Some(u) = linear.update.as_mut() {
                if config.method == Method::Lora {
                    u.factors = trainable[g].clone().reshape([rows, config.rank]);
                } else {
                    u.coef = trainable[g].clone();
                }
            }
        }
        self.set_adapter_mode(mode);
    }

    /// Upload new trainable values (group order, as for [`Self::attach_adapter`]), rounded to the
    /// adapter's precision, optionally as tensors that require gradients; returns the per-group
    /// tensors (whose gradients a backward pass then holds).
    pub fn set_adapter_values(&mut self, values: &[f32], require_grad: bool) -> Vec<Tensor<1>> {
        let adapter = self
            .adapter
            .as_ref()
            .expect("set_adapter_values: no adapter attached");
        let sizes: Vec<usize> = adapter.trainable.iter().map(|t| t.dims()[0]).collect();
        assert_eq!(
            values.len(),
            sizes.iter().sum::<usize>(),
            "set_adapter_values: wrong number of values"
        );
        let tensors = group_tensors(values, &sizes, &adapter.config, &self.device, require_grad);
        self.set_adapter_trainable(tensors.clone());
        tensors
    }

    /// The trainable values (group order) as the host sees them.
    pub fn adapter_values(&self) -> Option<Vec<f32>> {
        let adapter = self.adapter.as_ref()?;
        Some(
            adapter
                .trainable
                .iter()
                .flat_map(|c| {
                    c.to_data()
                        .convert::<f32>()
                        .try_into_vec::<f32>()
                        .expect("f32 values")
                })
                .collect(),
        )
    }

    fn for_each_update(&mut self, mut f: impl FnMut(&mut Linear)) {
        for layer in 0..self.layers.len() {
            for kind in MODULE_TYPES {
                let linear = self.target_mut(layer, kind);
                if linear.update.is_some() {
                    f(linear);
                }
            }
        }
    }
}

/// `values` split into one tensor per group of `sizes`, rounded to the adapter's precision.
fn group_tensors(
    values: &[f32],
    sizes: &[usize],
    config: &AdapterConfig,
    device: &Device,
    require_grad: bool,
) -> Vec<Tensor<1>> {
    let mut rest = values;
    sizes
        .iter()
        .map(|&n| {
            let (v, tail) = rest.split_at(n);
            rest = tail;
            let rounded: Vec<f32> = v.iter().map(|&x| round_to(config.precision, x)).collect();
            let t = Tensor::from_data(TensorData::new(rounded, [n]), device);
            if require_grad {
                t.autodiff().require_grad()
            } else {
                t
            }
        })
        .collect()
}

impl Linear {
    /// W ← W + ΔW (or − ΔW with `subtract`) in every column chunk, in place when unshared.
    fn merge_update(&mut self, subtract: bool) {
        let Some(u) = self.update.as_ref() else { return };
        // merging is never differentiated
        let (coef, factors) = (u.coef.clone().inner(), u.factors.clone().inner());
        let chunks = std::mem::take(&mut self.weight_t);
        let mut col0 = 0;
        self.weight_t = chunks
            .into_iter()
            .map(|w| {
                let cols = w.dims()[1];
                let merged = lowrank_merge(w, factors.clone(), u.basis.clone(), coef.clone(), col0, subtract);
                col0 += cols;
                merged
            })
            .collect();
    }
}
