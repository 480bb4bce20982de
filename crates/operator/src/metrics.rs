//! Prometheus metrics of the operator: reconciles by kind and outcome, errors by kind and error
//! label, cloud calls by action and outcome (`pgec2_operator_*`), and the recoverability of each
//! host (`pgec2_rpo_seconds`, `pgec2_last_verified_rto_seconds`, `pgec2_backup_age_seconds`,
//! `pgec2_archive_lag_files`, `pgec2_archive_holes`, `pgec2_wal_stream_lag_seconds`, labelled by
//! namespace and host; a value not known is left out).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use std::sync::atomic::AtomicU64;

use k8s_openapi::jiff::Timestamp;
use pgec2_api::PostgresHostStatus;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    /// `PostgresHost` or `BackupPolicy`.
    pub kind: String,
    /// `success` or `error`.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub kind: String,
    /// The error's metric label (`kube`, `cloud_transient`, ...).
    pub error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CloudCallLabels {
    /// `aws` or `local`.
    pub cloud: String,
    /// `find_host`, `launch_host`, `send_command`, ...
    pub action: String,
    /// `success`, `transient_error` or `permanent_error`.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HostLabels {
    pub namespace: String,
    pub host: String,
}

/// A gauge per host.
pub type HostGauge = Family<HostLabels, Gauge<f64, AtomicU64>>;

/// The recoverability gauges of every host.
#[derive(Default)]
pub struct RecoverabilityGauges {
    pub rpo_seconds: HostGauge,
    pub last_verified_rto_seconds: HostGauge,
    pub backup_age_seconds: HostGauge,
    pub archive_lag_files: HostGauge,
    pub archive_holes: HostGauge,
    pub wal_stream_lag_seconds: HostGauge,
}

/// Every metric of the operator, registered in one registry.
pub struct Metrics {
    pub registry: Registry,
    pub reconciles: Family<ReconcileLabels, Counter>,
    pub errors: Family<ErrorLabels, Counter>,
    pub cloud_calls: Family<CloudCallLabels, Counter>,
    pub reconcile_seconds: Family<KindLabels, Histogram>,
    pub recoverability: RecoverabilityGauges,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut root = Registry::default();
        let recoverability = RecoverabilityGauges::default();
        let gauges = [
            (
                "pgec2_rpo_seconds",
                "Seconds of committed work losing the host now would lose",
                &recoverability.rpo_seconds,
            ),
            (
                "pgec2_last_verified_rto_seconds",
                "Seconds the last timed restore took",
                &recoverability.last_verified_rto_seconds,
            ),
            (
                "pgec2_backup_age_seconds",
                "Seconds since the newest base backup finished",
                &recoverability.backup_age_seconds,
            ),
            ("pgec2_archive_lag_files", "WAL files waiting to be archived", &recoverability.archive_lag_files),
            (
                "pgec2_archive_holes",
                "WAL segments the archive queue cap dropped (0: the archive has no hole)",
                &recoverability.archive_holes,
            ),
            (
                "pgec2_wal_stream_lag_seconds",
                "Seconds since the streamed archive last caught up with the server",
                &recoverability.wal_stream_lag_seconds,
            ),
        ];
        for (name, help, gauge) in gauges {
            root.register(name, help, gauge.clone());
        }
        let registry = root.sub_registry_with_prefix("pgec2_operator");
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        registry.register("reconciles", "Reconciles by kind and outcome", reconciles.clone());
        let errors = Family::<ErrorLabels, Counter>::default();
        registry.register("reconcile_errors", "Failed reconciles by kind and error", errors.clone());
        let cloud_calls = Family::<CloudCallLabels, Counter>::default();
        registry.register("cloud_calls", "Cloud API calls by action and outcome", cloud_calls.clone());
        let reconcile_seconds = Family::<KindLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.01, 2.0, 14))
        });
        registry.register("reconcile_duration_seconds", "Time spent in one reconcile", reconcile_seconds.clone());
        Self { registry: root, reconciles, errors, cloud_calls, reconcile_seconds, recoverability }
    }
}

