//! The same scenarios on two API servers: the real controllers and the local cloud (real PostgreSQL) on
//! the in-memory API of local mode and on a real kube-apiserver (tests/apiserver/). The scenario
//! asserts what a user relies on and returns what it saw; the two outcomes must be equal, so
//! every difference between the servers that the controllers can see fails here.
//!
//! The real half is skipped, with one notice, when the server is not built (failing instead
//! when `PGEC2_REQUIRE_APISERVER=1`).

mod common;
mod real_apiserver;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{READY_TIMEOUT, agent_binary, stop_all_postgres, strip};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::{ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use pgec2_api::fixtures::policy;
use pgec2_api::{BackupPolicy, HOST_FINALIZER, HostPhase, PostgresHost, rules};
use pgec2_kube_memory::MemoryApiServer;
use pgec2_operator::cloud::local::{LocalCloud, LocalCloudConfig};
use pgec2_operator::kube_layer::HOST_CONTROLLER;
use pgec2_operator::leader::{LeaderElector, LeaseConfig};
use pgec2_operator::{Config, Operator};
use pgec2_testkit::Scratch;
use real_apiserver::RealApiServer;
use serde_json::json;

/// An API server under test: a client, the namespace the scenario works in, and what keeps
/// the server alive.
struct Backend {
    name: &'static str,
    client: kube::Client,
    namespace: String,
    _memory: Option<MemoryApiServer>,
}

impl Backend {
    /// Local mode's in-memory API (with the validators that stand in for the CRDs' rules).
    fn memory(scratch: &Scratch) -> Self {
        let api_dir = scratch.subdir("api").expect("api directory");
        let server = pgec2_operator::local_mode::api_server(&api_dir).expect("in-memory API");
        Self { name: "in-memory", client: server.client(), namespace: "parity".into(), _memory: Some(server) }
    }

    /// The real API server with pgec2's CRDs, in a fresh namespace.
    async fn real() -> Option<Self> {
        let server = RealApiServer::get()?;
        server.install_crds();
        let client = server.client().await;
        let namespace = server.namespace(&client, "parity").await;
        Some(Self { name: "kube-apiserver", client, namespace, _memory: None })
    }

    fn hosts(&self) -> Api<PostgresHost> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }
}

/// The operator (its controllers in this process, as `pgec2-operator run` runs them) with the
/// local cloud in a scratch directory.
struct RunningOperator {
    state_dir: PathBuf,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningOperator {
    fn start(backend: &Backend, scratch: &Scratch) -> Self {
        let state_dir = scratch.subdir("state").expect("state directory");
        let cloud = LocalCloud::new(LocalCloudConfig::new(&state_dir, agent_binary())).expect("local cloud");
        let config = Config {
            namespace: Some(backend.namespace.clone()),
            archive_check_interval: Duration::from_secs(3600),
            ..Config::default()
        };
        let operator = Operator::builder(backend.client.clone(), Arc::new(cloud)).config(config).build();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(operator.run(async move {
            let _ = stopped.await;
        }));
        Self { state_dir, stop, task }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(30), self.task).await;
        stop_all_postgres(&self.state_dir);
    }
}

/// What the scenario saw; equal on both servers.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    finalizers: Vec<String>,
    /// The spec as stored (defaults filled in, unknown fields pruned), read untyped.
    stored_spec: serde_json::Value,
    conditions: BTreeSet<(String, String)>,
    /// Who server-side applied `.status` through the status subresource.
    status_appliers: BTreeSet<String>,
    event_reasons: BTreeSet<String>,
    generation_after_spec_change: i64,
    shrink_refusal: (u16, String),
    stale_write: u16,
    deletion_waited_for_the_finalizer: bool,
}

