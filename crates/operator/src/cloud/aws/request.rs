//! The RunInstances request of a launch, built without I/O: settings checked, tags, block
//! devices, metadata options and the idempotency token. Everything a launch promises (IMDSv2,
//! encryption, a data volume that outlives its instance, tags at creation) is decided here.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{
    BlockDeviceMapping, EbsBlockDevice, HttpTokensState, IamInstanceProfileSpecification,
    InstanceMetadataEndpointState, InstanceMetadataOptionsRequest, ResourceType, TagSpecification, VolumeType,
};

use super::tags::{ADOPT_VOLUME, host_tags, sdk_tags};
use crate::cloud::{CloudError, LaunchRequest};

/// Device name of the data volume in every launch (`/dev/nvme…` on Nitro instances; the agent
/// finds the volume by its id, which is the NVMe serial number).
pub const DATA_DEVICE: &str = "/dev/sdf";

/// Root volume size when the request does not give one.
pub const DEFAULT_ROOT_SIZE_GIB: i32 = 20;

/// The longest ClientToken EC2 accepts.
const MAX_CLIENT_TOKEN: usize = 64;

/// The settings AWS requires, checked and unwrapped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Placement<'a> {
    pub subnet_id: &'a str,
    pub security_group_ids: &'a [String],
    pub instance_profile: &'a str,
}

/// Checks the fields only AWS needs; a missing one parks the host with a message that says
/// which field and why.
pub(crate) fn validate(request: &LaunchRequest) -> Result<Placement<'_>, CloudError> {
    let instance = &request.instance;
    let subnet_id = instance.subnet_id.as_deref().filter(|subnet| !subnet.is_empty()).ok_or_else(|| {
        CloudError::InvalidSpec(
            "spec.instance.subnetId is required on aws: EC2 launches every instance into a VPC subnet, \
             and the subnet's availability zone is where the data volume lives"
                .into(),
        )
    })?;
    if instance.security_group_ids.is_empty() {
        return Err(CloudError::InvalidSpec(
            "spec.instance.securityGroupIds is required on aws: without a security group the instance \
             gets the VPC's default group, which rarely lets clients reach PostgreSQL's port"
                .into(),
        ));
    }
    let instance_profile =
        instance.iam_instance_profile.as_deref().filter(|profile| !profile.is_empty()).ok_or_else(|| {
            CloudError::InvalidSpec(
                "spec.instance.iamInstanceProfile is required on aws: the SSM agent needs it to receive \
                 the host's setup commands, and the agent needs it to write backups (see \
                 deploy/iam/host-policy.json)"
                    .into(),
            )
        })?;
    if instance.instance_type.is_empty() {
        return Err(CloudError::InvalidSpec("spec.instance.instanceType is empty".into()));
    }
    if let Some(key) = instance.tags.keys().find(|key| key.starts_with("pgec2.io/") || key.starts_with("aws:")) {
        return Err(CloudError::InvalidSpec(format!(
            "spec.instance.tags has the reserved key {key:?}: keys starting with pgec2.io/ or aws: belong \
             to pgec2 and AWS"
        )));
    }
    Ok(Placement { subnet_id, security_group_ids: &instance.security_group_ids, instance_profile })
}

/// The idempotency token of a launch: the same uid and attempt always give the same token, so a
/// RunInstances repeated after a crash or a timeout returns the first call's instance.
pub fn client_token(uid: &str, attempt: u32) -> String {
    let token = format!("pgec2-{uid}-{attempt}");
    if token.len() <= MAX_CLIENT_TOKEN && token.is_ascii() {
        return token;
    }
    format!("pgec2-{:016x}-{attempt}", fnv1a(uid.as_bytes()))
}

/// 64-bit FNV-1a: stable across versions and platforms, unlike the standard library's hasher.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3))
}

/// IMDSv2 only (session tokens required), reachable from the instance itself only (hop limit 1:
/// a container on the host cannot borrow the instance role).
pub(crate) fn metadata_options() -> InstanceMetadataOptionsRequest {
    InstanceMetadataOptionsRequest::builder()
        .http_tokens(HttpTokensState::Required)
        .http_put_response_hop_limit(1)
        .http_endpoint(InstanceMetadataEndpointState::Enabled)
        .build()
}

