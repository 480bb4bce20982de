//! Fault paths of the aws cloud that moto cannot produce, with `aws-smithy-mocks`: throttling,
//! EC2's eventual consistency right after a launch, capacity shortages, failed commands and an
//! SSM agent that never comes online. Every RunInstances and SendCommand request is checked.

mod aws_support;

use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_ec2::config::{Credentials, SharedCredentialsProvider};
use aws_sdk_ec2::error::ErrorMetadata;
use aws_sdk_ec2::operation::describe_images::DescribeImagesOutput;
use aws_sdk_ec2::operation::describe_instance_types::DescribeInstanceTypesOutput;
use aws_sdk_ec2::operation::describe_instances::{DescribeInstancesError, DescribeInstancesOutput};
use aws_sdk_ec2::operation::describe_volumes::DescribeVolumesOutput;
use aws_sdk_ec2::operation::run_instances::{RunInstancesError, RunInstancesOutput};
use aws_sdk_ec2::types::{
    ArchitectureType, AttachmentStatus, EbsInstanceBlockDevice, Image, Instance, InstanceBlockDeviceMapping,
    InstanceState as Ec2State, InstanceStateName, InstanceTypeInfo, Placement, ProcessorInfo, Reservation, Tag, Volume,
    VolumeState,
};
use aws_sdk_ssm::operation::describe_instance_information::DescribeInstanceInformationOutput;
use aws_sdk_ssm::operation::get_command_invocation::{GetCommandInvocationError, GetCommandInvocationOutput};
use aws_sdk_ssm::operation::send_command::SendCommandOutput;
use aws_sdk_ssm::types::error::InvocationDoesNotExist;
use aws_sdk_ssm::types::{Command, CommandInvocationStatus, InstanceInformation, PingStatus};
use aws_smithy_mocks::{MockResponseInterceptor, Rule, RuleMode, create_mock_http_client, mock};
use aws_support::{RequestLog, bootstrap_script, host, launch_request, test_options};
use pgec2_operator::cloud::aws::AwsCloud;
use pgec2_operator::cloud::{
    Cloud, CloudError, CommandStatus, HostCommand, HostInstance, HostRef, InstanceState, LaunchRequest, tags,
};

const INSTANCE_ID: &str = "i-0123456789abcdef0";
const VOLUME_ID: &str = "vol-0123456789abcdef0";

/// A cloud whose EC2 and SSM clients answer from `ec2_rules` and `ssm_rules`, logging requests.
fn mocked_cloud(ec2_rules: &[&Rule], ssm_rules: &[&Rule], log: &RequestLog) -> AwsCloud {
    let sdk = SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new("mock", "mock", None, None, "mock")))
        .build();
    let options = test_options();
    let ec2_mocks = ec2_rules
        .iter()
        .fold(MockResponseInterceptor::new().rule_mode(RuleMode::MatchAny), |mocks, rule| mocks.with_rule(rule));
    let ssm_mocks = ssm_rules
        .iter()
        .fold(MockResponseInterceptor::new().rule_mode(RuleMode::MatchAny), |mocks, rule| mocks.with_rule(rule));
    let ec2 = aws_sdk_ec2::Client::from_conf(
        options
            .ec2_config(&sdk)
            .http_client(create_mock_http_client())
            .interceptor(ec2_mocks)
            .interceptor(log.clone())
            .build(),
    );
    let ssm = aws_sdk_ssm::Client::from_conf(
        options
            .ssm_config(&sdk)
            .http_client(create_mock_http_client())
            .interceptor(ssm_mocks)
            .interceptor(log.clone())
            .build(),
    );
    AwsCloud::from_clients(ec2, ssm, options)
}

fn request() -> LaunchRequest {
    launch_request(host("orders", "uid-mock-1"), "subnet-0123abcd", "sg-0123abcd", Some("ami-0123abcd"))
}

fn ec2_error(code: &str) -> ErrorMetadata {
    ErrorMetadata::builder().code(code).message(format!("{code} (mocked)")).build()
}

fn host_tags(host: &HostRef) -> Vec<Tag> {
    [(tags::HOST, host.key()), (tags::UID, host.uid.clone()), (tags::MANAGED_BY, tags::MANAGER.to_string())]
        .into_iter()
        .map(|(key, value)| Tag::builder().key(key).value(value).build())
        .collect()
}

