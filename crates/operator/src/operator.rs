//! The [`Operator`] that runs the controllers on any `kube::Client` and any [`Cloud`]: a real
//! cluster with AWS (`pgec2-operator run`), or the in-memory API with the local cloud (local
//! mode and tests).
//!
//! ```no_run
//! # async fn example(client: kube::Client, cloud: std::sync::Arc<dyn pgec2_operator::cloud::Cloud>) {
//! use pgec2_operator::Operator;
//! let operator = Operator::builder(client, cloud).namespace("default").build();
//! let metrics = operator.metrics();
//! operator.run(async { let _ = tokio::signal::ctrl_c().await; }).await;
//! # }
//! ```

use std::future::Future;
use std::sync::Arc;

use futures::FutureExt;
use kube::Client;

use crate::cloud::{AgentDownload, Cloud};
use crate::context::{Config, Context};
use crate::metrics::Metrics;

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
        Operator { context: Arc::new(Context::new(self.client, self.cloud, metrics, self.config)) }
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