/// The instance profile by ARN when given one, by name otherwise.
pub(crate) fn instance_profile(profile: &str) -> IamInstanceProfileSpecification {
    let builder = IamInstanceProfileSpecification::builder();
    if profile.starts_with("arn:") { builder.arn(profile) } else { builder.name(profile) }.build()
}

/// Root volume (encrypted, deleted with the instance) and, unless a retained volume is adopted,
/// the data volume (encrypted, kept when the instance terminates).
pub(crate) fn block_devices(request: &LaunchRequest, root_device: &str, adopting: bool) -> Vec<BlockDeviceMapping> {
    let kms_key_id = request.volume.kms_key_id.clone();
    let root = EbsBlockDevice::builder()
        .volume_size(request.instance.root_volume_size_gib.unwrap_or(DEFAULT_ROOT_SIZE_GIB))
        .volume_type(VolumeType::Gp3)
        .encrypted(true)
        .set_kms_key_id(kms_key_id.clone())
        .delete_on_termination(true)
        .build();
    let mut devices = vec![BlockDeviceMapping::builder().device_name(root_device).ebs(root).build()];
    if !adopting {
        let volume = &request.volume;
        let data = EbsBlockDevice::builder()
            .volume_size(volume.size_gib)
            .volume_type(VolumeType::from(volume.volume_type.as_str()))
            .set_iops(volume.iops)
            .set_throughput(volume.throughput_mibps)
            .encrypted(true)
            .set_kms_key_id(kms_key_id)
            .delete_on_termination(false)
            .build();
        devices.push(BlockDeviceMapping::builder().device_name(DATA_DEVICE).ebs(data).build());
    }
    devices
}

/// Tags on the instance and on its volumes, applied by RunInstances itself (never an untagged
/// moment): the user's tags, a Name, and pgec2's own. The instance also records the retained
/// volume it is to adopt.
pub(crate) fn tag_specifications(request: &LaunchRequest, adopt_volume: Option<&str>) -> Vec<TagSpecification> {
    let mut tags: BTreeMap<String, String> = request.instance.tags.clone();
    tags.entry("Name".into()).or_insert_with(|| request.host.key());
    tags.extend(host_tags(&request.host));
    let mut instance_tags = tags.clone();
    if let Some(volume_id) = adopt_volume {
        instance_tags.insert(ADOPT_VOLUME.into(), volume_id.into());
    }
    vec![specification(ResourceType::Instance, &instance_tags), specification(ResourceType::Volume, &tags)]
}

