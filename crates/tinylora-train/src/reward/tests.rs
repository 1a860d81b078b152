use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::*;
use crate::extract::{ExtractMode::*, is_correct};

const ANSWER_REWARD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../scripts/rewards/answer_reward.py"
);

fn c<'a>(completion: &'a str, answer: &'a str, tokens: usize) -> Completion<'a> {
    Completion {
        prompt: "What is it?",
        completion,
        answer,
        tokens,
        truncated: false,
    }
}

fn score(reward: &mut dyn Reward, batch: &[Completion<'_>]) -> Vec<f32> {
    reward.score(batch).unwrap()
}

/// A Python script written to a temp file, removed on drop.
struct Script(PathBuf);

impl Script {
    fn new(source: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("tinylora-reward-{}-{n}.py", std::process::id()));
        std::fs::write(&path, source).unwrap();
        Script(path)
    }

    fn argv(&self) -> Vec<String> {
        vec!["python3".into(), self.0.display().to_string()]
    }

    fn program(&self) -> Program {
        Program::spawn(&self.argv(), Duration::from_secs(20)).unwrap()
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn answer_reward_argv() -> Vec<String> {
    vec!["python3".into(), ANSWER_REWARD.into()]
}

#[test]
fn correct_by_mode() {
    let batch = [
        c("so she makes $18.\n#### 18", "18", 0),
        c("She pays $1,000.", "1000", 0),
        c("answer \\boxed{\\frac{1}{2}} done", "\\frac{1}{2}", 0),
        c("#### 17", "18", 0),
        c("\\boxed{42}", "42", 0),
        c("", "0", 0),
    ];
    let mut strict = Correct { mode: Strict };
    let mut flexible = Correct { mode: Flexible };
    let mut boxed = Correct { mode: Boxed };
    assert_eq!(score(&mut strict, &batch), [1.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
    assert_eq!(score(&mut flexible, &batch), [1.0, 1.0, 0.0, 0.0, 1.0, 0.0]);
    assert_eq!(score(&mut boxed, &batch), [0.0, 0.0, 1.0, 0.0, 1.0, 0.0]);
    assert_eq!(strict.name(), "correct");
}

#[test]
fn format_matches_at_the_end() {
    let mut format = Format::new(DEFAULT_FORMAT_PATTERN).unwrap();
    let batch = [
        c("so 18\n#### 18", "", 0),
        c("#### 1,234.50\n", "", 0),
        c("#### -3  ", "", 0),
        c("#### 18 because she pays", "", 0),
        c("The answer is 18", "", 0),
        c("####", "", 0),
        c("#### 18.", "", 0),
    ];
    assert_eq!(score(&mut format, &batch), [1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]);
    // unanchored patterns match anywhere
    let mut think = Format::new(r"<think>").unwrap();
    assert_eq!(score(&mut think, &batch[..1]), [0.0]);
    assert_eq!(score(&mut think, &[c("a <think> b", "", 0)]), [1.0]);
    let err = Format::new("#### (").unwrap_err();
    assert!(matches!(err, RewardError::Pattern { .. }));
    assert!(err.to_string().contains("`#### (`"), "{err}");
    assert!(std::error::Error::source(&err).is_some());
}

#[test]
fn length_penalty() {
    let mut length = Length::new(256).unwrap();
    let batch = [
        c("", "", 0),
        c("", "", 64),
        c("", "", 128),
        c("", "", 256),
        c("", "", 300),
    ];
    let scores = score(&mut length, &batch);
    assert_eq!(scores, [0.0, -0.25, -0.5, -1.0, -1.0]);
    assert!(scores[0].is_sign_positive(), "0 tokens must score +0.0");
    assert!(matches!(Length::new(0), Err(RewardError::ZeroMaxTokens)));
}

#[test]
fn spec_parsing() {
    let cases = [
        ("correct", RewardKind::Correct, 1.0, "correct:1"),
        ("correct:1.0", RewardKind::Correct, 1.0, "correct:1"),
        ("format:0.2", RewardKind::Format, 0.2, "format:0.2"),
        (" length : 0.1 ", RewardKind::Length, 0.1, "length:0.1"),
        (
            "correct-strict:2",
            RewardKind::CorrectStrict,
            2.0,
            "correct-strict:2",
        ),
        (
            "correct-flexible:-1",
            RewardKind::CorrectFlexible,
            -1.0,
            "correct-flexible:-1",
        ),
        (
            "correct-boxed:0",
            RewardKind::CorrectBoxed,
            0.0,
            "correct-boxed:0",
        ),
        ("cmd:1e-3", RewardKind::Cmd, 1e-3, "cmd:0.001"),
    ];
    for (text, kind, weight, shown) in cases {
        let spec: RewardSpec = text.parse().unwrap();
        assert_eq!(spec, RewardSpec { kind, weight }, "{text}");
        assert_eq!(spec.to_string(), shown);
        assert_eq!(shown.parse::<RewardSpec>().unwrap(), spec);
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(json, format!("\"{shown}\""));
        assert_eq!(serde_json::from_str::<RewardSpec>(&json).unwrap(), spec);
    }
    for kind in RewardKind::ALL {
        assert_eq!(kind.name().parse::<RewardKind>().unwrap(), kind);
        assert_eq!(
            serde_json::to_string(&kind).unwrap(),
            format!("\"{}\"", kind.name())
        );
    }
    let err = |s: &str| s.parse::<RewardSpec>().unwrap_err();
    let e = err("accuracy:1");
    assert!(matches!(e, RewardError::UnknownReward { .. }));
    assert_eq!(
        e.to_string(),
        "unknown reward `accuracy` (known: correct, correct-strict, correct-flexible, correct-boxed, \
         format, length, cmd)"
    );
    assert!(matches!(err(""), RewardError::UnknownReward { .. }));
    assert!(matches!(err("Correct"), RewardError::UnknownReward { .. }));
    let e = err("format:abc");
    assert!(matches!(e, RewardError::BadWeight { .. }));
    assert_eq!(e.to_string(), "reward `format:abc`: weight `abc` is not a number");
    assert!(matches!(err("format:"), RewardError::BadWeight { .. }));
    assert!(matches!(err("format:0.2:1"), RewardError::BadWeight { .. }));
    for bad in ["correct:inf", "correct:NaN", "correct:-inf", "correct:1e39"] {
        assert!(matches!(err(bad), RewardError::NonFiniteWeight { .. }), "{bad}");
    }
    assert!(serde_json::from_str::<RewardSpec>("\"nope:1\"").is_err());
}

fn opts() -> RewardOptions {
    RewardOptions::new(Strict, 100)
}

fn specs(s: &[&str]) -> Vec<RewardSpec> {
    s.iter().map(|s| s.parse().unwrap()).collect()
}

#[test]
fn weighted_sum() {
    let mut rewards = Rewards::new(&specs(&["correct:1.0", "format:0.2", "length:0.1"]), &opts()).unwrap();
    assert_eq!(rewards.names(), ["correct", "format", "length"]);
    let batch = [
        c("so 18\n#### 18", "18", 50),            // 1, 1, -0.5
        c("#### 17", "18", 10),                   // 0, 1, -0.1
        c("#### 18 because she pays", "18", 100), // 1, 0, -1
        c("I don't know", "18", 0),               // 0, 0, 0
    ];
    let s = rewards.score(&batch).unwrap();
    let hand = [1.0 + 0.2 - 0.05, 0.2 - 0.01, 1.0 - 0.1, 0.0];
    for (got, want) in s.total.iter().zip(hand) {
        assert!((got - want).abs() < 1e-6, "{:?} vs {hand:?}", s.total);
    }
    // the same sum, in spec order, in f32
    let exact: [f32; 4] = [
        1.0 + 0.2 * 1.0 + 0.1 * -0.5,
        0.2 * 1.0 + 0.1 * -0.1,
        1.0 + 0.0 - 0.1,
        0.0,
    ];
    assert_eq!(s.total, exact);
    assert_eq!(
        s.components,
        [
            ("correct".to_string(), vec![1.0, 0.0, 1.0, 0.0]),
            ("format".to_string(), vec![1.0, 1.0, 0.0, 0.0]),
            ("length".to_string(), vec![-0.5, -0.1, -1.0, 0.0]),
        ]
    );
    let means = s.means();
    assert_eq!(means[0], ("correct".to_string(), 0.5));
    assert_eq!(means[1], ("format".to_string(), 0.5));
    assert_eq!(means[2].0, "length");
    assert!((means[2].1 - -0.4).abs() < 1e-6);
    // an empty batch
    let empty = rewards.score(&[]).unwrap();
    assert!(empty.total.is_empty());
    assert_eq!(empty.means()[0], ("correct".to_string(), 0.0));
}

#[test]
fn correct_alone_is_bit_identical_to_the_old_reward() {
    let texts = ["#### 18", "#### 17", "", "18", "#### -0", "#### 0"];
    for mode in crate::extract::ExtractMode::ALL {
        let mut o = opts();
        o.extract = mode;
        let mut rewards = Rewards::new(&specs(&["correct:1.0"]), &o).unwrap();
        let batch: Vec<_> = texts.iter().map(|t| c(t, "18", 3)).collect();
        let s = rewards.score(&batch).unwrap();
        for (t, got) in texts.iter().zip(&s.total) {
            let old = f32::from(u8::from(is_correct(t, "18", mode)));
            assert_eq!(got.to_bits(), old.to_bits(), "{mode:?} {t:?}");
        }
    }
    // the named modes ignore the run's mode
    let mut rewards = Rewards::new(&specs(&["correct-flexible", "correct-boxed:0"]), &opts()).unwrap();
    let s = rewards.score(&[c("it is 18", "18", 1)]).unwrap();
    assert_eq!(s.total, [1.0]);
    assert_eq!(
        s.means(),
        [
            ("correct-flexible".to_string(), 1.0),
            ("correct-boxed".to_string(), 0.0)
        ]
    );
}

#[test]
fn building_errors() {
    let e = Rewards::new(&[], &opts()).unwrap_err();
    assert!(matches!(e, RewardError::NoRewards));
    let e = Rewards::new(&specs(&["correct", "format", "correct:2"]), &opts()).unwrap_err();
    assert_eq!(e.to_string(), "reward `correct` given twice");
    let e = Rewards::new(&specs(&["cmd"]), &opts()).unwrap_err();
    assert!(matches!(e, RewardError::MissingCommand));
    let mut o = opts();
    o.command = Some("python3 judge.py".into());
    let e = Rewards::new(&specs(&["correct"]), &o).unwrap_err();
    assert!(matches!(e, RewardError::UnusedCommand { .. }));
    assert!(e.to_string().contains("`python3 judge.py`"), "{e}");
    o.command = Some("   ".into());
    let e = Rewards::new(&specs(&["cmd"]), &o).unwrap_err();
    assert!(matches!(e, RewardError::EmptyCommand));
    let mut o = opts();
    o.format_pattern = Some("<answer>".into());
    let e = Rewards::new(&specs(&["correct"]), &o).unwrap_err();
    assert!(matches!(e, RewardError::UnusedPattern { .. }));
    o.format_pattern = Some("[0-9".into());
    let e = Rewards::new(&specs(&["format"]), &o).unwrap_err();
    assert!(matches!(e, RewardError::Pattern { ref pattern, .. } if pattern == "[0-9"));
    let mut o = opts();
    o.max_new_tokens = 0;
    assert!(matches!(
        Rewards::new(&specs(&["length"]), &o),
        Err(RewardError::ZeroMaxTokens)
    ));
    // a custom format pattern is used
    let mut o = opts();
    o.format_pattern = Some(r"^<think>".into());
    let mut r = Rewards::new(&specs(&["format"]), &o).unwrap();
    assert_eq!(
        r.score(&[c("<think>x", "", 1), c("x", "", 1)]).unwrap().total,
        [1.0, 0.0]
    );
}

/// A custom reward returning what it is told.
struct Fixed(Vec<f32>);

impl Reward for Fixed {
    fn name(&self) -> &str {
        "fixed"
    }
    fn score(&mut self, _: &[Completion<'_>]) -> Result<Vec<f32>, RewardError> {
        Ok(self.0.clone())
    }
}

#[test]
fn custom_rewards_are_checked() {
    let mut r = Rewards::new(&specs(&["correct"]), &opts()).unwrap();
    r.push(0.5, Box::new(Fixed(vec![2.0]))).unwrap();
    assert_eq!(r.names(), ["correct", "fixed"]);
    assert_eq!(r.score(&[c("#### 18", "18", 1)]).unwrap().total, [2.0]);
    assert!(matches!(
        r.push(1.0, Box::new(Fixed(vec![]))),
        Err(RewardError::Duplicate { .. })
    ));
    assert!(matches!(
        r.push(f32::NAN, Box::new(Fixed(vec![]))),
        Err(RewardError::NonFiniteWeight { .. })
    ));
    let mut r = Rewards::new(&specs(&["correct"]), &opts()).unwrap();
    r.push(1.0, Box::new(Fixed(vec![1.0, 2.0]))).unwrap();
    let e = r.score(&[c("", "", 0)]).unwrap_err();
    assert_eq!(e.to_string(), "reward `fixed` gave 2 scores for 1 completions");
    let mut r = Rewards::new(&specs(&["correct"]), &opts()).unwrap();
    r.push(1.0, Box::new(Fixed(vec![0.0, f32::INFINITY]))).unwrap();
    let e = r.score(&[c("", "", 0), c("", "", 0)]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "reward `fixed` gave inf for completion 2 of the batch"
    );
}

#[test]
fn program_end_to_end() {
    let mut o = opts();
    o.command = Some(format!("python3 {ANSWER_REWARD}"));
    let mut rewards = Rewards::new(&specs(&["correct:1.0", "cmd:0.5"]), &o).unwrap();
    assert_eq!(rewards.names(), ["correct", "cmd"]);
    let batch = [
        c("She pays $1,000.", "1000", 5),
        c("#### 18", "18", 5),
        c("#### 17", "18", 5),
        c("quote \" and \\ and\nnewline and ünïcode: 18.00", "18", 5),
    ];
    let s = rewards.score(&batch).unwrap();
    assert_eq!(s.components[1], ("cmd".to_string(), vec![1.0, 1.0, 0.0, 1.0]));
    assert_eq!(s.total, [0.5, 1.5, 0.0, 0.5]);
    // a second batch, same process
    let s = rewards
        .score(&[c("no number", "3", 1), c("it is -5", "-5", 1)])
        .unwrap();
    assert_eq!(s.components[1].1, [0.0, 1.0]);
}

#[test]
fn program_is_long_running() {
    // answers with the number of requests it has read so far
    let script = Script::new(
        "import sys\nn = 0\nfor line in sys.stdin:\n    n += 1\n    print(f' {n} ', flush=True)\n",
    );
    let mut program = script.program();
    let pid = program.id();
    let batch = [c("a", "1", 1), c("b", "1", 1), c("c", "1", 1)];
    assert_eq!(program.score(&batch).unwrap(), [1.0, 2.0, 3.0]);
    assert_eq!(program.score(&[]).unwrap(), Vec::<f32>::new());
    assert_eq!(program.score(&batch[..2]).unwrap(), [4.0, 5.0]);
    assert_eq!(program.id(), pid);
}

#[test]
fn program_large_batches_do_not_deadlock() {
    // > 64 KiB of requests to the example program
    let long = format!("{} so the answer is 7", "word ".repeat(400));
    let batch: Vec<_> = (0..200)
        .map(|i| c(&long, if i % 2 == 0 { "7" } else { "8" }, 10))
        .collect();
    let mut program = Program::spawn(&answer_reward_argv(), Duration::from_secs(20)).unwrap();
    let t = Instant::now();
    let scores = program.score(&batch).unwrap();
    assert_eq!(scores.len(), 200);
    assert!(
        scores
            .iter()
            .enumerate()
            .all(|(i, &x)| x == if i % 2 == 0 { 1.0 } else { 0.0 })
    );
    // > 64 KiB both ways: it answers with long lines before reading everything
    let script =
        Script::new("import sys\nfor line in sys.stdin:\n    print('0.5' + ' ' * 2000, flush=True)\n");
    let mut padded = script.program();
    assert_eq!(padded.score(&batch).unwrap(), vec![0.5; 200]);
    assert!(t.elapsed() < Duration::from_secs(10));
}

#[test]
fn program_exiting_mid_batch() {
    let script = Script::new("import sys\nsys.stdin.readline()\nprint(1, flush=True)\nsys.exit(1)\n");
    let mut program = script.program();
    let batch = [c("a", "1", 1), c("b", "1", 1), c("c", "1", 1)];
    let e = program.score(&batch).unwrap_err();
    let argv = script.argv().join(" ");
    assert!(
        matches!(
            e,
            RewardError::Exited {
                answered: 1,
                expected: 3,
                ..
            }
        ),
        "{e:?}"
    );
    if cfg!(unix) {
        assert_eq!(
            e.to_string(),
            format!("reward program `{argv}` exited (exit status: 1) after 1 of 3 answers")
        );
    }
    // dead: later calls fail at once
    let e = program.score(&batch).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("reward program `{argv}` failed earlier and is not restarted")
    );
    // the same with a batch larger than the pipe: writing fails too, the exit is reported
    let long = "x".repeat(2000);
    let batch: Vec<_> = (0..200).map(|_| c(&long, "1", 1)).collect();
    let e = script.program().score(&batch).unwrap_err();
    assert!(
        matches!(
            e,
            RewardError::Exited {
                answered: 1,
                expected: 200,
                status: Some(_),
                ..
            }
        ),
        "{e:?}"
    );
}

#[test]
fn program_exiting_between_batches() {
    let script = Script::new("import sys\nsys.stdin.readline()\nprint(1, flush=True)\n");
    let mut program = script.program();
    assert_eq!(program.score(&[c("a", "1", 1)]).unwrap(), [1.0]);
    let e = program.score(&[c("b", "1", 1), c("c", "1", 1)]).unwrap_err();
    assert!(
        matches!(
            e,
            RewardError::Exited {
                answered: 0,
                expected: 2,
                ..
            }
        ),
        "{e:?}"
    );
}

#[test]
fn program_printing_garbage() {
    // answers 0.5, except `hello` to its 4th request
    let script = Script::new(
        "import sys\nn = 0\nfor line in sys.stdin:\n    n += 1\n    print('hello' if n == 4 else 0.5, flush=True)\n",
    );
    let mut program = script.program();
    let batch = [c("a", "1", 1), c("b", "1", 1), c("c", "1", 1)];
    assert_eq!(program.score(&batch[..2]).unwrap(), [0.5, 0.5]);
    let e = program.score(&batch).unwrap_err();
    let argv = script.argv().join(" ");
    assert_eq!(
        e.to_string(),
        format!(
            "reward program `{argv}`: line 4 of its output is `hello`, not a finite number \
             (the answer to completion 2 of 3)"
        )
    );
    assert!(matches!(program.score(&batch), Err(RewardError::Dead { .. })));
    // non-finite numbers are refused too
    let script = Script::new("import sys\nfor line in sys.stdin:\n    print('nan', flush=True)\n");
    let e = script.program().score(&batch).unwrap_err();
    assert!(
        matches!(
            e,
            RewardError::NotANumber {
                line: 1,
                index: 0,
                ..
            }
        ),
        "{e:?}"
    );
}

#[test]
fn program_talking_out_of_turn() {
    // a banner before any request: either seen before the batch or read as an answer
    let script = Script::new(
        "import sys\nprint('ready', flush=True)\nfor line in sys.stdin:\n    print(1, flush=True)\n",
    );
    let mut program = script.program();
    std::thread::sleep(Duration::from_millis(300));
    let e = program.score(&[c("a", "1", 1)]).unwrap_err();
    // which of the two depends on whether python printed the banner within the 300 ms (a
    // loaded machine may take longer to start it): the line is named either way
    match &e {
        RewardError::Unexpected { line: 1, .. } => {
            assert!(e.to_string().contains("line 1 of its output (`ready`)"), "{e}")
        }
        RewardError::NotANumber { line: 1, .. } => assert!(e.to_string().contains("`ready`"), "{e}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn program_timeout() {
    let script = Script::new("import sys, time\nsys.stdin.readline()\ntime.sleep(60)\n");
    let mut program = Program::spawn(&script.argv(), Duration::from_millis(300)).unwrap();
    let t = Instant::now();
    let e = program.score(&[c("a", "1", 1), c("b", "1", 1)]).unwrap_err();
    assert!(
        matches!(
            e,
            RewardError::Timeout {
                index: 0,
                batch: 2,
                ..
            }
        ),
        "{e:?}"
    );
    let argv = script.argv().join(" ");
    assert_eq!(
        e.to_string(),
        format!("reward program `{argv}` gave no answer within 0.3 s (completion 1 of 2)")
    );
    assert!(t.elapsed() < Duration::from_secs(5));
    assert!(matches!(
        program.score(&[c("a", "1", 1)]),
        Err(RewardError::Dead { .. })
    ));
    // dropping kills the sleeping process without waiting for it
    let t = Instant::now();
    drop(program);
    assert!(t.elapsed() < Duration::from_secs(2));
}

#[test]
fn program_that_does_not_exist() {
    let argv = vec![
        "tinylora-no-such-reward-program".to_string(),
        "--flag".to_string(),
    ];
    let e = Program::spawn(&argv, DEFAULT_TIMEOUT).unwrap_err();
    assert!(matches!(e, RewardError::Start { .. }));
    assert_eq!(
        e.to_string(),
        "reward program `tinylora-no-such-reward-program --flag` could not be started"
    );
    assert!(std::error::Error::source(&e).is_some());
    assert!(matches!(
        Program::spawn(&[], DEFAULT_TIMEOUT),
        Err(RewardError::EmptyCommand)
    ));
    // through Rewards
    let mut o = opts();
    o.command = Some("tinylora-no-such-reward-program".into());
    assert!(matches!(
        Rewards::new(&specs(&["cmd"]), &o),
        Err(RewardError::Start { .. })
    ));
}
