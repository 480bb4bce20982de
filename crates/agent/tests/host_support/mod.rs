//! Shared by the host integration tests: a local-profile host in a scratch directory, running
//! `pgec2-agent host apply` with a deadline, and reading the server's settings as postgres.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use pgec2_core::host_spec::{BootstrapSpec, HostReport, HostSpec, RecoverySpec, StepOutcome, TargetAction};
use pgec2_testkit::{Scratch, as_postgres, free_port, postgres_bin_dir, postgres_user};

/// How long one `host apply` may take in a test (initdb and a start are a few seconds).
pub const APPLY_DEADLINE: Duration = Duration::from_secs(180);

/// A local-profile host: `<scratch>/host` is its volume, `<scratch>/bin` holds the agent.
pub struct LocalHost {
    pub scratch: Scratch,
    pub spec: HostSpec,
    pub spec_path: PathBuf,
}

impl LocalHost {
    /// A host whose agent binary is installed in the scratch directory.
    pub fn new() -> Self {
        let scratch = Scratch::new().expect("scratch dir");
        let agent = scratch.install_binary(Path::new(env!("CARGO_BIN_EXE_pgec2-agent"))).expect("install agent");
        let spec = local_spec(scratch.path(), &agent);
        let spec_path = scratch.path().join("host-spec.json");
        let host = Self { scratch, spec, spec_path };
        host.write_spec();
        host
    }

    /// Writes the current spec where `host apply` reads it.
    pub fn write_spec(&self) {
        std::fs::write(&self.spec_path, serde_json::to_vec_pretty(&self.spec).expect("spec json")).expect("write spec");
    }

    /// Runs `host apply` on the spec file.
    pub async fn apply(&self) -> Applied {
        self.write_spec();
        run_agent(&["host", "apply", &self.spec_path.to_string_lossy()]).await
    }

