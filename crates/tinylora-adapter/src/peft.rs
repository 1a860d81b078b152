//! Hugging Face PEFT adapter directories (`adapter_config.json` + `adapter_model.safetensors`):
//! TinyLoRA and plain LoRA, read into per-module factors the engine runs as they are.
//!
//! PEFT's TinyLoRA stores, per target module (model order), the frozen `tinylora_A` = √Σ Vᵀ
//! `[r, d_in]`, `tinylora_B` = U √Σ `[d_out, r]` and the projections `tinylora_P` `[u, r, r]`, and
//! per tie group `tinylora_v.<g>` `[u]`: ΔW = B (Σᵢ vᵢ Pᵢ) A. Module k (of n) belongs to group
//! min(k / ⌊n/G⌋, G − 1) with G = max(1, round(n (1 − weight_tying))). LoRA stores
//! `lora_A.weight` `[r, d_in]` and `lora_B.weight` `[d_out, r]`: ΔW = (α/r) B A (α/√r with
//! rsLoRA). Either way the engine gets factors [B; Aᵀ] `[d_out + d_in, r]`, a basis and a
//! coefficient vector, exactly as for its own adapters.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

use tinylora_formats::{ModelConfig, ModuleKind, safetensors_f32};

use crate::adapted::{AdapterParts, FrozenParts};
use crate::adapter_file::AdapterFileError;
use crate::config::{AdapterConfig, Method, SigmaConvention};
use crate::tie_groups::{ModuleSlot, TieGroups};

/// Errors name the file (`adapter_config.json` or `adapter_model.safetensors`) and the problem.
pub type PeftError = AdapterFileError;

