//! Runs the PostgresHost controller step by step on the in-memory API and the fake cloud, with
//! a freshly started operator for every step: what an operator restarted after each reconcile
//! (or killed in the middle of one) sees. A step is one reconcile of one host, as kube's
//! controller would run it on a watch event or a requeue.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::Api;
use kube::api::{DeleteParams, PostParams};
use pgec2_api::PostgresHost;
use pgec2_kube_memory::MemoryApiServer;
use pgec2_operator::cloud::AgentDownload;
use pgec2_operator::host::{self, HostContext};
use pgec2_operator::local_mode::Kind;
use pgec2_operator::{Config, Operator};

use super::FakeCloud;

/// How one step ended.
#[derive(Debug)]
pub enum Step {
    /// The reconcile returned (its error, if any, as text).
    Finished(Result<(), String>),
    /// The operator was killed at a cloud call; the reconcile was dropped there.
    Killed,
    /// The host no longer exists.
    Gone,
}

/// One in-memory API and one fake cloud, shared by the operators started on them.
pub struct Scenario {
    pub server: MemoryApiServer,
    pub cloud: Arc<FakeCloud>,
    pub hosts: Api<PostgresHost>,
    /// Steps taken so far.
    pub steps: usize,
    /// Steps that ended with the operator killed.
    pub kills: usize,
}

impl Scenario {
    pub fn new(cloud: Arc<FakeCloud>) -> Self {
        let server = MemoryApiServer::new()
            .with_resource(Kind::PostgresHost.resource_type())
            .with_resource(Kind::BackupPolicy.resource_type());
        let hosts = Api::namespaced(server.client(), "default");
        Self { server, cloud, hosts, steps: 0, kills: 0 }
    }

    /// A freshly started operator's host controller context: nothing in memory.
    fn fresh_operator(&self) -> Arc<HostContext> {
        let config = Config {
            namespace: Some("default".into()),
            agent_download: Some(AgentDownload {
                url: "https://example.invalid/pgec2-agent".into(),
                sha256: "0".repeat(64),
            }),
            archive_check_interval: Duration::from_secs(3600),
            ..Config::default()
        };
        let operator = Operator::builder(self.server.client(), self.cloud.clone()).config(config).build();
        Arc::new(HostContext::new(operator.context()))
    }

    pub async fn create(&self, host: &PostgresHost) -> PostgresHost {
        self.hosts.create(&PostParams::default(), host).await.expect("create the host")
    }

    pub async fn get(&self, name: &str) -> Option<PostgresHost> {
        self.hosts.get_opt(name).await.expect("read the host")
    }

    pub async fn delete(&self, name: &str) {
        self.hosts.delete(name, &DeleteParams::default()).await.expect("delete the host");
    }

    /// One reconcile of host `name` by a new operator.
    pub async fn step(&mut self, name: &str) -> Step {
        self.steps += 1;
        let Some(host) = self.get(name).await else { return Step::Gone };
        let reconcile = host::reconcile(Arc::new(host), self.fresh_operator());
        tokio::select! {
            result = reconcile => Step::Finished(result.map(drop).map_err(|error| error.to_string())),
            () = self.cloud.killed() => {
                self.kills += 1;
                Step::Killed
            }
        }
    }

    /// Steps until `done` holds for the host (`None` once it is gone), at most `limit` long.
    pub async fn run_until(
        &mut self,
        name: &str,
        limit: Duration,
        done: impl Fn(Option<&PostgresHost>) -> bool,
    ) -> Option<PostgresHost> {
        let deadline = Instant::now() + limit;
        loop {
            let host = self.get(name).await;
            if done(host.as_ref()) {
                return host;
            }
            assert!(Instant::now() < deadline, "host {name} did not get there within {limit:?}: {host:#?}");
            if matches!(self.step(name).await, Step::Finished(Err(_))) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}