/// One TagSpecification.
pub(crate) fn specification(resource: ResourceType, tags: &BTreeMap<String, String>) -> TagSpecification {
    TagSpecification::builder().resource_type(resource).set_tags(Some(sdk_tags(tags))).build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::{HostRef, InstanceSettings, VolumeSettings};

    fn request() -> LaunchRequest {
        LaunchRequest {
            host: HostRef {
                namespace: "shop".into(),
                name: "orders".into(),
                uid: "0b1c2d3e-aaaa-bbbb-cccc-1234567890ab".into(),
            },
            instance: InstanceSettings {
                instance_type: "m7g.large".into(),
                subnet_id: Some("subnet-0123abcd".into()),
                security_group_ids: vec!["sg-0123abcd".into()],
                iam_instance_profile: Some("pgec2-host".into()),
                tags: BTreeMap::from([("team".to_string(), "payments".to_string())]),
                ..InstanceSettings::default()
            },
            volume: VolumeSettings {
                size_gib: 50,
                volume_type: "gp3".into(),
                iops: Some(4000),
                throughput_mibps: Some(250),
                kms_key_id: Some("alias/pgec2".into()),
                snapshot_id: None,
                fast_snapshot_restore: false,
            },
            attempt: 0,
        }
    }

    #[test]
    fn each_missing_aws_field_is_named_with_the_reason() {
        let mut no_subnet = request();
        no_subnet.instance.subnet_id = None;
        let mut no_groups = request();
        no_groups.instance.security_group_ids.clear();
        let mut no_profile = request();
        no_profile.instance.iam_instance_profile = Some(String::new());
        for (bad, field) in
            [(no_subnet, "subnetId"), (no_groups, "securityGroupIds"), (no_profile, "iamInstanceProfile")]
        {
            match validate(&bad) {
                Err(CloudError::InvalidSpec(message)) => assert!(message.contains(field), "{message}"),
                other => panic!("expected InvalidSpec for {field}, got {other:?}"),
            }
        }
        assert!(validate(&request()).is_ok());
    }

    #[test]
    fn reserved_tag_keys_are_refused() {
        let mut bad = request();
        bad.instance.tags.insert("pgec2.io/uid".into(), "forged".into());
        assert!(matches!(validate(&bad), Err(CloudError::InvalidSpec(_))));
    }

    #[test]
    fn the_client_token_is_stable_per_uid_and_attempt_and_fits_ec2s_limit() {
        let token = client_token("0b1c2d3e-aaaa-bbbb-cccc-1234567890ab", 0);
        assert_eq!(token, "pgec2-0b1c2d3e-aaaa-bbbb-cccc-1234567890ab-0");
        assert_ne!(token, client_token("0b1c2d3e-aaaa-bbbb-cccc-1234567890ab", 1));
        let long = "x".repeat(100);
        assert_eq!(client_token(&long, u32::MAX), client_token(&long, u32::MAX));
        assert!(client_token(&long, u32::MAX).len() <= 64);
        assert_ne!(client_token(&long, 1), client_token(&"y".repeat(100), 1));
    }

    #[test]
    fn the_data_volume_is_encrypted_and_survives_its_instance() {
        let devices = block_devices(&request(), "/dev/xvda", false);
        assert_eq!(devices.len(), 2);
        let root = devices[0].ebs().expect("root ebs");
        assert_eq!(
            (devices[0].device_name(), root.encrypted(), root.delete_on_termination()),
            (Some("/dev/xvda"), Some(true), Some(true))
        );
        let data = devices[1].ebs().expect("data ebs");
        assert_eq!(devices[1].device_name(), Some(DATA_DEVICE));
        assert_eq!((data.encrypted(), data.delete_on_termination()), (Some(true), Some(false)));
        assert_eq!((data.volume_size(), data.iops(), data.throughput()), (Some(50), Some(4000), Some(250)));
        assert_eq!(data.kms_key_id(), Some("alias/pgec2"));
        assert_eq!(block_devices(&request(), "/dev/xvda", true).len(), 1, "an adopted volume is attached later");
    }

    #[test]
    fn instance_and_volumes_are_tagged_at_creation() {
        let specifications = tag_specifications(&request(), Some("vol-0abc"));
        let find = |spec: &TagSpecification, key: &str| {
            spec.tags().iter().find(|tag| tag.key() == Some(key)).and_then(|tag| tag.value()).map(str::to_string)
        };
        let [instance, volume] = specifications.as_slice() else { panic!("two specifications") };
        assert_eq!(instance.resource_type(), Some(&ResourceType::Instance));
        assert_eq!(volume.resource_type(), Some(&ResourceType::Volume));
        for spec in [instance, volume] {
            assert_eq!(find(spec, "pgec2.io/host").as_deref(), Some("shop/orders"));
            assert_eq!(find(spec, "pgec2.io/uid").as_deref(), Some("0b1c2d3e-aaaa-bbbb-cccc-1234567890ab"));
            assert_eq!(find(spec, "pgec2.io/managed-by").as_deref(), Some("pgec2-operator"));
            assert_eq!(find(spec, "team").as_deref(), Some("payments"));
            assert_eq!(find(spec, "Name").as_deref(), Some("shop/orders"));
        }
        assert_eq!(find(instance, ADOPT_VOLUME).as_deref(), Some("vol-0abc"));
        assert_eq!(find(volume, ADOPT_VOLUME), None);
    }

    #[test]
    fn imds_requires_tokens_and_one_hop() {
        let options = metadata_options();
        assert_eq!(options.http_tokens(), Some(&HttpTokensState::Required));
        assert_eq!(options.http_put_response_hop_limit(), Some(1));
        assert_eq!(options.http_endpoint(), Some(&InstanceMetadataEndpointState::Enabled));
    }
}
