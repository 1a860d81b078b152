//! Parameter planning from configs alone, against the paper's counts (SPEC.md §1).

mod common;

use tinylora::adapter::{
    AdapterConfig, ConfigError, Method, Precision, TieGroups, Tying, budget_options, plan,
};
use tinylora::formats::{ModuleKind, read_model_config};

/// Meta-Llama-3-70B's published config.json (architecture fields only).
const LLAMA3_70B: &str = r#"{"architectures": ["LlamaForCausalLM"], "model_type": "llama",
  "hidden_size": 8192, "intermediate_size": 28672, "num_hidden_layers": 80,
  "num_attention_heads": 64, "num_key_value_heads": 8, "vocab_size": 128256,
  "rope_theta": 500000.0, "rms_norm_eps": 1e-05, "max_position_embeddings": 8192,
  "tie_word_embeddings": false}"#;

/// Qwen2.5-7B-Instruct's published config.json (architecture fields only).
const QWEN25_7B: &str = r#"{"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
  "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
  "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064,
  "rope_theta": 1000000.0, "rms_norm_eps": 1e-06, "max_position_embeddings": 32768,
  "tie_word_embeddings": false}"#;

fn config(name: &str, json: &str) -> tinylora::formats::ModelConfig {
    let dir = common::temp_dir(name);
    let path = dir.join("config.json");
    std::fs::write(&path, json).unwrap();
    read_model_config(&path).unwrap()
}

fn tinylora(u: usize, tying: Tying) -> AdapterConfig {
    AdapterConfig {
        u,
        tying,
        ..AdapterConfig::default()
    }
    .validated()
    .unwrap()
}

#[test]
fn paper_counts_from_config_json_alone() {
    let llama = config("llama70b", LLAMA3_70B);
    let p = plan(&llama, &tinylora(1, Tying::None));
    assert_eq!(
        (p.n_layers, p.modules_per_layer, p.groups, p.params, p.bytes),
        (80, 7, 560, 560, 2240)
    );

    let qwen = config("qwen7b", QWEN25_7B);
    assert_eq!(
        plan(&qwen, &tinylora(1, Tying::None)).params,
        196,
        "the paper's 196-parameter run"
    );
    let thirteen = plan(&qwen, &tinylora(13, Tying::Full));
    assert_eq!(
        (thirteen.params, thirteen.bytes),
        (13, 52),
        "13 f32 parameters = 52 bytes"
    );
    let bf16 = AdapterConfig {
        precision: Precision::Bf16,
        ..tinylora(13, Tying::Full)
    };
    assert_eq!(plan(&qwen, &bf16).bytes, 26, "13 bf16 parameters = 26 bytes");
    // N = n·m·u / n_tie when n_tie divides n·m
    assert_eq!(
        plan(&qwen, &tinylora(2, Tying::Tiled { n_tie: 14 })).params,
        196 * 2 / 14
    );
    // structured: one group per module type and block of n_tie layers
    assert_eq!(
        plan(&qwen, &tinylora(1, Tying::Structured { n_tie: 28 })).params,
        7
    );
    assert_eq!(
        plan(&qwen, &tinylora(3, Tying::Structured { n_tie: 10 })).params,
        7 * 3 * 3
    );
}

#[test]
fn lora_and_lora_xs_counts() {
    let qwen = config("qwen7b-lora", QWEN25_7B);
    let xs = AdapterConfig {
        method: Method::LoraXs,
        ..AdapterConfig::default()
    };
    assert_eq!(plan(&qwen, &xs.validated().unwrap()).params, 196 * 4);
    // LoRA: r (d_in + d_out) per module, from the published shapes
    let (h, f, kv) = (3584, 18944, 4 * 128);
    let per_layer = (h + h) + (h + kv) * 2 + (h + h) + (h + f) * 3;
    let lora = AdapterConfig {
        method: Method::Lora,
        rank: 8,
        ..AdapterConfig::default()
    };
    assert_eq!(plan(&qwen, &lora.validated().unwrap()).params, 28 * 8 * per_layer);
    let tied_lora = AdapterConfig {
        method: Method::Lora,
        tying: Tying::Full,
        ..AdapterConfig::default()
    };
    assert_eq!(tied_lora.validated(), Err(ConfigError::TiedLora));
}

#[test]
fn smollm2_budget_of_13() {
    let smol = read_model_config(&common::smollm2()).unwrap();
    let options = budget_options(&smol, &AdapterConfig::default(), 13);
    assert!(!options.is_empty());
    for (cfg, p) in &options {
        assert_eq!(p.params, 13);
        assert_eq!(plan(&smol, cfg).params, 13);
    }
    let has = |u, tying| options.iter().any(|(c, _)| c.u == u && c.tying == tying);
    assert!(has(13, Tying::Full));
    assert!(
        has(1, Tying::Tiled { n_tie: 17 }),
        "210 modules in 13 tiles of 17"
    );
}

#[test]
fn tie_groups_share_the_way_they_say() {
    let all = ModuleKind::ALL;
    let tiled = TieGroups::new(2, &all, Tying::Tiled { n_tie: 3 });
    assert_eq!(tiled.group, [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4]);
    assert_eq!(tiled.num_groups, 5);
    let structured = TieGroups::new(3, &[ModuleKind::Q, ModuleKind::K], Tying::Structured { n_tie: 3 });
    // modules in layer order: (l0,q) (l0,k) (l1,q) (l1,k) (l2,q) (l2,k)
    assert_eq!(structured.group, [0, 1, 0, 1, 0, 1]);
    assert_eq!(structured.members(1), [1, 3, 5]);
    assert_eq!(TieGroups::new(4, &all, Tying::Full).num_groups, 1);
    assert_eq!(TieGroups::new(4, &all, Tying::None).num_groups, 28);
}

#[test]
fn bad_adapter_options_are_reported() {
    assert_eq!(
        "qkv".parse::<ModuleKind>().unwrap_err().to_string(),
        "unknown module `qkv` (known: q, k, v, o, gate, up, down)"
    );
    let none = AdapterConfig {
        targets: vec![],
        ..AdapterConfig::default()
    };
    assert_eq!(none.validated(), Err(ConfigError::NoTargets));
    let zero = AdapterConfig {
        u: 0,
        ..AdapterConfig::default()
    };
    assert!(
        zero.validated()
            .unwrap_err()
            .to_string()
            .contains("u must be at least 1")
    );
    let order = AdapterConfig {
        targets: vec![ModuleKind::Down, ModuleKind::Q, ModuleKind::Down],
        ..AdapterConfig::default()
    };
    assert_eq!(
        order.validated().unwrap().targets,
        [ModuleKind::Q, ModuleKind::Down]
    );
}
