//! What every reconcile of every controller shares: the API client, the cloud, metrics, the
//! event recorder, the configuration and the per-object failure counts of the error policies.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
}

impl Context {
    /// A context over `client` and `cloud` (counted in `metrics`), with events reported as
    /// `config.instance_name`.
    pub fn new(client: Client, cloud: Arc<dyn Cloud>, metrics: Arc<Metrics>, config: Config) -> Self {
        let reporter = Reporter { controller: "pgec2-operator".into(), instance: Some(config.instance_name.clone()) };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            cloud: Arc::new(MeteredCloud::new(cloud, metrics.clone())),
            metrics,
            config,
            failures: Mutex::default(),
        }
    }

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
}
