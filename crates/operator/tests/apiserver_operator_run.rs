//! `pgec2-operator run` (the binary, local cloud, real PostgreSQL) against a real kube-apiserver,
//! driven with kubectl as a user would: a host reaches Ready, its status and Events are there,
//! deletion goes through the finalizer; two replicas share one leadership Lease, and when the
//! leader is killed the other takes over without launching the running host again.
//!
//! Skipped, with one notice, when the server is not built; failing instead when
//! `PGEC2_REQUIRE_APISERVER=1` (CI).

mod common;
mod real_apiserver;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{READY_TIMEOUT, agent_binary, stop_all_postgres};
use pgec2_operator::kube_layer::HOST_CONTROLLER;
use pgec2_testkit::Scratch;
use real_apiserver::RealApiServer;

/// Seconds a Lease stays valid: short, so that a takeover fits in a test.
const LEASE_SECONDS: &str = "6";

/// One `pgec2-operator run` process; killed when dropped.
struct OperatorProcess {
    child: Child,
    listen: SocketAddr,
}

impl OperatorProcess {
    fn start(server: &RealApiServer, namespace: &str, state_dir: &Path, identity: &str) -> Self {
        let port = pgec2_testkit::free_port().expect("a free port");
        let listen: SocketAddr = ([127, 0, 0, 1], port).into();
        let log = std::fs::File::create(state_dir.join(format!("{identity}.log"))).expect("operator log");
        let child = Command::new(env!("CARGO_BIN_EXE_pgec2-operator"))
            .args(["--log-format", "text", "run", "--cloud", "local", "--namespace", namespace])
            .arg("--listen")
            .arg(listen.to_string())
            .arg("--state-dir")
            .arg(state_dir)
            .arg("--agent-binary")
            .arg(agent_binary())
            .args(["--lease-namespace", namespace, "--lease-duration-seconds", LEASE_SECONDS, "--identity", identity])
            .env("KUBECONFIG", &server.kubeconfig)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start pgec2-operator run");
        Self { child, listen }
    }

    /// `/readyz`'s body ("ready (leader)", "ready (standby)"), or "" while it does not answer.
    fn readiness(&self) -> String {
        http_get(self.listen, "/readyz").unwrap_or_default()
    }

