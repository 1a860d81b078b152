//! A whole training run, for any [`TrainingMethod`] (GRPO, SFT): attach the adapter (or resume
//! it), evaluate the base model on held-out problems, take steps with a durable checkpoint and
//! a metrics line after each, stop cleanly when asked, evaluate again. The CLI, the browser or
//! a user's program drive it the same way, watching it through an [`Observer`].
//!
//! Every random choice is derived from (seed, step): the problems of a step from a per-epoch
//! shuffle, the samples from per-sequence streams seeded by the step. A run resumed from a
//! checkpoint therefore continues as the uninterrupted run would have.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use burn::tensor::Tensor;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use tinylora_adapter::adapter_file::round_to;
use tinylora_adapter::{
    AdaptedModel, AdapterConfig, AdapterFile, AdapterParts, ParameterPlan, initial_values, plan,
};
use tinylora_engine::{DeltaMode, Transformer};
use tinylora_formats::ModelFile;
use tinylora_formats::fingerprint::Fnv1a;

use crate::collective::{Collective, shard, sum_f32};
use crate::data::Problem;
use crate::error::TrainError;
use crate::eval::{EvalReport, EvalSettings, evaluate_until};
use crate::metrics::StepMetrics;
use crate::optim::{AdamW, clip_grad_norm};
use crate::run_files::{RunFiles, RunLock, TrainState};

/// The problems of step `step` (0-based): a fresh shuffle of all problems each epoch.
pub fn step_problems(problems: &[Problem], per_step: usize, seed: u64, step: usize) -> Vec<Problem> {
    let n = problems.len();
    // the order of one epoch, shuffled once per epoch the step touches
    let mut order: (usize, Vec<usize>) = (usize::MAX, Vec::new());
    (step * per_step..(step + 1) * per_step)
        .map(|i| {
            let (epoch, k) = (i / n, i % n);
            if order.0 != epoch {
                let mut o: Vec<usize> = (0..n).collect();
                o.shuffle(&mut ChaCha8Rng::seed_from_u64(
                    seed ^ (epoch as u64).wrapping_mul(0x9e37_79b9),
                ));
                order = (epoch, o);
            }
            problems[order.1[k]].clone()
        })
        .collect()
}

/// The model with its adapter and the optimizer state: what a method's step works on.
pub struct AdapterRun<'a> {
    /// The base model's file (tokenizer, template, fingerprint).
    pub file: &'a ModelFile,
    /// The model, with the adapter attached.
    pub model: &'a mut AdaptedModel,
    /// The adapter's configuration.
    pub adapter: AdapterConfig,
    /// Step and optimizer.
    pub state: TrainState,
    /// The processes of the run (one: [`Single`]), whose shares of the batch the gradient,
    /// the loss normalisers and the metrics combine.
    pub collective: &'a dyn Collective,
}

