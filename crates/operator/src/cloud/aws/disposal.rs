//! Deleting a host: terminate its instance, wait until it is gone, then deal with the data
//! volume per its disposal. Each call reads where things stand and does the next step only, so
//! the controller calls it until `Done`.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{Instance, ResourceType, Snapshot, SnapshotState, Tag, Volume, VolumeState};

use super::AwsCloud;
use super::error::classify;
use super::instances::TERMINABLE_STATES;
use super::request::{DATA_DEVICE, specification};
use super::tags::{DATA_ROLE, RELEASED, SOURCE_VOLUME, VOLUME_ROLE, filter, host_tags, tag_filter, tag_value};
use crate::cloud::{CloudError, HostRef, InstanceState, TerminationProgress, VolumeDisposal, tags};

impl AwsCloud {
    /// One step of deleting a host.
    pub(crate) async fn terminate(
        &self,
        host: &HostRef,
        disposal: VolumeDisposal,
    ) -> Result<TerminationProgress, CloudError> {
        if let Some(detail) = self.terminate_instances(host).await? {
            return Ok(TerminationProgress::InProgress { detail });
        }
        let mut waiting = Vec::new();
        for volume in self.data_volumes(host).await? {
            if let Some(detail) = self.dispose(host, &volume, disposal).await? {
                waiting.push(detail);
            }
        }
        if waiting.is_empty() {
            self.launches.forget(&host.uid);
            Ok(TerminationProgress::Done)
        } else {
            Ok(TerminationProgress::InProgress { detail: waiting.join("; ") })
        }
    }

    /// Terminates the host's instances; what is being waited for while one still exists.
    async fn terminate_instances(&self, host: &HostRef) -> Result<Option<String>, CloudError> {
        let mut instances = self.tagged_instances(host, TERMINABLE_STATES).await?;
        if instances.is_empty()
            && let Some(instance_id) = self.launches.recent(&host.uid, self.options.launch_visibility)
        {
            match self.instance_by_id(&instance_id).await? {
                None => return Ok(Some(format!("waiting for launched instance {instance_id} to become visible"))),
                Some(instance) if super::instances::state_of(&instance) != InstanceState::Terminated => {
                    instances.push(instance)
                }
                Some(_) => {}
            }
        }
        if instances.is_empty() {
            return Ok(None);
        }
        let mut to_terminate = Vec::new();
        for instance in &instances {
            // Tag the data volume now: once the instance is gone, tags are all that find it.
            if let Some(volume_id) = data_volume_of(instance) {
                self.claim_volume(host, volume_id).await?;
            }
            if super::instances::state_of(instance) != InstanceState::ShuttingDown {
                to_terminate.extend(instance.instance_id().map(str::to_string));
            }
        }
        if !to_terminate.is_empty() {
            self.retry(|| self.ec2.terminate_instances().set_instance_ids(Some(to_terminate.clone())).send())
                .await
                .map_err(|error| classify("ec2", "terminate instance", &error))?;
            tracing::info!(host = %host.key(), instances = ?to_terminate, "terminating instances");
        }
        let ids: Vec<&str> = instances.iter().filter_map(Instance::instance_id).collect();
        Ok(Some(format!("waiting for instance {} to terminate", ids.join(", "))))
    }

    /// The host's data volumes that still exist.
    async fn data_volumes(&self, host: &HostRef) -> Result<Vec<Volume>, CloudError> {
        let filters = vec![
            tag_filter(tags::UID, &host.uid),
            tag_filter(tags::HOST, &host.key()),
            tag_filter(VOLUME_ROLE, DATA_ROLE),
            filter("status", &["creating", "available", "in-use", "error"]),
        ];
        let output = self
            .retry(|| self.ec2.describe_volumes().set_filters(Some(filters.clone())).send())
            .await
            .map_err(|error| classify("ec2", "find data volumes", &error))?;
        Ok(output.volumes().to_vec())
    }

    /// One step for one volume; what is being waited for, or `None` when it is handled.
    async fn dispose(
        &self,
        host: &HostRef,
        volume: &Volume,
        disposal: VolumeDisposal,
    ) -> Result<Option<String>, CloudError> {
        let volume_id = volume.volume_id().unwrap_or_default();
        match (volume.state(), disposal) {
            (Some(VolumeState::Available), VolumeDisposal::Retain) => self.release(host, volume).await.map(|()| None),
            (Some(VolumeState::Available | VolumeState::Error), VolumeDisposal::Delete) => {
                self.delete_volume(volume_id).await.map(|()| None)
            }
            (Some(VolumeState::Available), VolumeDisposal::Snapshot) => self.snapshot_then_delete(host, volume).await,
            (Some(VolumeState::Error), _) => Err(CloudError::Permanent {
                action: "dispose of data volume",
                message: format!(
                    "data volume {volume_id} is in the error state and is kept: inspect it, then delete it by hand \
                     or set deletionPolicy to Delete"
                ),
            }),
            _ => Ok(Some(format!("waiting for volume {volume_id} to detach"))),
        }
    }

