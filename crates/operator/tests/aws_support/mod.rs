//! Shared by the aws tests: a request log every client carries, the checks every RunInstances
//! and SendCommand request must pass, a moto-backed network to launch into, and fixtures.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_ec2::config::interceptors::BeforeSerializationInterceptorContextRef;
use aws_sdk_ec2::config::{ConfigBag, Intercept};
use aws_sdk_ec2::error::BoxError;
use aws_sdk_ec2::operation::create_volume::CreateVolumeInput;
use aws_sdk_ec2::operation::lock_snapshot::LockSnapshotInput;
use aws_sdk_ec2::operation::run_instances::RunInstancesInput;
use aws_sdk_ec2::types::{HttpTokensState, InstanceMetadataEndpointState, ResourceType};
use aws_sdk_ssm::operation::send_command::SendCommandInput;
use pgec2_operator::cloud::aws::{AwsOptions, Backoff, secrets};
use pgec2_operator::cloud::{HostRef, InstanceSettings, LaunchRequest, VolumeSettings, tags};

/// Every request the clients under test make that must be checked, in order.
#[derive(Clone, Debug, Default)]
pub struct RequestLog {
    run_instances: Arc<Mutex<Vec<RunInstancesInput>>>,
    send_commands: Arc<Mutex<Vec<SendCommandInput>>>,
    create_volumes: Arc<Mutex<Vec<CreateVolumeInput>>>,
    lock_snapshots: Arc<Mutex<Vec<LockSnapshotInput>>>,
    operations: Arc<Mutex<Vec<String>>>,
}

impl RequestLog {
    pub fn run_instances(&self) -> Vec<RunInstancesInput> {
        self.run_instances.lock().expect("log lock").clone()
    }

    pub fn create_volumes(&self) -> Vec<CreateVolumeInput> {
        self.create_volumes.lock().expect("log lock").clone()
    }

    pub fn lock_snapshots(&self) -> Vec<LockSnapshotInput> {
        self.lock_snapshots.lock().expect("log lock").clone()
    }

    pub fn send_commands(&self) -> Vec<SendCommandInput> {
        self.send_commands.lock().expect("log lock").clone()
    }

    /// How many calls of an operation (its input type's name, e.g. `RunInstancesInput`) were made.
    pub fn count(&self, operation: &str) -> usize {
        self.operations.lock().expect("log lock").iter().filter(|name| name.as_str() == operation).count()
    }

    /// Every RunInstances asks for IMDSv2, encrypted volumes and the host's tags; every
    /// SendCommand is free of secrets.
    pub fn assert_every_request_is_safe(&self) {
        for input in self.run_instances() {
            assert_launch_is_safe(&input);
        }
        for input in self.send_commands() {
            assert_command_has_no_secret(&input);
        }
    }
}

impl Intercept for RequestLog {
    fn name(&self) -> &'static str {
        "RequestLog"
    }

    fn read_before_execution(
        &self,
        context: &BeforeSerializationInterceptorContextRef<'_>,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let input = context.input();
        if let Some(run) = input.downcast_ref::<RunInstancesInput>() {
            self.run_instances.lock().expect("log lock").push(run.clone());
        }
        if let Some(create) = input.downcast_ref::<CreateVolumeInput>() {
            self.create_volumes.lock().expect("log lock").push(create.clone());
        }
        if let Some(lock) = input.downcast_ref::<LockSnapshotInput>() {
            self.lock_snapshots.lock().expect("log lock").push(lock.clone());
        }
        if let Some(send) = input.downcast_ref::<SendCommandInput>() {
            self.send_commands.lock().expect("log lock").push(send.clone());
        }
        // The type-erased input prints as `TypeErasedBox[…]:RunInstancesInput { … }`.
        let debug = format!("{input:?}");
        let after_prefix = debug.split_once("]:").map_or(debug.as_str(), |(_, rest)| rest);
        let name = after_prefix.split([' ', '{', '(']).next().unwrap_or_default().to_string();
        self.operations.lock().expect("log lock").push(name);
        Ok(())
    }
}

