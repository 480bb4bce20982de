//! The `local` cloud: a host is a directory on this machine and PostgreSQL a local process.
//!
//! ```text
//! <state>/bin/pgec2-agent                    the agent binary the bootstraps "download"
//! <state>/hosts/<namespace>/<name>/host.json record: instance id, volume id, port, state
//!                                 agent/     the installed agent, its config and the HostSpec
//!                                 volume/    the "data volume" (PGDATA is volume/data)
//!                                 commands/  one directory per command (script, output, exit)
//!                                 wal-receive.json, wal-receive.log  WAL streaming (see [`wal_receive`])
//! <state>/snapshots/<namespace>/<name>-<t>/  copies of volumes terminated with Snapshot
//! <state>/volume-snapshots/<id>/             snapshots of backups (see [`snapshots`])
//! ```
//!
//! "Run command" executes the same bootstrap script the AWS cloud sends through SSM, with
//! `/bin/sh` as a local child process. When the operator runs as root, PostgreSQL runs as the
//! `postgres` OS user: the state directory must be one that user can enter.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use sha2::Digest;

use super::{
    AgentDownload, Cloud, CloudError, CommandStatus, HostCommand, HostInstance, HostLayout, HostRef, InstanceState,
    LaunchRequest, SnapshotLock, SnapshotRequest, TerminationProgress, VolumeDisposal, VolumeSettings, VolumeSnapshot,
};

mod command;
mod files;
mod host_os;
mod process;
mod record;
pub mod snapshot_lock;
pub mod snapshots;
pub mod wal_receive;

use files::{OsUser, io_error};
use record::{HostRecord, RecordState, VolumeState};

/// Where local hosts listen: below Linux's ephemeral range (32768–60999 by default), from which
/// the kernel picks client sockets' ports; a host port from there could be taken by any outgoing
/// connection while the host is stopped, and its PostgreSQL would then fail to start. (The test
/// harness's own servers use 20000–25999.)
const HOST_PORTS: std::ops::Range<u16> = 26_000..32_000;

/// Failures of the local cloud.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("failed to {what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("{} is unreadable; fix or remove it: {source}", path.display())]
    Corrupt { path: PathBuf, source: serde_json::Error },
    #[error("{0}")]
    Setup(String),
    #[error("no command {0} on this host; it will be sent again")]
    UnknownCommand(String),
    #[error("no local host has instance id {0}")]
    UnknownInstance(String),
    #[error("{0}")]
    Conflict(String),
}

impl LocalError {
    fn into_cloud(self, action: &'static str) -> CloudError {
        let message = self.to_string();
        match self {
            LocalError::Io { .. } => CloudError::Transient { action, message },
            _ => CloudError::Permanent { action, message },
        }
    }
}

/// How to build a [`LocalCloud`].
#[derive(Clone, Debug)]
pub struct LocalCloudConfig {
    /// Root of everything the local cloud keeps.
    pub state_dir: PathBuf,
    /// The `pgec2-agent` binary to install on hosts.
    pub agent_binary: PathBuf,
    /// Where PostgreSQL versions live (`<root>/<major>/bin`), `/usr/lib/postgresql` on Debian.
    pub postgres_root: PathBuf,
    /// Environment for host commands (and through host apply for PostgreSQL's archive and
    /// restore commands), on top of the operator's own `AWS_*` variables: credentials of an
    /// S3-compatible store such as MinIO, for example.
    pub host_environment: Vec<(String, String)>,
}

impl LocalCloudConfig {
    pub fn new(state_dir: impl Into<PathBuf>, agent_binary: impl Into<PathBuf>) -> Self {
        Self {
            state_dir: state_dir.into(),
            agent_binary: agent_binary.into(),
            postgres_root: PathBuf::from("/usr/lib/postgresql"),
            host_environment: Vec::new(),
        }
    }
}

/// Hosts as directories and processes on this machine.
pub struct LocalCloud {
    config: LocalCloudConfig,
    user: OsUser,
    agent: AgentDownload,
    /// Serialises launches and terminations (port choice, record updates).
    lock: tokio::sync::Mutex<()>,
    /// The hosts' WAL receivers' supervisor, while this cloud lives.
    supervisor: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for LocalCloud {
    fn drop(&mut self) {
        if let Some(supervisor) = self.supervisor.take() {
            supervisor.abort();
        }
    }
}

impl LocalCloud {
    /// Prepares the state directory and installs the agent binary into it. Inside a tokio
    /// runtime it also starts the supervisor of the hosts' WAL receivers ([`wal_receive`]),
    /// which runs until the cloud is dropped.
    pub fn new(config: LocalCloudConfig) -> Result<Self, LocalError> {
        let user = OsUser::detect()?;
        files::create_traversable(&config.state_dir)?;
        files::check_traversable(&config.state_dir, &user)?;
        let agent = install_agent(&config.agent_binary, &config.state_dir.join("bin"))?;
        let mut cloud = Self { config, user, agent, lock: tokio::sync::Mutex::new(()), supervisor: None };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            cloud.supervisor = Some(runtime.spawn(cloud.wal_receive_supervisor().run()));
        }
        Ok(cloud)
    }

