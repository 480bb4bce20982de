//! Errors of the PostgresHost controller, each with a metric label.

use crate::cloud::CloudError;

use super::render::RenderError;

/// A reconcile that did not finish; the error policy retries it with backoff per object.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to {action} PostgresHost {host}: {source}")]
    Kube { action: &'static str, host: String, source: kube::Error },
    #[error("failed to read BackupPolicy {policy}: {source}")]
    ReadPolicy { policy: String, source: kube::Error },
    #[error("cloud call for PostgresHost {host} failed: {source}")]
    Cloud { host: String, source: CloudError },
    #[error("failed to render the setup of PostgresHost {host}: {source}")]
    Render { host: String, source: RenderError },
    #[error("PostgresHost {host} is still being deleted: {detail}")]
    TerminationInProgress { host: String, detail: String },
    #[error("PostgresHost {host}: {source}; nothing is launched until it can be read")]
    RecoveryCheck { host: String, source: Box<super::recovery_check::CheckError> },
    #[error("PostgresHost has no {0}")]
    MissingMetadata(&'static str),
}

impl Error {
    /// Short label for the `errors` metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube { .. } => "kube",
            Error::ReadPolicy { .. } => "read_policy",
            Error::Cloud { source, .. } if source.is_transient() => "cloud_transient",
            Error::Cloud { .. } => "cloud_permanent",
            Error::Render { .. } => "render",
            Error::TerminationInProgress { .. } => "terminating",
            Error::RecoveryCheck { .. } => "recovery_check",
            Error::MissingMetadata(_) => "metadata",
        }
    }

    /// True when the reconcile is merely waiting (not a fault): no warning, short requeue.
    pub fn is_waiting(&self) -> bool {
        matches!(self, Error::TerminationInProgress { .. })
    }
}

/// What the controller's error policy sees: the finalizer helper wraps our errors.
pub type FinalizerError = kube::runtime::finalizer::Error<Error>;

/// Our error inside a finalizer error, if it is one.
pub fn inner(error: &FinalizerError) -> Option<&Error> {
    match error {
        kube::runtime::finalizer::Error::ApplyFailed(inner) | kube::runtime::finalizer::Error::CleanupFailed(inner) => {
            Some(inner)
        }
        _ => None,
    }
}

/// Metric label of a finalizer error.
pub fn label(error: &FinalizerError) -> &'static str {
    match error {
        kube::runtime::finalizer::Error::AddFinalizer(_) => "add_finalizer",
        kube::runtime::finalizer::Error::RemoveFinalizer(_) => "remove_finalizer",
        kube::runtime::finalizer::Error::UnnamedObject | kube::runtime::finalizer::Error::InvalidFinalizer => {
            "finalizer"
        }
        other => inner(other).map_or("unknown", Error::metric_label),
    }
}