/// IMDSv2 required with one hop, every EBS device encrypted, the data device kept on
/// termination, and the host's tags on instance and volumes.
pub fn assert_launch_is_safe(input: &RunInstancesInput) {
    let metadata = input.metadata_options().expect("RunInstances without metadata options");
    assert_eq!(metadata.http_tokens(), Some(&HttpTokensState::Required), "IMDSv2 must be required");
    assert_eq!(metadata.http_put_response_hop_limit(), Some(1), "IMDS hop limit must be 1");
    assert_eq!(metadata.http_endpoint(), Some(&InstanceMetadataEndpointState::Enabled));
    let devices = input.block_device_mappings();
    assert!(!devices.is_empty(), "RunInstances without block device mappings");
    for device in devices {
        let ebs = device.ebs().expect("every mapping is an EBS volume");
        assert_eq!(ebs.encrypted(), Some(true), "unencrypted volume {:?}", device.device_name());
        if device.device_name() == Some("/dev/sdf") {
            assert_eq!(ebs.delete_on_termination(), Some(false), "the data volume must outlive its instance");
        }
    }
    for resource in [ResourceType::Instance, ResourceType::Volume] {
        let specification = input
            .tag_specifications()
            .iter()
            .find(|specification| specification.resource_type() == Some(&resource))
            .unwrap_or_else(|| panic!("no tags for {resource:?} at creation"));
        let value =
            |key: &str| specification.tags().iter().find(|tag| tag.key() == Some(key)).and_then(|tag| tag.value());
        assert_eq!(value(tags::MANAGED_BY), Some(tags::MANAGER), "{resource:?} lacks the managed-by tag");
        assert!(value(tags::UID).is_some_and(|uid| !uid.is_empty()), "{resource:?} lacks the uid tag");
        assert!(value(tags::HOST).is_some_and(|host| host.contains('/')), "{resource:?} lacks the host tag");
    }
    assert!(input.client_token().is_some_and(|token| token.starts_with("pgec2-")), "no idempotency token");
}

/// No parameter of the command carries a secret.
pub fn assert_command_has_no_secret(input: &SendCommandInput) {
    assert_eq!(input.document_name(), Some("AWS-RunShellScript"));
    for (name, values) in input.parameters().into_iter().flatten() {
        for value in values {
            assert_eq!(secrets::find_secret(value), None, "parameter {name} carries a secret");
            for word in ["AKIA", "ASIA", "SECRET_ACCESS_KEY", "SESSION_TOKEN", "PGPASSWORD"] {
                assert!(!value.to_ascii_uppercase().contains(word), "parameter {name} mentions {word}");
            }
        }
    }
}

/// Options with quick backoff for tests.
pub fn test_options() -> AwsOptions {
    AwsOptions {
        backoff: Backoff { max_calls: 4, first_delay: Duration::from_millis(20), max_delay: Duration::from_millis(80) },
        ..AwsOptions::default()
    }
}

/// A host identity.
pub fn host(name: &str, uid: &str) -> HostRef {
    HostRef { namespace: "shop".into(), name: name.into(), uid: uid.into() }
}

/// A launch of `host` into a subnet and security group with an instance profile.
pub fn launch_request(
    host: HostRef,
    subnet_id: &str,
    security_group_id: &str,
    image_id: Option<&str>,
) -> LaunchRequest {
    LaunchRequest {
        host,
        instance: InstanceSettings {
            instance_type: "t3.medium".into(),
            image_id: image_id.map(str::to_string),
            subnet_id: Some(subnet_id.into()),
            security_group_ids: vec![security_group_id.into()],
            iam_instance_profile: Some("pgec2-host".into()),
            root_volume_size_gib: Some(16),
            tags: BTreeMap::from([("team".to_string(), "payments".to_string())]),
        },
        volume: VolumeSettings {
            size_gib: 20,
            volume_type: "gp3".into(),
            iops: Some(3000),
            throughput_mibps: Some(125),
            kms_key_id: Some("alias/pgec2-data".into()),
            snapshot_id: None,
            fast_snapshot_restore: false,
        },
        attempt: 0,
    }
}

