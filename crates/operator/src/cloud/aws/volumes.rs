//! The host's data volume while its instance lives: tagged as this host's data, a retained volume
//! of an earlier host of the same name adopted, grown online with ModifyVolume.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{
    AttachmentStatus, Instance, Tag, Volume, VolumeModification, VolumeModificationState, VolumeState, VolumeType,
};

use super::AwsCloud;
use super::error::{classify, has_code};
use super::instances::state_of;
use super::request::DATA_DEVICE;
use super::tags::{ADOPT_VOLUME, DATA_ROLE, RELEASED, VOLUME_ROLE, filter, host_tags, sdk_tags, tag_filter, tag_value};
use crate::cloud::{CloudError, HostInstance, HostRef, InstanceState, VolumeSettings, tags};

/// Size, performance and type of a volume, as it is or as a modification makes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Shape {
    pub size_gib: i32,
    pub iops: Option<i32>,
    pub throughput_mibps: Option<i32>,
    pub volume_type: String,
}

impl Shape {
    fn of_volume(volume: &Volume) -> Self {
        Self {
            size_gib: volume.size().unwrap_or_default(),
            iops: volume.iops(),
            throughput_mibps: volume.throughput(),
            volume_type: volume.volume_type().map(|kind| kind.as_str().to_string()).unwrap_or_default(),
        }
    }

    /// What a modification makes of the volume; a target it leaves out keeps the volume's value.
    fn of_target(modification: &VolumeModification, volume: &Shape) -> Self {
        Self {
            size_gib: modification.target_size().unwrap_or(volume.size_gib),
            iops: modification.target_iops().or(volume.iops),
            throughput_mibps: modification.target_throughput().or(volume.throughput_mibps),
            volume_type: modification
                .target_volume_type()
                .map_or_else(|| volume.volume_type.clone(), |kind| kind.as_str().to_string()),
        }
    }
}

/// What a ModifyVolume has to change; all `None` means nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Change {
    pub size_gib: Option<i32>,
    pub iops: Option<i32>,
    pub throughput_mibps: Option<i32>,
    pub volume_type: Option<String>,
}

impl Change {
    fn is_empty(&self) -> bool {
        *self == Change::default()
    }
}

/// The change from `current` to `wanted`. Unset iops/throughput keep what the volume has; a
/// smaller size is refused: EBS volumes cannot shrink.
pub(crate) fn change(volume_id: &str, current: &Shape, wanted: &VolumeSettings) -> Result<Change, CloudError> {
    if wanted.size_gib < current.size_gib {
        return Err(CloudError::InvalidSpec(format!(
            "spec.storage.sizeGiB {} is smaller than data volume {volume_id} ({} GiB): EBS volumes cannot shrink; \
             set it back to at least {}",
            wanted.size_gib, current.size_gib, current.size_gib
        )));
    }
    let differs = |wanted: Option<i32>, current: Option<i32>| wanted.filter(|value| Some(*value) != current);
    Ok(Change {
        size_gib: (wanted.size_gib > current.size_gib).then_some(wanted.size_gib),
        iops: differs(wanted.iops, current.iops),
        throughput_mibps: differs(wanted.throughput_mibps, current.throughput_mibps),
        volume_type: (!wanted.volume_type.is_empty() && wanted.volume_type != current.volume_type)
            .then(|| wanted.volume_type.clone()),
    })
}

impl AwsCloud {
    /// One volume by id; `None` when EC2 does not know it.
    pub(crate) async fn volume(&self, volume_id: &str) -> Result<Option<Volume>, CloudError> {
        match self.retry(|| self.ec2.describe_volumes().volume_ids(volume_id).send()).await {
            Ok(output) => Ok(output.volumes().first().cloned()),
            Err(error) if has_code(&error, "InvalidVolume.NotFound") => Ok(None),
            Err(error) => Err(classify("ec2", "describe volume", &error)),
        }
    }

    /// The data volume of a visible instance, once attached: its `/dev/sdf` mapping (tagged as
    /// this host's data on the way), or the retained volume it was launched to adopt, which is
    /// attached here once the instance runs.
    pub(crate) async fn converge_data_volume(
        &self,
        host: &HostRef,
        instance: &Instance,
    ) -> Result<Option<String>, CloudError> {
        let mapping =
            instance.block_device_mappings().iter().find(|mapping| mapping.device_name() == Some(DATA_DEVICE));
        if let Some(ebs) = mapping.and_then(|mapping| mapping.ebs()) {
            let Some(volume_id) = ebs.volume_id() else { return Ok(None) };
            self.claim_volume(host, volume_id).await?;
            let attached = ebs.status() == Some(&AttachmentStatus::Attached);
            return Ok(attached.then(|| volume_id.to_string()));
        }
        if let Some(volume_id) = tag_value(instance.tags(), ADOPT_VOLUME)
            && state_of(instance) == InstanceState::Running
        {
            self.attach_adopted(host, instance.instance_id().unwrap_or_default(), volume_id).await?;
        }
        Ok(None)
    }

