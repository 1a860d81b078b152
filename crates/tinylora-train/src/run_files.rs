//! A run directory: what it holds, how it is written (a step's metrics line, then its
//! checkpoint, each durably), and how a run is resumed from it.
//!
//! - `config.json`: the run's settings, compared key by key on `--resume`;
//! - `adapter.safetensors`: the adapter after the last completed step;
//! - `state.json`: that step, the f32 master copy of the values and the optimizer moments;
//! - `metrics.jsonl`: one [`StepMetrics`] line per completed step;
//! - `run.lock`: held (an OS file lock, released however the process ends) by the process
//!   that trains in the directory, so that a second one is refused.

use std::io::Write;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tinylora_formats::atomic::{sync_dir, write_atomic};

use crate::error::TrainError;
use crate::metrics::StepMetrics;
use crate::optim::AdamW;

/// Keys of `config.json` that may differ on `--resume` (everything else must match).
/// (`model` and `data` are paths: the weights are compared by `model_fingerprint`, the data
/// file's contents by `data_fingerprint`.)
/// (`micro_batch` cuts a step into passes whose gradients add up: the same step, up to the
/// order of an f32 sum.)
pub const MAY_CHANGE_ON_RESUME: [&str; 5] = ["steps", "eval_every", "model", "data", "micro_batch"];

/// Keys `config.json` gained after runs were already written with it: absent from a recorded
/// run, they are not compared, so such a run still resumes (`weights`, how the frozen base is
/// kept, `--weights`; recorded, it is compared like every other setting).
pub const RECORDED_LATER: [&str; 1] = ["weights"];

/// Why `--resume` cannot start where there is no `state.json`.
const NO_CHECKPOINT: &str = "--resume: no checkpoint here (no run was started in this directory, or it stopped before its first checkpoint): start it without --resume";

/// What a checkpoint holds besides the adapter file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Steps completed.
    pub step: usize,
    /// f32 master copy of the trainable values.
    pub values: Vec<f32>,
    /// Optimizer moments.
    pub optimizer: AdamW,
}

/// The lock on a run directory: held while this value lives (and never past the process).
#[derive(Debug)]
pub struct RunLock {
    _file: std::fs::File,
}

/// The files of a run directory.
#[derive(Debug, Clone)]
pub struct RunFiles {
    /// The directory.
    pub dir: PathBuf,
}

impl RunFiles {
    /// `dir/adapter.safetensors`: the latest adapter.
    pub fn adapter(&self) -> PathBuf {
        self.dir.join("adapter.safetensors")
    }
    /// `dir/state.json`: optimizer state and step, for `--resume`.
    pub fn state(&self) -> PathBuf {
        self.dir.join("state.json")
    }
    /// `dir/metrics.jsonl`: one line per step.
    pub fn metrics(&self) -> PathBuf {
        self.dir.join("metrics.jsonl")
    }
    /// `dir/config.json`: the run's settings.
    pub fn config(&self) -> PathBuf {
        self.dir.join("config.json")
    }

    /// `dir/run.lock`: locked by the process training in the directory.
    pub fn lock_file(&self) -> PathBuf {
        self.dir.join("run.lock")
    }

    /// Lock the directory for this process (until the returned guard drops or the process
    /// ends), refusing a directory another process trains in.
    fn lock(&self) -> Result<RunLock, TrainError> {
        let path = self.lock_file();
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| TrainError::io(&path, e))?;
        match file.try_lock() {
            Ok(()) => Ok(RunLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(TrainError::RunFile {
                path: self.dir.clone(),
                message: "another process is training in this directory (it holds run.lock); wait for it or stop it".into(),
            }),
            Err(std::fs::TryLockError::Error(e)) => Err(TrainError::io(&path, e)),
        }
    }

    /// Prepare the directory for a new run: create it and lock it, refusing one that already
    /// holds a run unless `overwrite` (then the old run's files are removed first). Returns
    /// whether the directory was created, and the lock.
    pub fn start(&self, overwrite: bool) -> Result<(bool, RunLock), TrainError> {
        let created = !self.dir.exists();
        std::fs::create_dir_all(&self.dir).map_err(|e| TrainError::io(&self.dir, e))?;
        let lock = self.lock()?;
        // a run is there once it has a checkpoint (state.json) or metrics; a config or an
        // adapter without them are what a run stopped before its first checkpoint left
        let ours = [self.state(), self.metrics(), self.adapter(), self.config()];
        if let Some(found) = ours[..2].iter().find(|p| p.exists())
            && !overwrite
        {
            return Err(TrainError::RunFile {
                path: self.dir.clone(),
                message: format!(
                    "already holds a run ({} exists); continue it with --resume, replace it with --overwrite, or choose another --out",
                    found.file_name().unwrap_or_default().to_string_lossy()
                ),
            });
        }
        for p in ours.iter().filter(|p| p.exists()) {
            std::fs::remove_file(p).map_err(|e| TrainError::io(p, e))?;
        }
        Ok((created, lock))
    }