    /// Runs SQL as postgres over the host's socket; trimmed unaligned output.
    pub fn psql(&self, sql: &str) -> String {
        let bin = postgres_bin_dir().expect("bin dir");
        let output = as_postgres(bin.join("psql"))
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", "postgres", "-U", &self.spec.os_user, "-h"])
            .arg(self.spec.socket_directory())
            .args(["-p", &self.spec.port.to_string(), "-c", sql])
            .env("PGCONNECT_TIMEOUT", "10")
            .output()
            .expect("run psql");
        assert!(output.status.success(), "psql {sql:?} failed: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }

    /// Switches to a new WAL file and polls pg_stat_archiver until the one it closed is
    /// archived, failing on any archive_command failure.
    pub async fn switch_and_wait_archived(&self) {
        let segment = self.psql("SELECT pg_walfile_name(pg_switch_wal())");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let row = self.psql(&format!(
                "SELECT failed_count, coalesce(last_archived_wal, '') >= '{segment}' FROM pg_stat_archiver"
            ));
            assert!(row.starts_with("0|"), "archive_command failed: {row}");
            if row == "0|t" {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "{segment} not archived within 60 s: {row}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Takes a base backup with the host's own agent configuration, as the operator would.
    pub fn backup_push(&self) {
        let output = as_postgres(&self.spec.agent_binary)
            .arg("--config")
            .arg(&self.spec.agent_config_path)
            .arg("backup-push")
            .output()
            .expect("run backup-push");
        assert!(output.status.success(), "backup-push failed: {}", String::from_utf8_lossy(&output.stderr));
    }

    /// A second host, `default/<name>` archiving to its own prefix in its own scratch
    /// directory, bootstrapped from this host's LATEST backup.
    pub fn restored_copy(&self, name: &str) -> LocalHost {
        let source = self.spec.archive.as_ref().expect("the source archives").storage.clone();
        let mut copy = LocalHost::new();
        copy.spec.host = format!("default/{name}");
        copy.spec.archive.as_mut().expect("own archive").storage.prefix = Some(format!("default/{name}"));
        copy.spec.bootstrap = BootstrapSpec::Recovery(RecoverySpec {
            source,
            backup: "LATEST".into(),
            target: None,
            target_action: TargetAction::Promote,
            from_snapshot: false,
        });
        copy
    }

    /// Polls `sql` until it returns `expected`.
    pub async fn wait_for_answer(&self, sql: &str, expected: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let answer = self.psql(sql);
            if answer == expected {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "{sql:?} answers {answer:?}, not {expected:?}, after 60 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn conf_file(&self) -> PathBuf {
        self.spec.data_directory.join("conf.d/01-pgec2.conf")
    }
}

impl Drop for LocalHost {
    fn drop(&mut self) {
        if let Ok(bin) = postgres_bin_dir() {
            let _ = as_postgres(bin.join("pg_ctl"))
                .args(["stop", "-m", "immediate", "-t", "30", "-D"])
                .arg(&self.spec.data_directory)
                .output();
        }
    }
}

/// The spec the local cloud would render for a host in `root`.
pub fn local_spec(root: &Path, agent: &Path) -> HostSpec {
    let os_user = postgres_user().map(|user| user.name).unwrap_or_else(|| std::env::var("USER").expect("USER"));
    let host = root.join("host");
    serde_json::from_value(serde_json::json!({
        "host": "default/db1",
        "profile": "local",
        "postgresVersion": 15,
        "binDirectory": postgres_bin_dir().expect("PostgreSQL is installed"),
        "volume": { "mountPath": host },
        "dataDirectory": host.join("data"),
        "osUser": os_user,
        "port": free_port().expect("free port"),
        "listenAddresses": "127.0.0.1",
        "resources": { "memoryBytes": 1u64 << 30, "cpus": 2 },
        "bootstrap": { "initdb": { "dataChecksums": true } },
        "archive": {
            "storage": { "url": format!("file://{}", root.join("archive").display()), "prefix": "default/db1" },
            "archiveTimeoutSeconds": 60
        },
        "agentConfigPath": host.join("etc/agent.toml"),
        "agentBinary": agent
    }))
    .expect("valid spec")
}

/// What one `pgec2-agent` run printed.
pub struct Applied {
    pub output: Output,
}

impl Applied {
    pub fn report(&self) -> HostReport {
        serde_json::from_slice(&self.output.stdout).unwrap_or_else(|error| {
            panic!("stdout is not a HostReport ({error}):\n{}\nstderr:\n{}", self.stdout(), self.stderr())
        })
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    /// The report of a run that must have succeeded.
    pub fn succeeded(&self) -> HostReport {
        let report = self.report();
        assert!(
            self.output.status.success() && report.succeeded,
            "host apply failed:\n{}\n{}",
            self.stdout(),
            self.stderr()
        );
        report
    }
}

/// Runs the agent with a deadline.
pub async fn run_agent(args: &[&str]) -> Applied {
    run_with_deadline(tokio::process::Command::new(env!("CARGO_BIN_EXE_pgec2-agent")).args(args)).await
}

/// Runs a command, killing it at [`APPLY_DEADLINE`].
pub async fn run_with_deadline(command: &mut tokio::process::Command) -> Applied {
    command.kill_on_drop(true).stdin(std::process::Stdio::null());
    let output = tokio::time::timeout(APPLY_DEADLINE, command.output())
        .await
        .unwrap_or_else(|_| panic!("{command:?} did not finish within {APPLY_DEADLINE:?}"))
        .expect("run command");
    Applied { output }
}

/// The outcome of each step, by name.
pub fn outcome(report: &HostReport, step: &str) -> StepOutcome {
    report
        .steps
        .iter()
        .find(|s| s.step == step)
        .map(|s| s.outcome)
        .unwrap_or_else(|| panic!("no step {step} in {report:#?}"))
}

/// The detail of a step.
pub fn detail<'r>(report: &'r HostReport, step: &str) -> &'r str {
    &report.steps.iter().find(|s| s.step == step).unwrap_or_else(|| panic!("no step {step}")).detail
}
