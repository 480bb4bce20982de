//! EBS snapshots of a host's data volume for snapshot backups. CreateSnapshot has no client
//! token, so the tags are the idempotency key: a snapshot is looked for by the host's uid and
//! the backup's name (`pgec2.io/uid`, `pgec2.io/backup`) before one is created, and a restarted
//! operator finds the one it started.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::Snapshot;

use super::AwsCloud;
use super::error::{classify, has_code};
use super::tags::{SOURCE_VOLUME, filter, host_tags, tag_filter, tag_value};
use crate::cloud::{CloudError, HostInstance, HostRef, SnapshotRequest, SnapshotState, VolumeSnapshot, tags};

/// The cloud's view of an EBS snapshot.
fn volume_snapshot(snapshot: &Snapshot) -> VolumeSnapshot {
    use aws_sdk_ec2::types::SnapshotState as Ec2State;
    let state = match snapshot.state() {
        Some(Ec2State::Completed) => SnapshotState::Completed,
        Some(Ec2State::Error) => {
            SnapshotState::Failed { message: snapshot.state_message().unwrap_or("no reason given").to_string() }
        }
        _ => SnapshotState::Pending,
    };
    VolumeSnapshot {
        snapshot_id: snapshot.snapshot_id().unwrap_or_default().to_string(),
        backup: tag_value(snapshot.tags(), tags::BACKUP).map(str::to_string),
        state,
    }
}

/// The tags of a backup's snapshot: the host's, the backup, the policy, the source volume.
pub(crate) fn snapshot_tags(request: &SnapshotRequest, volume_id: &str) -> BTreeMap<String, String> {
    let mut snapshot_tags = host_tags(&request.host);
    snapshot_tags.insert(tags::BACKUP.into(), request.backup.clone());
    snapshot_tags.insert(tags::POLICY.into(), request.policy.clone());
    snapshot_tags.insert(SOURCE_VOLUME.into(), volume_id.into());
    snapshot_tags.insert("Name".into(), format!("{} {}", request.host.key(), request.backup));
    snapshot_tags
}

impl AwsCloud {
    /// Snapshots owned by this account matching `filters`.
    async fn snapshots_where(
        &self,
        filters: Vec<aws_sdk_ec2::types::Filter>,
    ) -> Result<Vec<VolumeSnapshot>, CloudError> {
        let output = self
            .retry(|| self.ec2.describe_snapshots().owner_ids("self").set_filters(Some(filters.clone())).send())
            .await
            .map_err(|error| classify("ec2", "find snapshots", &error))?;
        Ok(output.snapshots().iter().map(volume_snapshot).collect())
    }

    /// The backup snapshots of a host (by its uid), any state.
    pub(crate) async fn backup_snapshots(&self, host: &HostRef) -> Result<Vec<VolumeSnapshot>, CloudError> {
        self.snapshots_where(vec![tag_filter(tags::UID, &host.uid), filter("tag-key", &[tags::BACKUP])]).await
    }

    /// Starts the snapshot of a backup, or returns the one already started.
    pub(crate) async fn snapshot_for_backup(
        &self,
        instance: &HostInstance,
        request: &SnapshotRequest,
    ) -> Result<VolumeSnapshot, CloudError> {
        let filters = vec![tag_filter(tags::UID, &request.host.uid), tag_filter(tags::BACKUP, &request.backup)];
        if let Some(found) = self.snapshots_where(filters).await?.into_iter().next() {
            return Ok(found);
        }
        let volume_id = instance.volume_id.as_deref().ok_or_else(|| CloudError::Transient {
            action: "snapshot data volume",
            message: format!("instance {} has no data volume attached yet", instance.instance_id),
        })?;
        let description = format!("pgec2: backup {} of {}", request.backup, request.host.key());
        let snapshot_id =
            self.create_tagged_snapshot(volume_id, &description, &snapshot_tags(request, volume_id)).await?;
        tracing::info!(host = %request.host.key(), backup = %request.backup, volume_id, snapshot_id, "backup snapshot started");
        Ok(VolumeSnapshot { snapshot_id, backup: Some(request.backup.clone()), state: SnapshotState::Pending })
    }

    /// A snapshot by id; `None` when it is gone.
    pub(crate) async fn snapshot_by_id(&self, snapshot_id: &str) -> Result<Option<VolumeSnapshot>, CloudError> {
        Ok(self.snapshots_where(vec![filter("snapshot-id", &[snapshot_id])]).await?.into_iter().next())
    }

    /// Deletes a snapshot; a missing one is already deleted.
    pub(crate) async fn remove_snapshot(&self, snapshot_id: &str) -> Result<(), CloudError> {
        match self.retry(|| self.ec2.delete_snapshot().snapshot_id(snapshot_id).send()).await {
            Ok(_) => {
                tracing::info!(snapshot_id, "backup snapshot deleted");
                Ok(())
            }
            Err(error) if has_code(&error, "InvalidSnapshot.NotFound") => Ok(()),
            Err(error) => Err(classify("ec2", "delete snapshot", &error)),
        }
    }
}
