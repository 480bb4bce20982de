//! Cleanup (deletion): stop PostgreSQL and terminate the host through the cloud, disposing of
//! the data volume per `spec.storage.deletionPolicy`; the finalizer goes only when that is done.

use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::runtime::controller::Action;
use pgec2_api::{DeletionPolicy, HostPhase, PostgresHost};

use super::HostContext;
use super::error::Error;
use super::observe::host_ref;
use super::status::Draft;
use super::write_status;
use crate::cloud::{TerminationProgress, VolumeDisposal};
use crate::kube_layer::events;

/// Terminates the host; `Err(TerminationInProgress)` while the cloud is still at it.
pub async fn cleanup(ctx: &HostContext, api: &Api<PostgresHost>, host: &PostgresHost) -> Result<Action, Error> {
    let reference = host_ref(host)?;
    ctx.archive_checks.forget(&reference.uid);
    ctx.metrics.forget_host(&reference.namespace, &reference.name);
    let (disposal, fate) = match host.spec.storage.deletion_policy {
        DeletionPolicy::Retain => (VolumeDisposal::Retain, "kept (released for a new host of the same name)"),
        DeletionPolicy::Snapshot => (VolumeDisposal::Snapshot, "snapshotted, then deleted"),
        DeletionPolicy::Delete => (VolumeDisposal::Delete, "deleted"),
    };
    if host.phase() != Some(HostPhase::Deleting) {
        let detail = format!("stopping PostgreSQL and terminating the host; its data volume will be {fate}");
        let mut draft = Draft::new(host.status.as_ref(), host.metadata.generation, Timestamp::now());
        draft.deleting(&detail);
        write_status(api, host, &draft.finish()).await?;
        events::normal(&ctx.recorder, host, "Deleting", detail).await;
    }
    let progress = ctx
        .cloud
        .terminate_host(&reference, disposal)
        .await
        .map_err(|source| Error::Cloud { host: host.qualified_name(), source })?;
    match progress {
        TerminationProgress::InProgress { detail } => {
            Err(Error::TerminationInProgress { host: host.qualified_name(), detail })
        }
        TerminationProgress::Done => {
            let note = format!("PostgreSQL stopped and the host terminated; the data volume was {fate}");
            events::normal(&ctx.recorder, host, "Deleted", note).await;
            Ok(Action::await_change())
        }
    }
}
