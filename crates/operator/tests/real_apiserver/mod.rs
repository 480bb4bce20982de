//! A real Kubernetes API server for the operator's tests: etcd and kube-apiserver built from Go
//! modules by `tests/apiserver/build.sh`, started by `tests/apiserver/start.sh` on loopback.
//!
//! - `$PGEC2_APISERVER_KUBECONFIG` names the kubeconfig of a server already running (scripts/test.sh
//!   starts one for the whole suite); otherwise each test process starts its own when the
//!   binaries exist (`$PGEC2_APISERVER_BIN`, default `target/apiserver/bin`) and stops it when the
//!   process ends.
//! - Without binaries, [`RealApiServer::get`] returns `None` and says once on stderr that the
//!   real-server tests are skipped and how to build the server, unless `PGEC2_REQUIRE_APISERVER=1`
//!   (CI), where it panics instead: a missing server is a failure there, never a skip.
//!
//! Tests share one server, so each works in a namespace of its own ([`RealApiServer::namespace`]).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

/// Set to 1 where the real server must be there (CI): its absence fails the tests.
pub const REQUIRE_ENV: &str = "PGEC2_REQUIRE_APISERVER";
/// The kubeconfig of a server someone else started.
pub const KUBECONFIG_ENV: &str = "PGEC2_APISERVER_KUBECONFIG";
/// Where build.sh put etcd, kube-apiserver and kubectl.
pub const BIN_ENV: &str = "PGEC2_APISERVER_BIN";

/// How long start.sh may take until the server answers.
const START_TIMEOUT: Duration = Duration::from_secs(180);

/// A running etcd + kube-apiserver, and kubectl to talk to it.
pub struct RealApiServer {
    pub kubeconfig: PathBuf,
    kubectl: PathBuf,
    /// start.sh, when this process started the server (it stops the server when we exit).
    process: Option<Child>,
}