impl AdapterRun<'_> {
    /// The values as the model applies them (rounded to the adapter's precision).
    pub fn applied_values(&self) -> Vec<f32> {
        self.state
            .values
            .iter()
            .map(|&x| round_to(self.adapter.precision, x))
            .collect()
    }

    /// The adapter file for the current values.
    pub fn adapter_file(&self) -> AdapterFile {
        AdapterFile {
            config: self.adapter.clone(),
            base_fingerprint: self.file.fingerprint(),
            values: self.applied_values(),
        }
    }

    /// Add ∂`loss`/∂values (group order) to `sum` by backpropagating `loss` (whose value is
    /// `loss_value`) to the values last uploaded with gradients: one pass's share of a step's
    /// gradient, which [`Self::apply_gradient`] then takes summed. A non-finite loss is an error
    /// and leaves `sum` as it was. Awaits the gradient's read-back (the browser's only way).
    pub async fn add_gradient_async(
        &self,
        loss: Tensor<1>,
        loss_value: f32,
        sum: &mut [f32],
    ) -> Result<(), TrainError> {
        if !loss_value.is_finite() {
            return Err(TrainError::NonFinite {
                step: self.state.step + 1,
                what: "loss",
                value: loss_value,
            });
        }
        let grads = loss.backward();
        let g = self.model.gradient(&grads).await?;
        sum.iter_mut().zip(g).for_each(|(a, b)| *a += b);
        Ok(())
    }

    /// Sum this process's share `g` of the gradient of the values with the other processes'
    /// (the whole gradient in one process), clip it to `max_norm` and take one AdamW step at
    /// `lr`; returns the gradient norm before clipping. A non-finite gradient or result is an
    /// error and leaves the values as they were.
    pub fn apply_gradient(&mut self, mut g: Vec<f32>, max_norm: f32, lr: f32) -> Result<f32, TrainError> {
        sum_f32(self.collective, &mut g);
        let step = self.state.step + 1;
        let non_finite = |what, value: f32| TrainError::NonFinite { step, what, value };
        if let Some(&bad) = g.iter().find(|x| !x.is_finite()) {
            return Err(non_finite("gradient", bad));
        }
        let norm = clip_grad_norm(&mut g, max_norm);
        let mut next = self.state.clone();
        next.optimizer.step(&mut next.values, &g, lr);
        if let Some(&bad) = next.values.iter().find(|x| !x.is_finite()) {
            return Err(non_finite("values", bad));
        }
        self.state = next;
        Ok(norm)
    }
}

