//! The frozen part of one adapted module: its rank-r SVD and the basis the trainable v mixes.
//!
//! With W ≈ U Σ Vᵀ (rank r) and the Σ convention folded into the basis, ΔW = U M Vᵀ with
//! M = Σᵢ vᵢ P̃ᵢ:
//! - TinyLoRA: P̃ᵢ = core(Σ, Pᵢ) (paper: Σ Pᵢ), i ≤ u, Pᵢ from [`projections`];
//! - LoRA-XS: P̃_(j,k) = core(Σ, E_jk), the r² unit matrices, so that v = vec R.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use tinylora_formats::{FormatError, ModelFile};

use crate::config::AdapterConfig;
use crate::projection::{core, delta_weight, mix};
use crate::svd::{TruncatedSvd, truncated_svd};
use crate::tie_groups::TieGroups;

/// Frozen factors and basis of adapted module `module` (its index in layer order).
#[derive(Debug, Clone, PartialEq)]
pub struct FrozenModule {
    /// The rank-r truncated SVD of the base weight.
    pub svd: TruncatedSvd,
    /// P̃ `[n_v, r, r]`, row-major.
    pub basis: Vec<f32>,
    /// Trainable numbers the module reads (u for TinyLoRA, r² for LoRA-XS).
    pub n_v: usize,
}

/// Seed of the randomized SVD of module `module` (any seed gives the same factors to ~1e-5;
/// a fixed one makes them bit-identical everywhere).
pub fn svd_seed(projection_seed: u64, module: usize) -> u64 {
    projection_seed ^ module as u64
}

impl FrozenModule {
    /// From the base weight W `[d_out, d_in]` (row-major) and the r × r matrices the values mix
    /// (see [`crate::Parametrization::mixing_matrices`]).
    pub fn new(
        config: &AdapterConfig,
        module: usize,
        mats: &[Vec<f32>],
        w: &[f32],
        d_out: usize,
        d_in: usize,
    ) -> Self {
        let svd = truncated_svd(
            w,
            d_out,
            d_in,
            config.rank,
            svd_seed(config.projection_seed, module),
        );
        let basis = mats.iter().flat_map(|p| core(&svd.s, p, config.sigma)).collect();
        FrozenModule {
            n_v: mats.len(),
            svd,
            basis,
        }
    }

    /// U stacked on V: `[d_out + d_in, r]`, row-major.
    pub fn stacked_factors(&self) -> Vec<f32> {
        let mut f = self.svd.u.clone();
        f.extend_from_slice(&self.svd.v);
        f
    }

    /// ΔW `[d_out, d_in]` = U (Σᵢ vᵢ P̃ᵢ) Vᵀ.
    pub fn delta(&self, v: &[f32]) -> Vec<f32> {
        delta_weight(&self.svd, &mix(v, &self.basis, self.svd.r))
    }
}

/// The frozen part of every module of `groups`, in layer order: each weight is read from
/// `file` and factorised on one of the machine's cores (largest-first is not needed: modules
/// are taken one at a time from a shared counter). `on_done` is called after each module.
/// Empty for a parametrization without frozen factors (LoRA).
pub fn frozen_modules(
    file: &ModelFile,
    config: &AdapterConfig,
    groups: &TieGroups,
    on_done: &(dyn Fn() + Sync),
) -> Result<Vec<FrozenModule>, FormatError> {
    if config.mixing_matrices(0).is_none() {
        return Ok(vec![]);
    }
    let jobs: Vec<(String, usize, usize)> = groups
        .modules
        .iter()
        .map(|slot| {
            let (d_out, d_in) = slot.kind.shape(&file.config);
            (slot.kind.weight_name(slot.layer), d_out, d_in)
        })
        .collect();
    let next = AtomicUsize::new(0);
    let done: Mutex<Vec<Option<Result<FrozenModule, FormatError>>>> =
        Mutex::new((0..jobs.len()).map(|_| None).collect());
    let work = || {
        loop {
            let k = next.fetch_add(1, Ordering::Relaxed);
            let Some((name, d_out, d_in)) = jobs.get(k) else {
                break;
            };
            let mats = config.mixing_matrices(k).unwrap_or_default();
            let module = file
                .load(name, &[*d_out, *d_in])
                .map(|w| FrozenModule::new(config, k, &mats, &w.data, *d_out, *d_in));
            done.lock().unwrap()[k] = Some(module);
            on_done();
        }
    };
    // wasm32 in a browser has no threads: available_parallelism fails there, so one worker
    // runs on the calling thread.
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(jobs.len().max(1));
    if threads == 1 {
        work();
    } else {
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(work);
            }
        });
    }
    done.into_inner()
        .unwrap()
        .into_iter()
        .map(|m| m.expect("every module is computed"))
        .collect()
}