impl RealApiServer {
    /// The process's server: started on first use, shared by every test of the process.
    /// `None` (after one notice on stderr) when the binaries are not built and no server is
    /// given; panics when [`REQUIRE_ENV`] is set and no server can be had.
    pub fn get() -> Option<&'static RealApiServer> {
        static SERVER: OnceLock<Result<RealApiServer, String>> = OnceLock::new();
        match SERVER.get_or_init(Self::find_or_start) {
            Ok(server) => Some(server),
            Err(reason) if required() => panic!("{REQUIRE_ENV}=1 but the real API server is not available: {reason}"),
            Err(reason) => {
                static NOTICE: OnceLock<()> = OnceLock::new();
                NOTICE.get_or_init(|| eprintln!("skipped: the real Kubernetes API server tests ({reason})"));
                None
            }
        }
    }

    fn find_or_start() -> Result<Self, String> {
        let bin = bin_dir();
        let kubectl = bin.join("kubectl");
        if let Ok(kubeconfig) = std::env::var(KUBECONFIG_ENV) {
            if !kubectl.exists() {
                return Err(format!("{KUBECONFIG_ENV} is set but {} is missing", kubectl.display()));
            }
            return Ok(Self { kubeconfig: kubeconfig.into(), kubectl, process: None });
        }
        for program in ["etcd", "kube-apiserver", "kubectl"] {
            if !bin.join(program).exists() {
                return Err(format!(
                    "{} is missing: build it with tests/apiserver/build.sh (Go >= 1.26, about 25 minutes on two cores)",
                    bin.join(program).display()
                ));
            }
        }
        Self::start(bin, kubectl)
    }

    fn start(bin: PathBuf, kubectl: PathBuf) -> Result<Self, String> {
        let dir = tempfile::Builder::new()
            .prefix("pgec2-apiserver-")
            .tempdir()
            .map_err(|error| format!("failed to create the server's directory: {error}"))?
            .keep();
        let script = repo_root().join("tests/apiserver/start.sh");
        let mut child = Command::new("bash")
            .arg(&script)
            .arg("--watch-pid")
            .arg(std::process::id().to_string())
            .arg("--cleanup")
            .arg(&dir)
            .env(BIN_ENV, &bin)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|error| format!("failed to run {}: {error}", script.display()))?;
        let ready = dir.join("ready");
        let deadline = Instant::now() + START_TIMEOUT;
        while !ready.exists() {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("start.sh exited with {status}; logs in {}", dir.display()));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err(format!("the API server was not ready in {START_TIMEOUT:?}; logs in {}", dir.display()));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(Self { kubeconfig: dir.join("kubeconfig"), kubectl, process: Some(child) })
    }

    /// A client for the server, as the operator builds one from `$KUBECONFIG`.
    pub async fn client(&self) -> kube::Client {
        pgec2_operator::run::install_tls_provider();
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig).expect("read the test kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("a client configuration from the test kubeconfig");
        kube::Client::try_from(config).expect("a client for the real API server")
    }

    /// Runs kubectl against the server (from the repository root, so paths such as `crds/`
    /// work); `input` goes to its stdin.
    pub fn kubectl(&self, args: &[&str], input: Option<&str>) -> Output {
        let mut command = Command::new(&self.kubectl);
        command.arg("--kubeconfig").arg(&self.kubeconfig).arg("--cache-dir").arg(self.kubectl_cache());
        command.args(args).current_dir(repo_root());
        command.stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() });
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn().expect("run kubectl");
        if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
            use std::io::Write;
            stdin.write_all(input.as_bytes()).expect("write kubectl's stdin");
        }
        child.wait_with_output().expect("wait for kubectl")
    }

    /// kubectl that must succeed; returns its stdout.
    pub fn kubectl_ok(&self, args: &[&str], input: Option<&str>) -> String {
        let output = self.kubectl(args, input);
        assert!(
            output.status.success(),
            "kubectl {} failed: {}\n{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr),
            String::from_utf8_lossy(&output.stdout)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Applies crds/ (server-side, as users install them) and waits until kubectl's discovery
    /// serves both kinds. Idempotent: every test calls it.
    pub fn install_crds(&self) {
        self.kubectl_ok(&["apply", "--server-side", "--force-conflicts", "-f", "crds/"], None);
        self.kubectl_ok(
            &[
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                "crd/postgreshosts.pgec2.io",
                "crd/backuppolicies.pgec2.io",
            ],
            None,
        );
        // kubectl caches discovery; a cache taken before the CRDs existed would hide them.
        let _ = std::fs::remove_dir_all(self.kubectl_cache());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let served = self.kubectl(&["api-resources", "--api-group=pgec2.io", "-o", "name"], None);
            let served = String::from_utf8_lossy(&served.stdout);
            if served.contains("postgreshosts.pgec2.io") && served.contains("backuppolicies.pgec2.io") {
                return;
            }
            assert!(Instant::now() < deadline, "the pgec2.io kinds are not in discovery: {served}");
            let _ = std::fs::remove_dir_all(self.kubectl_cache());
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// kubectl's discovery cache: one per test process, beside the kubeconfig (so it goes with
    /// the server's directory).
    fn kubectl_cache(&self) -> PathBuf {
        let dir = self.kubeconfig.parent().map_or_else(std::env::temp_dir, Path::to_path_buf);
        dir.join(format!("kubectl-cache-{}", std::process::id()))
    }

    /// Creates namespace `name` unless it exists (for manifests that name their own).
    pub fn ensure_namespace(&self, name: &str) {
        let manifest =
            format!("{{\"apiVersion\": \"v1\", \"kind\": \"Namespace\", \"metadata\": {{\"name\": \"{name}\"}}}}");
        self.kubectl_ok(&["apply", "--server-side", "-f", "-"], Some(&manifest));
    }

    /// A fresh namespace named `<prefix>-<n>` for one test (the server is shared).
    pub async fn namespace(&self, client: &kube::Client, prefix: &str) -> String {
        let api: Api<Namespace> = Api::all(client.clone());
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.subsec_nanos())
            .unwrap_or_default();
        let name = format!("{prefix}-{}-{nanos:x}", std::process::id());
        let namespace = Namespace {
            metadata: ObjectMeta { name: Some(name.clone()), ..ObjectMeta::default() },
            ..Namespace::default()
        };
        api.create(&PostParams::default(), &namespace).await.expect("create a test namespace");
        name
    }
}

fn required() -> bool {
    std::env::var(REQUIRE_ENV).is_ok_and(|value| value == "1")
}

/// `$PGEC2_APISERVER_BIN`, or `apiserver/bin` in the target directory this test was built in.
fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var(BIN_ENV) {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test>
    let target = exe.ancestors().nth(3).map(Path::to_path_buf).unwrap_or_else(|| repo_root().join("target"));
    target.join("apiserver/bin")
}

/// The repository's root (two levels above this crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).ancestors().nth(2).expect("repository root").to_path_buf()
}
