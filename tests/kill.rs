//! A GRPO run SIGKILLed at several points and resumed after each ends bit-identical to an
//! uninterrupted run: the same adapter file, the same checkpoint state, the same metrics lines
//! (timings aside). The kill points: during the base model's evaluation (before any step),
//! between a step's metrics line and its checkpoint, during the SVDs of a resumed run's attach, right
//! after a step, and during the last evaluation.
//!
//! Every run is a child process of this test binary (a real process, a real `kill -KILL`):
//! the child trains the tiny digit task on the CPU device through the training library and
//! kills itself when its observer sees the chosen event, so the points are exact.
//! `harness = false`: this file's `main` is the test.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;

use common::digit_task::{digit_model, grpo_config, no_instruction, problems};
use tinylora::adapter::{AdaptedModel, AdapterConfig};
use tinylora::engine::{Transformer, cpu_device};
use tinylora::formats::ModelFile;
use tinylora::train::{
    EvalSettings, Event, ExtractMode, GrpoTrainer, Observer, RunSettings, Single, Training,
};

/// The child's orders, in one environment variable: `model_dir|run_dir|resume|kill_at`.
const CHILD: &str = "TINYLORA_KILL_TEST_CHILD";
const STEPS: usize = 4;

fn main() {
    match std::env::var(CHILD) {
        Ok(orders) => child(&orders),
        Err(_) => parent(),
    }
}

/// Kills its own process at the event `kill_at` names: `eval:LABEL` (the first progress of
/// that evaluation), `logged:S` (between step S's metrics line and its checkpoint), `module:N` (the N-th SVD finished), `step:S`, or `never`.
struct KillAt {
    kill_at: String,
    eval_label: Mutex<String>,
    modules: Mutex<usize>,
}

impl Observer for KillAt {
    fn event(&self, event: Event<'_>) {
        let now = match event {
            Event::EvalStart { label, .. } => {
                *self.eval_label.lock().unwrap() = label.to_string();
                None
            }
            Event::EvalProgress { .. } => Some(format!("eval:{}", self.eval_label.lock().unwrap())),
            Event::Logged { step } => Some(format!("logged:{step}")),
            Event::ModuleDone => {
                let mut n = self.modules.lock().unwrap();
                *n += 1;
                Some(format!("module:{n}"))
            }
            Event::Step(m) => Some(format!("step:{}", m.step)),
            _ => None,
        };
        if now.as_deref() == Some(self.kill_at.as_str()) {
            let me = std::process::id().to_string();
            let _ = Command::new("kill").args(["-KILL", &me]).status();
            loop {
                std::thread::park(); // the signal is on its way
            }
        }
    }
}

fn child(orders: &str) {
    let [model_dir, run_dir, resume, kill_at] = orders.split('|').collect::<Vec<_>>()[..] else {
        panic!("{CHILD}: bad orders {orders:?}");
    };
    let file = ModelFile::open(Path::new(model_dir)).unwrap();
    let mut model = AdaptedModel::new(Transformer::load(&file, &cpu_device()).unwrap());
    let mut method = GrpoTrainer::new(grpo_config(3, STEPS)).unwrap();
    let outcome = Training {
        file: &file,
        model: &mut model,
        adapter: AdapterConfig::default(),
        method: &mut method,
        train: problems(),
        held_out: problems()[..3].to_vec(),
        settings: RunSettings {
            dir: PathBuf::from(run_dir),
            resume: resume == "resume",
            overwrite: false,
            eval_every: 0,
            eval: EvalSettings {
                prompt: no_instruction(),
                max_new_tokens: 2,
                batch: 2,
                extract: ExtractMode::Flexible,
            },
            record: serde_json::json!({}),
        },
        stop: Arc::new(AtomicBool::new(false)),
        collective: &Single,
    }
    .run(&KillAt {
        kill_at: kill_at.to_string(),
        eval_label: Mutex::new(String::new()),
        modules: Mutex::new(0),
    })
    .unwrap();
    assert_eq!((outcome.step, outcome.interrupted), (STEPS, false));
}

/// Run a child; whether it was killed (it must either be killed or succeed).
fn run_child(model_dir: &Path, run_dir: &Path, resume: bool, kill_at: &str) -> bool {
    use std::os::unix::process::ExitStatusExt;
    let orders = format!(
        "{}|{}|{}|{kill_at}",
        model_dir.display(),
        run_dir.display(),
        if resume { "resume" } else { "new" }
    );
    let status = Command::new(std::env::current_exe().unwrap())
        .env(CHILD, orders)
        .status()
        .unwrap();
    let killed = status.signal() == Some(9);
    assert!(killed || status.success(), "child ({kill_at}): {status}");
    killed
}

/// The metrics lines without their timings.
fn metrics(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            let m = v.as_object_mut().unwrap();
            m.remove("rollout_s");
            m.remove("train_s");
            v
        })
        .collect()
}

fn parent() {
    let dir = common::temp_dir("kill");
    let model_dir = dir.join("model");
    digit_model(&model_dir);

    let straight = dir.join("straight");
    assert!(!run_child(&model_dir, &straight, false, "never"));

    let killed = dir.join("killed");
    let kills = [
        (false, "eval:base model"),
        (true, "logged:1"),
        (true, "module:5"),
        (true, "step:3"),
        (true, "eval:with the adapter"),
    ];
    for (resume, at) in kills {
        assert!(run_child(&model_dir, &killed, resume, at), "not killed at {at}");
        println!("killed at {at}");
    }
    assert!(!run_child(&model_dir, &killed, true, "never"));

    let read = |run: &Path, name: &str| std::fs::read(run.join(name)).unwrap();
    for name in ["adapter.safetensors", "state.json"] {
        assert!(
            read(&straight, name) == read(&killed, name),
            "{name}: the killed and resumed run differs from the uninterrupted one"
        );
    }
    let (a, b) = (metrics(&straight), metrics(&killed));
    assert_eq!(a.len(), STEPS);
    assert_eq!(a, b, "metrics.jsonl");
    let leftovers: Vec<_> = std::fs::read_dir(&killed)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    println!("killed 5 times and resumed: bit-identical to the uninterrupted run");
}
