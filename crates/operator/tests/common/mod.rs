//! Harness of the operator's integration tests: the real controllers on the in-memory
//! Kubernetes API, the local cloud in a scratch directory, real PostgreSQL set up by the real
//! agent.
//!
//! The agent binary: `$PGEC2_AGENT_BINARY` when set, otherwise this harness runs
//! `cargo build --workspace --bins` once per test binary (a no-op when it is up to date) and uses
//! `target/<profile>/pgec2-agent`, found next to the test executable's `deps/` directory.

#![allow(dead_code)]

pub mod streaming;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams};
use pgec2_api::{BackupPolicy, FIELD_MANAGER, PostgresHost};
use pgec2_kube_memory::MemoryApiServer;
use pgec2_operator::cloud::local::{LocalCloud, LocalCloudConfig};
use pgec2_operator::metrics::Metrics;
use pgec2_operator::{Config, Operator};
use pgec2_testkit::{Scratch, as_postgres, postgres_bin_dir};

/// How long a host may take from creation to Ready (initdb and start included).
pub const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// The agent binary the hosts download.
pub fn agent_binary() -> PathBuf {
    static AGENT: OnceLock<PathBuf> = OnceLock::new();
    AGENT
        .get_or_init(|| {
            if let Ok(path) = std::env::var("PGEC2_AGENT_BINARY") {
                return PathBuf::from(path);
            }
            let exe = std::env::current_exe().expect("test executable path");
            let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps/<test>");
            let agent = profile_dir.join("pgec2-agent");
            // `cargo test --workspace` / `cargo nextest run --workspace` build the agent with the
            // tests; build it only when it is missing, with the tests' feature set (a `-p` or
            // `--bins` build unifies features differently and rebuilds shared dependencies).
            if !agent.exists() {
                let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
                let mut build = std::process::Command::new(cargo);
                build.args(["build", "--quiet", "--workspace", "--all-targets"]);
                if profile_dir.file_name().is_some_and(|name| name == "release") {
                    build.arg("--release");
                }
                let status = build.status().expect("run cargo build --workspace --all-targets");
                assert!(status.success(), "cargo build --workspace --all-targets failed");
            }
            assert!(agent.exists(), "{} does not exist", agent.display());
            agent
        })
        .clone()
}

