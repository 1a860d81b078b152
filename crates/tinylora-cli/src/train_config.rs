//! `tinylora train grpo|sft --config train.toml`: flags from a TOML file. Each top-level key
//! names a flag of the command (`group_size = 8` or `group-size = 8` is `--group-size 8`,
//! `targets = ["q", "v"]` is `--targets q,v`, `resume = true` is `--resume`); flags given on
//! the command line come after them and win.

use std::ffi::OsString;
use std::path::Path;

use anyhow::{Context, bail};
use clap::CommandFactory;

/// The long flags `tinylora train <sub>` accepts.
fn known_flags<C: CommandFactory>(sub: &str) -> Vec<String> {
    C::command()
        .find_subcommand("train")
        .and_then(|t| t.find_subcommand(sub))
        .map(|c| {
            c.get_arguments()
                .filter_map(|a| a.get_long().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// One TOML entry as command-line words.
fn flag_words(path: &Path, key: &str, value: &toml::Value) -> anyhow::Result<Vec<OsString>> {
    let flag = format!("--{}", key.replace('_', "-"));
    let scalar = |v: &toml::Value| -> anyhow::Result<String> {
        Ok(match v {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            other => bail!(
                "{}: `{key}` = {other}: expected a string, a number or a list",
                path.display()
            ),
        })
    };
    Ok(match value {
        toml::Value::Boolean(true) => vec![flag.into()],
        toml::Value::Boolean(false) => vec![],
        toml::Value::Array(items) => {
            let words = items.iter().map(scalar).collect::<anyhow::Result<Vec<_>>>()?;
            vec![flag.into(), words.join(",").into()]
        }
        other => vec![flag.into(), scalar(other)?.into()],
    })
}

/// `args` with the flags of a `--config FILE` given to `tinylora train <sub>` inserted right
/// after `<sub>` (so that later command-line flags override them); other commands unchanged.
pub fn expand<C: CommandFactory>(args: Vec<OsString>) -> anyhow::Result<Vec<OsString>> {
    let words: Vec<String> = args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
    let Some(train) = words.iter().position(|w| w == "train") else {
        return Ok(args);
    };
    let sub = train + 1;
    let config = words.iter().enumerate().skip(sub).find_map(|(i, w)| {
        if w == "--config" {
            words.get(i + 1).cloned()
        } else {
            w.strip_prefix("--config=").map(String::from)
        }
    });
    let (Some(config), Some(sub_name)) = (config, words.get(sub)) else {
        return Ok(args);
    };
    let path = Path::new(&config);
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e| anyhow::anyhow!("{}: invalid TOML: {e}", path.display()))?;
    let known = known_flags::<C>(sub_name);
    let mut inserted = Vec::new();
    for (key, value) in &table {
        let long = key.replace('_', "-");
        if long == "config" || !known.contains(&long) {
            bail!(
                "{}: unknown key `{key}`: not a flag of `tinylora train {sub_name}` (see its --help)",
                path.display()
            );
        }
        inserted.extend(flag_words(path, key, value)?);
    }
    let mut out = args;
    out.splice(sub + 1..sub + 1, inserted);
    Ok(out)
}