async fn wait_for(
    hosts: &Api<PostgresHost>,
    name: &str,
    timeout: Duration,
    done: impl Fn(&PostgresHost) -> bool,
) -> PostgresHost {
    let deadline = Instant::now() + timeout;
    loop {
        let found = hosts.get_opt(name).await.expect("read PostgresHost");
        match found {
            Some(host) if done(&host) => return host,
            Some(host) if Instant::now() > deadline => {
                panic!("{name}: not there after {timeout:?}: {:#?}", host.status)
            }
            None if Instant::now() > deadline => panic!("{name} does not exist"),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// A PostgresHost as a user writes it: the few fields they care about, `extra` merged into spec.
fn user_host(namespace: &str, extra: serde_json::Value) -> serde_json::Value {
    let mut spec = json!({"storage": {"sizeGiB": 10}, "backup": {"policyRef": {"name": "nightly"}}});
    if let (Some(spec), serde_json::Value::Object(extra)) = (spec.as_object_mut(), extra) {
        spec.extend(extra);
    }
    json!({
        "apiVersion": pgec2_api::API_GROUP_VERSION,
        "kind": "PostgresHost",
        "metadata": {"name": "db", "namespace": namespace},
        "spec": spec,
    })
}

/// A host with a policy comes up, takes a spec change, refuses a bad one and a stale write,
/// tells what it did in Events, and is deleted through its finalizer.
async fn host_lifecycle(backend: &Backend) -> Outcome {
    let scratch = Scratch::new().expect("scratch directory");
    let operator = RunningOperator::start(backend, &scratch);
    let archive = scratch.subdir("archive").expect("archive directory");
    let user = PatchParams::apply("parity-test").force();
    let policies: Api<BackupPolicy> = Api::namespaced(backend.client.clone(), &backend.namespace);
    let nightly = policy("nightly").namespace(&backend.namespace).local(&archive.display().to_string()).build();
    policies.patch("nightly", &user, &Patch::Apply(strip(&nightly))).await.expect("apply BackupPolicy");
    let hosts = backend.hosts();
    let db = user_host(&backend.namespace, json!({}));
    hosts.patch("db", &user, &Patch::Apply(&db)).await.expect("apply PostgresHost");

    let ready = wait_for(&hosts, "db", READY_TIMEOUT, |host| {
        assert_ne!(host.phase(), Some(HostPhase::Failed), "{}: host failed: {:#?}", backend.name, host.status);
        host.phase() == Some(HostPhase::Ready)
    })
    .await;
    let stored_spec = stored_spec(backend, "db").await;
    let status = ready.status.clone().expect("status");
    assert_eq!(status.observed_generation, ready.metadata.generation, "{}", backend.name);
    let conditions = status.conditions.iter().map(|c| (c.type_.clone(), c.status.clone())).collect();
    let status_appliers = ready
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|entry| entry.operation.as_deref() == Some("Apply") && entry.subresource.as_deref() == Some("status"))
        .filter_map(|entry| entry.manager.clone())
        .collect();

    // A spec change is observed: the generation grows and the operator catches up.
    let work_mem = json!({"postgres": {"parameters": {"work_mem": "8MB"}}});
    let changed = user_host(&backend.namespace, work_mem.clone());
    hosts.patch("db", &user, &Patch::Apply(&changed)).await.expect("apply a spec change");
    let caught_up = wait_for(&hosts, "db", READY_TIMEOUT, |host| {
        host.status.as_ref().and_then(|status| status.observed_generation) == host.metadata.generation
            && host.phase() == Some(HostPhase::Ready)
    })
    .await;

    // A shrinking volume is refused by the server itself, with the rule's message.
    let mut shrunk = changed.clone();
    shrunk["spec"]["storage"]["sizeGiB"] = json!(5);
    let shrink_refusal = match hosts.patch("db", &user, &Patch::Apply(&shrunk)).await {
        Err(kube::Error::Api(status)) => (status.code, status.reason.clone()),
        other => panic!("{}: shrinking the volume was not refused: {other:?}", backend.name),
    };
    assert_eq!(shrink_refusal, (422, "Invalid".to_string()), "{}", backend.name);
    let refused = hosts.patch("db", &user, &Patch::Apply(&shrunk)).await.expect_err("refused");
    assert!(refused.to_string().contains(rules::SIZE_NEVER_SHRINKS.message), "{}: {refused}", backend.name);

    // A write carrying an old resourceVersion conflicts.
    let mut stale = caught_up.clone();
    stale.metadata.managed_fields = None;
    stale.metadata.annotations = Some([("example.com/owner".to_string(), "a".to_string())].into());
    let annotate = serde_json::json!({"metadata": {"annotations": {"example.com/owner": "b"}}});
    hosts.patch("db", &PatchParams::default(), &Patch::Merge(&annotate)).await.expect("annotate");
    let stale_write = match hosts.replace("db", &PostParams::default(), &stale).await {
        Err(kube::Error::Api(status)) => status.code,
        other => panic!("{}: a stale replace was not refused: {other:?}", backend.name),
    };

    let event_reasons = event_reasons(backend, "db").await;
    assert!(!event_reasons.is_empty(), "{}: no Events about the host", backend.name);

    // Deletion waits for the finalizer (PostgreSQL stopped, the volume kept), then the host goes.
    let deleted = hosts.delete("db", &DeleteParams::default()).await.expect("delete PostgresHost");
    let deletion_waited_for_the_finalizer =
        deleted.left().is_some_and(|host| host.metadata.deletion_timestamp.is_some());
    let deadline = Instant::now() + READY_TIMEOUT;
    while hosts.get_opt("db").await.expect("read PostgresHost").is_some() {
        assert!(Instant::now() < deadline, "{}: the host was not deleted", backend.name);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    operator.stop().await;
    Outcome {
        finalizers: ready.metadata.finalizers.clone().unwrap_or_default(),
        stored_spec,
        conditions,
        status_appliers,
        event_reasons,
        generation_after_spec_change: caught_up.metadata.generation.unwrap_or_default(),
        shrink_refusal,
        stale_write,
        deletion_waited_for_the_finalizer,
    }
}

/// The host's spec as the server stores it, without the typed client's own defaults.
async fn stored_spec(backend: &Backend, name: &str) -> serde_json::Value {
    let resource = ApiResource::erase::<PostgresHost>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(backend.client.clone(), &backend.namespace, &resource);
    let object = api.get(name).await.expect("read PostgresHost untyped");
    object.data["spec"].clone()
}

/// The reasons of the Events about a host (`events.k8s.io/v1`, as the operator records them).
async fn event_reasons(backend: &Backend, name: &str) -> BTreeSet<String> {
    let events: Api<Event> = Api::namespaced(backend.client.clone(), &backend.namespace);
    let listed = events.list(&ListParams::default()).await.expect("list Events");
    listed
        .items
        .into_iter()
        .filter(|event| event.regarding.as_ref().and_then(|object| object.name.as_deref()) == Some(name))
        .filter_map(|event| event.reason)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_lives_and_dies_the_same_way_on_the_in_memory_and_the_real_api_server() {
    let scratch = Scratch::new().expect("scratch directory");
    let memory = host_lifecycle(&Backend::memory(&scratch)).await;
    assert_eq!(memory.finalizers, [HOST_FINALIZER]);
    assert_eq!(memory.status_appliers, BTreeSet::from([HOST_CONTROLLER.to_string()]), "{memory:#?}");
    assert_eq!(memory.generation_after_spec_change, 2);
    assert_eq!(memory.stale_write, 409);
    assert!(memory.deletion_waited_for_the_finalizer, "{memory:#?}");
    let Some(real) = Backend::real().await else { return };
    let real = host_lifecycle(&real).await;
    assert_eq!(real, memory, "the real API server (left) and the in-memory one (right) differ");
}

/// Two replicas elect a leader on one Lease: the first wins, the second waits while the Lease is
/// held, and takes it once the first releases it. Returns the holders and the transitions seen.
async fn lease_handover(backend: &Backend) -> (String, String, i32) {
    let config = |identity: &str| LeaseConfig {
        namespace: backend.namespace.clone(),
        name: "parity-lease".into(),
        identity: identity.into(),
        lease_duration: Duration::from_secs(5),
        renew_interval: Duration::from_secs(1),
    };
    let first = LeaderElector::new(backend.client.clone(), config("first"));
    let second = LeaderElector::new(backend.client.clone(), config("second"));
    let leases: Api<Lease> = Api::namespaced(backend.client.clone(), &backend.namespace);
    let holder = || async {
        let lease = leases.get("parity-lease").await.expect("read the Lease");
        let spec = lease.spec.unwrap_or_default();
        (spec.holder_identity.unwrap_or_default(), spec.lease_transitions.unwrap_or_default())
    };
    tokio::time::timeout(Duration::from_secs(10), first.acquire())
        .await
        .expect("the first replica acquires the free Lease in time")
        .expect("acquire");
    let waited = tokio::time::timeout(Duration::from_secs(3), second.acquire()).await;
    assert!(waited.is_err(), "{}: the second replica acquired a Lease held by the first", backend.name);
    let (before, _) = holder().await;
    first.release().await;
    tokio::time::timeout(Duration::from_secs(10), second.acquire())
        .await
        .expect("the second replica acquires the released Lease in time")
        .expect("acquire");
    let (after, transitions) = holder().await;
    (before, after, transitions)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leadership_lease_changes_hands_the_same_way_on_the_in_memory_and_the_real_api_server() {
    let scratch = Scratch::new().expect("scratch directory");
    let memory = lease_handover(&Backend::memory(&scratch)).await;
    assert_eq!(memory, ("first".to_string(), "second".to_string(), 1));
    let Some(real) = Backend::real().await else { return };
    assert_eq!(lease_handover(&real).await, memory, "the real API server (left) and the in-memory one (right) differ");
}