/// An instance of `host` in `state`, with the data volume attached as /dev/sdf.
fn instance(host: &HostRef, state: InstanceStateName) -> Instance {
    let data = EbsInstanceBlockDevice::builder().volume_id(VOLUME_ID).status(AttachmentStatus::Attached).build();
    Instance::builder()
        .instance_id(INSTANCE_ID)
        .state(Ec2State::builder().name(state).build())
        .private_ip_address("10.0.1.10")
        .placement(Placement::builder().availability_zone("us-east-1b").build())
        .block_device_mappings(InstanceBlockDeviceMapping::builder().device_name("/dev/sdf").ebs(data).build())
        .set_tags(Some(host_tags(host)))
        .build()
}

/// The rules a launch reads before RunInstances: no instance yet, no retained volume, the image
/// and the instance type.
fn before_launch_rules() -> Vec<Rule> {
    vec![
        mock!(aws_sdk_ec2::Client::describe_instances).then_output(|| DescribeInstancesOutput::builder().build()),
        mock!(aws_sdk_ec2::Client::describe_volumes).then_output(|| DescribeVolumesOutput::builder().build()),
        mock!(aws_sdk_ec2::Client::describe_images).then_output(|| {
            DescribeImagesOutput::builder()
                .images(Image::builder().image_id("ami-0123abcd").root_device_name("/dev/xvda").build())
                .build()
        }),
        mock!(aws_sdk_ec2::Client::describe_instance_types).then_output(|| {
            let cpu = ProcessorInfo::builder().supported_architectures(ArchitectureType::X8664).build();
            DescribeInstanceTypesOutput::builder()
                .instance_types(InstanceTypeInfo::builder().processor_info(cpu).build())
                .build()
        }),
    ]
}

fn launched() -> RunInstancesOutput {
    let pending = Instance::builder()
        .instance_id(INSTANCE_ID)
        .state(Ec2State::builder().name(InstanceStateName::Pending).build())
        .build();
    RunInstancesOutput::builder().instances(pending).build()
}

fn refs(rules: &[Rule]) -> Vec<&Rule> {
    rules.iter().collect()
}

#[tokio::test]
async fn a_throttled_launch_is_retried_with_backoff_until_it_succeeds() {
    let run = mock!(aws_sdk_ec2::Client::run_instances)
        .sequence()
        .error(|| RunInstancesError::generic(ec2_error("RequestLimitExceeded")))
        .times(2)
        .output(launched)
        .build();
    let mut rules = before_launch_rules();
    rules.push(run.clone());
    let log = RequestLog::default();
    let cloud = mocked_cloud(&refs(&rules), &[], &log);

    let started = Instant::now();
    let launched = cloud.launch_host(&request()).await.expect("the third call succeeds");
    assert_eq!(launched.instance_id, INSTANCE_ID);
    assert_eq!(run.num_calls(), 3);
    let backoff = test_options().backoff;
    assert!(started.elapsed() >= backoff.ceiling(1) / 2 + backoff.ceiling(2) / 2, "retries must wait between calls");
    let tokens: Vec<_> = log.run_instances().iter().map(|input| input.client_token().map(str::to_string)).collect();
    assert!(tokens.windows(2).all(|pair| pair[0] == pair[1]), "every retry carries the same ClientToken: {tokens:?}");
    log.assert_every_request_is_safe();
}

#[tokio::test]
async fn throttling_that_never_ends_gives_up_after_a_bounded_number_of_calls() {
    let run = mock!(aws_sdk_ec2::Client::run_instances)
        .then_error(|| RunInstancesError::generic(ec2_error("RequestLimitExceeded")));
    let mut rules = before_launch_rules();
    rules.push(run.clone());
    let log = RequestLog::default();
    let cloud = mocked_cloud(&refs(&rules), &[], &log);

    match cloud.launch_host(&request()).await {
        Err(CloudError::Throttled { service: "ec2", .. }) => {}
        other => panic!("expected Throttled, got {other:?}"),
    }
    assert_eq!(run.num_calls(), test_options().backoff.max_calls as usize);
    assert_eq!(log.count("RunInstancesInput"), test_options().backoff.max_calls as usize);
    log.assert_every_request_is_safe();
}

