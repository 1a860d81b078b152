//! GRPO training in the page: the CLI's trainer ([`GrpoTrainer::step_async`], the same code as
//! `tinylora train grpo`) on the loaded model, driven step by step from JavaScript with events
//! for a live chart, a stop that keeps what was learned, and greedy held-out evaluations before
//! and after. The run lives in memory (no run directory): the result is the session's adapter,
//! offered as a file ([`Session::adapter_file`]) that the CLI loads.

use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};
use tinylora_adapter::{AdapterConfig, AdapterParts, Method, Tying, initial_values, plan};
use tinylora_engine::DeltaMode;
use tinylora_train::optim::AdamW;
use tinylora_train::prompt::PromptStyle;
use tinylora_train::reward::RewardSpec;
use tinylora_train::{
    AdapterRun, EvalRecord, EvalSettings, ExtractMode, GrpoConfig, GrpoTrainer, LossConfig, Problem,
    ScaleRewards, Single, StepMetrics, TrainState, evaluate_async, parse_problems, split,
};
use wasm_bindgen::prelude::*;

use crate::session::{AdapterInfo, ModuleProgress, Session, State, busy, js_error, now_ms, to_js};

/// Training settings from JavaScript; every field is optional and defaults to the main job's
/// (`scripts/quickstart.sh`: single-digit arithmetic, 13 parameters, SmolLM2).
#[derive(Deserialize, Debug, Clone)]
#[serde(default, deny_unknown_fields)]
pub struct TrainSettings {
    /// Samples per prompt G.
    pub group_size: usize,
    /// Prompts per step.
    pub prompts_per_step: usize,
    /// Most new tokens per sample (and per held-out answer).
    pub max_new_tokens: usize,
    /// Steps (batches of rollouts).
    pub steps: usize,
    /// Peak learning rate.
    pub lr: f32,
    /// Linear warm-up steps.
    pub warmup: usize,
    /// Gradient-norm clip (0: off).
    pub max_grad_norm: f32,
    /// Rollout temperature.
    pub temperature: f32,
    /// Frozen rank r.
    pub rank: usize,
    /// Trainable numbers per tie group.
    pub u: usize,
    /// Weight tying: none, tiled, structured or full.
    pub tying: String,
    /// Group size of tiled / structured tying.
    pub n_tie: usize,
    /// Problems held out and evaluated before and after (0: none).
    pub eval_problems: usize,
    /// Answer extraction: strict, flexible or boxed.
    pub extract: String,
    /// Appended to each question (the CLI's `--instruction`).
    pub instruction: String,
    /// Start of the answer written into the prompt (`--answer-prefix`).
    pub answer_prefix: String,
    /// Seed of the split, the problem order and the samples.
    pub seed: u64,
}

impl Default for TrainSettings {
    fn default() -> Self {
        Self {
            group_size: 8,
            prompts_per_step: 8,
            max_new_tokens: 4,
            steps: 60,
            lr: 0.01,
            warmup: 2,
            max_grad_norm: 1.0,
            temperature: 1.0,
            rank: 2,
            u: 13,
            tying: "full".into(),
            n_tie: 1,
            eval_problems: 63,
            extract: "flexible".into(),
            instruction: String::new(),
            answer_prefix: "The answer is".into(),
            seed: 0,
        }
    }
}

impl TrainSettings {
    /// From JavaScript: `undefined`, `null` or a plain object of some of the fields.
    fn from_js(settings: &JsValue) -> Result<Self, JsError> {
        if settings.is_undefined() || settings.is_null() {
            return Ok(Self::default());
        }
        let json = js_sys::JSON::stringify(settings)
            .map_err(|_| JsError::new("training settings must be a plain object"))?;
        serde_json::from_str(&String::from(json))
            .map_err(|e| JsError::new(&format!("bad training settings: {e}")))
    }

    /// The problems of a JSON-lines file's bytes, split as `tinylora train` splits them with
    /// the same seed and held-out count: (training, held out).
    fn split(&self, data: &[u8]) -> Result<(Vec<Problem>, Vec<Problem>), JsError> {
        let problems = parse_problems(Path::new("problems.jsonl"), data).map_err(|e| js_error(&e))?;
        Ok(split(problems, self.seed, self.eval_problems))
    }

