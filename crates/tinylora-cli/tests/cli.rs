//! The `tinylora` binary end to end: JSON generation on the real default model, the planner,
//! charts, and error reporting.

use std::path::PathBuf;
use std::process::{Command, Output};

use tinylora_formats::{ChatMessage, ModelFile};

fn smollm2() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(path.exists(), "run scripts/fetch_models.sh smollm2 first");
    path
}

fn tinylora(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tinylora"))
        .args(args)
        .output()
        .unwrap()
}

fn json_lines(out: &Output) -> Vec<serde_json::Value> {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn generate_json_greedy_and_seeded_sampling() {
    let model = smollm2();
    let model = model.to_str().unwrap();
    let prompt = "What is 2 + 3?";
    let common = [
        "generate",
        "--model",
        model,
        "--chat",
        "--prompt",
        prompt,
        "--max-new-tokens",
        "6",
        "--json",
    ];
    let greedy = json_lines(&tinylora(&[&common[..], &["--num-samples", "2"]].concat()));
    assert_eq!(greedy.len(), 2);
    assert_eq!(
        greedy[0]["output_ids"], greedy[1]["output_ids"],
        "greedy samples agree"
    );
    // the prompt is the model's own chat template, tokenized
    let file = ModelFile::open(std::path::Path::new(model)).unwrap();
    let text = file
        .chat_template
        .as_ref()
        .unwrap()
        .render(&[ChatMessage::new("user", prompt)], true)
        .unwrap();
    let ids: Vec<u64> = file
        .tokenizer
        .encode(&text)
        .unwrap()
        .into_iter()
        .map(u64::from)
        .collect();
    assert_eq!(greedy[0]["prompt_ids"], serde_json::json!(ids));
    let out_ids = greedy[0]["output_ids"].as_array().unwrap();
    let logprobs = greedy[0]["logprobs"].as_array().unwrap();
    assert!(!out_ids.is_empty() && out_ids.len() <= 6 && logprobs.len() == out_ids.len());
    assert!(logprobs.iter().all(|l| l.as_f64().unwrap() <= 0.0));
    let decoded = file
        .tokenizer
        .decode(
            &out_ids
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect::<Vec<_>>(),
        )
        .unwrap();
    assert_eq!(greedy[0]["text"], serde_json::json!(decoded));

    let sampled = [
        &common[..],
        &[
            "--num-samples",
            "3",
            "--temperature",
            "1",
            "--top-p",
            "0.9",
            "--seed",
            "5",
        ],
    ]
    .concat();
    let a = json_lines(&tinylora(&sampled));
    let b = json_lines(&tinylora(&sampled));
    assert_eq!(a.len(), 3);
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(
            x["output_ids"], y["output_ids"],
            "the same seed gives the same samples"
        );
        assert_eq!(x["text"], y["text"]);
        // log-probabilities agree to float rounding (burn autotunes its kernels per process)
        for (p, q) in x["logprobs"]
            .as_array()
            .unwrap()
            .iter()
            .zip(y["logprobs"].as_array().unwrap())
        {
            assert!(
                (p.as_f64().unwrap() - q.as_f64().unwrap()).abs() < 1e-4,
                "{p} vs {q}"
            );
        }
    }
}

#[test]
fn plan_counts_and_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cfg = dir.join("config.json");
    std::fs::write(
        &cfg,
        r#"{"model_type": "llama", "hidden_size": 8192, "intermediate_size": 28672,
            "num_hidden_layers": 80, "num_attention_heads": 64, "num_key_value_heads": 8,
            "vocab_size": 128256}"#,
    )
    .unwrap();
    let out = tinylora(&["plan", "--model", cfg.to_str().unwrap()]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("N_params:          560"), "{text}");
    assert!(text.contains("bytes:             2240"), "{text}");

    let bad = tinylora(&["info", "--model", cfg.to_str().unwrap()]);
    assert!(!bad.status.success());
    let err = String::from_utf8(bad.stderr).unwrap();
    assert!(err.contains("config.json: not a GGUF file"), "{err}");
    let bad = tinylora(&["plan", "--model", cfg.to_str().unwrap(), "--tying", "sideways"]);
    assert!(
        String::from_utf8(bad.stderr)
            .unwrap()
            .contains("unknown tying `sideways`")
    );
}

