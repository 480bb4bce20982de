//! The aws cloud against a moto server: what it creates, tags, finds, resizes and deletes.
//! Every RunInstances and SendCommand request these tests make is checked for IMDSv2,
//! encryption, tags and the absence of secrets.

mod aws_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_ec2::types::{HttpTokensState, SnapshotState, VolumeState};
use aws_support::{MotoAws, bootstrap_script, host, until_running, volume_tag};
use pgec2_operator::cloud::aws::{AgentProbe, AwsCloud, AwsOptions, ImageParameters};
use pgec2_operator::cloud::{
    Cloud, CloudError, CommandStatus, HostCommand, HostRef, TerminationProgress, VolumeDisposal, VolumeSettings, tags,
};

/// Calls `terminate_host` until it is done.
async fn terminate(cloud: &AwsCloud, host: &HostRef, disposal: VolumeDisposal) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while cloud.terminate_host(host, disposal).await.expect("terminate host") != TerminationProgress::Done {
        assert!(Instant::now() < deadline, "termination of {} did not finish in time", host.key());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_host_launches_one_instance_with_its_placement_imdsv2_and_an_encrypted_data_volume_that_outlives_it() {
    let aws = MotoAws::start().await;
    let cloud = aws.cloud();
    let orders = host("orders", "uid-orders-1");
    let launched = cloud.launch_host(&aws.launch_request(orders.clone())).await.expect("launch");
    let running = until_running(&cloud, &orders).await;
    assert_eq!(running.instance_id, launched.instance_id);
    assert_eq!(running.availability_zone.as_deref(), Some(aws.zone.as_str()));
    assert!(running.private_ip.is_some());

    let instances = aws.live_instances("uid-orders-1").await;
    assert_eq!(instances.len(), 1);
    let instance = &instances[0];
    assert_eq!(instance.instance_type().map(|kind| kind.as_str()), Some("t3.medium"));
    assert_eq!(instance.subnet_id(), Some(aws.subnet_id.as_str()));
    let groups: Vec<&str> = instance.security_groups().iter().filter_map(|group| group.group_id()).collect();
    assert_eq!(groups, [aws.security_group_id.as_str()]);
    let metadata = instance.metadata_options().expect("metadata options");
    assert_eq!(metadata.http_tokens(), Some(&HttpTokensState::Required));
    assert_eq!(metadata.http_put_response_hop_limit(), Some(1));
    let tag = |key: &str| instance.tags().iter().find(|tag| tag.key() == Some(key)).and_then(|tag| tag.value());
    assert_eq!(tag(tags::HOST), Some("shop/orders"));
    assert_eq!(tag(tags::UID), Some("uid-orders-1"));
    assert_eq!(tag(tags::MANAGED_BY), Some(tags::MANAGER));
    assert_eq!(tag("team"), Some("payments"));
    assert!(
        instance
            .iam_instance_profile()
            .and_then(|profile| profile.arn())
            .is_some_and(|arn| arn.ends_with("/pgec2-host"))
    );

    let mapping = instance.block_device_mappings().iter().find(|mapping| mapping.device_name() == Some("/dev/sdf"));
    let ebs = mapping.and_then(|mapping| mapping.ebs()).expect("data volume mapping");
    assert_eq!(ebs.delete_on_termination(), Some(false));
    assert_eq!(ebs.volume_id(), running.volume_id.as_deref());
    let volume = aws.volume(running.volume_id.as_deref().expect("volume id")).await.expect("data volume");
    assert_eq!((volume.size(), volume.iops()), (Some(20), Some(3000)));
    let [launch] = aws.log.run_instances().try_into().expect("one RunInstances");
    let data = launch.block_device_mappings().iter().find(|mapping| mapping.device_name() == Some("/dev/sdf"));
    let requested = data.and_then(|mapping| mapping.ebs()).expect("data mapping requested");
    assert_eq!((requested.volume_type().map(|kind| kind.as_str()), requested.throughput()), (Some("gp3"), Some(125)));
    assert_eq!(volume.encrypted(), Some(true));
    assert_eq!(volume.kms_key_id(), Some("alias/pgec2-data"));
    assert_eq!(volume_tag(&volume, tags::UID).as_deref(), Some("uid-orders-1"));
    assert_eq!(volume_tag(&volume, "pgec2.io/volume").as_deref(), Some("data"));

    let again = cloud.launch_host(&aws.launch_request(orders.clone())).await.expect("second launch");
    assert_eq!(again.instance_id, launched.instance_id);
    assert_eq!(aws.live_instances("uid-orders-1").await.len(), 1);
    assert_eq!(aws.log.run_instances().len(), 1, "the second launch must not call RunInstances");
    aws.log.assert_every_request_is_safe();
}

#[tokio::test]
async fn an_instance_launched_before_a_crash_is_found_by_its_tags_and_never_launched_twice() {
    let aws = MotoAws::start().await;
    let orders = host("orders", "uid-crash-1");
    let before_crash = aws.cloud().launch_host(&aws.launch_request(orders.clone())).await.expect("launch");

    // A new process: nothing in memory, the status never recorded the instance.
    let after_restart = aws.cloud();
    let adopted = after_restart.launch_host(&aws.launch_request(orders.clone())).await.expect("launch after restart");
    assert_eq!(adopted.instance_id, before_crash.instance_id);
    let found = until_running(&after_restart, &orders).await;
    assert_eq!(found.instance_id, before_crash.instance_id);
    assert_eq!(aws.live_instances("uid-crash-1").await.len(), 1);
    assert_eq!(aws.log.run_instances().len(), 1);
    aws.log.assert_every_request_is_safe();
}

#[tokio::test]
async fn deleting_with_retain_keeps_the_volume_released_and_a_new_host_of_the_same_name_adopts_it() {
    let aws = MotoAws::start().await;
    let cloud = aws.cloud();
    let first = host("orders", "uid-retain-1");
    cloud.launch_host(&aws.launch_request(first.clone())).await.expect("launch");
    let volume_id = until_running(&cloud, &first).await.volume_id.expect("data volume");

    terminate(&cloud, &first, VolumeDisposal::Retain).await;
    assert!(aws.live_instances("uid-retain-1").await.is_empty());
    let volume = aws.volume(&volume_id).await.expect("retained volume exists");
    assert_eq!(volume.state(), Some(&VolumeState::Available));
    assert_eq!(volume_tag(&volume, "pgec2.io/released").as_deref(), Some("true"));
    assert_eq!(volume_tag(&volume, tags::HOST).as_deref(), Some("shop/orders"));
    assert_eq!(volume_tag(&volume, tags::MANAGED_BY).as_deref(), Some(tags::MANAGER));
    assert_eq!(cloud.terminate_host(&first, VolumeDisposal::Retain).await.expect("again"), TerminationProgress::Done);

    let second = host("orders", "uid-retain-2");
    cloud.launch_host(&aws.launch_request(second.clone())).await.expect("launch the successor");
    let launch = aws.log.run_instances().pop().expect("second RunInstances");
    assert!(
        launch.block_device_mappings().iter().all(|mapping| mapping.device_name() != Some("/dev/sdf")),
        "a host adopting a volume is launched without a new data volume"
    );
    let running = until_running(&cloud, &second).await;
    assert_eq!(running.volume_id.as_deref(), Some(volume_id.as_str()), "the retained volume is attached");
    let volume = aws.volume(&volume_id).await.expect("adopted volume");
    assert_eq!(volume_tag(&volume, tags::UID).as_deref(), Some("uid-retain-2"));
    assert_eq!(volume_tag(&volume, "pgec2.io/released"), None);
    aws.log.assert_every_request_is_safe();
}

#[tokio::test]
async fn deleting_with_snapshot_leaves_a_completed_snapshot_and_no_volume() {
    let aws = MotoAws::start().await;
    let cloud = aws.cloud();
    let orders = host("orders", "uid-snapshot-1");
    cloud.launch_host(&aws.launch_request(orders.clone())).await.expect("launch");
    let volume_id = until_running(&cloud, &orders).await.volume_id.expect("data volume");

    terminate(&cloud, &orders, VolumeDisposal::Snapshot).await;
    assert!(aws.volume(&volume_id).await.is_none(), "the volume is deleted after its snapshot");
    let snapshots = aws
        .ec2
        .describe_snapshots()
        .owner_ids("self")
        .filters(aws_sdk_ec2::types::Filter::builder().name("tag:pgec2.io/source-volume").values(&volume_id).build())
        .send()
        .await
        .expect("describe snapshots");
    let [snapshot] = snapshots.snapshots() else { panic!("exactly one final snapshot: {snapshots:?}") };
    assert_eq!(snapshot.state(), Some(&SnapshotState::Completed));
    assert_eq!(snapshot.volume_id(), Some(volume_id.as_str()));
    let tag = |key: &str| snapshot.tags().iter().find(|tag| tag.key() == Some(key)).and_then(|tag| tag.value());
    assert_eq!(tag(tags::HOST), Some("shop/orders"));
    assert_eq!(tag(tags::MANAGED_BY), Some(tags::MANAGER));
    aws.log.assert_every_request_is_safe();
}

#[tokio::test]
async fn deleting_with_delete_leaves_neither_instance_nor_volume() {
    let aws = MotoAws::start().await;
    let cloud = aws.cloud();
    let orders = host("orders", "uid-delete-1");
    cloud.launch_host(&aws.launch_request(orders.clone())).await.expect("launch");
    let volume_id = until_running(&cloud, &orders).await.volume_id.expect("data volume");

    terminate(&cloud, &orders, VolumeDisposal::Delete).await;
    assert!(aws.live_instances("uid-delete-1").await.is_empty());
    assert!(aws.volume(&volume_id).await.is_none());
    assert_eq!(cloud.find_host(&orders).await.expect("find"), None);
    assert_eq!(aws.log.count("CreateSnapshotInput"), 0);
}

#[tokio::test]
async fn growing_the_volume_modifies_it_and_shrinking_is_refused() {
    let aws = MotoAws::start().await;
    let cloud = aws.cloud();
    let orders = host("orders", "uid-resize-1");
    cloud.launch_host(&aws.launch_request(orders.clone())).await.expect("launch");
    let running = until_running(&cloud, &orders).await;
    let volume_id = running.volume_id.clone().expect("data volume");
    // moto does not keep a volume's throughput, so the test leaves it to EBS's default.
    let settings = VolumeSettings { throughput_mibps: None, ..aws.launch_request(orders.clone()).volume };

    assert!(cloud.resize_volume(&running, &settings).await.expect("unchanged"), "nothing to do is done");
    assert_eq!(aws.log.count("ModifyVolumeInput"), 0);

    let grown = VolumeSettings { size_gib: 40, iops: Some(4000), ..settings.clone() };
    assert!(cloud.resize_volume(&running, &grown).await.expect("grow"), "moto completes at once");
    assert_eq!(aws.log.count("ModifyVolumeInput"), 1);
    let volume = aws.volume(&volume_id).await.expect("volume");
    assert_eq!((volume.size(), volume.iops()), (Some(40), Some(4000)));
    assert!(cloud.resize_volume(&running, &grown).await.expect("grown already"));
    assert_eq!(aws.log.count("ModifyVolumeInput"), 1, "a finished resize is not repeated");

    let shrunk = VolumeSettings { size_gib: 10, ..settings };
    match cloud.resize_volume(&running, &shrunk).await {
        Err(CloudError::InvalidSpec(message)) => assert!(message.contains("cannot shrink"), "{message}"),
        other => panic!("a shrink must be refused, got {other:?}"),
    }
    assert_eq!(aws.log.count("ModifyVolumeInput"), 1);
    assert_eq!(aws.volume(&volume_id).await.expect("volume").size(), Some(40));
}

#[tokio::test]
async fn a_host_without_aws_placement_is_refused_before_anything_is_launched() {
    let aws = MotoAws::start().await;
    let cloud = aws.cloud();
    let mut request = aws.launch_request(host("orders", "uid-invalid-1"));
    request.instance.subnet_id = None;
    match cloud.launch_host(&request).await {
        Err(CloudError::InvalidSpec(message)) => assert!(message.contains("subnetId"), "{message}"),
        other => panic!("expected InvalidSpec, got {other:?}"),
    }
    let mut request = aws.launch_request(host("orders", "uid-invalid-1"));
    request.instance.subnet_id = Some("subnet-0000000000000000".into());
    assert!(matches!(cloud.launch_host(&request).await, Err(CloudError::InvalidSpec(_))), "unknown subnet");
    assert!(aws.live_instances("uid-invalid-1").await.is_empty());
}

#[tokio::test]
async fn the_default_image_comes_from_the_ssm_parameter_of_the_instance_types_architecture() {
    let aws = MotoAws::start().await;
    for (name, image) in [("/test/debian/amd64", &aws.amd64_image), ("/test/debian/arm64", &aws.arm64_image)] {
        aws.ssm
            .put_parameter()
            .name(name)
            .value(image)
            .r#type(aws_sdk_ssm::types::ParameterType::String)
            .send()
            .await
            .expect("put");
    }
    let options = AwsOptions {
        image_parameters: ImageParameters { amd64: "/test/debian/amd64".into(), arm64: "/test/debian/arm64".into() },
        ..aws_support::test_options()
    };
    let cloud = aws.cloud_with(options);
    for (uid, instance_type, image) in
        [("uid-image-x86", "t3.medium", &aws.amd64_image), ("uid-image-arm", "m7g.large", &aws.arm64_image)]
    {
        let mut request = aws.launch_request(host(uid, uid));
        request.instance.image_id = None;
        request.instance.instance_type = instance_type.into();
        cloud.launch_host(&request).await.expect("launch");
        let instances = aws.live_instances(uid).await;
        assert_eq!(instances[0].image_id(), Some(image.as_str()), "{instance_type}");
    }
    aws.log.assert_every_request_is_safe();
}

/// A probe for a host whose agent is online (moto cannot report SSM agents).
struct AlwaysOnline;

#[async_trait]
impl AgentProbe for AlwaysOnline {
    async fn is_online(&self, _instance_id: &str) -> bool {
        true
    }
}

#[tokio::test]
async fn the_agent_is_online_only_when_ssm_says_so_and_commands_run_the_shell_script_document() {
    let aws = MotoAws::start().await;
    let orders = host("orders", "uid-command-1");
    aws.cloud().launch_host(&aws.launch_request(orders.clone())).await.expect("launch");
    let running = until_running(&aws.cloud(), &orders).await;
    assert!(!running.agent_online, "moto cannot report the ssm agent, so it is never taken as online");
    let online = aws.cloud().with_agent_probe(Arc::new(AlwaysOnline));
    let running = until_running(&online, &orders).await;
    assert!(running.agent_online);

    let command =
        HostCommand { purpose: "apply".into(), script: bootstrap_script(), timeout: Duration::from_secs(900) };
    let command_id = online.send_command(&running, &command).await.expect("send");
    let [sent] = aws.log.send_commands().try_into().expect("one SendCommand");
    assert_eq!(sent.instance_ids(), std::slice::from_ref(&running.instance_id));
    let parameters = sent.parameters().expect("parameters");
    assert_eq!(parameters.get("commands"), Some(&vec![command.script.clone()]));
    assert_eq!(parameters.get("executionTimeout"), Some(&vec!["900".to_string()]));
    assert_eq!(sent.comment(), Some("pgec2 apply"));
    match online.command_status(&running, &command_id).await.expect("status") {
        CommandStatus::Succeeded { .. } => {}
        other => panic!("moto reports every command as succeeded, got {other:?}"),
    }
    aws.log.assert_every_request_is_safe();
}

#[tokio::test]
async fn a_script_carrying_a_secret_is_never_sent() {
    let aws = MotoAws::start().await;
    let cloud = aws.cloud();
    let orders = host("orders", "uid-secret-1");
    cloud.launch_host(&aws.launch_request(orders.clone())).await.expect("launch");
    let running = until_running(&cloud, &orders).await;
    let script = format!("{}export AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG\n", bootstrap_script());
    let command = HostCommand { purpose: "apply".into(), script, timeout: Duration::from_secs(60) };
    match cloud.send_command(&running, &command).await {
        Err(CloudError::Permanent { message, .. }) => assert!(message.contains("secret access key"), "{message}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(aws.log.send_commands().is_empty());
}
