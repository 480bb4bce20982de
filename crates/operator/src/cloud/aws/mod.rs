//! The `aws` cloud: a host is an EC2 instance with its own EBS data volume, set up through SSM
//! Run Command. See `docs/operator.md` for what happens to AWS at each phase.
//!
//! - [`request`]: the RunInstances request (IMDSv2, encryption, tags, idempotency token), pure.
//! - [`instances`]: find by tags, launch once, terminate; "not visible yet" after a launch.
//! - [`volumes`]: the data volume: tags, adoption of a retained volume, online growth.
//! - [`disposal`]: deletion: the instance, then the volume per its disposal.
//! - [`ssm`]: commands on the host and the SSM agent's liveness.
//! - [`ami`]: the image (the spec's or the public Debian 12 parameter's).
//! - [`backup_snapshots`], [`snapshot_lock`]: EBS snapshots of backups and their Snapshot Lock.
//! - [`error`], [`retry`]: failure classification and bounded backoff on throttling.
//!
//! Every call reads the cloud's state first and acts only on what is missing, so a crash at any
//! point is repaired by the next call. Only throttled calls are retried in place (bounded by
//! [`Backoff`]); the SDK's own retries are off, so the number of calls is known.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_ec2::config::http::HttpResponse;
use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};

use crate::cloud::{
    Cloud, CloudError, CommandStatus, HostCommand, HostInstance, HostRef, LaunchRequest, SnapshotLock, SnapshotRequest,
    TerminationProgress, VolumeDisposal, VolumeSettings, VolumeSnapshot,
};

pub mod ami;
pub mod backup_snapshots;
mod disposal;
pub mod error;
mod instances;
pub mod request;
mod restore_volume;
pub mod retry;
pub mod secrets;
mod snapshot_lock;
pub mod ssm;
pub mod tags;
mod volumes;

pub use ami::{Architecture, ImageParameters};
pub use retry::Backoff;
pub use ssm::{AgentProbe, SsmAgentProbe};

/// Settings of the aws cloud; [`AwsOptions::default`] suits production.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AwsOptions {
    /// Region; default: the SDK configuration's (AWS_REGION, the profile, or IMDS).
    pub region: Option<String>,
    /// SSM parameters holding the default AMI per architecture (AWS's public Debian 12 ones).
    pub image_parameters: ImageParameters,
    /// How long a running instance may go without an online SSM agent before the controller
    /// reports it (see [`AwsCloud::agent_online_timeout`]).
    pub agent_online_timeout: Duration,
    /// How long an instance this process launched is taken as pending while DescribeInstances
    /// does not show it yet (EC2's eventual consistency). It is never launched again meanwhile.
    pub launch_visibility: Duration,
    /// How long a command this process sent is taken as pending while GetCommandInvocation does
    /// not know it yet.
    pub invocation_visibility: Duration,
    /// Retries of throttled calls.
    pub backoff: Backoff,
    /// Time limit of one API call (connection included).
    pub call_timeout: Duration,
    /// Time limit to connect to an API endpoint.
    pub connect_timeout: Duration,
}