/// A one-number TinyLoRA adapter (full tying) for SmolLM2, written with the library.
fn write_adapter(path: &std::path::Path, model: &std::path::Path, value: f32, fingerprint: Option<&str>) {
    use tinylora_adapter::{AdapterConfig, AdapterFile, Tying};
    let file = ModelFile::open(model).unwrap();
    let adapter = AdapterFile {
        config: AdapterConfig {
            tying: Tying::Full,
            ..AdapterConfig::default()
        },
        base_fingerprint: fingerprint.map_or_else(|| file.fingerprint(), String::from),
        values: vec![value],
    };
    adapter.save(path).unwrap();
}

fn output_ids(out: &Output) -> serde_json::Value {
    json_lines(out)[0]["output_ids"].clone()
}

#[test]
fn generate_with_adapter_equals_the_merged_model_and_the_peft_export_and_differs_from_the_base() {
    let model = smollm2();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let adapter = dir.join("one.safetensors");
    write_adapter(&adapter, &model, 1.0, None);
    let (m, a) = (model.to_str().unwrap(), adapter.to_str().unwrap());
    let args = |model: &str| {
        vec![
            "generate",
            "--model",
            model,
            "--chat",
            "--prompt",
            "Name a colour.",
            "--max-new-tokens",
            "8",
            "--json",
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>()
    };
    let run = |extra: &[&str], model: &str| {
        let mut a = args(model);
        a.extend(extra.iter().map(|s| s.to_string()));
        tinylora(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let base = output_ids(&run(&["--device", "gpu"], m));
    let adapted = output_ids(&run(&["--device", "gpu", "--adapter", a], m));
    assert_ne!(
        base, adapted,
        "a one-number adapter at v = 1 should change the greedy answer"
    );
    // the default, --device auto: the CPU, and saying so, exactly when wgpu has no hardware GPU
    let auto = run(&["--adapter", a], m);
    let said_cpu = String::from_utf8_lossy(&auto.stderr).contains("running on the CPU: no hardware GPU");
    assert_eq!(
        said_cpu,
        !tinylora_engine::hardware_gpu_available(),
        "--device auto picks the CPU iff there is no hardware GPU"
    );
    assert_eq!(output_ids(&auto), adapted, "the adapter with --device auto");
    // on the CPU (burn's Flex backend; the merge runs as stock ops there): the same answers
    assert_eq!(
        output_ids(&run(&["--device", "cpu"], m)),
        base,
        "the base model on the CPU"
    );
    assert_eq!(
        output_ids(&run(&["--device", "cpu", "--adapter", a], m)),
        adapted,
        "the adapter on the CPU"
    );

    let merged = dir.join("merged");
    let out = tinylora(&[
        "merge",
        "--model",
        m,
        "--adapter",
        a,
        "--out",
        merged.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        assert!(merged.join(f).exists(), "merge wrote no {f}");
    }
    let from_merged = output_ids(&run(&[], merged.to_str().unwrap()));
    assert_eq!(
        from_merged, adapted,
        "the merged directory generates what the adapter does"
    );

    // exported in PEFT's format and imported back: the same answer
    let peft = dir.join("peft");
    let out = tinylora(&[
        "export-peft",
        "--model",
        m,
        "--adapter",
        a,
        "--out",
        peft.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let from_peft = output_ids(&run(&["--adapter", peft.to_str().unwrap()], m));
    assert_eq!(
        from_peft, adapted,
        "the PEFT export generates what the adapter does"
    );

    // an adapter made for another model is refused, naming the file
    let foreign = dir.join("foreign.safetensors");
    write_adapter(&foreign, &model, 1.0, Some("0123456789abcdef"));
    let out = run(&["--adapter", foreign.to_str().unwrap()], m);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("foreign.safetensors") && err.contains("made for base model"),
        "{err}"
    );
}

#[test]
fn eval_reports_accuracies_that_match_its_per_problem_file_and_logs_progress_without_a_terminal() {
    let model = smollm2();
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/arithmetic.jsonl");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let results = dir.join("eval.jsonl");
    let out = tinylora(&[
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--device",
        "cpu",
        "--data",
        data.to_str().unwrap(),
        "--limit",
        "20",
        "--batch-size",
        "8",
        "--max-new-tokens",
        "8",
        "--instruction",
        "",
        "--answer-prefix",
        "The answer is",
        "--out",
        results.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // stderr is a pipe here, so no bar is drawn: one line per batch of 8 instead (and one every
    // 30 s within a slow batch, repeating the count: left out here)
    let mut count = "0";
    let progress: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("evaluated "))
        .filter(|l| {
            let done = l.split([' ', '/']).nth(1).unwrap_or("");
            std::mem::replace(&mut count, done) != done
        })
        .collect();
    assert_eq!(progress.len(), 3, "one line per batch:\n{stderr}");
    for (line, done) in progress.iter().zip([8, 16, 20]) {
        assert!(
            line.starts_with(&format!("evaluated {done}/20 problems")),
            "{line}"
        );
    }
    // the printed accuracies, recounted from the per-problem file
    let records: Vec<serde_json::Value> = std::fs::read_to_string(&results)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 20, "one line per problem");
    let stdout = String::from_utf8_lossy(&out.stdout);
    for (i, mode) in ["strict", "flexible", "boxed"].into_iter().enumerate() {
        let right = records
            .iter()
            .filter(|r| r["correct_by_mode"][i].as_bool().unwrap())
            .count();
        let line = format!("accuracy {:>6.2}%", 100.0 * right as f64 / 20.0);
        assert!(
            stdout.lines().any(|l| l.starts_with(mode) && l.contains(&line)),
            "{mode}: {right}/20 = {line} not in\n{stdout}"
        );
    }
}

#[test]
fn training_and_evaluation_report_bad_input_clearly() {
    let model = smollm2();
    let m = model.to_str().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let bad = dir.join("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"question\": \"1+1?\", \"answer\": \"2\"}\n{\"question\": 5}\n",
    )
    .unwrap();
    let stderr = |out: Output| {
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let e = stderr(tinylora(&["eval", "--model", m, "--data", bad.to_str().unwrap()]));
    assert!(e.contains("bad.jsonl:2:"), "{e}");
    // prompts longer than --max-prompt-tokens are left out, each named by its line
    let long = dir.join("long.jsonl");
    let question = "1+1 ".repeat(200);
    std::fs::write(
        &long,
        format!("{{\"question\": \"2+2?\", \"answer\": \"4\"}}\n{{\"question\": \"{question}\", \"answer\": \"2\"}}\n{{\"question\": \"3+3?\", \"answer\": \"6\"}}\n"),
    )
    .unwrap();
    let results = dir.join("long-eval.jsonl");
    let out = tinylora(&[
        "eval",
        "--model",
        m,
        "--device",
        "cpu",
        "--data",
        long.to_str().unwrap(),
        "--max-new-tokens",
        "1",
        "--max-prompt-tokens",
        "100",
        "--out",
        results.to_str().unwrap(),
    ]);
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{e}");
    assert!(
        e.contains("left out 1 of 3 problems whose prompts have more than 100 tokens")
            && e.contains("long.jsonl:2 ("),
        "{e}"
    );
    assert_eq!(std::fs::read_to_string(&results).unwrap().lines().count(), 2);
    // --out is checked before the model loads, not after the evaluation
    let nowhere = dir.join("missing/eval.jsonl");
    let e = stderr(tinylora(&[
        "eval",
        "--model",
        m,
        "--data",
        long.to_str().unwrap(),
        "--out",
        nowhere.to_str().unwrap(),
    ]));
    assert!(e.contains("--out") && e.contains("missing"), "{e}");
    assert!(!e.contains("loaded"), "refused before loading the model: {e}");
    let out_dir = dir.join("run");
    let e = stderr(tinylora(&[
        "train",
        "grpo",
        "--model",
        m,
        "--data",
        bad.to_str().unwrap(),
        "--group-size",
        "1",
        "--out",
        out_dir.to_str().unwrap(),
    ]));
    assert!(e.contains("--group-size must be at least 2"), "{e}");
    let e = stderr(tinylora(&[
        "train",
        "sft",
        "--model",
        m,
        "--data",
        bad.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
    ]));
    assert!(e.contains("bad.jsonl:2:"), "{e}");
    let good = dir.join("good.jsonl");
    std::fs::write(&good, "{\"question\": \"1+1?\", \"answer\": \"2\"}\n").unwrap();
    let fresh = dir.join("fresh");
    let e = stderr(tinylora(&[
        "train",
        "grpo",
        "--model",
        m,
        "--data",
        good.to_str().unwrap(),
        "--resume",
        "--out",
        fresh.to_str().unwrap(),
    ]));
    assert!(
        e.contains("--resume: no checkpoint here") && e.contains("state.json"),
        "{e}"
    );

    // --config: its keys are flags, command-line flags override them, unknown keys are named
    let toml = dir.join("train.toml");
    let write_toml = |extra: &str| {
        let text = format!(
            "model = {m:?}\ndata = {:?}\ngroup_size = 1\nout = {:?}\n{extra}",
            good.to_str().unwrap(),
            fresh.to_str().unwrap()
        );
        std::fs::write(&toml, text).unwrap();
    };
    write_toml("");
    let cfg = toml.to_str().unwrap();
    let e = stderr(tinylora(&["train", "grpo", "--config", cfg]));
    assert!(
        e.contains("--group-size must be at least 2"),
        "the file's group_size is used: {e}"
    );
    let e = stderr(tinylora(&[
        "train",
        "grpo",
        "--config",
        cfg,
        "--group-size",
        "4",
        "--resume",
    ]));
    assert!(
        e.contains("--resume: no checkpoint here"),
        "the command line overrides the file: {e}"
    );
    write_toml("group_sise = 4\n");
    let e = stderr(tinylora(&["train", "grpo", "--config", cfg]));
    assert!(
        e.contains("train.toml") && e.contains("unknown key `group_sise`"),
        "{e}"
    );

    // rewards: unknown names, a `cmd` reward without its program, and the other way round are
    // refused before the model loads; a TOML list of rewards is the repeated flag
    let grpo = |extra: &[&str]| {
        let mut args = vec!["train", "grpo", "--model", m, "--data", good.to_str().unwrap()];
        args.extend_from_slice(&["--out", fresh.to_str().unwrap()]);
        args.extend_from_slice(extra);
        stderr(tinylora(&args))
    };
    let e = grpo(&["--reward", "correct:1", "--reward", "bogus:2"]);
    assert!(
        e.contains("unknown reward `bogus`") && e.contains("format"),
        "{e}"
    );
    let e = grpo(&["--reward", "correct:1,cmd:0.5"]);
    assert!(
        e.contains("reward `cmd` needs a program (--reward-cmd PROG)"),
        "{e}"
    );
    let e = grpo(&["--reward-cmd", "python3 x.py"]);
    assert!(e.contains("no `cmd` reward"), "{e}");
    let e = grpo(&["--reward", "format:nan"]);
    assert!(e.contains("format:nan"), "{e}");
    let e = grpo(&["--temperature", "nan"]);
    assert!(e.contains("temperature is NaN"), "{e}");
    let e = grpo(&["--lr", "inf"]);
    assert!(e.contains("lr is inf"), "{e}");
    write_toml("reward = [\"correct:1\", \"cmd:1\"]\n");
    let e = stderr(tinylora(&["train", "grpo", "--config", cfg, "--group-size", "4"]));
    assert!(
        e.contains("reward `cmd` needs a program"),
        "the list reached the flag: {e}"
    );
}

#[test]
fn plot_writes_svg_and_png_of_the_same_chart_and_names_bad_lines() {
    let metrics =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/main-job-lavapipe.metrics.jsonl");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (svg, png) = (dir.join("chart.svg"), dir.join("chart.PNG"));
    for out in [&svg, &png] {
        let run = tinylora(&["plot", metrics.to_str().unwrap(), "-o", out.to_str().unwrap()]);
        assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    }
    let svg = std::fs::read_to_string(&svg).unwrap();
    assert!(
        svg.contains(">main-job-lavapipe.metrics</text>"),
        "legend label: {svg}"
    );
    let attr = |name: &str| -> u32 {
        let start = svg.find(&format!(" {name}=\"")).unwrap() + name.len() + 3;
        svg[start..].split('"').next().unwrap().parse().unwrap()
    };
    // PNG signature, then the IHDR chunk: width and height (big-endian), twice the SVG's size
    let png = std::fs::read(&png).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert_eq!(&png[12..16], b"IHDR");
    let be = |b: &[u8]| u32::from_be_bytes(b.try_into().unwrap());
    assert_eq!(
        (be(&png[16..20]), be(&png[20..24])),
        (2 * attr("width"), 2 * attr("height"))
    );

    let bad = dir.join("bad.jsonl");
    std::fs::write(&bad, "{\"step\": 1}\n").unwrap();
    let failure = |input: &std::path::Path, out: &str| {
        let run = tinylora(&[
            "plot",
            input.to_str().unwrap(),
            "-o",
            dir.join(out).to_str().unwrap(),
        ]);
        assert!(!run.status.success());
        String::from_utf8_lossy(&run.stderr).into_owned()
    };
    let e = failure(&bad, "x.png");
    assert!(e.contains("bad.jsonl:1: not a metrics line"), "{e}");
    let e = failure(&metrics, "x.jpg");
    assert!(e.contains("x.jpg: the chart is written as .svg or .png"), "{e}");
    assert!(!dir.join("x.png").exists() && !dir.join("x.jpg").exists());
}
