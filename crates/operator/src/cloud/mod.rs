//! The `Cloud` trait: everything the reconcilers ask of the infrastructure, and nothing more.
//!
//! Two implementations: [`aws`] (EC2 instances with an EBS data volume, commands through SSM Run
//! Command) and [`local`] (a host is a directory on this machine, commands run as local
//! processes). Reconcilers cannot tell them apart. Every call is idempotent: calling it again
//! with the same arguments converges to the same state and never duplicates a resource.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub mod aws;
pub mod local;
pub mod metered;

/// Identity of a PostgresHost, used to tag and find its resources.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HostRef {
    pub namespace: String,
    pub name: String,
    /// The PostgresHost's `metadata.uid`.
    pub uid: String,
}

impl HostRef {
    /// `<namespace>/<name>`, the value of the `pgec2.io/host` tag.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// Tag keys carried by every cloud resource of a host.
pub mod tags {
    pub const HOST: &str = "pgec2.io/host";
    pub const UID: &str = "pgec2.io/uid";
    pub const MANAGED_BY: &str = "pgec2.io/managed-by";
    pub const MANAGER: &str = "pgec2-operator";
    /// On a snapshot of a backup: the backup's name.
    pub const BACKUP: &str = "pgec2.io/backup";
    /// On a snapshot of a backup: the BackupPolicy (`<namespace>/<name>`) that took it.
    pub const POLICY: &str = "pgec2.io/policy";
}

/// A snapshot of a host's data volume for a base backup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRequest {
    pub host: HostRef,
    /// `<namespace>/<name>` of the BackupPolicy.
    pub policy: String,
    /// The backup's name: with the host's uid it identifies the snapshot (the idempotency key).
    pub backup: String,
}

/// Progress of a volume snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotState {
    Pending,
    Completed,
    /// The cloud gave up on it; the backup cannot be committed.
    Failed {
        message: String,
    },
}

/// A volume snapshot as found in the cloud.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeSnapshot {
    pub snapshot_id: String,
    /// The backup it was taken for (its `pgec2.io/backup` tag).
    pub backup: Option<String>,
    pub state: SnapshotState,
}

/// A lock on a backup's snapshot: nobody can delete it for `days` after it is set (an EBS
/// Snapshot Lock on AWS; a lock file beside the snapshot on the local cloud).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotLock {
    /// `Governance`: principals allowed to unlock snapshots can still remove it; `Compliance`:
    /// nobody can before it ends.
    pub mode: pgec2_core::storage::lock::LockMode,
    /// Days from now until the snapshot may be deleted (1 to 36500).
    pub days: u32,
}

fn snapshots_unsupported(cloud: &str) -> CloudError {
    CloudError::Permanent {
        action: "snapshot a volume",
        message: format!("the {cloud} cloud has no volume snapshots; use `method: objectStore`"),
    }
}

/// Lifecycle of an instance as the cloud reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum InstanceState {
    Pending,
    Running,
    Stopping,
    Stopped,
    ShuttingDown,
    Terminated,
}

/// A host as found in the cloud.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostInstance {
    pub instance_id: String,
    pub volume_id: Option<String>,
    pub state: InstanceState,
    pub private_ip: Option<String>,
    pub availability_zone: Option<String>,
    /// True once the host can run commands (SSM agent online; always true locally when running).
    pub agent_online: bool,
}

/// Machine settings of a launch (AWS uses them all; the local cloud ignores them).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceSettings {
    pub instance_type: String,
    pub image_id: Option<String>,
    pub subnet_id: Option<String>,
    pub security_group_ids: Vec<String>,
    pub iam_instance_profile: Option<String>,
    pub root_volume_size_gib: Option<i32>,
    pub tags: BTreeMap<String, String>,
}

/// The data volume of a launch.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeSettings {
    pub size_gib: i32,
    pub volume_type: String,
    pub iops: Option<i32>,
    pub throughput_mibps: Option<i32>,
    pub kms_key_id: Option<String>,
    /// Create the volume from this snapshot of a backup (a restore) instead of empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_id: Option<String>,
    /// With `snapshot_id` on AWS: enable Fast Snapshot Restore in the volume's zone first.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fast_snapshot_restore: bool,
}