    /// Retain: keep the volume, tagged as released (host tags kept) for a later host to adopt.
    async fn release(&self, host: &HostRef, volume: &Volume) -> Result<(), CloudError> {
        if tag_value(volume.tags(), RELEASED) == Some("true") {
            return Ok(());
        }
        let volume_id = volume.volume_id().unwrap_or_default();
        let released = Tag::builder().key(RELEASED).value("true").build();
        self.retry(|| self.ec2.create_tags().resources(volume_id).tags(released.clone()).send())
            .await
            .map_err(|error| classify("ec2", "tag retained volume", &error))?;
        tracing::info!(host = %host.key(), volume_id, "data volume retained and released");
        Ok(())
    }

    async fn delete_volume(&self, volume_id: &str) -> Result<(), CloudError> {
        self.retry(|| self.ec2.delete_volume().volume_id(volume_id).send())
            .await
            .map_err(|error| classify("ec2", "delete data volume", &error))?;
        tracing::info!(volume_id, "data volume deleted");
        Ok(())
    }

    /// Snapshot: take a final snapshot, wait until it completes, and only then delete the volume.
    async fn snapshot_then_delete(&self, host: &HostRef, volume: &Volume) -> Result<Option<String>, CloudError> {
        let volume_id = volume.volume_id().unwrap_or_default();
        let Some(snapshot) = self.final_snapshot(volume_id).await? else {
            let snapshot_id = self.create_final_snapshot(host, volume_id).await?;
            return Ok(Some(format!("snapshot {snapshot_id} of volume {volume_id} started")));
        };
        let snapshot_id = snapshot.snapshot_id().unwrap_or_default();
        match snapshot.state() {
            Some(SnapshotState::Completed) => {
                self.delete_volume(volume_id).await?;
                Ok(None)
            }
            Some(SnapshotState::Error) => Err(CloudError::Permanent {
                action: "snapshot data volume",
                message: format!(
                    "snapshot {snapshot_id} of volume {volume_id} failed ({}); the volume is kept: delete the failed \
                     snapshot to try again",
                    snapshot.state_message().unwrap_or("no reason given")
                ),
            }),
            _ => Ok(Some(format!(
                "waiting for snapshot {snapshot_id} of volume {volume_id} ({})",
                snapshot.progress().unwrap_or("0%")
            ))),
        }
    }

    /// The newest final snapshot of a volume.
    async fn final_snapshot(&self, volume_id: &str) -> Result<Option<Snapshot>, CloudError> {
        let filters = vec![tag_filter(SOURCE_VOLUME, volume_id), tag_filter(tags::MANAGED_BY, tags::MANAGER)];
        let output = self
            .retry(|| self.ec2.describe_snapshots().owner_ids("self").set_filters(Some(filters.clone())).send())
            .await
            .map_err(|error| classify("ec2", "find final snapshot", &error))?;
        Ok(output
            .snapshots()
            .iter()
            .max_by_key(|snapshot| snapshot.start_time().map(|time| (time.secs(), time.subsec_nanos())))
            .cloned())
    }

    /// CreateSnapshot of `volume_id` with `tags`; returns the new snapshot's id.
    pub(crate) async fn create_tagged_snapshot(
        &self,
        volume_id: &str,
        description: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<String, CloudError> {
        let tag_specification = specification(ResourceType::Snapshot, tags);
        let output = self
            .retry(|| {
                self.ec2
                    .create_snapshot()
                    .volume_id(volume_id)
                    .description(description)
                    .tag_specifications(tag_specification.clone())
                    .send()
            })
            .await
            .map_err(|error| classify("ec2", "snapshot data volume", &error))?;
        Ok(output.snapshot_id().unwrap_or_default().to_string())
    }

    async fn create_final_snapshot(&self, host: &HostRef, volume_id: &str) -> Result<String, CloudError> {
        let mut snapshot_tags: BTreeMap<String, String> = host_tags(host);
        snapshot_tags.insert(SOURCE_VOLUME.into(), volume_id.into());
        snapshot_tags.insert("Name".into(), format!("{} final", host.key()));
        let description = format!("pgec2: final snapshot of {} data volume {volume_id}", host.key());
        let snapshot_id = self.create_tagged_snapshot(volume_id, &description, &snapshot_tags).await?;
        tracing::info!(host = %host.key(), volume_id, snapshot_id, "final snapshot started");
        Ok(snapshot_id)
    }
}

/// The data volume in an instance's block device mappings.
fn data_volume_of(instance: &Instance) -> Option<&str> {
    instance
        .block_device_mappings()
        .iter()
        .find(|mapping| mapping.device_name() == Some(DATA_DEVICE))
        .and_then(|mapping| mapping.ebs())
        .and_then(|ebs| ebs.volume_id())
}