    /// The refusals [`Self::start`] and [`Self::resume`] would give that need nothing but the
    /// directory (no run to resume, a run not to overwrite, another process training here, a
    /// directory that cannot be made), so that a caller can give them before loading a model.
    /// Changes nothing (the lock is taken and released at once).
    pub fn preflight(&self, resume: bool, overwrite: bool) -> Result<(), TrainError> {
        let refuse = |message: String| TrainError::RunFile {
            path: self.dir.clone(),
            message,
        };
        if resume && !self.state().exists() {
            return Err(TrainError::RunFile {
                path: self.state(),
                message: NO_CHECKPOINT.into(),
            });
        }
        if !resume && !overwrite && (self.state().exists() || self.metrics().exists()) {
            return Err(refuse(
                "already holds a run; continue it with --resume, replace it with --overwrite, or choose another --out".into(),
            ));
        }
        if self.lock_file().exists() {
            self.lock()?; // taken and released at once
        }
        tinylora_formats::atomic::check_can_write_in(&self.dir)
            .map_err(|e| refuse(format!("cannot be used as a run directory: {e}")))
    }

    /// Undo a run that failed before its first checkpoint (no `state.json` yet): remove the
    /// files it wrote (configuration, adapter, lock) and, if it created the directory, the
    /// directory when nothing else is in it.
    pub fn remove_unfinished(&self, created: bool) {
        if self.state().exists() {
            return;
        }
        for p in [self.config(), self.adapter(), self.lock_file()] {
            let _ = std::fs::remove_file(p);
        }
        if created {
            let _ = std::fs::remove_dir(&self.dir); // fails, as it should, unless empty
        }
    }

    /// Record the run's settings.
    pub fn write_config(&self, record: &Value) -> Result<(), TrainError> {
        let text = serde_json::to_string_pretty(record).expect("JSON values serialise");
        write_atomic(&self.config(), text.as_bytes()).map_err(|e| TrainError::RunFile {
            path: self.config(),
            message: e.to_string(),
        })
    }

    /// Read the checkpoint for `--resume`, refusing settings that differ from the recorded ones
    /// (except [`MAY_CHANGE_ON_RESUME`]), and cut `metrics.jsonl` back to the checkpoint's step
    /// (a run killed between a step's two writes has that step's line, and a torn last line).
    pub fn resume(&self, record: &Value) -> Result<(TrainState, RunLock), TrainError> {
        let path = self.state();
        let text = std::fs::read(&path).map_err(|e| TrainError::RunFile {
            path: path.clone(),
            message: if e.kind() == std::io::ErrorKind::NotFound {
                NO_CHECKPOINT.into()
            } else {
                format!("--resume: reading the checkpoint failed: {e}")
            },
        })?;
        let state: TrainState = serde_json::from_slice(&text).map_err(|e| TrainError::RunFile {
            path: path.clone(),
            message: format!("not a training state: {e}"),
        })?;
        let path = self.config();
        let text = std::fs::read(&path).map_err(|e| TrainError::io(&path, e))?;
        let recorded: Value = serde_json::from_slice(&text).map_err(|e| TrainError::RunFile {
            path: path.clone(),
            message: format!("not a run configuration: {e}"),
        })?;
        let keys = differing_keys(&recorded, record);
        if !keys.is_empty() {
            return Err(TrainError::ConfigChanged { path, keys });
        }
        let lock = self.lock()?;
        self.trim_metrics(state.step)?;
        Ok((state, lock))
    }