    /// The supervisor of the hosts' WAL receivers.
    pub fn wal_receive_supervisor(&self) -> wal_receive::Supervisor {
        wal_receive::Supervisor {
            hosts_root: self.hosts_root(),
            user: self.user.clone(),
            postgres_root: self.config.postgres_root.clone(),
            environment: self.command_environment(),
        }
    }

    /// The state directory.
    pub fn state_dir(&self) -> &Path {
        &self.config.state_dir
    }

    /// `<state>/volume-snapshots`.
    pub fn snapshots_root(&self) -> PathBuf {
        self.config.state_dir.join("volume-snapshots")
    }

    fn hosts_root(&self) -> PathBuf {
        self.config.state_dir.join("hosts")
    }

    /// `<state>/hosts/<namespace>/<name>`.
    pub fn host_dir(&self, host: &HostRef) -> PathBuf {
        self.hosts_root().join(&host.namespace).join(&host.name)
    }

    /// The data directory (PGDATA) of a host.
    pub fn data_directory(&self, host: &HostRef) -> PathBuf {
        self.host_dir(host).join("volume").join("data")
    }

    /// Finds the host directory of an instance id.
    fn find_instance(&self, instance_id: &str) -> Result<PathBuf, LocalError> {
        record::scan(&self.hosts_root())?
            .into_iter()
            .find(|(_, record)| record.instance_id == instance_id && record.state == RecordState::Running)
            .map(|(dir, _)| dir)
            .ok_or_else(|| LocalError::UnknownInstance(instance_id.to_string()))
    }

    /// The record of the host when it belongs to this PostgresHost (same uid).
    fn own_record(&self, host: &HostRef) -> Result<Option<HostRecord>, LocalError> {
        Ok(record::load(&self.host_dir(host))?.filter(|record| record.uid == host.uid))
    }

    fn launch(&self, host: &HostRef) -> Result<HostRecord, LocalError> {
        let dir = self.host_dir(host);
        let record = match record::load(&dir)? {
            Some(record) if record.uid == host.uid => HostRecord { state: RecordState::Running, ..record },
            Some(record) if record.volume == VolumeState::Released => {
                tracing::info!(host = %host.key(), volume = %record.volume_id, "adopting a released local volume");
                HostRecord {
                    uid: host.uid.clone(),
                    instance_id: record::instance_id(&host.uid),
                    state: RecordState::Running,
                    volume: VolumeState::Attached,
                    ..record
                }
            }
            Some(record) => {
                return Err(LocalError::Conflict(format!(
                    "{} belongs to another PostgresHost (uid {}) that was not deleted cleanly; remove the directory to reuse the name",
                    dir.display(),
                    record.uid
                )));
            }
            None => HostRecord {
                namespace: host.namespace.clone(),
                name: host.name.clone(),
                uid: host.uid.clone(),
                instance_id: record::instance_id(&host.uid),
                volume_id: record::volume_id(&host.uid),
                port: self.free_port()?,
                state: RecordState::Running,
                volume: VolumeState::Attached,
            },
        };
        files::create_traversable(&dir)?;
        let volume = dir.join("volume");
        std::fs::create_dir_all(&volume).map_err(io_error(format!("create {}", volume.display())))?;
        self.user.give(&volume)?;
        record::save(&dir, &record)?;
        Ok(record)
    }

    /// The volume of a new host restored from a backup's snapshot: a copy of the snapshot.
    /// A host directory of another PostgresHost (a retained volume) is refused: the restore
    /// needs a volume of its own.
    async fn volume_from_snapshot(&self, host: &HostRef, snapshot_id: &str) -> Result<(), CloudError> {
        let dir = self.host_dir(host);
        let action = "create the data volume from a snapshot";
        match record::load(&dir).map_err(|error| error.into_cloud(action))? {
            Some(record) if record.uid == host.uid => return Ok(()),
            Some(record) => {
                return Err(CloudError::InvalidSpec(format!(
                    "{} holds the volume of an earlier PostgresHost of this name (uid {}); a restore from snapshot \
                     {snapshot_id} needs a volume of its own: remove the directory",
                    dir.display(),
                    record.uid
                )));
            }
            None => {}
        }
        files::create_traversable(&dir).map_err(|error| error.into_cloud(action))?;
        snapshots::restore_volume(&self.snapshots_root(), snapshot_id, &dir.join("volume"))
            .await
            .map_err(|error| error.into_cloud(action))
    }

