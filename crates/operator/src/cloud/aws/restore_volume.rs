//! The data volume of a host restored from a snapshot backup: CreateVolume from the backup's
//! EBS snapshot in the zone of the host's subnet, encrypted (with the spec's KMS key, or the
//! account's default EBS key), tagged as the host's data volume, with a ClientToken derived
//! from the host's uid, the launch attempt and the snapshot, so a repeated call after a crash
//! or a timeout returns the first call's volume. The instance is then launched to adopt it
//! (see [`super::volumes`]): it is attached once the instance runs and the volume is available.
//!
//! Optionally, EBS Fast Snapshot Restore is enabled for the snapshot in that zone first, and the
//! volume created only once it is enabled (the volume is then fully initialised at creation);
//! it is disabled again once the volume exists, so it is not billed longer than needed.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{FastSnapshotRestoreStateCode, ResourceType, Volume, VolumeType};

use super::AwsCloud;
use super::error::classify;
use super::request::{client_token, specification};
use super::tags::{DATA_ROLE, VOLUME_ROLE, host_tags, tag_filter};
use crate::cloud::{CloudError, LaunchRequest, tags};

/// On a data volume created from a snapshot: the snapshot's id.
pub const RESTORED_FROM: &str = "pgec2.io/restored-from";

/// The tags of a volume restored for `launch` from `snapshot_id`.
pub(crate) fn restored_volume_tags(launch: &LaunchRequest, snapshot_id: &str) -> BTreeMap<String, String> {
    let mut volume_tags = launch.instance.tags.clone();
    volume_tags.entry("Name".into()).or_insert_with(|| launch.host.key());
    volume_tags.extend(host_tags(&launch.host));
    volume_tags.insert(VOLUME_ROLE.into(), DATA_ROLE.into());
    volume_tags.insert(RESTORED_FROM.into(), snapshot_id.into());
    volume_tags
}

impl AwsCloud {
    /// The volume created from `snapshot_id` for this host in the subnet's zone: found by its
    /// tags, or created. A volume still being created is returned too: the adopting instance
    /// attaches it once it is available.
    pub(crate) async fn volume_from_snapshot(
        &self,
        launch: &LaunchRequest,
        subnet_id: &str,
        snapshot_id: &str,
    ) -> Result<String, CloudError> {
        if let Some(volume) = self.restored_volume(launch, snapshot_id).await? {
            return Ok(volume.volume_id().unwrap_or_default().to_string());
        }
        let zone = self.subnet_zone(subnet_id).await?;
        if launch.volume.fast_snapshot_restore {
            self.fast_snapshot_restore_enabled(snapshot_id, &zone).await?;
        }
        let settings = &launch.volume;
        let token = client_token(&format!("{}-{snapshot_id}", launch.host.uid), launch.attempt);
        let tags = restored_volume_tags(launch, snapshot_id);
        let output = self
            .retry(|| {
                self.ec2
                    .create_volume()
                    .availability_zone(&zone)
                    .snapshot_id(snapshot_id)
                    .encrypted(true)
                    .set_kms_key_id(settings.kms_key_id.clone())
                    .volume_type(VolumeType::from(settings.volume_type.as_str()))
                    .size(settings.size_gib)
                    .set_iops(settings.iops)
                    .set_throughput(settings.throughput_mibps)
                    .client_token(&token)
                    .tag_specifications(specification(ResourceType::Volume, &tags))
                    .send()
            })
            .await
            .map_err(|error| classify("ec2", "create data volume from snapshot", &error))?;
        let volume_id = output.volume_id().unwrap_or_default().to_string();
        tracing::info!(host = %launch.host.key(), snapshot_id, volume_id, zone, "data volume created from snapshot");
        if launch.volume.fast_snapshot_restore {
            self.disable_fast_snapshot_restore(snapshot_id, &zone).await;
        }
        Ok(volume_id)
    }