    /// Makes the volume carry this host's tags, the data role, and no released mark.
    pub(crate) async fn claim_volume(&self, host: &HostRef, volume_id: &str) -> Result<(), CloudError> {
        let Some(volume) = self.volume(volume_id).await? else { return Ok(()) };
        let mut wanted = host_tags(host);
        wanted.insert(VOLUME_ROLE.into(), DATA_ROLE.into());
        let missing: BTreeMap<String, String> =
            wanted.into_iter().filter(|(key, value)| tag_value(volume.tags(), key) != Some(value)).collect();
        if !missing.is_empty() {
            self.retry(|| self.ec2.create_tags().resources(volume_id).set_tags(Some(sdk_tags(&missing))).send())
                .await
                .map_err(|error| classify("ec2", "tag data volume", &error))?;
        }
        if tag_value(volume.tags(), RELEASED).is_some() {
            self.retry(|| {
                self.ec2.delete_tags().resources(volume_id).tags(Tag::builder().key(RELEASED).build()).send()
            })
            .await
            .map_err(|error| classify("ec2", "untag adopted data volume", &error))?;
            tracing::info!(host = %host.key(), volume_id, "adopted retained data volume");
        }
        Ok(())
    }

    /// Attaches the retained volume an instance was launched to adopt.
    async fn attach_adopted(&self, host: &HostRef, instance_id: &str, volume_id: &str) -> Result<(), CloudError> {
        let action = "attach retained data volume";
        let Some(volume) = self.volume(volume_id).await? else {
            return Err(CloudError::Permanent {
                action,
                message: format!(
                    "retained volume {volume_id} that instance {instance_id} was launched to adopt no longer exists: \
                     delete and recreate the PostgresHost to start with a new volume"
                ),
            });
        };
        if tag_value(volume.tags(), tags::HOST) != Some(host.key().as_str()) {
            return Err(CloudError::Permanent {
                action,
                message: format!("volume {volume_id} is not tagged {}={}", tags::HOST, host.key()),
            });
        }
        let attached_to = volume.attachments().first().and_then(|attachment| attachment.instance_id());
        match (volume.state(), attached_to) {
            (Some(VolumeState::Available), _) => {
                self.retry(|| {
                    self.ec2.attach_volume().volume_id(volume_id).instance_id(instance_id).device(DATA_DEVICE).send()
                })
                .await
                .map_err(|error| classify("ec2", action, &error))?;
                tracing::info!(host = %host.key(), volume_id, instance_id, "attaching retained data volume");
                Ok(())
            }
            (_, Some(other)) if other != instance_id => Err(CloudError::Permanent {
                action,
                message: format!("retained volume {volume_id} is attached to another instance, {other}: detach it"),
            }),
            _ => Ok(()),
        }
    }

    /// A retained volume of an earlier host of the same namespace/name to adopt, when there is
    /// one; it must be in the subnet's availability zone (EBS volumes cannot leave theirs).
    pub(crate) async fn volume_to_adopt(&self, host: &HostRef, subnet_id: &str) -> Result<Option<String>, CloudError> {
        let filters = vec![
            tag_filter(tags::HOST, &host.key()),
            tag_filter(tags::MANAGED_BY, tags::MANAGER),
            tag_filter(VOLUME_ROLE, DATA_ROLE),
            tag_filter(RELEASED, "true"),
            filter("status", &["available"]),
        ];
        let output = self
            .retry(|| self.ec2.describe_volumes().set_filters(Some(filters.clone())).send())
            .await
            .map_err(|error| classify("ec2", "find retained volumes", &error))?;
        if output.volumes().is_empty() {
            return Ok(None);
        }
        let zone = self.subnet_zone(subnet_id).await?;
        let describe = |volume: &Volume| {
            format!("{} in {}", volume.volume_id().unwrap_or_default(), volume.availability_zone().unwrap_or_default())
        };
        let all: Vec<String> = output.volumes().iter().map(describe).collect();
        let in_zone: Vec<&Volume> =
            output.volumes().iter().filter(|volume| volume.availability_zone() == Some(zone.as_str())).collect();
        match in_zone.as_slice() {
            [volume] => Ok(volume.volume_id().map(str::to_string)),
            [] => Err(CloudError::InvalidSpec(format!(
                "a retained data volume of {} exists ({}) but subnet {subnet_id} is in {zone}: choose a subnet in the \
                 volume's zone to adopt it, or delete the volume (or remove its {RELEASED} tag) to start empty",
                host.key(),
                all.join(", ")
            ))),
            _ => Err(CloudError::InvalidSpec(format!(
                "several retained data volumes of {} exist ({}): keep the {RELEASED}=true tag on one only",
                host.key(),
                all.join(", ")
            ))),
        }
    }

