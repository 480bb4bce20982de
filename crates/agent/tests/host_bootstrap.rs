//! The rendered bootstrap script, run by `sh` the way the local cloud and SSM run it: it installs
//! the real agent from a file URL after checking its sha256, writes the spec and runs host apply.

mod host_support;

use std::path::Path;

use host_support::{LocalHost, run_with_deadline};
use pgec2_core::bootstrap::{BootstrapParams, agent_path, render};

fn sha256_of(path: &Path) -> String {
    let output = std::process::Command::new("sha256sum").arg(path).output().expect("run sha256sum");
    assert!(output.status.success());
    String::from_utf8_lossy(&output.stdout).split_whitespace().next().expect("digest").to_string()
}

/// A bootstrap for `host` that installs the agent into `<scratch>/install`.
fn bootstrap(host: &mut LocalHost, sha256: &str) -> (String, std::path::PathBuf) {
    let install_dir = host.scratch.path().join("install");
    host.spec.agent_binary = agent_path(&install_dir);
    let agent = Path::new(env!("CARGO_BIN_EXE_pgec2-agent"));
    let params = BootstrapParams {
        agent_url: format!("file://{}", agent.display()),
        agent_sha256: sha256.to_string(),
        spec_json: serde_json::to_string(&host.spec).expect("spec json"),
        install_dir: install_dir.clone(),
    };
    (render(&params).expect("render bootstrap"), install_dir)
}

#[tokio::test]
async fn the_bootstrap_installs_the_checked_agent_and_applies_the_spec_idempotently() {
    let mut host = LocalHost::new();
    let agent = Path::new(env!("CARGO_BIN_EXE_pgec2-agent"));
    let (script, install_dir) = bootstrap(&mut host, &sha256_of(agent));

    let first = run_with_deadline(tokio::process::Command::new("/bin/sh").args(["-c", &script])).await;
    let report = first.succeeded();
    assert!(report.postgres.is_some(), "the server runs: {report:#?}");
    assert_eq!(sha256_of(&install_dir.join("pgec2-agent")), sha256_of(agent));
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(install_dir.join("host-spec.json")).expect("spec written"))
            .expect("json");
    assert_eq!(written, serde_json::to_value(&host.spec).expect("spec value"));
    assert!(first.stderr().contains("installing the agent"), "{}", first.stderr());

    let second = run_with_deadline(tokio::process::Command::new("/bin/sh").args(["-c", &script])).await;
    assert!(second.succeeded().changed_nothing());
    assert!(second.stderr().contains("is installed"), "no second download: {}", second.stderr());
}

#[tokio::test]
async fn the_bootstrap_refuses_an_agent_whose_sha256_differs() {
    let mut host = LocalHost::new();
    let (script, install_dir) = bootstrap(&mut host, &"0".repeat(64));

    let refused = run_with_deadline(tokio::process::Command::new("/bin/sh").args(["-c", &script])).await;
    assert_eq!(refused.output.status.code(), Some(1));
    assert!(refused.stderr().contains("refusing to install it"), "{}", refused.stderr());
    assert!(refused.output.stdout.is_empty(), "host apply did not run");
    let left: Vec<_> =
        std::fs::read_dir(&install_dir).expect("install dir").flatten().map(|entry| entry.file_name()).collect();
    assert!(left.is_empty(), "nothing is installed or left behind: {left:?}");
}
