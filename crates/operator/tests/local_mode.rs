//! `pgec2-operator local run|get|stop` as users run it: the built binary, a manifest directory,
//! a state directory, real PostgreSQL set up by the real agent.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use pgec2_testkit::{Scratch, postgres_bin_dir};
use serde_json::Value;

/// How long `local run --until-ready` may take for one host (initdb included).
const READY_SECONDS: &str = "240";

const HOST: &str = "apiVersion: pgec2.io/v1alpha1
kind: PostgresHost
metadata:
  name: db
spec:
  storage: {sizeGiB: 20}
  postgres:
    parameters: {work_mem: 8MB}
";

/// A state directory and a manifest directory; stops whatever runs there when dropped.
struct LocalMode {
    _scratch: Scratch,
    state: PathBuf,
    manifests: PathBuf,
}

impl LocalMode {
    fn new() -> Self {
        let scratch = Scratch::new().expect("scratch directory");
        let state = scratch.subdir("state").expect("state directory");
        let manifests = scratch.subdir("manifests").expect("manifest directory");
        Self { _scratch: scratch, state, manifests }
    }

    fn write_manifest(&self, name: &str, text: &str) {
        std::fs::write(self.manifests.join(name), text).expect("write manifest");
    }

    /// `pgec2-operator local <command> --state-dir <state> <args...>`.
    fn command(&self, command: &str, args: &[&str]) -> Command {
        let mut process = Command::new(env!("CARGO_BIN_EXE_pgec2-operator"));
        process.args(["local", command, "--state-dir"]).arg(&self.state).args(args);
        if command == "run" {
            process.arg("--agent-binary").arg(common::agent_binary()).arg(&self.manifests);
        }
        process.env_remove("PGEC2_STATE_DIR");
        process
    }