/// A bootstrap-like script: fetch the agent, write the spec, apply it; no secret anywhere.
pub fn bootstrap_script() -> String {
    let spec = aws_smithy_types::base64::encode("{\"host\":\"shop/orders\",\"port\":5432}");
    format!(
        "#!/bin/sh\nset -eu\nAGENT_URL='https://releases.example.com/pgec2-agent'\nSPEC_BASE64='{spec}'\n\
         printf '%s' \"$SPEC_BASE64\" | base64 -d > /opt/pgec2/host-spec.json\n\
         exec /opt/pgec2/pgec2-agent host apply /opt/pgec2/host-spec.json\n"
    )
}

/// A moto server with a VPC, a subnet, a security group and the host instance profile, and
/// clients on it whose requests are logged.
pub struct MotoAws {
    pub server: pgec2_testkit::MotoServer,
    pub sdk: aws_config::SdkConfig,
    /// Unlogged clients, for setting up and looking at what the cloud did.
    pub ec2: aws_sdk_ec2::Client,
    pub ssm: aws_sdk_ssm::Client,
    pub subnet_id: String,
    pub zone: String,
    pub security_group_id: String,
    /// Images registered for the tests, one per architecture.
    pub amd64_image: String,
    pub arm64_image: String,
    pub log: RequestLog,
}

impl MotoAws {
    pub async fn start() -> Self {
        let server = pgec2_testkit::MotoServer::start().expect("start moto_server");
        let sdk = server.sdk_config().await;
        let ec2 = aws_sdk_ec2::Client::new(&sdk);
        let ssm = aws_sdk_ssm::Client::new(&sdk);
        let vpc = ec2.create_vpc().cidr_block("10.0.0.0/16").send().await.expect("create vpc");
        let vpc_id = vpc.vpc().and_then(|vpc| vpc.vpc_id()).expect("vpc id").to_string();
        let zone = "us-east-1b".to_string();
        let subnet = ec2
            .create_subnet()
            .vpc_id(&vpc_id)
            .cidr_block("10.0.1.0/24")
            .availability_zone(&zone)
            .send()
            .await
            .expect("create subnet");
        let subnet_id = subnet.subnet().and_then(|subnet| subnet.subnet_id()).expect("subnet id").to_string();
        let group = ec2
            .create_security_group()
            .group_name("pgec2-postgres")
            .description("PostgreSQL clients")
            .vpc_id(&vpc_id)
            .send()
            .await
            .expect("create security group");
        let security_group_id = group.group_id().expect("group id").to_string();
        create_instance_profile(&server, "pgec2-host").await;
        let amd64_image = register_image(&ec2, "debian-12-amd64").await;
        let arm64_image = register_image(&ec2, "debian-12-arm64").await;
        Self {
            server,
            sdk,
            ec2,
            ssm,
            subnet_id,
            zone,
            security_group_id,
            amd64_image,
            arm64_image,
            log: RequestLog::default(),
        }
    }

    /// A cloud with no memory of earlier calls (as after an operator restart).
    pub fn cloud(&self) -> pgec2_operator::cloud::aws::AwsCloud {
        self.cloud_with(test_options())
    }

    pub fn cloud_with(&self, options: AwsOptions) -> pgec2_operator::cloud::aws::AwsCloud {
        let ec2 = aws_sdk_ec2::Client::from_conf(options.ec2_config(&self.sdk).interceptor(self.log.clone()).build());
        let ssm = aws_sdk_ssm::Client::from_conf(options.ssm_config(&self.sdk).interceptor(self.log.clone()).build());
        pgec2_operator::cloud::aws::AwsCloud::from_clients(ec2, ssm, options)
    }

    /// A cloud whose EC2 calls go to moto except those `mocks` answer (what moto does not
    /// implement, such as LockSnapshot); every call is logged.
    pub fn cloud_with_mocks(
        &self,
        mocks: aws_smithy_mocks::MockResponseInterceptor,
    ) -> pgec2_operator::cloud::aws::AwsCloud {
        let options = test_options();
        let ec2_config =
            options.ec2_config(&self.sdk).interceptor(mocks.allow_passthrough()).interceptor(self.log.clone());
        let ec2 = aws_sdk_ec2::Client::from_conf(ec2_config.build());
        let ssm = aws_sdk_ssm::Client::from_conf(options.ssm_config(&self.sdk).interceptor(self.log.clone()).build());
        pgec2_operator::cloud::aws::AwsCloud::from_clients(ec2, ssm, options)
    }