    /// Keep the metrics lines of steps ≤ `step` only.
    fn trim_metrics(&self, step: usize) -> Result<(), TrainError> {
        let path = self.metrics();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(TrainError::io(&path, e)),
        };
        // drop the lines of steps past the checkpoint and a torn last line; keep the rest
        let lines: Vec<&str> = text.lines().collect();
        let kept: Vec<&str> = lines
            .iter()
            .enumerate()
            .filter(|&(i, line)| match serde_json::from_str::<StepMetrics>(line) {
                Ok(m) => m.step <= step,
                Err(_) => i + 1 < lines.len() || text.ends_with('\n'),
            })
            .map(|(_, line)| *line)
            .collect();
        if kept.len() != text.lines().count() {
            let mut body = kept.join("\n");
            if !body.is_empty() {
                body.push('\n');
            }
            write_atomic(&path, body.as_bytes()).map_err(|e| TrainError::RunFile {
                path: path.clone(),
                message: e.to_string(),
            })?;
        }
        Ok(())
    }

    /// Write the state of a completed step (after its metrics line and its adapter file).
    pub fn write_state(&self, state: &TrainState) -> Result<(), TrainError> {
        let json = serde_json::to_vec(state).expect("the state serialises");
        write_atomic(&self.state(), &json).map_err(|e| TrainError::RunFile {
            path: self.state(),
            message: e.to_string(),
        })
    }

    /// Append one metrics line durably (the file grows by whole lines).
    pub fn append_metrics(&self, m: &StepMetrics) -> Result<(), TrainError> {
        let path = self.metrics();
        let line = serde_json::to_string(m).expect("metrics serialise");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| TrainError::io(&path, e))?;
        writeln!(f, "{line}")
            .and_then(|()| f.sync_all())
            .and_then(|()| sync_dir(&path))
            .map_err(|e| TrainError::io(&path, e))
    }
}

/// `a` and `b` flattened to dotted keys, the keys whose values differ, each as
/// `key: old → new` (absent: `none`), skipping [`MAY_CHANGE_ON_RESUME`] and keys under them,
/// and [`RECORDED_LATER`] where `a` (the recorded run) lacks them.
pub fn differing_keys(a: &Value, b: &Value) -> Vec<String> {
    let (fa, fb) = (flatten(a), flatten(b));
    let mut keys: Vec<&String> = fa.keys().chain(fb.keys()).collect();
    keys.sort();
    keys.dedup();
    let may_change = |k: &str| {
        MAY_CHANGE_ON_RESUME
            .iter()
            .any(|m| k == *m || k.ends_with(&format!(".{m}")))
    };
    let unrecorded = |k: &str| RECORDED_LATER.contains(&k) && !fa.contains_key(k);
    keys.into_iter()
        .filter(|k| !may_change(k) && !unrecorded(k) && fa.get(*k) != fb.get(*k))
        .map(|k| {
            let show = |v: Option<&Value>| v.map_or("none".to_string(), Value::to_string);
            format!("{k}: {} → {}", show(fa.get(k)), show(fb.get(k)))
        })
        .collect()
}

/// Leaves of a JSON value by dotted path (`adapter.tying.kind`).
fn flatten(v: &Value) -> std::collections::BTreeMap<String, Value> {
    fn go(prefix: &str, v: &Value, out: &mut std::collections::BTreeMap<String, Value>) {
        match v {
            Value::Object(map) => {
                for (k, x) in map {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    go(&key, x, out);
                }
            }
            _ => {
                out.insert(prefix.to_string(), v.clone());
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    go("", v, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_is_trained_in_by_one_process_at_a_time() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("run");
        let files = RunFiles { dir: dir.clone() };
        let (created, lock) = files.start(false).unwrap();
        assert!(created && files.lock_file().exists());
        // a second open file description of run.lock is refused while the first holds it
        let e = files.start(true).unwrap_err().to_string();
        assert!(e.contains("another process is training in this directory"), "{e}");
        drop(lock);
        let (created, lock) = files.start(true).unwrap();
        assert!(!created);
        drop(lock);
        files.remove_unfinished(true);
        assert!(!dir.exists(), "nothing but the lock file: removed");
    }

    #[test]
    fn differing_keys_name_each_change_and_skip_those_that_may_change() {
        let a = serde_json::json!({"adapter": {"rank": 2, "u": 13, "tying": {"kind": "full"}},
            "config": {"lr": 0.005, "steps": 12}, "model": "a.gguf", "eval_every": 0});
        let b = serde_json::json!({"adapter": {"rank": 4, "u": 13, "tying": {"kind": "tiled", "n_tie": 2}},
            "config": {"lr": 0.005, "steps": 30}, "model": "b.gguf", "eval_every": 5});
        assert_eq!(
            differing_keys(&a, &b),
            [
                "adapter.rank: 2 → 4",
                "adapter.tying.kind: \"full\" → \"tiled\"",
                "adapter.tying.n_tie: none → 2"
            ]
        );
        assert!(differing_keys(&a, &a).is_empty());
        // how the frozen base is kept (--weights) changes its numbers: compared
        let with = |w: &str| serde_json::json!({"model": "a.gguf", "weights": w});
        assert_eq!(
            differing_keys(&with("auto"), &with("q4")),
            ["weights: \"auto\" → \"q4\""]
        );
    }
}