/// One operator on an in-memory API with the local cloud.
pub struct TestEnv {
    pub scratch: Scratch,
    pub server: MemoryApiServer,
    pub client: kube::Client,
    pub metrics: Arc<Metrics>,
    pub state_dir: PathBuf,
    configure: Arc<dyn Fn(&mut Config) + Send + Sync>,
    host_environment: Vec<(String, String)>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestEnv {
    /// Starts the operator (watching namespace `default`). Archive health checks are off (an
    /// hour apart) so that tests counting commands see only their own.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// [`TestEnv::start`] with changes to the operator's configuration.
    pub async fn start_with(configure: impl Fn(&mut Config) + Send + Sync + 'static) -> Self {
        Self::start_with_host_environment(Vec::new(), configure).await
    }

    /// [`TestEnv::start_with`], with extra environment for the hosts' commands (and so for
    /// PostgreSQL's archive_command), such as the credentials of a moto server.
    pub async fn start_with_host_environment(
        host_environment: Vec<(String, String)>,
        configure: impl Fn(&mut Config) + Send + Sync + 'static,
    ) -> Self {
        let scratch = Scratch::new().expect("scratch directory");
        let state_dir = scratch.subdir("state").expect("state directory");
        let server = MemoryApiServer::new()
            .with_resource(pgec2_operator::local_mode::Kind::PostgresHost.resource_type())
            .with_resource(pgec2_operator::local_mode::Kind::BackupPolicy.resource_type());
        Self::start_on(scratch, state_dir, server, host_environment, Arc::new(configure))
    }

    /// [`TestEnv::start_with`] laid out as `pgec2-operator local run` lays out its state
    /// directory: the API (with local mode's validation) persisted under `<state>/api`, so that
    /// `pgec2-operator local get --state-dir <state>` ([`TestEnv::local_get`]) reads it.
    pub async fn start_local_mode_with(configure: impl Fn(&mut Config) + Send + Sync + 'static) -> Self {
        let scratch = Scratch::new().expect("scratch directory");
        let state_dir = scratch.subdir("state").expect("state directory");
        let server = pgec2_operator::local_mode::api_server(&state_dir.join("api")).expect("local mode API");
        Self::start_on(scratch, state_dir, server, Vec::new(), Arc::new(configure))
    }

    fn start_on(
        scratch: Scratch,
        state_dir: PathBuf,
        server: MemoryApiServer,
        host_environment: Vec<(String, String)>,
        configure: Arc<dyn Fn(&mut Config) + Send + Sync>,
    ) -> Self {
        let client = server.client();
        let mut env = Self {
            scratch,
            server,
            client,
            metrics: Arc::default(),
            state_dir,
            configure,
            host_environment,
            shutdown: None,
            task: None,
        };
        env.spawn_operator();
        env
    }

    /// Starts an operator process as a fresh one would: new cloud object, new metrics.
    fn spawn_operator(&mut self) {
        let mut cloud_config = LocalCloudConfig::new(&self.state_dir, agent_binary());
        cloud_config.host_environment = self.host_environment.clone();
        let cloud = LocalCloud::new(cloud_config).expect("local cloud");
        let mut config = Config {
            namespace: Some("default".into()),
            archive_check_interval: Duration::from_secs(3600),
            ..Config::default()
        };
        (self.configure)(&mut config);
        let operator = Operator::builder(self.client.clone(), Arc::new(cloud)).config(config).build();
        self.metrics = operator.metrics();
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        self.task = Some(tokio::spawn(operator.run(async move {
            let _ = stopped.await;
        })));
        self.shutdown = Some(shutdown);
    }

    /// Stops the operator and starts a new one on the same API and state directory (what a
    /// crash or an upgrade of the operator looks like to the hosts).
    pub async fn restart_operator(&mut self) {
        self.shutdown_operator().await;
        self.spawn_operator();
    }

    /// Stops the operator alone (hosts, their commands and the API stay), as a crash would.
    pub async fn stop_operator(&mut self) {
        self.shutdown_operator().await;
    }

    /// Starts a fresh operator after [`TestEnv::stop_operator`].
    pub fn start_operator(&mut self) {
        self.spawn_operator();
    }

    /// A directory the postgres user can write (for local backup storage).
    pub fn archive_dir(&self) -> PathBuf {
        self.scratch.subdir("archive").expect("archive directory")
    }

    pub fn hosts(&self) -> Api<PostgresHost> {
        Api::namespaced(self.client.clone(), "default")
    }

    pub fn policies(&self) -> Api<BackupPolicy> {
        Api::namespaced(self.client.clone(), "default")
    }

    /// Creates or updates objects as a user would (`kubectl apply`).
    pub async fn apply_host(&self, host: &PostgresHost) {
        let name = host.metadata.name.clone().expect("name");
        let params = PatchParams::apply("test-user").force();
        self.hosts().patch(&name, &params, &Patch::Apply(strip(host))).await.expect("apply PostgresHost");
    }

    pub async fn apply_policy(&self, policy: &BackupPolicy) {
        let name = policy.metadata.name.clone().expect("name");
        let params = PatchParams::apply("test-user").force();
        self.policies().patch(&name, &params, &Patch::Apply(strip(policy))).await.expect("apply BackupPolicy");
    }

    pub async fn delete_host(&self, name: &str) {
        self.hosts().delete(name, &DeleteParams::default()).await.expect("delete PostgresHost");
    }

    /// Polls the host until `done` holds; panics with the last status after `timeout`.
    pub async fn wait_for(
        &self,
        name: &str,
        timeout: Duration,
        mut done: impl FnMut(&PostgresHost) -> bool,
    ) -> PostgresHost {
        let deadline = Instant::now() + timeout;
        loop {
            let host = self.hosts().get_opt(name).await.expect("read PostgresHost");
            if let Some(host) = host {
                if done(&host) {
                    return host;
                }
                if Instant::now() > deadline {
                    panic!(
                        "PostgresHost {name} did not reach the expected state in {timeout:?}; status: {:#?}",
                        host.status
                    );
                }
            } else if Instant::now() > deadline {
                panic!("PostgresHost {name} does not exist");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until the host is gone from the API (its finalizer removed).
    pub async fn wait_gone(&self, name: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.hosts().get_opt(name).await.expect("read PostgresHost").is_some() {
            assert!(Instant::now() < deadline, "PostgresHost {name} was not deleted within {timeout:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `pgec2-operator local get --state-dir <state> <args...>`'s standard output (for an
    /// environment of [`TestEnv::start_local_mode_with`]).
    pub fn local_get(&self, args: &[&str]) -> String {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_pgec2-operator"))
            .args(["local", "get", "--state-dir"])
            .arg(&self.state_dir)
            .args(args)
            .env_remove("PGEC2_STATE_DIR")
            .output()
            .expect("run pgec2-operator local get");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "local get {args:?} failed ({}):\n{stdout}\n{stderr}", output.status);
        stdout
    }

    /// The host directory of the local cloud.
    pub fn host_dir(&self, name: &str) -> PathBuf {
        self.state_dir.join("hosts/default").join(name)
    }

    /// The data directory (PGDATA) of a local host.
    pub fn data_dir(&self, name: &str) -> PathBuf {
        self.host_dir(name).join("volume/data")
    }

    /// Runs SQL on the host through its Unix socket as the postgres user; returns psql's
    /// unaligned output.
    pub fn psql(&self, host: &PostgresHost, sql: &str) -> Result<String, String> {
        let name = host.metadata.name.as_deref().expect("name");
        let port = host
            .status
            .as_ref()
            .and_then(|status| status.endpoint.as_ref())
            .map(|endpoint| endpoint.port)
            .expect("endpoint");
        let port = u16::try_from(port).expect("a TCP port");
        pgec2_testkit::psql_at(&self.host_dir(name).join("volume/run"), port, sql)
    }

    /// Initialises pgbench's tables on the host (scale 2) and starts pgbench writing to them
    /// with two clients for `seconds`; kill the child to stop it earlier.
    pub fn pgbench(&self, host: &PostgresHost, seconds: u32) -> std::process::Child {
        let name = host.metadata.name.as_deref().expect("name");
        let port = host.status.as_ref().and_then(|status| status.endpoint.as_ref()).map(|endpoint| endpoint.port);
        let port = port.expect("endpoint").to_string();
        let socket = self.host_dir(name).join("volume/run");
        let bin = postgres_bin_dir().expect("PostgreSQL binaries");
        let mut init = as_postgres(bin.join("pgbench"));
        init.args(["-i", "-s", "2", "-q", "-U", "postgres", "-p", &port]).arg("-h").arg(&socket).arg("postgres");
        let output = init.output().expect("run pgbench -i");
        assert!(output.status.success(), "pgbench -i: {}", String::from_utf8_lossy(&output.stderr));
        let mut run = as_postgres(bin.join("pgbench"));
        run.args(["-c", "2", "-T", &seconds.to_string(), "-n", "-U", "postgres", "-p", &port])
            .arg("-h")
            .arg(&socket)
            .arg("postgres")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        run.spawn().expect("start pgbench")
    }

    /// Reasons of the events recorded about host `name`, oldest first.
    pub async fn event_reasons(&self, name: &str) -> Vec<String> {
        use k8s_openapi::api::events::v1::Event;
        let events: Api<Event> = Api::namespaced(self.client.clone(), "default");
        let mut events: Vec<Event> = events
            .list(&Default::default())
            .await
            .expect("list events")
            .items
            .into_iter()
            .filter(|event| event.regarding.as_ref().and_then(|regarding| regarding.name.as_deref()) == Some(name))
            .collect();
        events.sort_by_key(|event| event.event_time.as_ref().map(|time| time.0));
        events.into_iter().filter_map(|event| event.reason).collect()
    }

    /// True when a PostgreSQL server runs in the host's data directory.
    pub fn postgres_running(&self, name: &str) -> bool {
        let pid_file = self.data_dir(name).join("postmaster.pid");
        let Ok(text) = std::fs::read_to_string(pid_file) else { return false };
        let Some(pid) = text.lines().next().and_then(|line| line.trim().parse::<i32>().ok()) else { return false };
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
    }

    /// Stops the operator and every PostgreSQL it started.
    pub async fn stop(mut self) {
        self.shutdown_operator().await;
        stop_all_postgres(&self.state_dir);
    }

    async fn shutdown_operator(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
        }
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        stop_all_postgres(&self.state_dir);
    }
}

/// Stops every host's WAL receiver and `pg_ctl stop -m immediate` every running server.
pub fn stop_all_postgres(state_dir: &Path) {
    let Ok(namespaces) = std::fs::read_dir(state_dir.join("hosts")) else { return };
    for namespace in namespaces.flatten() {
        let Ok(hosts) = std::fs::read_dir(namespace.path()) else { continue };
        for host in hosts.flatten() {
            let _ = pgec2_operator::cloud::local::wal_receive::stop(&host.path());
            let data = host.path().join("volume/data");
            if data.join("postmaster.pid").exists() {
                let pg_ctl = postgres_bin_dir().map(|dir| dir.join("pg_ctl")).unwrap_or_else(|_| "pg_ctl".into());
                let _ = as_postgres(pg_ctl).args(["stop", "-m", "immediate", "-t", "30", "-D"]).arg(&data).output();
            }
        }
    }
}

/// An object as a user writes it: no status, no server-set metadata.
pub fn strip<K: serde::Serialize>(object: &K) -> serde_json::Value {
    let mut value = serde_json::to_value(object).expect("serialise");
    if let Some(map) = value.as_object_mut() {
        map.remove("status");
        if let Some(metadata) = map.get_mut("metadata").and_then(serde_json::Value::as_object_mut) {
            for key in ["uid", "generation", "resourceVersion", "creationTimestamp"] {
                metadata.remove(key);
            }
        }
    }
    value
}

/// The field manager the operator writes with (for assertions on managed fields).
pub const OPERATOR_FIELD_MANAGER: &str = FIELD_MANAGER;