    /// The counter of a cloud call in `/metrics` (0 when never made).
    fn cloud_calls(&self, action: &str) -> u64 {
        let text = http_get(self.listen, "/metrics").unwrap_or_default();
        let prefix =
            format!(r#"pgec2_operator_cloud_calls_total{{cloud="local",action="{action}",outcome="success"}} "#);
        text.lines().find_map(|line| line.strip_prefix(&prefix)?.trim().parse().ok()).unwrap_or(0)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

fn http_get(listen: SocketAddr, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&listen, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: operator\r\nConnection: close\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.split_once("\r\n\r\n").map(|(_, body)| body.to_string())
}

fn eventually(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "{what} did not happen within {timeout:?}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// A PostgresHost (and the BackupPolicy it uses) as a user writes them.
fn manifests(namespace: &str, name: &str, archive: &Path) -> String {
    format!(
        "apiVersion: pgec2.io/v1alpha1\nkind: BackupPolicy\nmetadata: {{name: nightly, namespace: {namespace}}}\n\
         spec:\n  schedule: '0 3 * * *'\n  storage: {{local: {{path: '{}'}}}}\n---\n\
         apiVersion: pgec2.io/v1alpha1\nkind: PostgresHost\nmetadata: {{name: {name}, namespace: {namespace}}}\n\
         spec:\n  storage: {{sizeGiB: 10}}\n  backup: {{policyRef: {{name: nightly}}}}\n",
        archive.display()
    )
}

struct Scene {
    server: &'static RealApiServer,
    namespace: String,
    scratch: Scratch,
    state_dir: PathBuf,
}

impl Scene {
    async fn new(prefix: &str) -> Option<Self> {
        let server = RealApiServer::get()?;
        server.install_crds();
        let namespace = server.namespace(&server.client().await, prefix).await;
        let scratch = Scratch::new().expect("scratch directory");
        let state_dir = scratch.subdir("state").expect("state directory");
        Some(Self { server, namespace, scratch, state_dir })
    }

    fn kubectl(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.namespace.as_str()];
        all.extend_from_slice(args);
        self.server.kubectl_ok(&all, None)
    }

    fn apply_host(&self, name: &str) {
        let archive = self.scratch.subdir("archive").expect("archive directory");
        let yaml = manifests(&self.namespace, name, &archive);
        self.server.kubectl_ok(&["apply", "--server-side", "-f", "-"], Some(&yaml));
    }

    fn phase(&self, name: &str) -> String {
        self.kubectl(&["get", "pgh", name, "-o", "jsonpath={.status.phase}"])
    }

    fn lease_holder(&self) -> String {
        let output = self.server.kubectl(
            &["-n", &self.namespace, "get", "lease", "pgec2-operator", "-o", "jsonpath={.spec.holderIdentity}"],
            None,
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

impl Drop for Scene {
    fn drop(&mut self) {
        stop_all_postgres(&self.state_dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_applied_with_kubectl_reaches_ready_shows_events_and_is_deleted_through_its_finalizer() {
    let Some(scene) = Scene::new("run").await else { return };
    let mut operator = OperatorProcess::start(scene.server, &scene.namespace, &scene.state_dir, "solo");
    scene.apply_host("db");
    eventually("the host becoming Ready", READY_TIMEOUT, || scene.phase("db") == "Ready");

    // Status came through the status subresource, written by the operator's field manager.
    let managers = scene.kubectl(&[
        "get",
        "pgh",
        "db",
        "--show-managed-fields",
        "-o",
        "jsonpath={range .metadata.managedFields[*]}{.manager}/{.operation}/{.subresource}{\"\\n\"}{end}",
    ]);
    assert!(managers.lines().any(|line| *line == format!("{HOST_CONTROLLER}/Apply/status")), "{managers}");
    let generation = scene.kubectl(&["get", "pgh", "db", "-o", "jsonpath={.metadata.generation}"]);
    let observed = scene.kubectl(&["get", "pgh", "db", "-o", "jsonpath={.status.observedGeneration}"]);
    assert_eq!(observed, generation);
    let finalizers = scene.kubectl(&["get", "pgh", "db", "-o", "jsonpath={.metadata.finalizers}"]);
    assert!(finalizers.contains(pgec2_api::HOST_FINALIZER), "{finalizers}");

    // Events about the host, as `kubectl get events` lists them (core/v1 view of the
    // events.k8s.io/v1 objects the operator writes).
    let events = scene.kubectl(&["get", "events", "--field-selector", "involvedObject.name=db"]);
    assert!(events.lines().count() >= 2 && events.contains("postgreshost/db"), "{events}");
    assert_eq!(operator.cloud_calls("launch_host"), 1);

    // kubectl delete returns while the finalizer holds the object; the operator then releases it.
    scene.kubectl(&["delete", "pgh", "db", "--wait=false"]);
    eventually("the host's deletion", READY_TIMEOUT, || {
        let output = scene.server.kubectl(&["-n", &scene.namespace, "get", "pgh", "db"], None);
        String::from_utf8_lossy(&output.stderr).contains("NotFound")
    });
    assert!(operator.cloud_calls("terminate_host") >= 1, "the host was not terminated");
    operator.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_operators_one_leads_and_the_other_takes_over_when_it_is_killed() {
    let Some(scene) = Scene::new("lease").await else { return };
    let mut first = OperatorProcess::start(scene.server, &scene.namespace, &scene.state_dir, "first");
    eventually("the first operator leading", Duration::from_secs(60), || first.readiness().contains("leader"));
    let second = OperatorProcess::start(scene.server, &scene.namespace, &scene.state_dir, "second");
    eventually("the second operator standing by", Duration::from_secs(60), || second.readiness().contains("standby"));
    assert_eq!(scene.lease_holder(), "first");

    scene.apply_host("db");
    eventually("the host becoming Ready", READY_TIMEOUT, || scene.phase("db") == "Ready");
    assert_eq!(first.cloud_calls("launch_host"), 1);
    assert_eq!(second.cloud_calls("launch_host"), 0, "the standby reconciled");

    // The leader dies without releasing the Lease; the standby takes it once it expires.
    first.kill();
    eventually("the second operator taking the Lease", Duration::from_secs(60), || {
        scene.lease_holder() == "second" && second.readiness().contains("leader")
    });
    let transitions = scene.kubectl(&["get", "lease", "pgec2-operator", "-o", "jsonpath={.spec.leaseTransitions}"]);
    assert_eq!(transitions, "1");

    // The new leader adopts the running host (no second launch) and serves new ones.
    scene.apply_host("db2");
    eventually("the second host becoming Ready", READY_TIMEOUT, || scene.phase("db2") == "Ready");
    assert_eq!(scene.phase("db"), "Ready");
    assert_eq!(second.cloud_calls("launch_host"), 1, "only db2 is launched by the new leader");
}