    fn run(&self, command: &str, args: &[&str]) -> Output {
        let output = self.command(command, args).output().expect("run pgec2-operator");
        assert!(
            output.status.success(),
            "local {command} {args:?} failed ({}):\n{}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    /// `local get -o json postgreshost <name>`.
    fn host(&self, name: &str) -> Value {
        let output = self.run("get", &["-o", "json", "postgreshost", name]);
        serde_json::from_slice(&output.stdout).expect("local get prints JSON")
    }

    /// The host, once `local run` has written the state directory.
    fn try_host(&self, name: &str) -> Option<Value> {
        let output = self.command("get", &["-o", "json", "postgreshost", name]).output().ok()?;
        serde_json::from_slice(&output.stdout).ok()
    }

    /// Runs SQL on the host through its Unix socket as the postgres user.
    fn psql(&self, host: &Value, sql: &str) -> Result<String, String> {
        let name = host.pointer("/metadata/name").and_then(Value::as_str).expect("name");
        let socket = self.state.join("hosts/default").join(name).join("volume/run");
        pgec2_testkit::psql_at(&socket, u16::try_from(port(host)).expect("a TCP port"), sql)
    }
}

impl Drop for LocalMode {
    fn drop(&mut self) {
        let _ = self.command("stop", &[]).stdout(Stdio::null()).stderr(Stdio::null()).status();
    }
}

fn bin(tool: &str) -> PathBuf {
    postgres_bin_dir().expect("PostgreSQL bin dir").join(tool)
}

fn port(host: &Value) -> u64 {
    host.pointer("/status/endpoint/port").and_then(Value::as_u64).expect("status.endpoint.port")
}

fn text(pointer: &str, host: &Value) -> String {
    host.pointer(pointer).and_then(Value::as_str).unwrap_or_default().to_string()
}

/// True when PostgreSQL accepts connections on the endpoint `status.endpoint` names.
fn accepts_connections(host: &Value) -> bool {
    let address = text("/status/endpoint/host", host);
    let status =
        Command::new(bin("pg_isready")).args(["-h", &address, "-p", &port(host).to_string(), "-t", "5"]).status();
    status.is_ok_and(|status| status.success())
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Waits for a background `local run` until `done` holds for host `name`.
fn wait_for(mode: &LocalMode, child: &mut Child, name: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        assert!(child.try_wait().expect("poll local run").is_none(), "local run exited early");
        let host = mode.try_host(name);
        if let Some(host) = host.as_ref().filter(|host| done(host)) {
            return host.clone();
        }
        assert!(Instant::now() < deadline, "host {name} did not get there: {host:#?}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn until_ready_leaves_a_host_that_a_second_run_picks_up_without_a_new_initdb() {
    let mode = LocalMode::new();
    mode.write_manifest("db.yaml", HOST);

    let first = mode.run("run", &["--until-ready", "--timeout", READY_SECONDS]);
    let progress = stdout(&first);
    assert!(progress.contains("postgreshost/db created"), "{progress}");
    assert!(progress.contains("Ready (127.0.0.1:"), "{progress}");

    // The persisted state shows the host Ready, and its endpoint accepts connections.
    let host = mode.host("db");
    assert_eq!(text("/status/phase", &host), "Ready", "{host:#}");
    assert!(accepts_connections(&host), "nothing accepts connections at {:#}", host["status"]["endpoint"]);
    let identifier = text("/status/postgres/systemIdentifier", &host);
    assert_eq!(mode.psql(&host, "SELECT system_identifier FROM pg_control_system()"), Ok(identifier.clone()));
    mode.psql(&host, "CREATE TABLE kept AS SELECT 42 AS answer").expect("write a row");
    let table = stdout(&mode.run("get", &[]));
    assert!(table.starts_with("NAME") && table.contains("postgreshost/db") && table.contains("Ready"), "{table}");

    // local stop stops the PostgreSQL --until-ready left running.
    let stopped = stdout(&mode.run("stop", &[]));
    assert!(stopped.contains("stopped PostgreSQL"), "{stopped}");
    assert!(!accepts_connections(&host), "PostgreSQL still runs after local stop");

    // A second run on the same state directory starts the same cluster again.
    let second = stdout(&mode.run("run", &["--until-ready", "--timeout", READY_SECONDS]));
    assert!(second.contains("started PostgreSQL again"), "{second}");
    assert!(!second.contains("SetupStarted"), "the converged host was set up again:\n{second}");
    let again = mode.host("db");
    assert_eq!(text("/status/postgres/systemIdentifier", &again), identifier, "a new cluster was created");
    assert_eq!(port(&again), port(&host), "the endpoint moved");
    assert_eq!(mode.psql(&again, "SELECT answer FROM kept"), Ok("42".to_string()));
}

#[test]
fn a_running_local_run_applies_edited_manifests_and_stops_its_hosts_on_local_stop() {
    let mode = LocalMode::new();
    mode.write_manifest("db.yaml", HOST);
    let mut child = mode.command("run", &[]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");

    let ready =
        wait_for(&mode, &mut child, "db", |host| text("/status/phase", host) == "Ready" && accepts_connections(host));
    assert_eq!(mode.psql(&ready, "SHOW work_mem"), Ok("8MB".to_string()));

    // Editing the file while it runs is applied: a new generation, set up on the host.
    mode.write_manifest("db.yaml", &HOST.replace("8MB", "16MB"));
    let edited = wait_for(&mode, &mut child, "db", |host| {
        host.pointer("/metadata/generation") == Some(&Value::from(2))
            && host.pointer("/status/observedGeneration") == Some(&Value::from(2))
            && text("/status/phase", host) == "Ready"
    });
    assert_eq!(mode.psql(&edited, "SHOW work_mem"), Ok("16MB".to_string()));

    // local stop signals the run, which stops PostgreSQL cleanly and prints the table.
    let stopped = stdout(&mode.run("stop", &[]));
    assert!(stopped.contains("stopped"), "{stopped}");
    let output = child.wait_with_output().expect("local run output");
    assert!(output.status.success(), "local run failed: {}", String::from_utf8_lossy(&output.stderr));
    let progress = stdout(&output);
    assert!(progress.contains("postgreshost/db configured"), "{progress}");
    assert!(progress.contains("stopped PostgreSQL (data kept)"), "{progress}");
    assert!(progress.trim_end().lines().last().is_some_and(|line| line.starts_with("postgreshost/db")), "{progress}");
    assert!(!accepts_connections(&edited), "PostgreSQL still runs after local stop");
    let log = std::fs::read_to_string(mode.state.join("hosts/default/db/volume/postgresql.log")).unwrap_or_default();
    assert!(log.contains("received fast shutdown request"), "not a clean shutdown:\n{log}");
    assert!(!Path::new(&mode.state.join("operator.pid")).exists(), "the pid file was left behind");
}