    /// The availability zone of a subnet.
    pub(crate) async fn subnet_zone(&self, subnet_id: &str) -> Result<String, CloudError> {
        let output = self
            .retry(|| self.ec2.describe_subnets().subnet_ids(subnet_id).send())
            .await
            .map_err(|error| classify("ec2", "describe subnet", &error))?;
        output.subnets().first().and_then(|subnet| subnet.availability_zone()).map(str::to_string).ok_or_else(|| {
            CloudError::InvalidSpec(format!("spec.instance.subnetId {subnet_id} does not exist in this region"))
        })
    }

    /// Grows the data volume to `wanted`; true once EBS is optimizing or done (the new size is
    /// usable then, and the agent grows the filesystem online).
    pub(crate) async fn resize(&self, host: &HostInstance, wanted: &VolumeSettings) -> Result<bool, CloudError> {
        let action = "resize data volume";
        let Some(volume_id) = host.volume_id.as_deref() else {
            let message = format!("instance {} has no attached data volume yet", host.instance_id);
            return Err(CloudError::Transient { action, message });
        };
        let Some(volume) = self.volume(volume_id).await? else {
            return Err(CloudError::Transient { action, message: format!("volume {volume_id} is not visible") });
        };
        let modification = self.latest_modification(volume_id).await?;
        let state = modification.as_ref().and_then(VolumeModification::modification_state);
        let current = match (state, &modification) {
            (Some(VolumeModificationState::Modifying), _) => return Ok(false),
            (Some(VolumeModificationState::Optimizing | VolumeModificationState::Completed), Some(modification)) => {
                Shape::of_target(modification, &Shape::of_volume(&volume))
            }
            _ => Shape::of_volume(&volume),
        };
        let change = change(volume_id, &current, wanted)?;
        if change.is_empty() {
            return Ok(true);
        }
        let output = self
            .retry(|| {
                self.ec2
                    .modify_volume()
                    .volume_id(volume_id)
                    .set_size(change.size_gib)
                    .set_iops(change.iops)
                    .set_throughput(change.throughput_mibps)
                    .set_volume_type(change.volume_type.as_deref().map(VolumeType::from))
                    .send()
            })
            .await
            .map_err(|error| classify("ec2", action, &error))?;
        tracing::info!(volume_id, ?change, "modifying data volume");
        let state = output.volume_modification().and_then(VolumeModification::modification_state);
        Ok(matches!(state, Some(VolumeModificationState::Optimizing | VolumeModificationState::Completed)))
    }

    /// The newest modification of a volume, if it was ever modified.
    async fn latest_modification(&self, volume_id: &str) -> Result<Option<VolumeModification>, CloudError> {
        match self.retry(|| self.ec2.describe_volumes_modifications().volume_ids(volume_id).send()).await {
            Ok(output) => Ok(output
                .volumes_modifications()
                .iter()
                .max_by_key(|modification| modification.start_time().map(|time| (time.secs(), time.subsec_nanos())))
                .cloned()),
            Err(error) if has_code(&error, "InvalidVolumeModification.NotFound") => Ok(None),
            Err(error) => Err(classify("ec2", "describe volume modifications", &error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(size_gib: i32) -> Shape {
        Shape { size_gib, iops: Some(3000), throughput_mibps: Some(125), volume_type: "gp3".into() }
    }

    fn wanted(size_gib: i32) -> VolumeSettings {
        VolumeSettings { size_gib, volume_type: "gp3".into(), ..VolumeSettings::default() }
    }

    #[test]
    fn growth_changes_only_what_differs() {
        assert_eq!(change("vol-1", &shape(20), &wanted(20)).expect("same"), Change::default());
        let grown = change("vol-1", &shape(20), &wanted(30)).expect("growth");
        assert_eq!(grown, Change { size_gib: Some(30), ..Change::default() });
        let faster = VolumeSettings { iops: Some(6000), throughput_mibps: Some(125), ..wanted(20) };
        assert_eq!(
            change("vol-1", &shape(20), &faster).expect("iops"),
            Change { iops: Some(6000), ..Change::default() }
        );
    }

    #[test]
    fn a_smaller_size_is_refused_with_the_volumes_size() {
        match change("vol-1", &shape(20), &wanted(10)) {
            Err(CloudError::InvalidSpec(message)) => {
                assert!(message.contains("cannot shrink") && message.contains("20 GiB"), "{message}")
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
}