    /// The adapter and the GRPO configuration these settings describe (checked), with the
    /// CLI's defaults for everything the page does not set.
    fn configs(&self) -> Result<(AdapterConfig, GrpoConfig), String> {
        let adapter = AdapterConfig {
            method: Method::Tinylora,
            rank: self.rank,
            u: self.u,
            tying: Tying::parse(&self.tying, self.n_tie).map_err(|e| e.to_string())?,
            ..AdapterConfig::default()
        }
        .validated()
        .map_err(|e| e.to_string())?;
        let extract: ExtractMode = self.extract.parse().map_err(|e| format!("{e}"))?;
        if self.steps == 0 {
            return Err("steps must be at least 1".into());
        }
        let grpo = GrpoConfig {
            group_size: self.group_size,
            prompts_per_step: self.prompts_per_step,
            max_new_tokens: self.max_new_tokens,
            temperature: self.temperature,
            steps: self.steps,
            num_iterations: 1,
            lr: self.lr,
            warmup: self.warmup,
            max_grad_norm: self.max_grad_norm,
            weight_decay: 0.0,
            micro_batch: 0,
            scale_rewards: ScaleRewards::Group,
            mask_truncated: false,
            // the CLI's defaults: TRL's clipping, no KL term, the `correct` reward alone
            loss: LossConfig::default(),
            rewards: vec![RewardSpec::from_str("correct:1").expect("a valid reward")],
            format_pattern: None,
            reward_cmd: None,
            extract,
            prompt: PromptStyle {
                instruction: self.instruction.clone(),
                answer_prefix: self.answer_prefix.clone(),
            },
            seed: self.seed,
        };
        Ok((adapter, grpo))
    }
}