/// A training method: one optimizer step at a time on an [`AdapterRun`].
pub trait TrainingMethod {
    /// `GRPO`, `SFT`.
    fn name(&self) -> &'static str;
    /// Its settings, recorded in the run directory and compared on resume.
    fn config(&self) -> serde_json::Value;
    /// Steps the run takes.
    fn steps(&self) -> usize;
    /// AdamW's decoupled weight decay.
    fn weight_decay(&self) -> f32 {
        0.0
    }
    /// Refuse settings that cannot work (checked before the run touches anything).
    fn validate(&self) -> Result<(), TrainError> {
        Ok(())
    }
    /// Take step `run.state.step` (0-based) on the training `problems`; returns its metrics.
    fn step(&mut self, run: &mut AdapterRun<'_>, problems: &[Problem]) -> Result<StepMetrics, TrainError>;
}

/// Refuse `value` for the setting `name` unless it is a finite number ≥ `min` (or > 0 with
/// `positive`).
pub fn check_number(name: &str, value: f32, positive: bool) -> Result<(), TrainError> {
    let ok = value.is_finite() && if positive { value > 0.0 } else { value >= 0.0 };
    if ok {
        return Ok(());
    }
    let want = if positive {
        "a finite number > 0"
    } else {
        "a finite number ≥ 0"
    };
    Err(TrainError::Invalid(format!(
        "{name} is {value}; it must be {want}"
    )))
}

/// Where a run is written and how it is driven.
#[derive(Debug, Clone)]
pub struct RunSettings {
    /// The run directory.
    pub dir: PathBuf,
    /// Continue the run in `dir` from its checkpoint.
    pub resume: bool,
    /// Replace a run already in `dir`.
    pub overwrite: bool,
    /// Also evaluate every N steps (0: only before and after).
    pub eval_every: usize,
    /// Held-out evaluation.
    pub eval: EvalSettings,
    /// What else defines the run (model and data paths, split…): recorded in `config.json`
    /// beside the adapter and the method's settings, and compared on resume.
    pub record: serde_json::Value,
}

/// What happens during a run, for progress displays.
#[derive(Debug)]
pub enum Event<'a> {
    /// The frozen SVDs start: `modules` to factorise.
    Attaching {
        /// Modules to factorise (0 for LoRA).
        modules: usize,
        /// Their rank r.
        rank: usize,
    },
    /// One module's SVD finished.
    ModuleDone,
    /// The adapter is attached.
    Attached {
        /// Trainable parameters.
        params: usize,
        /// Their bytes.
        bytes: usize,
    },
    /// Continuing from a checkpoint at this step.
    Resumed {
        /// Steps already done.
        step: usize,
    },
    /// A held-out evaluation starts.
    EvalStart {
        /// `base model`, `step N`, `with the adapter`.
        label: &'a str,
        /// Problems.
        problems: usize,
    },
    /// Progress of an evaluation: problems done, tokens generated.
    EvalProgress {
        /// Problems done.
        done: usize,
        /// Tokens generated.
        tokens: usize,
    },
    /// A held-out evaluation finished.
    EvalDone {
        /// Its label.
        label: &'a str,
        /// Its report.
        report: &'a EvalReport,
    },
    /// A step's metrics line is written; its checkpoint (adapter file and state) comes next.
    Logged {
        /// Steps completed.
        step: usize,
    },
    /// A step finished, is checkpointed and has its metrics line.
    Step(&'a StepMetrics),
}

/// Watches a run (from the SVD threads too, hence `Sync` and `&self`).
pub trait Observer: Sync {
    /// Called for each [`Event`].
    fn event(&self, event: Event<'_>);
}

/// An observer that ignores everything.
pub struct Quiet;

impl Observer for Quiet {
    fn event(&self, _: Event<'_>) {}
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// Steps completed (all of them, unless interrupted).
    pub step: usize,
    /// Whether the stop flag ended it early (the checkpoint of `step` is saved).
    pub interrupted: bool,
    /// Held-out evaluation of the base model (new runs with held-out problems only).
    pub before: Option<EvalReport>,
    /// Held-out evaluation with the adapter (completed runs with held-out problems only).
    pub after: Option<EvalReport>,
    /// The adapter's values.
    pub values: Vec<f32>,
    /// Trainable parameters.
    pub params: usize,
    /// Their bytes.
    pub bytes: usize,
}

/// One training run of `method` on `model` (loaded from `file`) with adapter `adapter`.
pub struct Training<'a> {
    /// The model file.
    pub file: &'a ModelFile,
    /// The model (its adapter is attached by [`Self::run`]).
    pub model: &'a mut AdaptedModel,
    /// The adapter to train.
    pub adapter: AdapterConfig,
    /// The method.
    pub method: &'a mut dyn TrainingMethod,
    /// Training problems.
    pub train: Vec<Problem>,
    /// Held-out problems (evaluated before and after; may be empty).
    pub held_out: Vec<Problem>,
    /// Files and evaluation.
    pub settings: RunSettings,
    /// Set (e.g. by a Ctrl-C handler) to stop after the current step.
    pub stop: Arc<AtomicBool>,
    /// The processes of a data-parallel run ([`Single`] for one): each takes its share of
    /// every step's prompts and of the held-out problems; rank 0 alone reads and writes the
    /// run directory.
    pub collective: &'a dyn Collective,
}

impl Training<'_> {
    /// Everything `config.json` records.
    fn record(&self) -> serde_json::Value {
        let mut record = serde_json::json!({
            "method": self.method.name(),
            "adapter": self.adapter,
            "config": self.method.config(),
            "model_fingerprint": self.file.fingerprint(),
            "eval_every": self.settings.eval_every,
        });
        if let (Some(r), Some(extra)) = (record.as_object_mut(), self.settings.record.as_object()) {
            r.extend(extra.clone());
        }
        record
    }