    /// The volume already created from `snapshot_id` for this host, if any (not deleted).
    async fn restored_volume(&self, launch: &LaunchRequest, snapshot_id: &str) -> Result<Option<Volume>, CloudError> {
        let filters = vec![
            tag_filter(tags::UID, &launch.host.uid),
            tag_filter(VOLUME_ROLE, DATA_ROLE),
            tag_filter(RESTORED_FROM, snapshot_id),
            super::tags::filter("status", &["creating", "available", "in-use"]),
        ];
        let output = self
            .retry(|| self.ec2.describe_volumes().set_filters(Some(filters.clone())).send())
            .await
            .map_err(|error| classify("ec2", "find the volume restored from a snapshot", &error))?;
        Ok(output.volumes().first().cloned())
    }

    /// Enables Fast Snapshot Restore for the snapshot in `zone`; `Ok` once it is enabled, a
    /// transient error (retried with backoff) while it is being enabled.
    async fn fast_snapshot_restore_enabled(&self, snapshot_id: &str, zone: &str) -> Result<(), CloudError> {
        let action = "enable fast snapshot restore";
        let output = self
            .retry(|| {
                self.ec2
                    .enable_fast_snapshot_restores()
                    .availability_zones(zone)
                    .source_snapshot_ids(snapshot_id)
                    .send()
            })
            .await
            .map_err(|error| classify("ec2", action, &error))?;
        if let Some(failed) = output.unsuccessful().first() {
            let reasons: Vec<String> = failed
                .fast_snapshot_restore_state_errors()
                .iter()
                .filter_map(|error| error.error().and_then(|error| error.message()).map(str::to_string))
                .collect();
            return Err(CloudError::Permanent {
                action,
                message: format!(
                    "snapshot {snapshot_id} in {zone}: {}; set bootstrap.recovery.fastSnapshotRestore to false to \
                     restore without it",
                    reasons.join("; ")
                ),
            });
        }
        let state = output.successful().first().and_then(|success| success.state().cloned());
        match state {
            Some(FastSnapshotRestoreStateCode::Enabled) => Ok(()),
            state => Err(CloudError::Transient {
                action,
                message: format!(
                    "fast snapshot restore of {snapshot_id} in {zone} is {state:?}; waiting until enabled"
                ),
            }),
        }
    }

    /// Disables Fast Snapshot Restore again; a failure is logged (it only costs money).
    async fn disable_fast_snapshot_restore(&self, snapshot_id: &str, zone: &str) {
        let disabled = self
            .retry(|| {
                self.ec2
                    .disable_fast_snapshot_restores()
                    .availability_zones(zone)
                    .source_snapshot_ids(snapshot_id)
                    .send()
            })
            .await;
        if let Err(error) = disabled {
            let error = classify("ec2", "disable fast snapshot restore", &error);
            tracing::warn!(snapshot_id, zone, %error, "fast snapshot restore stays enabled; disable it by hand");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::{HostRef, InstanceSettings, VolumeSettings};

    #[test]
    fn a_restored_volume_is_tagged_as_the_hosts_data_and_names_its_snapshot() {
        let launch = LaunchRequest {
            host: HostRef { namespace: "shop".into(), name: "copy".into(), uid: "uid-1".into() },
            instance: InstanceSettings {
                tags: BTreeMap::from([("team".to_string(), "payments".to_string())]),
                ..InstanceSettings::default()
            },
            volume: VolumeSettings::default(),
            attempt: 0,
        };
        let tags = restored_volume_tags(&launch, "snap-0abc");
        assert_eq!(tags.get(RESTORED_FROM).map(String::as_str), Some("snap-0abc"));
        assert_eq!(tags.get(VOLUME_ROLE).map(String::as_str), Some(DATA_ROLE));
        assert_eq!(tags.get(tags::UID).map(String::as_str), Some("uid-1"));
        assert_eq!(tags.get("team").map(String::as_str), Some("payments"));
        assert_eq!(tags.get("Name").map(String::as_str), Some("shop/copy"));
    }
}
