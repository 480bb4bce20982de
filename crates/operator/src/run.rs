//! `pgec2-operator run`: connect to the cluster, pick the cloud, serve health and metrics, win
//! the leadership Lease, then run the controllers until SIGTERM or Ctrl-C.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;

use crate::cli::{CloudKind, RunArgs, default_agent_binary};
use crate::cloud::aws::{AwsCloud, AwsOptions};
use crate::cloud::local::{LocalCloud, LocalCloudConfig, LocalError};
use crate::cloud::{AgentDownload, Cloud};
use crate::context::Config;
use crate::leader::{LeaderElector, LeaseConfig, LeaseError};
use crate::metrics::Metrics;
use crate::operator::Operator;
use crate::server::{self, Health};

/// Why `run` stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("failed to connect to the Kubernetes API (in-cluster config or $KUBECONFIG): {0}")]
    Connect(kube::Error),
    #[error("failed to set up the local cloud: {0}")]
    LocalCloud(#[from] LocalError),
    #[error("the aws cloud needs --agent-url and --agent-sha256 (the agent the hosts download)")]
    NoAgentUrl,
    #[error("leader election failed: {0}")]
    Leadership(#[from] LeaseError),
    #[error("failed to serve health and metrics on {listen}: {source}")]
    Serve { listen: std::net::SocketAddr, source: std::io::Error },
}

/// Runs the operator until a termination signal.
pub async fn run(args: RunArgs) -> Result<(), RunError> {
    install_tls_provider();
    let client = kube::Client::try_default().await.map_err(RunError::Connect)?;
    let cloud = build_cloud(&args).await?;
    let metrics = Arc::new(Metrics::default());
    let health = Arc::new(Health::default());
    let shutdown = shutdown_signal().boxed().shared();
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|source| RunError::Serve { listen: args.listen, source })?;
    let app = server::router(metrics.clone(), health.clone());
    tokio::spawn(axum::serve(listener, app).with_graceful_shutdown(shutdown.clone()).into_future());
    client.apiserver_version().await.map_err(RunError::Connect)?;
    health.set_ready();

    let identity = args.leader.identity.clone().unwrap_or_else(host_name);
    let config = Config {
        agent_download: agent_download(&args),
        namespace: args.namespace.clone(),
        instance_name: identity.clone(),
        ..Config::default()
    };
    let operator = Operator::builder(client.clone(), cloud).config(config).metrics(metrics).build();
    if args.leader.disable_leader_election {
        health.set_leader(true);
        operator.run(shutdown).await;
        return Ok(());
    }
    let lease = LeaseConfig {
        namespace: args.leader.lease_namespace.clone().unwrap_or_else(|| client.default_namespace().to_string()),
        name: args.leader.lease_name.clone(),
        identity,
        lease_duration: Duration::from_secs(args.leader.lease_duration_seconds.max(3)),
        renew_interval: Duration::from_secs((args.leader.lease_duration_seconds / 3).max(1)),
    };
    let elector = LeaderElector::new(client, lease);
    tokio::select! {
        acquired = elector.acquire() => acquired?,
        () = shutdown.clone() => return Ok(()),
    }
    tracing::info!("leading: reconciling PostgresHosts");
    health.set_leader(true);
    tokio::select! {
        () = operator.run(shutdown) => {}
        lost = elector.keep() => return Err(RunError::Leadership(lost)),
    }
    elector.release().await;
    Ok(())
}

/// Chooses ring as the process's TLS crypto provider. Both of rustls's providers are linked (kube
/// uses ring, the AWS SDK aws-lc-rs), and with both rustls refuses to pick one, so without this
/// the first HTTPS connection to the API server panics. Idempotent.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

async fn build_cloud(args: &RunArgs) -> Result<Arc<dyn Cloud>, RunError> {
    Ok(match args.cloud {
        CloudKind::Aws => {
            if args.agent_url.is_none() || args.agent_sha256.is_none() {
                return Err(RunError::NoAgentUrl);
            }
            let options = AwsOptions { region: args.aws_region.clone(), ..AwsOptions::default() };
            Arc::new(AwsCloud::from_env(options).await)
        }
        CloudKind::Local => {
            let agent = args.agent_binary.clone().unwrap_or_else(default_agent_binary);
            Arc::new(LocalCloud::new(LocalCloudConfig::new(args.state_dir.clone(), agent))?)
        }
    })
}

fn agent_download(args: &RunArgs) -> Option<AgentDownload> {
    Some(AgentDownload { url: args.agent_url.clone()?, sha256: args.agent_sha256.clone()? })
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "pgec2-operator".into())
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => futures::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
    tracing::info!("shutting down");
}