    /// Run to the end (or until the stop flag is set), checkpointing after every step.
    pub fn run(self, observer: &dyn Observer) -> Result<RunOutcome, TrainError> {
        if self.train.is_empty() {
            return Err(TrainError::Invalid("no problems to train on".into()));
        }
        self.method.validate()?;
        let files = RunFiles {
            dir: self.settings.dir.clone(),
        };
        let record = self.record();
        let p = plan(&self.file.config, &self.adapter);
        let c = self.collective;
        let fresh = || TrainState {
            step: 0,
            values: initial_values(&self.file.config, &self.adapter),
            optimizer: AdamW::new(p.params, self.method.weight_decay()),
        };
        // rank 0 alone reads and locks the run directory; the others take what it shares
        let prepared = if c.rank() != 0 {
            Ok((fresh(), false, None))
        } else if self.settings.resume {
            files.resume(&record).and_then(|(s, lock)| {
                let moments = (s.optimizer.m.len(), s.optimizer.v.len());
                if s.values.len() != p.params || moments != (p.params, p.params) {
                    return Err(TrainError::RunFile {
                        path: files.state(),
                        message: format!(
                            "{} values and {} + {} optimizer moments, but the adapter has {} values",
                            s.values.len(),
                            moments.0,
                            moments.1,
                            p.params
                        ),
                    });
                }
                Ok((s, false, Some(lock)))
            })
        } else {
            files
                .start(self.settings.overwrite)
                .map(|(created, lock)| (fresh(), created, Some(lock)))
        };
        // rank 0's state (or its refusal) on every rank
        let (state, created, _lock) = share_state(c, prepared)?;
        if state.step > self.method.steps() {
            return Err(TrainError::Invalid(format!(
                "the checkpoint is at step {}, past the {} steps asked for: give at least --steps {}",
                state.step,
                self.method.steps(),
                state.step
            )));
        }
        if self.settings.resume {
            observer.event(Event::Resumed { step: state.step });
        }
        let outcome = self.train_from(state, &files, &record, &p, observer);
        if outcome.is_err() && c.rank() == 0 {
            // a run that failed before its first checkpoint leaves nothing of its own behind
            files.remove_unfinished(created);
        }
        outcome
    }