impl Default for AwsOptions {
    fn default() -> Self {
        Self {
            region: None,
            image_parameters: ImageParameters::default(),
            agent_online_timeout: Duration::from_secs(600),
            launch_visibility: Duration::from_secs(300),
            invocation_visibility: Duration::from_secs(120),
            backoff: Backoff::default(),
            call_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

impl AwsOptions {
    fn retry_config() -> aws_sdk_ec2::config::retry::RetryConfig {
        // Off on purpose: throttling is retried by `Backoff` (bounded and counted); every other
        // failure returns to the reconciler, which re-reads the cloud's state before acting.
        aws_sdk_ec2::config::retry::RetryConfig::disabled()
    }

    fn timeout_config(&self) -> aws_sdk_ec2::config::timeout::TimeoutConfig {
        aws_sdk_ec2::config::timeout::TimeoutConfig::builder()
            .connect_timeout(self.connect_timeout)
            .operation_timeout(self.call_timeout)
            .build()
    }

    /// The EC2 client configuration: the SDK's settings plus our region, retries and timeouts.
    pub fn ec2_config(&self, sdk_config: &aws_config::SdkConfig) -> aws_sdk_ec2::config::Builder {
        let mut builder = aws_sdk_ec2::config::Builder::from(sdk_config)
            .retry_config(Self::retry_config())
            .timeout_config(self.timeout_config());
        if let Some(region) = &self.region {
            builder = builder.region(aws_sdk_ec2::config::Region::new(region.clone()));
        }
        builder
    }

    /// The SSM client configuration, like [`AwsOptions::ec2_config`].
    pub fn ssm_config(&self, sdk_config: &aws_config::SdkConfig) -> aws_sdk_ssm::config::Builder {
        let mut builder = aws_sdk_ssm::config::Builder::from(sdk_config)
            .retry_config(Self::retry_config())
            .timeout_config(self.timeout_config());
        if let Some(region) = &self.region {
            builder = builder.region(aws_sdk_ssm::config::Region::new(region.clone()));
        }
        builder
    }
}

/// The aws implementation of [`Cloud`].
pub struct AwsCloud {
    ec2: aws_sdk_ec2::Client,
    ssm: aws_sdk_ssm::Client,
    options: AwsOptions,
    probe: Arc<dyn AgentProbe>,
    images: ami::ImageCache,
    launches: instances::RecentLaunches,
    commands: ssm::SentCommands,
}

impl std::fmt::Debug for AwsCloud {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("AwsCloud").field("options", &self.options).finish_non_exhaustive()
    }
}

impl AwsCloud {
    /// A cloud on the account and region of `sdk_config` (e.g. `aws_config::load_defaults`).
    pub fn new(sdk_config: &aws_config::SdkConfig, options: AwsOptions) -> Self {
        let ec2 = aws_sdk_ec2::Client::from_conf(options.ec2_config(sdk_config).build());
        let ssm = aws_sdk_ssm::Client::from_conf(options.ssm_config(sdk_config).build());
        Self::from_clients(ec2, ssm, options)
    }

    /// A cloud from the environment's AWS configuration (credentials chain, region, IRSA or Pod
    /// Identity in Kubernetes).
    pub async fn from_env(options: AwsOptions) -> Self {
        let sdk_config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        Self::new(&sdk_config, options)
    }

    /// A cloud on clients configured by the caller (tests give mocked ones).
    pub fn from_clients(ec2: aws_sdk_ec2::Client, ssm: aws_sdk_ssm::Client, options: AwsOptions) -> Self {
        let probe = Arc::new(SsmAgentProbe::new(ssm.clone()));
        Self {
            ec2,
            ssm,
            options,
            probe,
            images: ami::ImageCache::default(),
            launches: instances::RecentLaunches::default(),
            commands: ssm::SentCommands::default(),
        }
    }

    /// Replaces how the SSM agent's liveness is checked (moto cannot answer
    /// DescribeInstanceInformation; tests plug in their own).
    pub fn with_agent_probe(mut self, probe: Arc<dyn AgentProbe>) -> Self {
        self.probe = probe;
        self
    }

    /// How long a running instance may be without an online SSM agent before it is a fault the
    /// controller reports (a missing instance profile, no route to the SSM endpoints).
    pub fn agent_online_timeout(&self) -> Duration {
        self.options.agent_online_timeout
    }

    /// One API call, repeated with backoff while AWS throttles it.
    async fn retry<T, E, F, Fut>(&self, call: F) -> Result<T, SdkError<E, HttpResponse>>
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
    {
        self.options.backoff.run_with(error::is_throttling, call).await
    }
}

#[async_trait]
impl Cloud for AwsCloud {
    fn name(&self) -> &'static str {
        "aws"
    }

    async fn find_host(&self, host: &HostRef) -> Result<Option<HostInstance>, CloudError> {
        self.find(host).await
    }

    async fn launch_host(&self, request: &LaunchRequest) -> Result<HostInstance, CloudError> {
        self.launch(request).await
    }

    async fn resize_volume(&self, host: &HostInstance, volume: &VolumeSettings) -> Result<bool, CloudError> {
        self.resize(host, volume).await
    }

    async fn terminate_host(
        &self,
        host: &HostRef,
        disposal: VolumeDisposal,
    ) -> Result<TerminationProgress, CloudError> {
        self.terminate(host, disposal).await
    }

    async fn send_command(&self, host: &HostInstance, command: &HostCommand) -> Result<String, CloudError> {
        self.send(host, command).await
    }

    async fn command_status(&self, host: &HostInstance, command_id: &str) -> Result<CommandStatus, CloudError> {
        self.invocation(host, command_id).await
    }

    async fn running_commands(&self, host: &HostInstance, purpose: &str) -> Result<Vec<String>, CloudError> {
        self.running(host, purpose).await
    }

    async fn snapshot_volume(
        &self,
        instance: &HostInstance,
        request: &SnapshotRequest,
    ) -> Result<VolumeSnapshot, CloudError> {
        self.snapshot_for_backup(instance, request).await
    }

    async fn describe_snapshot(&self, snapshot_id: &str) -> Result<Option<VolumeSnapshot>, CloudError> {
        self.snapshot_by_id(snapshot_id).await
    }

    async fn host_snapshots(&self, host: &HostRef) -> Result<Vec<VolumeSnapshot>, CloudError> {
        self.backup_snapshots(host).await
    }

    async fn delete_snapshot(&self, snapshot_id: &str) -> Result<(), CloudError> {
        self.remove_snapshot(snapshot_id).await
    }

    async fn lock_snapshot(
        &self,
        snapshot_id: &str,
        lock: &SnapshotLock,
    ) -> Result<chrono::DateTime<chrono::Utc>, CloudError> {
        self.lock_backup_snapshot(snapshot_id, lock).await
    }

    async fn snapshot_locked_until(
        &self,
        snapshot_id: &str,
    ) -> Result<Option<chrono::DateTime<chrono::Utc>>, CloudError> {
        self.snapshot_lock_end(snapshot_id).await
    }
}