/// What happens to the data volume when its host is deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum VolumeDisposal {
    /// Detach and keep it, tagged as released, so a new host of the same name can adopt it.
    Retain,
    /// Snapshot it, wait for the snapshot, then delete it.
    Snapshot,
    /// Delete it.
    Delete,
}

/// A request to launch a host with its data volume.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchRequest {
    pub host: HostRef,
    pub instance: InstanceSettings,
    pub volume: VolumeSettings,
    /// Incremented when a previous launch failed for good, so the idempotency token changes.
    pub attempt: u32,
}

/// A shell script to run on a host (the bootstrap, a backup, a stop).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostCommand {
    /// What the command is for, recorded in status (`apply`, `backup`, `stop`, ...).
    pub purpose: String,
    /// The script, run by `/bin/sh` as root on the host.
    pub script: String,
    /// The command fails when it runs longer.
    pub timeout: Duration,
}

/// Progress of a command sent to a host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandStatus {
    Pending,
    InProgress,
    Succeeded {
        stdout: String,
    },
    /// Exited non-zero, timed out or was cancelled; `stderr_tail` is the last lines of stderr.
    Failed {
        exit_code: Option<i32>,
        stdout: String,
        stderr_tail: String,
    },
}

/// Progress of a host's termination.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TerminationProgress {
    /// Still going; call again later.
    InProgress { detail: String },
    /// Instance gone and the volume handled per its disposal.
    Done,
}

/// Cloud failures, classified for the reconciler's error policy.
#[derive(Debug, thiserror::Error)]
pub enum CloudError {
    /// The spec cannot work in this cloud (missing subnet, unknown instance type): park the host.
    #[error("invalid host settings: {0}")]
    InvalidSpec(String),
    /// No capacity for the instance type in the zone: a condition, retried later.
    #[error("insufficient capacity: {0}")]
    Capacity(String),
    /// The API throttled us: retry with backoff.
    #[error("throttled by {service}: {message}")]
    Throttled { service: &'static str, message: String },
    /// Any other fault that may go away.
    #[error("{action} failed (transient): {message}")]
    Transient { action: &'static str, message: String },
    /// A fault retrying will not fix.
    #[error("{action} failed: {message}")]
    Permanent { action: &'static str, message: String },
}

impl CloudError {
    /// True when the same call may succeed later.
    pub fn is_transient(&self) -> bool {
        matches!(self, CloudError::Capacity(_) | CloudError::Throttled { .. } | CloudError::Transient { .. })
    }
}

/// Where the agent binary comes from: the bootstrap downloads it and checks its sha256.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentDownload {
    /// `https://…`, `s3://…` or `file:///…`.
    pub url: String,
    /// Lowercase hex sha256 of the binary.
    pub sha256: String,
}

/// Where things live on a host of this cloud: what the HostSpec and the bootstrap need that
/// only the cloud knows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostLayout {
    /// Which host apply steps run.
    pub profile: pgec2_core::host_spec::Profile,
    /// Mount point of the data volume.
    pub mount_path: PathBuf,
    /// PGDATA, inside the mount.
    pub data_directory: PathBuf,
    /// OS user that runs PostgreSQL.
    pub os_user: String,
    /// Port PostgreSQL listens on.
    pub port: u16,
    /// `listen_addresses`.
    pub listen_addresses: String,
    /// Where clients connect (`status.endpoint` is `<endpoint_host>:<port>`).
    pub endpoint_host: Option<String>,
    /// Where the bootstrap installs the agent and writes the HostSpec
    /// (see `pgec2_core::bootstrap`).
    pub install_dir: PathBuf,
    /// Where host apply writes the agent's configuration.
    pub agent_config_path: PathBuf,
    /// The agent download; `None` means the operator's configured one (`--agent-url`).
    pub agent_download: Option<AgentDownload>,
}

impl HostLayout {
    /// The layout of an EC2 host: data volume at /var/lib/postgresql, port 5432.
    pub fn ec2(instance: &HostInstance) -> Self {
        Self {
            profile: pgec2_core::host_spec::Profile::Ec2,
            mount_path: PathBuf::from("/var/lib/postgresql"),
            data_directory: PathBuf::from("/var/lib/postgresql/data"),
            os_user: "postgres".to_string(),
            port: 5432,
            listen_addresses: "*".to_string(),
            endpoint_host: instance.private_ip.clone(),
            install_dir: PathBuf::from("/opt/pgec2"),
            agent_config_path: PathBuf::from("/etc/pgec2/agent.toml"),
            agent_download: None,
        }
    }
}

/// The infrastructure a PostgresHost lives on.
#[async_trait]
pub trait Cloud: Send + Sync {
    /// Short name for logs and metrics (`aws`, `local`).
    fn name(&self) -> &'static str;