    /// A loopback port that is free now and not kept by another local host, chosen at random in
    /// [`HOST_PORTS`].
    fn free_port(&self) -> Result<u16, LocalError> {
        use std::hash::{BuildHasher, Hasher};
        let taken: Vec<u16> = record::scan(&self.hosts_root())?.into_iter().map(|(_, record)| record.port).collect();
        let span = u64::from(HOST_PORTS.end - HOST_PORTS.start);
        for _ in 0..200 {
            let mut random = std::collections::hash_map::RandomState::new().build_hasher();
            random.write_usize(taken.len());
            let port = HOST_PORTS.start + u16::try_from(random.finish() % span).unwrap_or(0);
            if !taken.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return Ok(port);
            }
        }
        Err(LocalError::Setup(format!("failed to find a free loopback port in {HOST_PORTS:?}")))
    }

    async fn terminate(&self, host: &HostRef, disposal: VolumeDisposal) -> Result<(), LocalError> {
        let dir = self.host_dir(host);
        let Some(mut record) = self.own_record(host)? else {
            return Ok(());
        };
        command::stop_all(&dir)?;
        let receiver_dir = dir.clone();
        tokio::task::spawn_blocking(move || wal_receive::stop(&receiver_dir))
            .await
            .map_err(|error| LocalError::Setup(format!("failed to stop wal-receive: {error}")))??;
        host_os::stop_postgres(&self.data_directory(host), &self.config.postgres_root).await?;
        match disposal {
            VolumeDisposal::Retain => {
                record.state = RecordState::Terminated;
                record.volume = VolumeState::Released;
                record::save(&dir, &record)?;
            }
            VolumeDisposal::Snapshot => {
                let stamp = SystemTime::now().duration_since(UNIX_EPOCH).map(|time| time.as_secs()).unwrap_or_default();
                let target = self
                    .config
                    .state_dir
                    .join("snapshots")
                    .join(&host.namespace)
                    .join(format!("{}-{stamp}", host.name));
                host_os::copy_tree(&dir.join("volume"), &target).await?;
                host_os::remove_tree(&dir).await?;
            }
            VolumeDisposal::Delete => host_os::remove_tree(&dir).await?,
        }
        Ok(())
    }

    fn instance(record: &HostRecord) -> HostInstance {
        HostInstance {
            instance_id: record.instance_id.clone(),
            volume_id: Some(record.volume_id.clone()),
            state: InstanceState::Running,
            private_ip: Some("127.0.0.1".to_string()),
            availability_zone: Some("local".to_string()),
            agent_online: true,
        }
    }

    /// Environment passed to host commands: AWS credentials and endpoints for S3 archives.
    fn command_environment(&self) -> Vec<(String, String)> {
        let inherited = std::env::vars().filter(|(key, _)| key.starts_with("AWS_") || key == "PGEC2_S3_ENDPOINT");
        let mut environment: Vec<(String, String)> =
            inherited.filter(|(key, _)| !self.config.host_environment.iter().any(|(set, _)| set == key)).collect();
        environment.extend(self.config.host_environment.iter().cloned());
        environment
    }
}

/// Copies the agent into `bin_dir` (0755, where the PostgreSQL user can run it) unless the same
/// binary is there already; returns its download for the bootstraps.
fn install_agent(source: &Path, bin_dir: &Path) -> Result<AgentDownload, LocalError> {
    use std::os::unix::fs::PermissionsExt;
    let bytes = std::fs::read(source).map_err(|source_error| LocalError::Io {
        what: format!(
            "read the agent binary {} (build it with `cargo build -p pgec2-agent` or pass --agent-binary)",
            source.display()
        ),
        source: source_error,
    })?;
    let sha256 = hex(&sha2::Sha256::digest(&bytes));
    files::create_traversable(bin_dir)?;
    let target = bin_dir.join("pgec2-agent");
    let current = std::fs::read(&target).ok().map(|existing| hex(&sha2::Sha256::digest(&existing)));
    if current.as_deref() != Some(sha256.as_str()) {
        files::write_atomic(&target, &bytes)?;
    }
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755))
        .map_err(io_error(format!("chmod {}", target.display())))?;
    Ok(AgentDownload { url: format!("file://{}", target.display()), sha256 })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[async_trait]