impl Metrics {
    /// Counts one reconcile of `kind`; `error` is the error's label when it failed.
    pub fn reconciled(&self, kind: &str, error: Option<&str>, seconds: f64) {
        let outcome = if error.is_some() { "error" } else { "success" };
        self.reconciles.get_or_create(&ReconcileLabels { kind: kind.into(), outcome: outcome.into() }).inc();
        if let Some(error) = error {
            self.errors.get_or_create(&ErrorLabels { kind: kind.into(), error: error.into() }).inc();
        }
        self.reconcile_seconds.get_or_create(&KindLabels { kind: kind.into() }).observe(seconds);
    }

    /// The number of reconciles of `kind` so far (any outcome).
    pub fn reconcile_count(&self, kind: &str) -> u64 {
        ["success", "error"]
            .into_iter()
            .filter_map(|outcome| {
                self.reconciles
                    .get(&ReconcileLabels { kind: kind.into(), outcome: outcome.into() })
                    .map(|counter| counter.get())
            })
            .sum()
    }

    /// Counts one cloud call.
    pub fn cloud_call(&self, cloud: &str, action: &str, outcome: &str) {
        let labels = CloudCallLabels { cloud: cloud.into(), action: action.into(), outcome: outcome.into() };
        self.cloud_calls.get_or_create(&labels).inc();
    }

    /// The number of cloud calls of `action` so far (any outcome).
    pub fn cloud_call_count(&self, action: &str) -> u64 {
        let mut total = 0;
        for cloud in ["aws", "local"] {
            for outcome in ["success", "transient_error", "permanent_error"] {
                let labels = CloudCallLabels { cloud: cloud.into(), action: action.into(), outcome: outcome.into() };
                total += self.cloud_calls.get(&labels).map_or(0, |counter| counter.get());
            }
        }
        total
    }

    /// Sets the recoverability gauges of a host from its status; values not known are removed.
    pub fn host_recoverability(&self, namespace: &str, host: &str, status: &PostgresHostStatus, now: Timestamp) {
        let labels = HostLabels { namespace: namespace.into(), host: host.into() };
        let recoverability = status.recoverability.as_ref();
        let backup_finished = status.last_backup.as_ref().and_then(|backup| backup.finish_time.as_ref());
        let values = [
            (
                &self.recoverability.rpo_seconds,
                recoverability.and_then(|known| known.rpo_seconds).map(|seconds| seconds as f64),
            ),
            (
                &self.recoverability.last_verified_rto_seconds,
                recoverability.and_then(|known| known.last_verified_rto_seconds).map(|seconds| seconds as f64),
            ),
            (
                &self.recoverability.backup_age_seconds,
                backup_finished.map(|finished| now.duration_since(finished.0).as_secs_f64()),
            ),
            (
                &self.recoverability.archive_lag_files,
                status.archiving.as_ref().and_then(|archiving| archiving.waiting_files).map(|files| files as f64),
            ),
            (
                &self.recoverability.archive_holes,
                status
                    .archiving
                    .as_ref()
                    .map(|archiving| archiving.holes.as_ref().map_or(0.0, |holes| holes.dropped_segments as f64)),
            ),
            (
                &self.recoverability.wal_stream_lag_seconds,
                status
                    .archiving
                    .as_ref()
                    .and_then(|archiving| archiving.streaming.as_ref()?.lag_seconds)
                    .map(|s| s as f64),
            ),
        ];
        for (gauge, value) in values {
            match value {
                Some(value) => {
                    gauge.get_or_create(&labels).set(value);
                }
                None => {
                    gauge.remove(&labels);
                }
            }
        }
    }

    /// Removes a deleted host's recoverability gauges.
    pub fn forget_host(&self, namespace: &str, host: &str) {
        self.host_recoverability(namespace, host, &PostgresHostStatus::default(), Timestamp::now());
    }

    /// The metrics in Prometheus text format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}