/// What the page is told while a run goes on (`on_event(event)`).
#[derive(Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum TrainEvent<'a> {
    /// One more module's SVD is done.
    Svd { done: u32, total: u32 },
    /// A held-out evaluation progresses.
    Eval {
        label: &'a str,
        done: usize,
        problems: usize,
        tokens: usize,
    },
    /// A held-out evaluation finished.
    Evaluated(&'a Evaluation),
    /// A step finished.
    Step { steps: usize, metrics: &'a StepMetrics },
}

/// A held-out evaluation as the page shows it: accuracies and every answer.
#[derive(Serialize)]
struct Evaluation {
    label: String,
    problems: usize,
    /// Accuracy under strict, flexible and boxed extraction.
    accuracy: [f64; 3],
    seconds: f64,
    records: Vec<EvalRecord>,
}

/// How a run in the page ended.
#[derive(Serialize)]
struct TrainReport {
    /// Steps taken.
    steps: usize,
    /// Whether Stop ended the steps early.
    interrupted: bool,
    before: Option<Evaluation>,
    after: Option<Evaluation>,
    /// The trained values (as applied).
    values: Vec<f32>,
    /// Seconds per step (rollouts and update), from the steps' own timings.
    seconds_per_step: f64,
    adapter: AdapterInfo,
}

/// Call `on_event` with `event` (its exceptions are ignored: events are advisory).
fn emit(on_event: &js_sys::Function, event: &TrainEvent<'_>) {
    if let Ok(value) = to_js(event) {
        let _ = on_event.call1(&JsValue::NULL, &value);
    }
}

#[wasm_bindgen]
impl Session {
    /// Train a TinyLoRA adapter with GRPO on `data` (a JSON-lines problem file's bytes, as
    /// `tinylora train --data` reads them) with `settings` (see [`TrainSettings`]; each
    /// optional), calling `on_event(event)` as it goes: `{kind: "svd", done, total}`,
    /// `{kind: "eval", label, done, problems, tokens}`, `{kind: "evaluated", label, problems,
    /// accuracy: [strict, flexible, boxed], seconds, records}`, `{kind: "step", steps,
    /// metrics}` (a line of `metrics.jsonl`). [`Self::stop_training`] ends the steps early,
    /// keeping what was learned (a second stop skips the evaluation after; a stop before the
    /// first step ends the run with an error, without an adapter). Resolves to a
    /// report: steps, the evaluations before and after, the values, seconds per step. The run
    /// replaces any loaded adapter as it begins; the trained one is on at the end.
    // The exclusive borrow is held across the awaits on purpose: while it lives, every other
    // request is refused as busy instead of touching the model mid-run.
    #[allow(clippy::await_holding_refcell_ref)]
    pub fn train(
        &self,
        data: Vec<u8>,
        settings: JsValue,
        on_event: js_sys::Function,
    ) -> Result<js_sys::Promise, JsError> {
        let settings = TrainSettings::from_js(&settings)?;
        let (adapter, grpo) = settings
            .configs()
            .map_err(|e| JsError::new(&format!("bad training settings: {e}")))?;
        let trainer = GrpoTrainer::new(grpo).map_err(|e| js_error(&e))?;
        let (train, problems) = settings.split(&data)?;
        if train.is_empty() {
            return Err(JsError::new(&format!(
                "problems.jsonl: no problems left for training after holding out {}",
                settings.eval_problems
            )));
        }
        let run = Run {
            held_out: HeldOut::new(problems, trainer.settings()),
            adapter,
            trainer,
            train,
        };
        let state = self.state.clone();
        let stop = self.stop.clone();
        Ok(wasm_bindgen_futures::future_to_promise(async move {
            let mut state = state.try_borrow_mut().map_err(|_| JsValue::from(busy()))?;
            // a stop asked for before this run began was meant for the one before
            stop.store(false, Ordering::SeqCst);
            let report = run.go(&mut state, &stop, &on_event).await;
            if report.is_err() {
                // the run replaced any adapter as it began: a failed one leaves the base model
                state.model.detach();
                state.model.keep_base_weights(false);
            }
            to_js(&report?).map_err(JsValue::from)
        }))
    }

    /// Evaluate the loaded (or trained) adapter on the held-out problems of `data`, chosen as
    /// [`Self::train`] holds them out with the same `settings` (the main job's by default, so
    /// its 63 held-out problems): greedily with the adapter off, then on. `on_event` gets the
    /// `eval` and `evaluated` events of [`Self::train`]; resolves to `{before, after}`; the
    /// adapter is left on. [`Self::stop_training`] stops it.
    #[allow(clippy::await_holding_refcell_ref)]
    pub fn evaluate(
        &self,
        data: Vec<u8>,
        settings: JsValue,
        on_event: js_sys::Function,
    ) -> Result<js_sys::Promise, JsError> {
        let settings = TrainSettings::from_js(&settings)?;
        let (_, grpo) = settings
            .configs()
            .map_err(|e| JsError::new(&format!("bad evaluation settings: {e}")))?;
        let (_, problems) = settings.split(&data)?;
        if problems.is_empty() {
            return Err(JsError::new("hold out at least one problem to evaluate"));
        }
        let held_out = HeldOut::new(problems, &grpo);
        let state = self.state.clone();
        let stop = self.stop.clone();
        Ok(wasm_bindgen_futures::future_to_promise(async move {
            let mut state = state.try_borrow_mut().map_err(|_| JsValue::from(busy()))?;
            stop.store(false, Ordering::SeqCst);
            if state.adapter.is_none() {
                return Err(JsError::new("load or train an adapter first").into());
            }
            state.model.set_mode(DeltaMode::Off).map_err(|e| js_error(&e))?;
            let before = held_out.evaluate(&state, "base model", &stop, &on_event).await;
            // the adapter goes back on whatever became of the first evaluation
            state
                .model
                .set_mode(DeltaMode::Merged)
                .map_err(|e| js_error(&e))?;
            let before = before?;
            let after = held_out
                .evaluate(&state, "with the adapter", &stop, &on_event)
                .await?;
            to_js(&serde_json::json!({ "before": before, "after": after })).map_err(JsValue::from)
        }))
    }

    /// Ask a run of [`Self::train`] to stop after its current step (keeping what it learned),
    /// or, during the evaluation after, to skip the rest of it.
    pub fn stop_training(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// The current adapter (loaded or trained) as an adapter file's bytes, as `tinylora
    /// train` writes them; `null` without one.
    pub fn adapter_file(&self) -> Result<Option<Vec<u8>>, JsError> {
        let state = self.state.try_borrow().map_err(|_| busy())?;
        state
            .adapter_file
            .as_ref()
            .map(|f| f.to_bytes().map_err(|e| js_error(&e)))
            .transpose()
    }
}

/// Held-out problems and how they are evaluated (as the CLI evaluates a run's).
struct HeldOut {
    problems: Vec<Problem>,
    settings: EvalSettings,
}

impl HeldOut {
    fn new(problems: Vec<Problem>, grpo: &GrpoConfig) -> Self {
        let settings = EvalSettings {
            prompt: grpo.prompt.clone(),
            max_new_tokens: grpo.max_new_tokens,
            batch: 16,
            extract: grpo.extract,
        };
        HeldOut { problems, settings }
    }

    /// Greedy evaluation with the model as it is; `None` without problems or when stopped.
    async fn evaluate(
        &self,
        state: &State,
        label: &str,
        stop: &AtomicBool,
        on_event: &js_sys::Function,
    ) -> Result<Option<Evaluation>, JsError> {
        let problems = self.problems.len();
        if problems == 0 {
            return Ok(None);
        }
        let progress = |done, tokens| {
            let event = TrainEvent::Eval {
                label,
                done,
                problems,
                tokens,
            };
            emit(on_event, &event)
        };
        let report = evaluate_async(
            &state.model,
            &state.file,
            &self.problems,
            &self.settings,
            progress,
            stop,
        )
        .await
        .map_err(|e| js_error(&e))?;
        Ok(report.map(|r| {
            let e = Evaluation {
                label: label.into(),
                problems: r.problems,
                accuracy: r.accuracy,
                seconds: r.seconds,
                records: r.records,
            };
            emit(on_event, &TrainEvent::Evaluated(&e));
            e
        }))
    }
}

/// One run in the page, ready to go.
struct Run {
    adapter: AdapterConfig,
    trainer: GrpoTrainer,
    train: Vec<Problem>,
    held_out: HeldOut,
}

impl Run {
    /// Attach, evaluate the base model, step until done or stopped, evaluate the adapter.
    async fn go(
        mut self,
        state: &mut State,
        stop: &AtomicBool,
        on_event: &js_sys::Function,
    ) -> Result<TrainReport, JsError> {
        let start = now_ms();
        // the run replaces any adapter from its start (the page says so as it begins)
        state.model.detach();
        state.adapter = None;
        state.adapter_file = None;
        let State { file, model, .. } = state;
        let p = plan(&file.config, &self.adapter);
        let values = initial_values(&file.config, &self.adapter);
        let f = on_event.clone();
        let progress = ModuleProgress::new(
            Some(Box::new(move |done, total| {
                emit(&f, &TrainEvent::Svd { done, total })
            })),
            p.modules,
        );
        let parts = AdapterParts::build(file, &self.adapter, &values, &|| progress.tick())
            .map_err(|e| js_error(&e))?;
        drop(progress);
        model.attach(parts).map_err(|e| js_error(&e))?;
        // as the CLI's run: every merge is exactly W + ΔW of the current values
        model.keep_base_weights(true);

        model.set_mode(DeltaMode::Off).map_err(|e| js_error(&e))?;
        let before = self
            .held_out
            .evaluate(state, "base model", stop, on_event)
            .await?;
        let State { file, model, .. } = state;
        let mut run = AdapterRun {
            file,
            model,
            adapter: self.adapter.clone(),
            state: TrainState {
                step: 0,
                values,
                optimizer: AdamW::new(p.params, 0.0),
            },
            collective: &Single,
        };
        let steps = self.trainer.settings().steps;
        let mut step_seconds = 0.0;
        let mut interrupted = false;
        while run.state.step < steps {
            if stop.swap(false, Ordering::SeqCst) {
                interrupted = true;
                break;
            }
            let m = self
                .trainer
                .step_async(&mut run, &self.train)
                .await
                .map_err(|e| js_error(&e))?;
            step_seconds += m.rollout_s + m.train_s;
            emit(on_event, &TrainEvent::Step { steps, metrics: &m });
        }
        // a stop during the last step ends nothing more; the evaluation after still runs
        interrupted |= stop.swap(false, Ordering::SeqCst);
        if interrupted && run.state.step == 0 {
            return Err(JsError::new(
                "training stopped before its first step: the model has no adapter",
            ));
        }
        // the model holds the values the last update started from: upload the final ones
        run.model
            .set_values(&run.state.values, false)
            .map_err(|e| js_error(&e))?;
        run.model.set_mode(DeltaMode::Merged).map_err(|e| js_error(&e))?;
        let (taken, values, file) = (run.state.step, run.applied_values(), run.adapter_file());
        state.model.keep_base_weights(false);
        let after = self
            .held_out
            .evaluate(state, "with the adapter", stop, on_event)
            .await?;
        let info = AdapterInfo {
            name: "trained in this tab".into(),
            method: "TinyLoRA".into(),
            rank: self.adapter.rank,
            parameters: p.params,
            payload_bytes: p.bytes,
            file_bytes: file.to_bytes().map_err(|e| js_error(&e))?.len(),
            tie_groups: p.groups,
            modules: p.modules,
            attach_ms: now_ms() - start,
        };
        state.adapter = Some(info.clone());
        state.adapter_file = Some(file);
        Ok(TrainReport {
            steps: taken,
            interrupted,
            before,
            after,
            values,
            seconds_per_step: step_seconds / taken.max(1) as f64,
            adapter: info,
        })
    }
}
