//! `pgec2-agent config check`: the effective configuration with sources, secrets masked, and a
//! one-line error for an invalid one.

use std::path::Path;
use std::process::{Command, Output};

fn config_check(config: Option<&Path>, env: &[(&str, &str)], json: bool) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pgec2-agent"));
    command.env_clear().env("PATH", "/usr/bin:/bin");
    if let Some(config) = config {
        command.arg("--config").arg(config);
    }
    command.args(["config", "check"]);
    if json {
        command.arg("--json");
    }
    command.envs(env.iter().copied());
    command.output().expect("run pgec2-agent")
}

#[test]
fn config_check_prints_the_effective_configuration_with_sources_and_masked_secrets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("agent.toml");
    std::fs::write(&file, "[storage]\nurl = \"s3://acme-backups/pg\"\nprefix = \"default/orders\"\n").expect("write");
    let env = [("PGEC2_COMPRESSION", "lz4"), ("PGPASSWORD", "hunter2"), ("PGDATA", "/var/lib/postgresql/15/main")];

    let output = config_check(Some(&file), &env, false);

    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.contains(&format!("\"s3://acme-backups/pg\"  # file {}", file.display())), "{text}");
    assert!(text.contains("\"lz4\"  # env PGEC2_COMPRESSION"), "{text}");
    assert!(text.contains("\"8\"  # default"), "prefetch default: {text}");

    let output = config_check(Some(&file), &env, true);
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json report");
    let settings = report["settings"].as_array().expect("settings");
    let setting = |key: &str| settings.iter().find(|entry| entry["key"] == key).expect("setting present").clone();
    assert_eq!(setting("postgres.password")["value"], "********");
    assert_eq!(setting("postgres.pgdata")["source"], "env PGDATA");
    assert_eq!(setting("storage.prefix")["value"], "default/orders");
    assert!(!String::from_utf8_lossy(&output.stdout).contains("hunter2"));
}

#[test]
fn config_check_fails_with_one_line_naming_the_bad_setting() {
    let output =
        config_check(None, &[("PGEC2_STORAGE_URL", "file:///archive"), ("PGEC2_COMPRESSION_LEVEL", "99")], false);

    assert!(!output.status.success());
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let first = stderr.lines().next().unwrap_or_default();
    assert!(first.contains("compression.level") && first.contains("env PGEC2_COMPRESSION_LEVEL"), "{stderr}");
}

#[test]
fn config_check_works_from_the_environment_alone() {
    let output = config_check(None, &[("PGEC2_STORAGE_URL", "file:///srv/pgec2")], true);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json report");
    assert!(report["file"].is_null() || report["file"] == "/etc/pgec2/agent.toml");
}

#[test]
fn a_store_without_credentials_fails_saying_what_to_do_once() {
    // No credentials anywhere the SDK looks: no variables, no profile files (HOME is empty), the
    // instance metadata service switched off. The store is never reached.
    let home = tempfile::tempdir().expect("tempdir");
    let mut command = Command::new(env!("CARGO_BIN_EXE_pgec2-agent"));
    command.env_clear().env("PATH", "/usr/bin:/bin").env("HOME", home.path());
    command.envs([
        ("PGEC2_STORAGE_URL", "s3://no-credentials/pg"),
        ("PGEC2_S3_ENDPOINT", "http://127.0.0.1:9"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ]);
    let output = command.arg("backup-list").output().expect("run pgec2-agent");

    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    // The report: the error (which may span lines, as the SDK's list of credential sources
    // does), then its causes.
    let report = stderr.lines().skip_while(|line| !line.starts_with("error: ")).collect::<Vec<_>>().join("\n");
    let mut parts = report.split("\n  caused by: ");
    let error = parts.next().unwrap_or_default();
    assert!(error.contains("backups/") && error.contains("s3://no-credentials/pg"), "what and where: {stderr}");
    assert!(error.contains("AWS_ACCESS_KEY_ID") && error.contains("instance profile"), "what to do: {stderr}");
    for cause in parts {
        assert!(!error.contains(cause), "a cause the error already says is repeated: {stderr}");
    }
    assert!(!stderr.contains("DispatchFailure("), "no debug dump of the SDK's error: {stderr}");
}
