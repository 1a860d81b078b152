//! A model with an adapter: [`AdaptedModel`] wraps the engine's [`Transformer`] the way burn's
//! `LoraLinear` wraps a `Linear`, turning an adapter ([`AdapterParts`]) into the engine's
//! low-rank deltas and owning everything adapter-shaped: the tie groups, the trainable tensors
//! (one per group, shared by the group's modules), uploading values, collecting gradients and
//! the one [`DeltaMode`].
//!
//! For adapted module k with W `[d_out, d_in]` and tie group g:
//! - frozen factors (TinyLoRA, LoRA-XS, PEFT imports): factors = [U; V] `[d_out + d_in, r]`,
//!   basis P̃ `[n_v, r, r]`, coef = v_g `[n_v]`, so ΔW = U (Σᵢ v_g,ᵢ P̃ᵢ) Vᵀ;
//! - trainable factors (LoRA): factors = v_g reshaped to [B; Aᵀ] `[d_out + d_in, r]`, basis I,
//!   coef 1, so ΔW = B A.

use std::ops::Deref;

use burn::tensor::{Device, Gradients, Tensor, TensorData};
use tinylora_engine::{DeltaMode, EngineError, LowRankDelta, Transformer, read_f32, read_f32_async};
use tinylora_formats::{FormatError, ModelFile};
use tinylora_kernels::MAX_RANK;

use crate::adapter_file::round_to;
use crate::config::{AdapterConfig, Precision};
use crate::frozen::frozen_modules;
use crate::plan::group_sizes;
use crate::tie_groups::TieGroups;

/// Why an adapter cannot be attached or used.
#[derive(Debug, thiserror::Error)]
pub enum AdapterError {
    /// Reading a base weight failed.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// The adapter asks for something the kernels do not run.
    #[error("{0}")]
    Unsupported(String),
    /// The adapter does not fit this model, or the values do not fit the adapter.
    #[error("{0}")]
    Mismatch(String),
    /// An adapter operation on a model that has none attached.
    #[error("no adapter is attached")]
    NoAdapter,
    /// The device failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// A module's frozen factors and basis on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct FrozenParts {
    /// [U; V] `[d_out + d_in, r]`, row-major.
    pub factors: Vec<f32>,
    /// P̃ `[n_v, r, r]`, row-major.
    pub basis: Vec<f32>,
}

/// An adapter as host data, ready to attach.
#[derive(Debug, Clone, PartialEq)]
pub struct AdapterParts {
    /// Its configuration (for PEFT imports, the closest tinylora description).
    pub config: AdapterConfig,
    /// The adapted modules and the tie group of each.
    pub tie_groups: TieGroups,
    /// Per adapted module (`tie_groups.modules` order): its frozen part, or `None` when its
    /// group's values are its factors (LoRA).
    pub frozen: Vec<Option<FrozenParts>>,
    /// Each tie group's values.
    pub values: Vec<Vec<f32>>,
}

impl AdapterParts {
    /// The adapter `config` on the model in `file` with trainable `values` (group order, see
    /// [`group_sizes`]; [`crate::initial_values`] gives ΔW = 0): the frozen factors are the
    /// rank-r SVDs of the base weights, computed on every core (`on_module` after each).
    pub fn build(
        file: &ModelFile,
        config: &AdapterConfig,
        values: &[f32],
        on_module: &(dyn Fn() + Sync),
    ) -> Result<Self, AdapterError> {
        check_rank(config.rank)?;
        let sizes = group_sizes(&file.config, config);
        let needed: usize = sizes.iter().sum();
        if values.len() != needed {
            return Err(AdapterError::Mismatch(format!(
                "{} values given, the configuration needs {needed} ({} tie groups) on this model",
                values.len(),
                sizes.len()
            )));
        }
        let tie_groups = config.tie_groups(file.config.num_hidden_layers);
        let frozen = frozen_modules(file, config, &tie_groups, on_module)?;
        let frozen = if frozen.is_empty() {
            vec![None; tie_groups.modules.len()]
        } else {
            frozen
                .into_iter()
                .map(|m| {
                    Some(FrozenParts {
                        factors: m.stacked_factors(),
                        basis: m.basis,
                    })
                })
                .collect()
        };
        let values = split_groups(values, &sizes);
        Ok(AdapterParts {
            config: config.clone(),
            tie_groups,
            frozen,
            values,
        })
    }
}

fn check_rank(r: usize) -> Result<(), AdapterError> {
    if r == 0 || r > MAX_RANK {
        return Err(AdapterError::Unsupported(format!(
            "rank {r} is outside the kernels' range 1..={MAX_RANK}"
        )));
    }
    Ok(())
}

/// The adapter attached to an [`AdaptedModel`].
#[derive(Debug, Clone)]
pub struct AttachedAdapter {
    /// Its configuration.
    pub config: AdapterConfig,
    /// Module → tie group.
    pub tie_groups: TieGroups,
    /// The trainable values of each tie group (v, vec R, or LoRA's [B; Aᵀ] flattened); the
    /// modules' deltas hold clones of these, so tied modules share one tensor.
    pub trainable: Vec<Tensor<1>>,
    /// Per module: whether its group's values are its factors (LoRA) rather than its coef.
    values_are_factors: Vec<bool>,
}