fn invalid(path: &Path, message: impl Into<String>) -> PeftError {
    AdapterFileError::Invalid {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// A PEFT method tinylora does not read (`peft_type` is empty when absent).
fn unsupported(cfg_path: &Path, peft_type: &str) -> PeftError {
    let what = match peft_type {
        "" => "no `peft_type`".to_string(),
        t => format!("{t} is not supported"),
    };
    invalid(cfg_path, format!("{what} (tinylora reads TINYLORA and LORA)"))
}

/// Which PEFT method a directory holds.
#[derive(Debug, Clone, PartialEq)]
pub enum PeftMethod {
    /// ΔW = B (Σᵢ vᵢ Pᵢ) A with `u` trainable numbers per tie group.
    TinyLora {
        /// Trainable numbers per group.
        u: usize,
        /// Fraction of sharing (0: none, 1: one group).
        weight_tying: f64,
    },
    /// ΔW = scaling · B A.
    Lora {
        /// α/r, or α/√r with rsLoRA.
        scaling: f32,
    },
}

/// One adapted module as the engine runs it.
#[derive(Debug, Clone, PartialEq)]
pub struct PeftModule {
    /// Decoder layer.
    pub layer: usize,
    /// Which projection.
    pub kind: ModuleKind,
    /// Output features.
    pub d_out: usize,
    /// Input features.
    pub d_in: usize,
    /// [B; Aᵀ] `[d_out + d_in, r]`, row-major (LoRA: B already scaled).
    pub factors: Vec<f32>,
    /// P `[n_v, r, r]` (LoRA: the identity, n_v = 1).
    pub basis: Vec<f32>,
    /// The tie group whose values this module mixes (LoRA: none, the coefficient is 1).
    pub group: Option<usize>,
}

/// A PEFT adapter directory, read and checked.
#[derive(Debug, Clone, PartialEq)]
pub struct PeftAdapter {
    /// The directory.
    pub dir: PathBuf,
    /// TinyLoRA or LoRA.
    pub method: PeftMethod,
    /// Rank r.
    pub rank: usize,
    /// The adapted modules in model order (layer, then q k v o gate up down).
    pub modules: Vec<PeftModule>,
    /// Each tie group's trainable values (TinyLoRA's v; empty for LoRA).
    pub values: Vec<Vec<f32>>,
}

/// Whether `path` looks like a PEFT adapter directory.
pub fn is_peft_dir(path: &Path) -> bool {
    path.join("adapter_config.json").is_file()
}

/// `layers.<L>.(self_attn|mlp).<kind>_proj.<rest>` → (L, kind, rest).
fn module_key(name: &str) -> Option<(usize, ModuleKind, &str)> {
    let rest = &name[name.find("layers.")? + "layers.".len()..];
    let (layer, rest) = rest.split_once('.')?;
    let (_, rest) = rest.split_once('.')?; // self_attn / mlp
    let (proj, tail) = rest.split_once('.')?;
    let kind = proj.strip_suffix("_proj")?.parse().ok()?;
    Some((layer.parse().ok()?, kind, tail))
}

/// A tensor's shape and values as f32.
type Shaped = (Vec<usize>, Vec<f32>);

fn f32_data(path: &Path, name: &str, st: &SafeTensors) -> Result<Shaped, PeftError> {
    let t = st
        .tensor(name)
        .map_err(|e| invalid(path, format!("tensor {name}: {e}")))?;
    let data = safetensors_f32(t.dtype(), t.data()).ok_or_else(|| {
        invalid(
            path,
            format!("tensor {name} is {:?}; expected F32, BF16 or F16", t.dtype()),
        )
    })?;
    if let Some((i, v)) = data.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(invalid(
            path,
            format!("tensor {name}: value #{i} is {v} (adapter values must be finite)"),
        ));
    }
    Ok((t.shape().to_vec(), data))
}

/// `[rows, cols]` → `[cols, rows]`.
fn transpose(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    (0..cols)
        .flat_map(|c| (0..rows).map(move |r| data[r * cols + c]))
        .collect()
}

impl PeftAdapter {
    /// Read `dir/adapter_config.json` and `dir/adapter_model.safetensors`.
    pub fn load(dir: &Path) -> Result<Self, PeftError> {
        let cfg_path = dir.join("adapter_config.json");
        let text = std::fs::read_to_string(&cfg_path).map_err(|error| AdapterFileError::Io {
            path: cfg_path.clone(),
            error,
        })?;
        let cfg: Value =
            serde_json::from_str(&text).map_err(|e| invalid(&cfg_path, format!("invalid JSON: {e}")))?;
        let st_path = dir.join("adapter_model.safetensors");
        let bytes = std::fs::read(&st_path).map_err(|error| AdapterFileError::Io {
            path: st_path.clone(),
            error,
        })?;
        let st = SafeTensors::deserialize(&bytes)
            .map_err(|e| invalid(&st_path, format!("not a safetensors file: {e}")))?;
        Self::parse(dir, &cfg_path, &cfg, &st_path, &st)
    }

    fn parse(
        dir: &Path,
        cfg_path: &Path,
        cfg: &Value,
        st_path: &Path,
        st: &SafeTensors,
    ) -> Result<Self, PeftError> {
        let field = |k: &str| cfg.get(k).filter(|v| !v.is_null());
        let num = |k: &str| {
            field(k)
                .and_then(Value::as_u64)
                .map(|v| v as usize)
                .ok_or_else(|| invalid(cfg_path, format!("missing or non-integer `{k}`")))
        };
        let peft_type = field("peft_type").and_then(Value::as_str).unwrap_or("");
        // the method first: other methods' configs lack (or mean otherwise) the fields below
        if !matches!(peft_type, "TINYLORA" | "LORA") {
            return Err(unsupported(cfg_path, peft_type));
        }
        let refuse = |k: &str, ok: &dyn Fn(&Value) -> bool, why: &str| match field(k) {
            Some(v) if !ok(v) => Err(invalid(cfg_path, format!("`{k}` = {v}: {why}"))),
            _ => Ok(()),
        };
        refuse(
            "fan_in_fan_out",
            &|v| v == &Value::Bool(false),
            "Conv1D-style (fan_in, fan_out) weights are not supported",
        )?;
        refuse(
            "bias",
            &|v| v == "none",
            "adapters that train biases are not supported",
        )?;
        refuse(
            "modules_to_save",
            &|v| v.as_array().is_some_and(Vec::is_empty),
            "extra fully trained modules are not supported",
        )?;
        refuse(
            "layers_to_transform",
            &|_| false,
            "adapting only some layers is not supported",
        )?;
        let rank = num("r")?;
        let method = match peft_type {
            "TINYLORA" => {
                refuse(
                    "save_projection",
                    &|v| v == &Value::Bool(true),
                    "the projections P are not stored (PEFT regenerates them with torch's generator, which tinylora does not reproduce); save with save_projection=True",
                )?;
                PeftMethod::TinyLora {
                    u: num("u")?,
                    weight_tying: field("weight_tying").and_then(Value::as_f64).unwrap_or(0.0),
                }
            }
            "LORA" => {
                refuse("use_dora", &|v| v == &Value::Bool(false), "DoRA is not supported")?;
                refuse(
                    "rank_pattern",
                    &|v| v.as_object().is_some_and(|m| m.is_empty()),
                    "per-module ranks are not supported",
                )?;
                refuse(
                    "alpha_pattern",
                    &|v| v.as_object().is_some_and(|m| m.is_empty()),
                    "per-module alphas are not supported",
                )?;
                let alpha = field("lora_alpha").and_then(Value::as_f64).unwrap_or(8.0);
                let rs = field("use_rslora").and_then(Value::as_bool).unwrap_or(false);
                let scaling = if rs {
                    alpha / (rank as f64).sqrt()
                } else {
                    alpha / rank as f64
                };
                PeftMethod::Lora {
                    scaling: scaling as f32,
                }
            }
            other => return Err(unsupported(cfg_path, other)),
        };
        // tensors by module
        let mut by_module: HashMap<(usize, ModuleKind), HashMap<String, Shaped>> = HashMap::new();
        let mut v_by_group: HashMap<usize, Vec<f32>> = HashMap::new();
        for name in st.names() {
            if let Some(g) = name.rsplit_once("tinylora_v.").map(|(_, g)| g) {
                let g: usize = g
                    .parse()
                    .map_err(|_| invalid(st_path, format!("tensor {name}: bad group index")))?;
                v_by_group.insert(g, f32_data(st_path, name, st)?.1);
                continue;
            }
            let (layer, kind, tail) = module_key(name).ok_or_else(|| {
                invalid(
                    st_path,
                    format!("tensor {name} is not an adapted q/k/v/o/gate/up/down projection"),
                )
            })?;
            by_module
                .entry((layer, kind))
                .or_default()
                .insert(tail.to_string(), f32_data(st_path, name, st)?);
        }
        let mut keys: Vec<(usize, ModuleKind)> = by_module.keys().copied().collect();
        keys.sort();
        if keys.is_empty() {
            return Err(invalid(st_path, "no adapted modules in the file"));
        }
        let n = keys.len();
        let mut modules = Vec::with_capacity(n);
        for (k, &(layer, kind)) in keys.iter().enumerate() {
            let t = &by_module[&(layer, kind)];
            let what = |s: &str| format!("layers.{layer} {kind}_proj {s}");
            let (a_name, b_name) = match method {
                PeftMethod::TinyLora { .. } => ("tinylora_A", "tinylora_B"),
                PeftMethod::Lora { .. } => ("lora_A.weight", "lora_B.weight"),
            };
            let get = |s: &str| {
                t.get(s)
                    .ok_or_else(|| invalid(st_path, format!("missing {}", what(s))))
            };
            let (a_shape, a) = get(a_name)?;
            let (b_shape, b) = get(b_name)?;
            if a_shape.len() != 2 || b_shape.len() != 2 || a_shape[0] != rank || b_shape[1] != rank {
                return Err(invalid(
                    st_path,
                    format!(
                        "{}: A {a_shape:?}, B {b_shape:?} do not have rank r = {rank}",
                        what("")
                    ),
                ));
            }
            let (d_out, d_in) = (b_shape[0], a_shape[1]);
            let (factors_b, basis, group) = match method {
                PeftMethod::TinyLora { u, weight_tying } => {
                    let (p_shape, p) = get("tinylora_P")?;
                    if p_shape != &[u, rank, rank] {
                        return Err(invalid(
                            st_path,
                            format!(
                                "{}: shape {p_shape:?}, expected [{u}, {rank}, {rank}]",
                                what("tinylora_P")
                            ),
                        ));
                    }
                    (b.clone(), p.clone(), Some(peft_group(k, n, weight_tying)))
                }
                PeftMethod::Lora { scaling } => {
                    let eye = (0..rank * rank)
                        .map(|i| f32::from(u8::from(i % (rank + 1) == 0)))
                        .collect();
                    (b.iter().map(|x| x * scaling).collect(), eye, None)
                }
            };
            let mut factors = factors_b;
            factors.extend(transpose(a, rank, d_in));
            modules.push(PeftModule {
                layer,
                kind,
                d_out,
                d_in,
                factors,
                basis,
                group,
            });
        }
        let values = match method {
            PeftMethod::TinyLora { u, .. } => {
                let groups = modules.iter().filter_map(|m| m.group).max().map_or(0, |g| g + 1);
                (0..groups)
                    .map(|g| {
                        let v = v_by_group.remove(&g).ok_or_else(|| {
                            invalid(st_path, format!("missing tinylora_v.{g} (tie group {g})"))
                        })?;
                        if v.len() != u {
                            return Err(invalid(
                                st_path,
                                format!("tinylora_v.{g} has {} values, expected u = {u}", v.len()),
                            ));
                        }
                        Ok(v)
                    })
                    .collect::<Result<Vec<_>, _>>()?
            }
            PeftMethod::Lora { .. } => vec![],
        };
        Ok(PeftAdapter {
            dir: dir.to_path_buf(),
            method,
            rank,
            modules,
            values,
        })
    }
}

/// PEFT's group of module k of n under `weight_tying`.
fn peft_group(k: usize, n: usize, weight_tying: f64) -> usize {
    let groups = ((n as f64 * (1.0 - weight_tying)).round() as usize).max(1);
    (k / (n / groups).max(1)).min(groups - 1)
}

/// Why an adapter cannot be written in PEFT's format.
#[derive(Debug, thiserror::Error)]
pub enum PeftExportError {
    /// The adapter uses something PEFT cannot express.
    #[error("{0}")]
    Unsupported(String),
    /// The values do not fit the configuration on this model.
    #[error("{found} values, but the configuration needs {needed} on this model")]
    Values {
        /// Values in the adapter.
        found: usize,
        /// Values the configuration needs.
        needed: usize,
    },
    /// Serialising the tensors failed.
    #[error("serialising the tensors failed")]
    Tensors(#[from] safetensors::SafeTensorError),
    /// Serialising the configuration failed.
    #[error("serialising adapter_config.json failed")]
    Json(#[from] serde_json::Error),
}

/// The files of a PEFT adapter directory for a tinylora adapter.
#[derive(Debug, Clone)]
pub struct PeftExport {
    /// `adapter_config.json`.
    pub config_json: String,
    /// `adapter_model.safetensors`.
    pub safetensors: Vec<u8>,
}

/// Express a tinylora adapter in PEFT's format: TinyLoRA and LoRA-XS as PEFT TinyLoRA (B, A
/// carry the Σ convention's split of Σ; LoRA-XS's R becomes u = r² unit projections), LoRA as
/// PEFT LoRA (α = r). `frozen` holds the modules' SVDs (layer order; empty for LoRA) on
/// `model`. Tying must be one PEFT can express: none, full, or tiled runs of equal length over
/// modules in model order.
pub fn to_peft(
    adapter: &crate::AdapterFile,
    model: &tinylora_formats::ModelConfig,
    frozen: &[crate::FrozenModule],
) -> Result<PeftExport, PeftExportError> {
    use crate::config::Tying;
    use safetensors::tensor::TensorView;

    let cfg = &adapter.config;
    let r = cfg.rank;
    let groups = &cfg.tie_groups(model.num_hidden_layers);
    let n = groups.modules.len();
    let in_model_order = cfg.targets.windows(2).all(|w| w[0] < w[1]);
    if !in_model_order {
        return Err(PeftExportError::Unsupported(format!(
            "targets {:?} are not in the model's order (q k v o gate up down), which PEFT's tying follows",
            cfg.targets
        )));
    }
    let weight_tying = match cfg.tying {
        Tying::None => 0.0,
        Tying::Full => 1.0,
        _ => 1.0 - groups.num_groups as f64 / n as f64,
    };
    if cfg.method != Method::Lora && (0..n).any(|k| peft_group(k, n, weight_tying) != groups.group[k]) {
        return Err(PeftExportError::Unsupported(format!(
            "tying {:?} cannot be expressed by PEFT's weight_tying (runs of equal length over neighbouring modules)",
            cfg.tying
        )));
    }
    let sizes = crate::group_sizes(model, cfg);
    if adapter.values.len() != sizes.iter().sum::<usize>() {
        return Err(PeftExportError::Values {
            found: adapter.values.len(),
            needed: sizes.iter().sum::<usize>(),
        });
    }
    let starts = crate::plan::group_offsets(&sizes);
    let bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (k, (slot, &g)) in groups.modules.iter().zip(&groups.group).enumerate() {
        let name = format!(
            "base_model.model.model.layers.{}.{}",
            slot.layer,
            slot.kind.hf_path()
        );
        let (d_out, d_in) = slot.kind.shape(model);
        let values = &adapter.values[starts[g]..starts[g] + sizes[g]];
        let (b, a_t) = match cfg.method {
            Method::Lora => (values[..d_out * r].to_vec(), values[d_out * r..].to_vec()),
            _ => {
                let svd = &frozen[k].svd;
                let (left, right) = crate::sigma_split(&svd.s, cfg.sigma);
                let scale = |m: &[f32], d: &[f32]| -> Vec<f32> {
                    m.chunks_exact(r)
                        .flat_map(|row| row.iter().zip(d).map(|(x, s)| x * s))
                        .collect()
                };
                (scale(&svd.u, &left), scale(&svd.v, &right))
            }
        };
        let a = transpose(&a_t, d_in, r); // [r, d_in]
        let (a_name, b_name) = match cfg.method {
            Method::Lora => ("lora_A.weight", "lora_B.weight"),
            _ => ("tinylora_A", "tinylora_B"),
        };
        tensors.push((format!("{name}.{a_name}"), vec![r, d_in], bytes(&a)));
        tensors.push((format!("{name}.{b_name}"), vec![d_out, r], bytes(&b)));
        if let Some(mats) = cfg.mixing_matrices(k) {
            let p: Vec<f32> = mats.concat();
            tensors.push((format!("{name}.tinylora_P"), vec![sizes[g], r, r], bytes(&p)));
        }
    }
    if cfg.method != Method::Lora {
        for g in 0..groups.num_groups {
            let v = &adapter.values[starts[g]..starts[g] + sizes[g]];
            tensors.push((format!("base_model.tinylora_v.{g}"), vec![sizes[g]], bytes(v)));
        }
    }
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(name, shape, data)| {
            TensorView::new(Dtype::F32, shape.clone(), data).map(|v| (name.clone(), v))
        })
        .collect::<Result<_, _>>()?;
    let metadata = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    let safetensors = safetensors::serialize(views, Some(metadata))?;
    let target_modules: Vec<String> = cfg.targets.iter().map(|t| format!("{t}_proj")).collect();
    let config = match cfg.method {
        Method::Lora => serde_json::json!({
            "peft_type": "LORA", "r": r, "lora_alpha": r, "target_modules": target_modules,
            "lora_dropout": 0.0, "bias": "none", "fan_in_fan_out": false, "use_rslora": false,
            "use_dora": false, "init_lora_weights": true, "inference_mode": true,
            "base_model_name_or_path": null, "task_type": null,
        }),
        _ => serde_json::json!({
            "peft_type": "TINYLORA", "r": r, "u": sizes.first().copied().unwrap_or(cfg.u),
            "weight_tying": weight_tying, "projection_seed": cfg.projection_seed,
            "save_projection": true, "target_modules": target_modules, "tinylora_dropout": 0.0,
            "bias": "none", "fan_in_fan_out": false, "init_weights": true, "inference_mode": true,
            "base_model_name_or_path": null, "task_type": null,
        }),
    };
    Ok(PeftExport {
        config_json: serde_json::to_string_pretty(&config)?,
        safetensors,
    })
}

impl PeftAdapter {
    /// This PEFT adapter as a tinylora adapter for a model with configuration `model`, its
    /// stored factors used as they are (no SVD is recomputed, so ΔW is exactly PEFT's). A LoRA
    /// module becomes frozen factors [B; Aᵀ] mixed by a fixed coefficient 1 (a group of its own).
    pub fn to_parts(&self, model: &ModelConfig) -> Result<AdapterParts, PeftError> {
        let n_layers = model.num_hidden_layers;
        for m in &self.modules {
            let (d_out, d_in) = m.kind.shape(model);
            let mismatch = if m.layer >= n_layers {
                Some(format!("layer {} (the model has {n_layers})", m.layer))
            } else {
                ((m.d_out, m.d_in) != (d_out, d_in)).then(|| {
                    format!(
                        "layers.{}.{}_proj is [{}, {}] in the adapter but [{d_out}, {d_in}] in the model",
                        m.layer, m.kind, m.d_out, m.d_in
                    )
                })
            };
            if let Some(what) = mismatch {
                return Err(invalid(&self.dir, format!("made for another model: {what}")));
            }
        }
        let (method, u) = match self.method {
            PeftMethod::TinyLora { u, .. } => (Method::Tinylora, u),
            PeftMethod::Lora { .. } => (Method::Lora, 1),
        };
        let mut targets: Vec<ModuleKind> = self.modules.iter().map(|m| m.kind).collect();
        targets.sort();
        targets.dedup();
        let lora_groups = self.values.len();
        let group: Vec<usize> = self
            .modules
            .iter()
            .enumerate()
            .map(|(k, m)| m.group.unwrap_or(lora_groups + k))
            .collect();
        let mut values = self.values.clone();
        values.extend(
            self.modules
                .iter()
                .filter(|m| m.group.is_none())
                .map(|_| vec![1.0]),
        );
        Ok(AdapterParts {
            config: AdapterConfig {
                method,
                rank: self.rank,
                u,
                targets,
                sigma: SigmaConvention::Peft,
                ..AdapterConfig::default()
            },
            tie_groups: TieGroups {
                modules: self
                    .modules
                    .iter()
                    .map(|m| ModuleSlot {
                        layer: m.layer,
                        kind: m.kind,
                    })
                    .collect(),
                num_groups: values.len(),
                group,
            },
            frozen: self
                .modules
                .iter()
                .map(|m| {
                    Some(FrozenParts {
                        factors: m.factors.clone(),
                        basis: m.basis.clone(),
                    })
                })
                .collect(),
            values,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::tensor::TensorView;

    /// A temporary PEFT directory with `config` and tensors `(name, shape, values)` (F32).
    fn peft_dir(config: Value, tensors: &[(&str, Vec<usize>, Vec<f32>)]) -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        std::fs::write(dir.join("adapter_config.json"), config.to_string()).unwrap();
        let bytes: Vec<Vec<u8>> = tensors
            .iter()
            .map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect())
            .collect();
        let views: Vec<(String, TensorView)> = tensors
            .iter()
            .zip(&bytes)
            .map(|((n, s, _), b)| (n.to_string(), TensorView::new(Dtype::F32, s.clone(), b).unwrap()))
            .collect();
        std::fs::write(
            dir.join("adapter_model.safetensors"),
            safetensors::serialize(views, None).unwrap(),
        )
        .unwrap();
        tmp
    }

    #[test]
    fn other_peft_methods_are_named_as_unsupported() {
        let ia3 = serde_json::json!({
            "peft_type": "IA3", "target_modules": ["k_proj", "v_proj", "down_proj"],
            "feedforward_modules": ["down_proj"], "fan_in_fan_out": false,
        });
        let v = vec![1.0; 4];
        let t = [(
            "base_model.model.model.layers.0.self_attn.k_proj.ia3_l",
            vec![4, 1],
            v,
        )];
        let e = PeftAdapter::load(peft_dir(ia3, &t).path())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("adapter_config.json: IA3 is not supported (tinylora reads TINYLORA and LORA)"),
            "{e}"
        );
        let e = PeftAdapter::load(peft_dir(serde_json::json!({"r": 2}), &[]).path())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no `peft_type` (tinylora reads TINYLORA and LORA)"),
            "{e}"
        );
    }

    #[test]
    fn non_finite_factors_are_refused_naming_the_tensor_and_index() {
        let config = serde_json::json!({"peft_type": "LORA", "r": 1, "lora_alpha": 1});
        let a = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight";
        let b = "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight";
        let tensors = [
            (a, vec![1, 4], vec![0.5, 0.5, f32::NAN, 0.5]),
            (b, vec![4, 1], vec![0.0; 4]),
        ];
        let e = PeftAdapter::load(peft_dir(config, &tensors).path())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!("adapter_model.safetensors: tensor {a}: value #2 is NaN")),
            "{e}"
        );
    }
}