    /// A launch into this network with an explicit image.
    pub fn launch_request(&self, host: HostRef) -> LaunchRequest {
        launch_request(host, &self.subnet_id, &self.security_group_id, Some(&self.amd64_image))
    }

    /// Launches `host` and waits until it runs with its data volume.
    pub async fn launched(&self, host: &HostRef) -> pgec2_operator::cloud::HostInstance {
        use pgec2_operator::cloud::Cloud;
        self.cloud().launch_host(&self.launch_request(host.clone())).await.expect("launch");
        until_running(&self.cloud(), host).await
    }

    /// Instances (not terminated) tagged with `uid`.
    pub async fn live_instances(&self, uid: &str) -> Vec<aws_sdk_ec2::types::Instance> {
        let output = self
            .ec2
            .describe_instances()
            .filters(aws_sdk_ec2::types::Filter::builder().name("tag:pgec2.io/uid").values(uid).build())
            .send()
            .await
            .expect("describe instances");
        output
            .reservations()
            .iter()
            .flat_map(|reservation| reservation.instances().iter().cloned())
            .filter(|instance| {
                let state = instance.state().and_then(|state| state.name()).map(|name| name.as_str().to_string());
                !matches!(state.as_deref(), Some("terminated" | "shutting-down"))
            })
            .collect()
    }

    pub async fn volume(&self, volume_id: &str) -> Option<aws_sdk_ec2::types::Volume> {
        match self.ec2.describe_volumes().volume_ids(volume_id).send().await {
            Ok(output) => output.volumes().first().cloned(),
            Err(error) if format!("{error:?}").contains("InvalidVolume.NotFound") => None,
            Err(error) => panic!("describe volume {volume_id}: {error:?}"),
        }
    }
}

/// The tag value of `key` on a volume.
pub fn volume_tag(volume: &aws_sdk_ec2::types::Volume, key: &str) -> Option<String> {
    volume.tags().iter().find(|tag| tag.key() == Some(key)).and_then(|tag| tag.value()).map(str::to_string)
}

/// Registers an image (moto's own catalogue is large and slow to search). moto records neither
/// its architecture nor the root device name given here.
async fn register_image(ec2: &aws_sdk_ec2::Client, name: &str) -> String {
    let output = ec2.register_image().name(name).root_device_name("/dev/xvda").send().await.expect("register image");
    output.image_id().expect("image id").to_string()
}

/// moto checks that an instance profile exists; creates one through moto's IAM query API
/// (no IAM SDK needed: moto does not verify signatures).
async fn create_instance_profile(server: &pgec2_testkit::MotoServer, name: &str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = format!("Action=CreateInstanceProfile&InstanceProfileName={name}&Version=2010-05-08");
    let request = format!(
        "POST / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential=testing/20240101/us-east-1/iam/aws4_request, SignedHeaders=host, Signature=0\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {length}\r\n\r\n{body}",
        port = server.port,
        length = body.len()
    );
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", server.port)).await?;
        stream.write_all(request.as_bytes()).await?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    let response =
        tokio::time::timeout(Duration::from_secs(10), exchange).await.expect("moto iam answers").expect("moto iam");
    assert!(response.starts_with("HTTP/1.1 200"), "create instance profile: {response}");
}

/// Calls `find_host` until the host runs with its data volume attached.
pub async fn until_running(
    cloud: &impl pgec2_operator::cloud::Cloud,
    host: &HostRef,
) -> pgec2_operator::cloud::HostInstance {
    use pgec2_operator::cloud::InstanceState;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let found = cloud.find_host(host).await.expect("find host");
        if let Some(instance) = found.filter(|found| found.state == InstanceState::Running && found.volume_id.is_some())
        {
            return instance;
        }
        assert!(std::time::Instant::now() < deadline, "host {} did not run with its data volume in time", host.key());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