/// A [`Transformer`] with an optional adapter; reads through to the model ([`Deref`]).
#[derive(Debug, Clone)]
pub struct AdaptedModel {
    model: Transformer,
    adapter: Option<AttachedAdapter>,
}

impl Deref for AdaptedModel {
    type Target = Transformer;
    fn deref(&self) -> &Transformer {
        &self.model
    }
}

impl From<Transformer> for AdaptedModel {
    fn from(model: Transformer) -> Self {
        AdaptedModel::new(model)
    }
}

impl AdaptedModel {
    /// `model` with no adapter.
    pub fn new(mut model: Transformer) -> Self {
        model.clear_deltas();
        AdaptedModel { model, adapter: None }
    }

    /// The model (with the adapter applied as [`Self::mode`] says).
    pub fn model(&self) -> &Transformer {
        &self.model
    }

    /// The base model, with the adapter removed.
    pub fn into_model(mut self) -> Transformer {
        self.detach();
        self.model
    }

    /// The attached adapter, if any.
    pub fn adapter(&self) -> Option<&AttachedAdapter> {
        self.adapter.as_ref()
    }

    fn attached(&self) -> Result<&AttachedAdapter, AdapterError> {
        self.adapter.as_ref().ok_or(AdapterError::NoAdapter)
    }

    /// Attach `parts` (replacing any adapter) on the activation path. Everything is checked
    /// against the model before anything changes.
    pub fn attach(&mut self, parts: AdapterParts) -> Result<(), AdapterError> {
        let r = parts.config.rank;
        check_rank(r)?;
        let n_layers = self.model.layers.len();
        let AdapterParts {
            config,
            tie_groups,
            frozen,
            values,
        } = parts;
        let n = tie_groups.modules.len();
        if frozen.len() != n || tie_groups.group.len() != n || values.len() != tie_groups.num_groups {
            return Err(AdapterError::Mismatch(format!(
                "{n} modules but {} frozen parts, {} group indices and {} groups of values for {} groups",
                frozen.len(),
                tie_groups.group.len(),
                values.len(),
                tie_groups.num_groups
            )));
        }
        for ((slot, &g), f) in tie_groups.modules.iter().zip(&tie_groups.group).zip(&frozen) {
            let what = format!("layers.{}.{}", slot.layer, slot.kind.hf_path());
            if slot.layer >= n_layers {
                return Err(AdapterError::Mismatch(format!(
                    "{what}: the model has {n_layers} layers"
                )));
            }
            let linear = self.model.projection(slot.layer, slot.kind);
            let rows = linear.d_out + linear.d_in;
            let values_len = values.get(g).map_or(0, Vec::len);
            let fits = match f {
                Some(p) => {
                    p.factors.len() == rows * r
                        && !p.basis.is_empty()
                        && p.basis.len() % (r * r) == 0
                        && values_len == p.basis.len() / (r * r)
                }
                None => values_len == rows * r,
            };
            if g >= values.len() || !fits {
                return Err(AdapterError::Mismatch(format!(
                    "{what} is [{}, {}] in the model; the adapter's factors, basis or values (group {g}) do not fit it at rank {r}",
                    linear.d_out, linear.d_in
                )));
            }
        }
        self.detach();
        let device = self.model.device.clone();
        let trainable = group_tensors(&values, config.precision, &device, false);
        let mut deltas: Vec<Option<LowRankDelta>> = tie_groups
            .modules
            .iter()
            .zip(&tie_groups.group)
            .zip(frozen.iter())
            .map(|((slot, &g), f)| {
                let linear = self.model.projection(slot.layer, slot.kind);
                let rows = linear.d_out + linear.d_in;
                Some(match f {
                    Some(p) => LowRankDelta::upload(
                        p.factors.clone(),
                        p.basis.clone(),
                        rows,
                        r,
                        trainable[g].clone(),
                        &device,
                    ),
                    None => LowRankDelta {
                        factors: trainable[g].clone().reshape([rows, r]),
                        basis: Tensor::<2>::eye(r, &device).reshape([1, r, r]),
                        coef: Tensor::ones([1], &device),
                    },
                })
            })
            .collect();
        let slots = tie_groups.modules.clone();
        self.model.update_deltas(|layer, kind, d| {
            if let Some(k) = slots.iter().position(|s| s.layer == layer && s.kind == kind) {
                *d = deltas[k].take();
            }
        });
        self.model.set_delta_mode(DeltaMode::Activation);
        self.adapter = Some(AttachedAdapter {
            config,
            tie_groups,
            trainable,
            values_are_factors: frozen.iter().map(Option::is_none).collect(),
        });
        Ok(())
    }