impl Cloud for LocalCloud {
    fn name(&self) -> &'static str {
        "local"
    }

    async fn find_host(&self, host: &HostRef) -> Result<Option<HostInstance>, CloudError> {
        let record = self.own_record(host).map_err(|error| error.into_cloud("find host"))?;
        Ok(record.filter(|record| record.state == RecordState::Running).as_ref().map(Self::instance))
    }

    async fn launch_host(&self, request: &LaunchRequest) -> Result<HostInstance, CloudError> {
        let _guard = self.lock.lock().await;
        if let Some(snapshot_id) = &request.volume.snapshot_id {
            self.volume_from_snapshot(&request.host, snapshot_id).await?;
        }
        let record = self.launch(&request.host).map_err(|error| error.into_cloud("launch host"))?;
        Ok(Self::instance(&record))
    }

    async fn resize_volume(&self, _host: &HostInstance, _volume: &VolumeSettings) -> Result<bool, CloudError> {
        Ok(true)
    }

    async fn terminate_host(
        &self,
        host: &HostRef,
        disposal: VolumeDisposal,
    ) -> Result<TerminationProgress, CloudError> {
        let _guard = self.lock.lock().await;
        self.terminate(host, disposal).await.map_err(|error| error.into_cloud("terminate host"))?;
        Ok(TerminationProgress::Done)
    }

    async fn send_command(&self, host: &HostInstance, command: &HostCommand) -> Result<String, CloudError> {
        let dir = self.find_instance(&host.instance_id).map_err(|error| error.into_cloud("send command"))?;
        command::start(&dir, command, &self.command_environment())
            .await
            .map_err(|error| error.into_cloud("send command"))
    }

    async fn running_commands(&self, host: &HostInstance, purpose: &str) -> Result<Vec<String>, CloudError> {
        let dir = self.find_instance(&host.instance_id).map_err(|error| error.into_cloud("list commands"))?;
        command::running(&dir, purpose).map_err(|error| error.into_cloud("list commands"))
    }

    async fn command_status(&self, host: &HostInstance, command_id: &str) -> Result<CommandStatus, CloudError> {
        let dir = self.find_instance(&host.instance_id).map_err(|error| error.into_cloud("read command status"))?;
        command::status(&dir, command_id).map_err(|error| error.into_cloud("read command status"))
    }

    async fn snapshot_volume(
        &self,
        _instance: &HostInstance,
        request: &SnapshotRequest,
    ) -> Result<VolumeSnapshot, CloudError> {
        let volume = self.host_dir(&request.host).join("volume");
        snapshots::create(&self.snapshots_root(), &volume, request)
            .await
            .map_err(|error| error.into_cloud("snapshot a volume"))
    }

    async fn describe_snapshot(&self, snapshot_id: &str) -> Result<Option<VolumeSnapshot>, CloudError> {
        snapshots::describe(&self.snapshots_root(), snapshot_id)
            .map_err(|error| error.into_cloud("describe a snapshot"))
    }

    async fn host_snapshots(&self, host: &HostRef) -> Result<Vec<VolumeSnapshot>, CloudError> {
        snapshots::of_host(&self.snapshots_root(), host).map_err(|error| error.into_cloud("list snapshots"))
    }

    async fn delete_snapshot(&self, snapshot_id: &str) -> Result<(), CloudError> {
        snapshots::delete(&self.snapshots_root(), snapshot_id)
            .await
            .map_err(|error| error.into_cloud("delete a snapshot"))
    }

    async fn lock_snapshot(
        &self,
        snapshot_id: &str,
        lock: &SnapshotLock,
    ) -> Result<chrono::DateTime<chrono::Utc>, CloudError> {
        snapshot_lock::lock(&self.snapshots_root(), snapshot_id, lock, chrono::Utc::now())
            .map_err(|error| error.into_cloud("lock a snapshot"))
    }

    async fn snapshot_locked_until(
        &self,
        snapshot_id: &str,
    ) -> Result<Option<chrono::DateTime<chrono::Utc>>, CloudError> {
        snapshot_lock::locked_until(&self.snapshots_root(), snapshot_id, chrono::Utc::now())
            .map_err(|error| error.into_cloud("read a snapshot lock"))
    }

    async fn host_layout(&self, host: &HostRef, _instance: &HostInstance) -> Result<HostLayout, CloudError> {
        let record = self.own_record(host).map_err(|error| error.into_cloud("read host layout"))?.ok_or_else(|| {
            CloudError::Transient { action: "read host layout", message: format!("{} is not launched yet", host.key()) }
        })?;
        let dir = self.host_dir(host);
        Ok(HostLayout {
            profile: pgec2_core::host_spec::Profile::Local,
            mount_path: dir.join("volume"),
            data_directory: self.data_directory(host),
            os_user: self.user.name.clone(),
            port: record.port,
            listen_addresses: "127.0.0.1".to_string(),
            endpoint_host: Some("127.0.0.1".to_string()),
            install_dir: dir.join("agent"),
            agent_config_path: dir.join("agent").join("agent.toml"),
            agent_download: Some(self.agent.clone()),
        })
    }
}

#[cfg(test)]
mod tests;