    /// Finds the host's instance by its tags; `None` when none exists (terminated ones excluded).
    async fn find_host(&self, host: &HostRef) -> Result<Option<HostInstance>, CloudError>;

    /// Launches the host's instance and data volume, or returns the existing one.
    async fn launch_host(&self, request: &LaunchRequest) -> Result<HostInstance, CloudError>;

    /// Grows the data volume to the requested settings (never shrinks); true when done.
    async fn resize_volume(&self, host: &HostInstance, volume: &VolumeSettings) -> Result<bool, CloudError>;

    /// Terminates the instance and disposes of the data volume; call until `Done`.
    async fn terminate_host(&self, host: &HostRef, disposal: VolumeDisposal)
    -> Result<TerminationProgress, CloudError>;

    /// Starts a command on the host; returns its id for [`Cloud::command_status`].
    async fn send_command(&self, host: &HostInstance, command: &HostCommand) -> Result<String, CloudError>;

    /// The progress of a command started by [`Cloud::send_command`].
    async fn command_status(&self, host: &HostInstance, command_id: &str) -> Result<CommandStatus, CloudError>;

    /// Ids of the commands with `purpose` (as in [`HostCommand::purpose`]) still pending or
    /// running on the host, oldest first: what a restarted operator adopts instead of sending
    /// the same command again.
    async fn running_commands(&self, host: &HostInstance, purpose: &str) -> Result<Vec<String>, CloudError>;

    /// Starts a snapshot of the host's data volume for a backup, or returns the one already
    /// started for the same host and backup (found by its tags first).
    async fn snapshot_volume(
        &self,
        _instance: &HostInstance,
        _request: &SnapshotRequest,
    ) -> Result<VolumeSnapshot, CloudError> {
        Err(snapshots_unsupported(self.name()))
    }

    /// A snapshot by id; `None` when it does not exist (any more).
    async fn describe_snapshot(&self, _snapshot_id: &str) -> Result<Option<VolumeSnapshot>, CloudError> {
        Err(snapshots_unsupported(self.name()))
    }

    /// The backup snapshots of a host's volumes (by the host's uid tag), any state.
    async fn host_snapshots(&self, _host: &HostRef) -> Result<Vec<VolumeSnapshot>, CloudError> {
        Ok(Vec::new())
    }

    /// Deletes a snapshot; a missing one is already deleted. A locked one is refused.
    async fn delete_snapshot(&self, _snapshot_id: &str) -> Result<(), CloudError> {
        Err(snapshots_unsupported(self.name()))
    }

    /// Locks a snapshot against deletion for `lock.days` from now; returns when the lock ends.
    async fn lock_snapshot(
        &self,
        _snapshot_id: &str,
        _lock: &SnapshotLock,
    ) -> Result<chrono::DateTime<chrono::Utc>, CloudError> {
        Err(snapshots_unsupported(self.name()))
    }

    /// Until when a snapshot is locked; `None` when it has no lock, an expired one, or is gone.
    async fn snapshot_locked_until(
        &self,
        _snapshot_id: &str,
    ) -> Result<Option<chrono::DateTime<chrono::Utc>>, CloudError> {
        Ok(None)
    }

    /// Where things live on the host (paths, port, agent download); EC2's layout by default.
    async fn host_layout(&self, _host: &HostRef, instance: &HostInstance) -> Result<HostLayout, CloudError> {
        Ok(HostLayout::ec2(instance))
    }
}