#[tokio::test]
async fn an_instance_not_visible_right_after_its_launch_is_pending_and_never_launched_again() {
    let by_id = mock!(aws_sdk_ec2::Client::describe_instances)
        .match_requests(|input| !input.instance_ids().is_empty())
        .then_error(|| DescribeInstancesError::generic(ec2_error("InvalidInstanceID.NotFound")));
    let run = mock!(aws_sdk_ec2::Client::run_instances).then_output(launched);
    let mut rules = vec![by_id];
    rules.extend(before_launch_rules());
    rules.push(run.clone());
    let log = RequestLog::default();
    let cloud = mocked_cloud(&refs(&rules), &[], &log);

    cloud.launch_host(&request()).await.expect("launch");
    let found = cloud.find_host(&request().host).await.expect("find right after the launch");
    let found = found.expect("a launched instance is never missing");
    assert_eq!((found.instance_id.as_str(), found.state), (INSTANCE_ID, InstanceState::Pending));
    let again = cloud.launch_host(&request()).await.expect("launch again");
    assert_eq!(again.instance_id, INSTANCE_ID);
    assert_eq!(run.num_calls(), 1, "no second RunInstances while the first instance is not visible");
    log.assert_every_request_is_safe();
}

#[tokio::test]
async fn insufficient_capacity_is_a_capacity_error_and_is_not_retried_in_place() {
    let run = mock!(aws_sdk_ec2::Client::run_instances)
        .then_error(|| RunInstancesError::generic(ec2_error("InsufficientInstanceCapacity")));
    let mut rules = before_launch_rules();
    rules.push(run.clone());
    let log = RequestLog::default();
    let cloud = mocked_cloud(&refs(&rules), &[], &log);

    match cloud.launch_host(&request()).await {
        Err(error @ CloudError::Capacity(_)) => {
            assert!(error.is_transient(), "capacity comes back: the controller retries later");
            assert!(error.to_string().contains("InsufficientInstanceCapacity"), "{error}");
        }
        other => panic!("expected Capacity, got {other:?}"),
    }
    assert_eq!(run.num_calls(), 1);
    log.assert_every_request_is_safe();
}

/// Rules of a running host with its data volume, fully tagged.
fn running_host_rules(host: &HostRef) -> Vec<Rule> {
    let running = instance(host, InstanceStateName::Running);
    let mut volume_tags = host_tags(host);
    volume_tags.push(Tag::builder().key("pgec2.io/volume").value("data").build());
    vec![
        mock!(aws_sdk_ec2::Client::describe_instances).then_output(move || {
            DescribeInstancesOutput::builder()
                .reservations(Reservation::builder().instances(running.clone()).build())
                .build()
        }),
        mock!(aws_sdk_ec2::Client::describe_volumes).then_output(move || {
            let volume =
                Volume::builder().volume_id(VOLUME_ID).state(VolumeState::InUse).set_tags(Some(volume_tags.clone()));
            DescribeVolumesOutput::builder().volumes(volume.build()).build()
        }),
    ]
}

fn running_instance() -> HostInstance {
    HostInstance {
        instance_id: INSTANCE_ID.into(),
        volume_id: Some(VOLUME_ID.into()),
        state: InstanceState::Running,
        private_ip: Some("10.0.1.10".into()),
        availability_zone: Some("us-east-1b".into()),
        agent_online: true,
    }
}

#[tokio::test]
async fn a_failed_command_reports_its_exit_code_and_the_tail_of_its_stderr() {
    let stderr: String = (1..=40).map(|line| format!("apply step {line} failed\n")).collect();
    let invocation = mock!(aws_sdk_ssm::Client::get_command_invocation).then_output(move || {
        GetCommandInvocationOutput::builder()
            .status(CommandInvocationStatus::Failed)
            .status_details("Failed")
            .response_code(2)
            .standard_output_content("{\"ok\":false}")
            .standard_error_content(&stderr)
            .build()
    });
    let cloud = mocked_cloud(&[], &[&invocation], &RequestLog::default());

    match cloud.command_status(&running_instance(), "11111111-2222-3333-4444-555555555555").await.expect("status") {
        CommandStatus::Failed { exit_code, stdout, stderr_tail } => {
            assert_eq!(exit_code, Some(2));
            assert_eq!(stdout, "{\"ok\":false}");
            assert!(stderr_tail.ends_with("apply step 40 failed"), "{stderr_tail}");
            assert!(!stderr_tail.contains("apply step 20 failed"), "only the tail is kept: {stderr_tail}");
        }
        other => panic!("expected Failed, got {other:?}"),
    }
}