    /// Attach the adapter with `state`'s values and train from `state.step` to the end.
    fn train_from(
        self,
        state: TrainState,
        files: &RunFiles,
        record: &serde_json::Value,
        p: &ParameterPlan,
        observer: &dyn Observer,
    ) -> Result<RunOutcome, TrainError> {
        let modules = if self.adapter.mixing_matrices(0).is_some() {
            p.modules
        } else {
            0
        };
        observer.event(Event::Attaching {
            modules,
            rank: self.adapter.rank,
        });
        let parts = AdapterParts::build(self.file, &self.adapter, &state.values, &|| {
            observer.event(Event::ModuleDone)
        })?;
        self.model.attach(parts)?;
        // every step's merged weights are then W + ΔW(v) exactly, as a resumed run computes them
        self.model.keep_base_weights(true);
        observer.event(Event::Attached {
            params: p.params,
            bytes: p.bytes,
        });
        let c = self.collective;
        let writer = c.rank() == 0;
        if writer {
            files.write_config(record)?;
        }
        let mut run = AdapterRun {
            file: self.file,
            model: &mut *self.model,
            adapter: self.adapter.clone(),
            state,
            collective: c,
        };
        let (stop, held_out, eval) = (&*self.stop, &self.held_out[..], &self.settings.eval);
        // stopped on any rank: all stop at the same point
        let stopped = || stopped_anywhere(c, stop);
        let before = if run.state.step == 0 {
            // a checkpoint of step 0 first, so that a run stopped during this evaluation resumes
            if writer {
                run.adapter_file().save(&files.adapter())?;
                files.write_state(&run.state)?;
            }
            run.model.set_mode(DeltaMode::Off)?;
            held_out_eval(
                run.model,
                run.file,
                held_out,
                eval,
                "base model",
                observer,
                stop,
                c,
            )?
        } else {
            None
        };

        let steps = self.method.steps();
        let mut interrupted = false;
        while run.state.step < steps {
            if stopped() {
                interrupted = true;
                break;
            }
            let m = self.method.step(&mut run, &self.train)?;
            check_same_values(c, &run.state)?;
            // the metrics line, then the checkpoint: a run killed between the two has a line
            // past its checkpoint, which a resume removes before it runs that step again
            if writer {
                files.append_metrics(&m)?;
                observer.event(Event::Logged { step: m.step });
                run.adapter_file().save(&files.adapter())?;
                files.write_state(&run.state)?;
            }
            observer.event(Event::Step(&m));
            let every = self.settings.eval_every;
            if every > 0 && m.step % every == 0 && m.step < steps {
                run.model.set_values(&run.state.values, false)?;
                run.model.set_mode(DeltaMode::Merged)?;
                let label = format!("step {}", m.step);
                held_out_eval(run.model, run.file, held_out, eval, &label, observer, stop, c)?;
            }
        }
        // the model holds the values the last update started from: upload the final ones
        run.model.set_values(&run.state.values, false)?;
        let (step, values) = (run.state.step, run.applied_values());
        let after = if interrupted {
            None
        } else {
            run.model.set_mode(DeltaMode::Merged)?;
            held_out_eval(
                run.model,
                run.file,
                held_out,
                eval,
                "with the adapter",
                observer,
                stop,
                c,
            )?
        };
        // stopped during the last evaluation (its figure is then missing); a stop that came
        // after it finished ends a complete run
        let interrupted = interrupted || (after.is_none() && !held_out.is_empty() && stopped());
        Ok(RunOutcome {
            step,
            interrupted,
            before,
            after,
            values,
            params: p.params,
            bytes: p.bytes,
        })
    }
}

/// Evaluate `held_out` with `model` as it is, each process its share, reporting the whole
/// to `observer`; `None` without problems or when a process was stopped before it finished.
#[allow(clippy::too_many_arguments)]
fn held_out_eval(
    model: &Transformer,
    file: &ModelFile,
    held_out: &[Problem],
    e: &EvalSettings,
    label: &str,
    observer: &dyn Observer,
    stop: &AtomicBool,
    c: &dyn Collective,
) -> Result<Option<EvalReport>, TrainError> {
    if held_out.is_empty() || stopped_anywhere(c, stop) {
        return Ok(None);
    }
    observer.event(Event::EvalStart {
        label,
        problems: held_out.len(),
    });
    let mine = &held_out[shard(held_out.len(), c.rank(), c.size())];
    let progress = |done, tokens| observer.event(Event::EvalProgress { done, tokens });
    let local = if mine.is_empty() {
        None
    } else {
        evaluate_until(model, file, mine, e, progress, stop)?
    };
    // counts of every share: [finished, problems, right per mode, tokens]
    let records = local.as_ref().map_or(&[][..], |r| &r.records[..]);
    let mut x = [
        f64::from(u8::from(local.is_some() || mine.is_empty())),
        records.len() as f64,
        0.0,
        0.0,
        0.0,
        local.as_ref().map_or(0, |r| r.tokens) as f64,
    ];
    for (i, right) in x[2..5].iter_mut().enumerate() {
        *right = records.iter().filter(|r| r.correct_by_mode[i]).count() as f64;
    }
    c.sum(&mut x);
    let mut seconds = [local.as_ref().map_or(0.0, |r| r.seconds)];
    c.max(&mut seconds);
    if x[0] < c.size() as f64 {
        return Ok(None);
    }
    let report = EvalReport {
        problems: x[1] as usize,
        accuracy: [x[2], x[3], x[4]].map(|right| right / x[1].max(1.0)),
        tokens: x[5] as usize,
        tokens_per_s: x[5] / seconds[0],
        seconds: seconds[0],
        records: local.map(|r| r.records).unwrap_or_default(),
    };
    observer.event(Event::EvalDone {
        label,
        report: &report,
    });
    Ok(Some(report))
}

/// Whether `stop` is set on any process (every process learns the same answer).
fn stopped_anywhere(c: &dyn Collective, stop: &AtomicBool) -> bool {
    let mut x = [f64::from(u8::from(stop.load(Ordering::SeqCst)))];
    c.max(&mut x);
    x[0] > 0.0
}

/// Rank 0's prepared state (or its error) on every rank: rank 0 alone reads the run directory.
fn share_state(
    c: &dyn Collective,
    prepared: Result<(TrainState, bool, Option<RunLock>), TrainError>,
) -> Result<(TrainState, bool, Option<RunLock>), TrainError> {
    if c.size() == 1 {
        return prepared;
    }
    let mut bytes = match &prepared {
        Ok((state, ..)) => serde_json::to_vec(&Ok::<_, String>(state)),
        Err(e) => serde_json::to_vec(&Err::<&TrainState, _>(format!("{e:#}"))),
    }
    .expect("the state serialises");
    c.broadcast(&mut bytes);
    if c.rank() == 0 {
        return prepared;
    }
    let shared: Result<TrainState, String> = serde_json::from_slice(&bytes)
        .map_err(|e| TrainError::Invalid(format!("the state rank 0 sent is not readable: {e}")))?;
    shared
        .map(|state| (state, false, None))
        .map_err(|e| TrainError::Invalid(format!("rank 0 stopped the run: {e}")))
}

/// Every process must hold the same values after a step: compare a hash of their bits.
fn check_same_values(c: &dyn Collective, state: &TrainState) -> Result<(), TrainError> {
    if c.size() == 1 {
        return Ok(());
    }
    // FNV-1a over the values' bits, in two 32-bit halves (exact in f64); max of h and of −h
    let mut fnv = Fnv1a::default();
    state
        .values
        .iter()
        .for_each(|v| fnv.eat(&v.to_bits().to_le_bytes()));
    let h = fnv.value();
    let (hi, lo) = ((h >> 32) as f64, (h & 0xffff_ffff) as f64);
    let mut x = [hi, lo, -hi, -lo];
    c.max(&mut x);
    if x[0] != -x[2] || x[1] != -x[3] {
        return Err(TrainError::Diverged { step: state.step });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rank 1 of 2, whose "other rank" is simulated: `max` raises the first element (another
    /// rank's hash differs) when `diverged`, and `broadcast` delivers `from_rank0`.
    struct Rank1 {
        diverged: bool,
        from_rank0: Vec<u8>,
    }

    impl Collective for Rank1 {
        fn rank(&self) -> usize {
            1
        }
        fn size(&self) -> usize {
            2
        }
        fn sum(&self, x: &mut [f64]) {
            x.iter_mut().for_each(|v| *v *= 2.0);
        }
        fn max(&self, x: &mut [f64]) {
            if self.diverged {
                x[0] += 1.0;
            }
        }
        fn broadcast(&self, bytes: &mut Vec<u8>) {
            bytes.clone_from(&self.from_rank0);
        }
    }

    fn state() -> TrainState {
        TrainState {
            step: 3,
            values: vec![0.5, -0.25],
            optimizer: AdamW::new(2, 0.0),
        }
    }

    #[test]
    fn ranks_holding_different_values_are_an_error() {
        let same = Rank1 {
            diverged: false,
            from_rank0: vec![],
        };
        check_same_values(&same, &state()).unwrap();
        let other = Rank1 {
            diverged: true,
            from_rank0: vec![],
        };
        let e = check_same_values(&other, &state()).unwrap_err().to_string();
        assert!(
            e.contains("after step 3 the processes hold different adapter values"),
            "{e}"
        );
    }

    #[test]
    fn the_other_ranks_take_rank_0s_state_or_its_refusal() {
        let sent = serde_json::to_vec(&Ok::<_, String>(state())).unwrap();
        let c = Rank1 {
            diverged: false,
            from_rank0: sent,
        };
        let fresh = TrainState { step: 0, ..state() };
        let (got, created, lock) = share_state(&c, Ok((fresh, false, None))).unwrap();
        assert_eq!((got, created, lock.is_none()), (state(), false, true));
        let refused = serde_json::to_vec(&Err::<TrainState, _>("run/: already holds a run")).unwrap();
        let c = Rank1 {
            diverged: false,
            from_rank0: refused,
        };
        let e = share_state(&c, Ok((state(), false, None)))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "rank 0 stopped the run: run/: already holds a run");
    }
}
