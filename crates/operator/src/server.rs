//! The operator's HTTP endpoints: `/healthz` (the process runs), `/readyz` (it reached the
//! Kubernetes API) and `/metrics` (Prometheus text format).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::metrics::Metrics;

/// What the health endpoints report.
#[derive(Debug, Default)]
pub struct Health {
    ready: AtomicBool,
    leader: AtomicBool,
}

impl Health {
    /// The operator reached the Kubernetes API: `/readyz` answers 200 from now on.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Relaxed);
    }

    /// This replica leads (reconciles) or stopped leading.
    pub fn set_leader(&self, leader: bool) {
        self.leader.store(leader, Ordering::Relaxed);
    }
}

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
}

/// The router of the endpoints.
pub fn router(metrics: Arc<Metrics>, health: Arc<Health>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(AppState { metrics, health })
}

/// Serves the endpoints on `listen` until `shutdown` resolves.
pub async fn serve(
    listen: SocketAddr,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tracing::info!(%listen, "serving /healthz, /readyz and /metrics");
    axum::serve(listener, router(metrics, health)).with_graceful_shutdown(shutdown).await
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    if !state.health.ready.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, "not connected to the Kubernetes API yet\n");
    }
    if state.health.leader.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready (leader)\n")
    } else {
        (StatusCode::OK, "ready (standby)\n")
    }
}

async fn metrics_text(State(state): State<AppState>) -> impl IntoResponse {
    match state.metrics.encode() {
        Ok(text) => (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, [(header::CONTENT_TYPE, "text/plain")], String::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get_text(listen: SocketAddr, path: &str) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(listen).await.expect("connect");
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut response = String::new();
        stream.read_to_string(&mut response).await.expect("read");
        let code = response.split_whitespace().nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
        (code, response)
    }

    #[tokio::test]
    async fn health_readiness_and_metrics_are_served() {
        let metrics = Arc::new(Metrics::default());
        metrics.reconciled("PostgresHost", Some("kube"), 0.1);
        metrics.cloud_call("local", "launch_host", "success");
        let health = Arc::new(Health::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let listen = listener.local_addr().expect("address");
        let app = router(metrics, health.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        assert_eq!(get_text(listen, "/healthz").await.0, 200);
        assert_eq!(get_text(listen, "/readyz").await.0, 503);
        health.set_ready();
        assert_eq!(get_text(listen, "/readyz").await.0, 200);
        let (code, body) = get_text(listen, "/metrics").await;
        assert_eq!(code, 200);
        assert!(body.contains(r#"pgec2_operator_reconciles_total{kind="PostgresHost",outcome="error"} 1"#), "{body}");
        assert!(
            body.contains(r#"pgec2_operator_reconcile_errors_total{kind="PostgresHost",error="kube"} 1"#),
            "{body}"
        );
        assert!(
            body.contains(
                r#"pgec2_operator_cloud_calls_total{cloud="local",action="launch_host",outcome="success"} 1"#
            ),
            "{body}"
        );
    }
}