    /// Build the adapter `config` with `values` from the weights in `file` (the model's own
    /// file: [`AdapterParts::build`]) and attach it.
    pub fn attach_adapter(
        &mut self,
        file: &ModelFile,
        config: &AdapterConfig,
        values: &[f32],
        on_module: &(dyn Fn() + Sync),
    ) -> Result<(), AdapterError> {
        self.attach(AdapterParts::build(file, config, values, on_module)?)
    }

    /// Remove the adapter (unmerging it first), leaving the base model.
    pub fn detach(&mut self) {
        self.model.clear_deltas();
        self.adapter = None;
    }

    /// Keep the base weights aside while the adapter is merged, so that each merge gives
    /// exactly W + ΔW of the current values ([`Transformer::keep_base_weights`]).
    pub fn keep_base_weights(&mut self, keep: bool) {
        self.model.keep_base_weights(keep);
    }

    /// How the adapter applies (always [`DeltaMode::Off`] without one).
    pub fn mode(&self) -> DeltaMode {
        self.model.delta_mode()
    }

    /// Switch between the base model, the update on the activation path and merged weights.
    /// Switching on with no adapter attached is an error; switching off always works.
    pub fn set_mode(&mut self, mode: DeltaMode) -> Result<(), AdapterError> {
        if self.adapter.is_none() && mode != DeltaMode::Off {
            return Err(AdapterError::NoAdapter);
        }
        self.model.set_delta_mode(mode);
        Ok(())
    }

    /// Upload new trainable values (group order, as [`AdapterParts::build`] takes them),
    /// rounded to the adapter's precision, optionally as tensors that require gradients;
    /// returns the per-group tensors (whose gradients a backward pass then holds). Merged
    /// weights are unmerged with the old values and merged with the new.
    pub fn set_values(&mut self, values: &[f32], require_grad: bool) -> Result<Vec<Tensor<1>>, AdapterError> {
        let adapter = self.attached()?;
        let sizes: Vec<usize> = adapter.trainable.iter().map(|t| t.dims()[0]).collect();
        let needed: usize = sizes.iter().sum();
        if values.len() != needed {
            return Err(AdapterError::Mismatch(format!(
                "{} values given, the adapter has {needed}",
                values.len()
            )));
        }
        let groups = split_groups(values, &sizes);
        let tensors = group_tensors(
            &groups,
            adapter.config.precision,
            &self.model.device,
            require_grad,
        );
        let (slots, group, as_factors) = (
            adapter.tie_groups.modules.clone(),
            adapter.tie_groups.group.clone(),
            adapter.values_are_factors.clone(),
        );
        self.model.update_deltas(|layer, kind, d| {
            let (Some(d), Some(k)) = (
                d.as_mut(),
                slots.iter().position(|s| s.layer == layer && s.kind == kind),
            ) else {
                return;
            };
            let t = tensors[group[k]].clone();
            if as_factors[k] {
                let [rows, r] = d.factors.dims();
                d.factors = t.reshape([rows, r]);
            } else {
                d.coef = t;
            }
        });
        if let Some(a) = self.adapter.as_mut() {
            a.trainable = tensors.clone();
        }
        Ok(tensors)
    }

    /// The trainable values (group order) as the model applies them.
    pub fn values(&self) -> Result<Vec<f32>, AdapterError> {
        let mut out = Vec::new();
        for t in &self.attached()?.trainable {
            out.extend(read_f32(t.clone(), "adapter values")?);
        }
        Ok(out)
    }

    /// ∂L/∂values (group order) from a backward pass through tensors that [`Self::set_values`]
    /// returned with `require_grad`; zeros for groups the loss does not reach. One read of
    /// the device, awaited (a browser's WebGPU can only be read asynchronously).
    pub async fn gradient(&self, grads: &Gradients) -> Result<Vec<f32>, AdapterError> {
        let parts: Vec<Tensor<1>> = self
            .attached()?
            .trainable
            .iter()
            .map(|t| t.grad(grads).unwrap_or_else(|| t.clone().inner().zeros_like()))
            .collect();
        if parts.is_empty() {
            return Ok(Vec::new());
        }
        Ok(read_f32_async(Tensor::cat(parts, 0), "adapter gradient").await?)
    }
}

/// `values` (group order) cut into groups of `sizes` (which add up to its length).
fn split_groups(values: &[f32], sizes: &[usize]) -> Vec<Vec<f32>> {
    let mut rest = values;
    sizes
        .iter()
        .map(|&n| {
            let (v, tail) = rest.split_at(n);
            rest = tail;
            v.to_vec()
        })
        .collect()
}

/// One tensor per group, rounded to `precision`.
fn group_tensors(
    groups: &[Vec<f32>],
    precision: Precision,
    device: &Device,
    require_grad: bool,
) -> Vec<Tensor<1>> {
    groups
        .iter()
        .map(|v| {
            let rounded: Vec<f32> = v.iter().map(|&x| round_to(precision, x)).collect();
            let t = Tensor::from_data(TensorData::new(rounded, [v.len()]), device);
            if require_grad {
                t.autodiff().require_grad()
            } else {
                t
            }
        })
        .collect()
}
