//! `pgec2-agent config check [--json]`: the effective configuration, where each value came from,
//! secrets masked; exits non-zero with a one-line reason when the configuration is invalid.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use serde::Serialize;

use super::settings::{MASK, SETTINGS, Source};
use super::{AgentConfig, ConfigError, DEFAULT_CONFIG_PATH};
use crate::cli::JsonArgs;

/// One line of the report.
#[derive(Debug, Serialize)]
struct Entry {
    key: &'static str,
    value: Option<String>,
    source: String,
    env: &'static [&'static str],
    help: &'static str,
}

#[derive(Debug, Serialize)]
struct Report {
    file: Option<String>,
    settings: Vec<Entry>,
}

/// Prints the effective configuration; fails (non-zero) when it does not validate.
pub fn check_command(path: Option<&Path>, args: JsonArgs) -> Result<ExitCode, ConfigError> {
    let env = |name: &str| std::env::var(name).ok();
    let config = AgentConfig::load_with(path, Path::new(DEFAULT_CONFIG_PATH), &env)?;
    let (_, layers) = super::resolve(path, Path::new(DEFAULT_CONFIG_PATH), &env)?;
    let report = report(&config, &|key| layers.get(key).map(|value| value.source.clone()));
    let mut stdout = std::io::stdout().lock();
    let written = if args.json {
        serde_json::to_string_pretty(&report).map_err(std::io::Error::other).and_then(|json| writeln!(stdout, "{json}"))
    } else {
        write!(stdout, "{}", render_text(&report))
    };
    written.map_err(|error| ConfigError::Read { path: "stdout".into(), error })?;
    Ok(ExitCode::SUCCESS)
}

fn report(config: &AgentConfig, source_of: &dyn Fn(&'static str) -> Option<Source>) -> Report {
    let settings = config
        .values()
        .into_iter()
        .zip(SETTINGS)
        .map(|((key, value), setting)| Entry {
            key,
            value: if setting.secret { value.map(|_| MASK.to_string()) } else { value },
            source: source_of(key).unwrap_or(Source::Default).to_string(),
            env: setting.env,
            help: setting.help,
        })
        .collect();
    Report { file: config.file.as_ref().map(|path| path.display().to_string()), settings }
}

fn render_text(report: &Report) -> String {
    let mut out = format!("# configuration file: {}\n", report.file.as_deref().unwrap_or("none (environment only)"));
    let width = report.settings.iter().map(|entry| entry.key.len()).max().unwrap_or(0);
    for entry in &report.settings {
        let value = entry.value.as_deref().map(|value| format!("{value:?}")).unwrap_or_else(|| "(unset)".to_string());
        out.push_str(&format!("{:width$} = {value}  # {}\n", entry.key, entry.source));
    }
    out.push_str("# configuration is valid\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_masked_and_sources_are_named() {
        let mut config = AgentConfig::default();
        config.storage.url = "file:///archive".to_string();
        config.postgres.password = Some("hunter2".to_string());
        let report = report(&config, &|key| (key == "storage.url").then_some(Source::Env("PGEC2_STORAGE_URL")));
        let text = render_text(&report);
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("postgres.password") && text.contains(MASK), "{text}");
        assert!(text.contains("\"file:///archive\"  # env PGEC2_STORAGE_URL"), "{text}");
        let json = serde_json::to_string(&report).expect("json");
        assert!(!json.contains("hunter2"));
    }
}