#[tokio::test]
async fn a_command_ssm_does_not_know_yet_is_pending_and_an_unknown_old_one_failed() {
    let command_id = "11111111-2222-3333-4444-555555555555";
    let send = mock!(aws_sdk_ssm::Client::send_command).then_output(move || {
        SendCommandOutput::builder().command(Command::builder().command_id(command_id).build()).build()
    });
    let invocation = mock!(aws_sdk_ssm::Client::get_command_invocation).then_error(|| {
        let meta = aws_sdk_ssm::error::ErrorMetadata::builder().code("InvocationDoesNotExist").build();
        GetCommandInvocationError::InvocationDoesNotExist(InvocationDoesNotExist::builder().meta(meta).build())
    });
    let log = RequestLog::default();
    let cloud = mocked_cloud(&[], &[&send, &invocation], &log);

    let command =
        HostCommand { purpose: "apply".into(), script: bootstrap_script(), timeout: Duration::from_secs(600) };
    let sent = cloud.send_command(&running_instance(), &command).await.expect("send");
    assert_eq!(sent, command_id);
    assert_eq!(cloud.command_status(&running_instance(), command_id).await.expect("status"), CommandStatus::Pending);
    match cloud.command_status(&running_instance(), "99999999-2222-3333-4444-555555555555").await.expect("status") {
        CommandStatus::Failed { stderr_tail, .. } => assert!(stderr_tail.contains("send it again"), "{stderr_tail}"),
        other => panic!("a command this process never sent and SSM does not know is failed, got {other:?}"),
    }
    log.assert_every_request_is_safe();
}

#[tokio::test]
async fn an_agent_that_never_comes_online_is_reported_offline_on_a_running_host() {
    let orders = host("orders", "uid-mock-1");
    let offline = mock!(aws_sdk_ssm::Client::describe_instance_information).then_output(|| {
        let information =
            InstanceInformation::builder().instance_id(INSTANCE_ID).ping_status(PingStatus::ConnectionLost);
        DescribeInstanceInformationOutput::builder().instance_information_list(information.build()).build()
    });
    let rules = running_host_rules(&orders);
    let cloud = mocked_cloud(&refs(&rules), &[&offline], &RequestLog::default());
    for _ in 0..3 {
        let found = cloud.find_host(&orders).await.expect("find").expect("the host exists");
        assert_eq!(found.state, InstanceState::Running);
        assert_eq!(found.volume_id.as_deref(), Some(VOLUME_ID));
        assert!(!found.agent_online);
    }
    assert_eq!(cloud.agent_online_timeout(), Duration::from_secs(600), "the controller's deadline for AgentReady");

    // What moto answers: an HTML page with status 500.
    let failing = mock!(aws_sdk_ssm::Client::describe_instance_information)
        .sequence()
        .http_status(500, Some("<title>500 Internal Server Error</title>".into()))
        .repeatedly()
        .build();
    let cloud = mocked_cloud(&refs(&rules), &[&failing], &RequestLog::default());
    let found = cloud.find_host(&orders).await.expect("an unanswered probe does not fail find").expect("host");
    assert!(!found.agent_online);

    let online = mock!(aws_sdk_ssm::Client::describe_instance_information).then_output(|| {
        let information = InstanceInformation::builder().instance_id(INSTANCE_ID).ping_status(PingStatus::Online);
        DescribeInstanceInformationOutput::builder().instance_information_list(information.build()).build()
    });
    let cloud = mocked_cloud(&refs(&rules), &[&online], &RequestLog::default());
    assert!(cloud.find_host(&orders).await.expect("find").expect("host").agent_online);
}

#[tokio::test]
async fn running_backup_commands_are_found_by_their_comment_and_status() {
    use aws_sdk_ssm::operation::list_commands::ListCommandsOutput;
    use aws_sdk_ssm::primitives::DateTime;
    use aws_sdk_ssm::types::CommandStatus as SsmCommandStatus;

    let listed = mock!(aws_sdk_ssm::Client::list_commands)
        .match_requests(|request| request.instance_id() == Some(INSTANCE_ID))
        .then_output(|| {
            let command = |id: &str, comment: &str, status: SsmCommandStatus, at: i64| {
                Command::builder()
                    .command_id(id)
                    .comment(comment)
                    .status(status)
                    .requested_date_time(DateTime::from_secs(at))
                    .build()
            };
            ListCommandsOutput::builder()
                .commands(command("newer", "pgec2 backup", SsmCommandStatus::InProgress, 200))
                .commands(command("finished", "pgec2 backup", SsmCommandStatus::Success, 50))
                .commands(command("setup", "pgec2 setup", SsmCommandStatus::InProgress, 10))
                .commands(command("older", "pgec2 backup", SsmCommandStatus::Pending, 100))
                .build()
        });
    let cloud = mocked_cloud(&[], &[&listed], &RequestLog::default());
    let running = cloud.running_commands(&running_instance(), "backup").await.expect("list");
    assert_eq!(running, vec!["older".to_string(), "newer".to_string()]);
}
