//! The config file of `pagoda serve` (TOML; keys named like the serve
//! arguments, `kv_cache_mib = 1024`). Precedence: file < `PAGODA_*`
//! environment variables < flags. A file value applies only where neither
//! a flag nor a variable gave one; it is checked by the same parser as the
//! flag, and an unknown key or a bad value stops the start naming the key.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, CommandFactory, FromArgMatches};

use crate::commands::cli::Cli;

/// Where the config file is looked for when `--config` is not given.
pub const DEFAULT_CONFIG: &str = "config/pagoda.toml";

/// Parses the command line, merging the config file into `serve`'s arguments.
pub fn parse_cli() -> anyhow::Result<Cli> {
    let mut argv: Vec<OsString> = std::env::args_os().collect();
    let matches = Cli::command().get_matches_from(&argv);
    let Some(("serve", serve)) = matches.subcommand() else {
        return Ok(Cli::from_arg_matches(&matches)?);
    };
    let path = match serve.get_one::<PathBuf>("config") {
        Some(p) => p.clone(),
        None if Path::new(DEFAULT_CONFIG).is_file() => PathBuf::from(DEFAULT_CONFIG),
        None => return Ok(Cli::from_arg_matches(&matches)?),
    };
    argv.extend(file_flags(&path, serve)?);
    Ok(<Cli as clap::Parser>::try_parse_from(argv)?)
}

/// The flags the file at `path` adds: its settings that no flag or variable gave.
fn file_flags(path: &Path, given: &ArgMatches) -> anyhow::Result<Vec<OsString>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the config file {}", path.display()))?;
    let table: toml::Table =
        toml::from_str(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    let serve = Cli::command()
        .find_subcommand("serve")
        .cloned()
        .ok_or_else(|| anyhow!("no serve command"))?;
    let mut flags = Vec::new();
    for (key, value) in &table {
        let arg = serve
            .get_arguments()
            .find(|a| a.get_id() == key && key != "config" && !a.is_hide_set())
            .ok_or_else(|| {
                let known: Vec<&str> = serve
                    .get_arguments()
                    .filter(|a| a.get_long().is_some() && !a.is_hide_set())
                    .map(|a| a.get_id().as_str())
                    .filter(|k| *k != "config" && *k != "help")
                    .collect();
                anyhow!(
                    "{}: unknown key `{key}` (known keys: {})",
                    path.display(),
                    known.join(", ")
                )
            })?;
        let these = to_flags(arg, value)
            .map_err(|reason| anyhow!("{}: `{key}`: {reason}", path.display()))?;
        // Checked alone, by the flag's own parser, so that the error names the key.
        if let Err(e) = serve
            .clone()
            .no_binary_name(true)
            .try_get_matches_from(&these)
        {
            let rendered = e.to_string();
            let reason = rendered
                .lines()
                .next()
                .unwrap_or_default()
                .trim_start_matches("error: ");
            bail!("{}: `{key}`: {reason}", path.display());
        }
        let overridden = matches!(
            given.value_source(key),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        );
        if !overridden {
            flags.extend(these);
        }
    }
    Ok(flags)
}

/// The flag(s) that say what `value` says for `arg`.
fn to_flags(arg: &Arg, value: &toml::Value) -> Result<Vec<OsString>, String> {
    let long = arg
        .get_long()
        .ok_or_else(|| "cannot be set in the file".to_string())?;
    let scalar = |v: &toml::Value| -> Result<String, String> {
        match v {
            toml::Value::String(s) => Ok(s.clone()),
            toml::Value::Integer(i) => Ok(i.to_string()),
            toml::Value::Float(f) => Ok(f.to_string()),
            toml::Value::Boolean(b) => Ok(b.to_string()),
            _ => Err("expected a string, number or boolean".into()),
        }
    };
    let many = matches!(arg.get_action(), ArgAction::Append);
    match value {
        toml::Value::Array(items) if many => items
            .iter()
            .map(|v| scalar(v).map(|s| OsString::from(format!("--{long}={s}"))))
            .collect(),
        toml::Value::Array(_) => Err("expected a single value, not a list".into()),
        _ if many => Err("expected a list, like [\"a\", \"b\"]".into()),
        v => Ok(vec![OsString::from(format!("--{long}={}", scalar(v)?))]),
    }
}
