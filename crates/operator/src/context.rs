//! What every reconcile shares ([`Context`]) and the [`Operator`] that runs the controllers on
//! any `kube::Client` and any [`Cloud`]: a real cluster with AWS (`pgec2-operator run`), or the
//! in-memory API with the local cloud (local mode and tests).
//!
//! ```no_run
//! # async fn example(client: kube::Client, cloud: std::sync::Arc<dyn pgec2_operator::cloud::Cloud>) {
//! use pgec2_operator::Operator;
//! let operator = Operator::builder(client, cloud).namespace("default").build();
//! let metrics = operator.metrics();
//! operator.run(async { let _ = tokio::signal::ctrl_c().await; }).await;
//! # }
//! ```

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use kube::Client;
use kube::runtime::events::{Recorder, Reporter};

use crate::cloud::{AgentDownload, Cloud, metered::MeteredCloud};
use crate::metrics::Metrics;

/// Settings of the controllers.
#[derive(Clone, Debug)]
pub struct Config {
    /// Agent download for clouds whose hosts do not provide one (AWS: `--agent-url`).
    pub agent_download: Option<AgentDownload>,
    /// Watch only this namespace; all namespaces when `None`.
    pub namespace: Option<String>,
    /// `reportingInstance` of events (the pod name in a cluster).
    pub instance_name: String,
    /// How often a converged host is looked at again.
    pub resync_interval: Duration,
    /// How often the archiving of a Ready host is checked on the host (`archive-status`).
    pub archive_check_interval: Duration,
    /// More WAL files waiting to be archived than this, or the oldest waiting longer, turns
    /// `ContinuousArchiving` False (`ArchiveLagging`).
    pub archive_lag: pgec2_core::archiver::LagThresholds,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            agent_download: None,
            namespace: None,
            instance_name: "pgec2-operator".to_string(),
            resync_interval: Duration::from_secs(300),
            archive_check_interval: Duration::from_secs(60),
            archive_lag: pgec2_core::archiver::LagThresholds::default(),
        }
    }
}

/// Shared by every reconcile of every controller.
pub struct Context {
    pub client: Client,
    /// The cloud, counted in the metrics.
    pub cloud: Arc<dyn Cloud>,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    pub config: Config,
    /// Consecutive failed reconciles per object (uid), for exponential backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// Consecutive failed setups per host uid, with the digest of the configuration they tried.
    setup_failures: Mutex<HashMap<String, (String, u32)>>,
    /// Archive health checks in flight or done, per host uid.
    pub archive_checks: crate::host::archive_check::ArchiveChecks,
}

impl Context {
    /// Counts a failed reconcile of `uid`; returns how many failed in a row.
    pub fn record_failure(&self, uid: &str) -> u32 {
        let mut failures = self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = failures.entry(uid.to_string()).or_insert(0);
        *count = count.saturating_add(1);
        *count
    }

    /// Forgets the failures of `uid` after a successful reconcile.
    pub fn record_success(&self, uid: &str) {
        self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(uid);
    }

    /// Failed setups in a row of the configuration `digest` on host `uid`.
    pub fn setup_failures(&self, uid: &str, digest: &str) -> u32 {
        let failures = self.setup_failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        failures.get(uid).filter(|(tried, _)| tried == digest).map_or(0, |(_, count)| *count)
    }

    /// Records the outcome of a setup of `digest` on host `uid`.
    pub fn record_setup(&self, uid: &str, digest: &str, succeeded: bool) {
        let mut failures = self.setup_failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if succeeded {
            failures.remove(uid);
            return;
        }
        let entry = failures.entry(uid.to_string()).or_insert_with(|| (digest.to_string(), 0));
        if entry.0 != digest {
            *entry = (digest.to_string(), 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }
}

/// Builds an [`Operator`].
pub struct OperatorBuilder {
    client: Client,
    cloud: Arc<dyn Cloud>,
    config: Config,
    metrics: Option<Arc<Metrics>>,
}

impl OperatorBuilder {
    /// Watch only `namespace`.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.config.namespace = Some(namespace.into());
        self
    }

    /// The agent download used when the cloud's host layout names none.
    pub fn agent_download(mut self, download: AgentDownload) -> Self {
        self.config.agent_download = Some(download);
        self
    }

    /// Share these metrics (e.g. with the HTTP server) instead of fresh ones.
    pub fn metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Replace the whole configuration.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    pub fn build(self) -> Operator {
        let metrics = self.metrics.unwrap_or_default();
        let reporter =
            Reporter { controller: "pgec2-operator".into(), instance: Some(self.config.instance_name.clone()) };
        let context = Context {
            recorder: Recorder::new(self.client.clone(), reporter),
            client: self.client,
            cloud: Arc::new(MeteredCloud::new(self.cloud, metrics.clone())),
            metrics,
            config: self.config,
            failures: Mutex::default(),
            setup_failures: Mutex::default(),
            archive_checks: Default::default(),
        };
        Operator { context: Arc::new(context) }
    }
}

/// The controllers of pgec2 over one client and one cloud.
pub struct Operator {
    context: Arc<Context>,
}

impl Operator {
    pub fn builder(client: Client, cloud: Arc<dyn Cloud>) -> OperatorBuilder {
        OperatorBuilder { client, cloud, config: Config::default(), metrics: None }
    }

    /// The shared context (for controllers added next to the built-in ones).
    pub fn context(&self) -> Arc<Context> {
        self.context.clone()
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        self.context.metrics.clone()
    }

    /// Runs every controller until `shutdown` completes, then lets running reconciles finish.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) {
        let shutdown = shutdown.boxed().shared();
        futures::join!(
            crate::host::run(self.context.clone(), shutdown.clone()),
            crate::policy::run(self.context.clone(), shutdown),
        );
    }
}
