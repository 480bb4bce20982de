//! Backup commands run in the test's process through the fault-injecting store over the
//! primary's file archive: its hook interleaves other commands with them or stops them dead,
//! its seeded chaos fails, throttles and loses answers.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pgec2_agent::backup::BackupError;
use pgec2_agent::backup::cluster_config::ArchiveMode;
use pgec2_agent::backup::fetch::{FetchRequest, FetchSummary, fetch_backup};
use pgec2_agent::backup::increment::{DEFAULT_MAX_CHAIN, IncrementalRequest};
use pgec2_agent::backup::push::{PushOptions, push_backup};
use pgec2_agent::config::AgentConfig;
use pgec2_core::catalog::{BackupInfo, RecoveryTarget};
use pgec2_core::layout::{Archive, ArchiveLayout};
use pgec2_core::recovery_window::TimelineRequest;
use pgec2_core::storage::fault::{FaultHandle, FaultInjecting, Hook, Operation};
use pgec2_core::storage::local::LocalStorage;
use pgec2_core::storage::retry::{RetryPolicy, Retrying};
use pgec2_core::storage::{Storage, Timeouts};

use super::Primary;
use crate::wal_common::Agent;
use crate::wal_common::{COMMAND_DEADLINE, run_with_deadline};

/// The primary's file archive directory.
pub fn archive_dir(primary: &Primary) -> PathBuf {
    primary.agent.scratch.path().join("archive")
}

/// The primary's file archive behind the fault-injecting store (no faults yet), retried as the
/// agent retries its store calls when `retried`.
pub fn faulty_archive(primary: &Primary, retried: bool) -> (Archive, FaultHandle) {
    faulty_store(&archive_dir(primary), retried)
}

/// A file archive in `directory` behind the fault-injecting store (no faults yet), with a stall
/// limit of half a second, retried quickly when `retried`.
pub fn faulty_store(directory: &Path, retried: bool) -> (Archive, FaultHandle) {
    let timeouts = Timeouts { operation: Duration::from_millis(500), min_bytes_per_second: 1024 * 1024 };
    let local = LocalStorage::new(directory, timeouts).expect("local store");
    let injector = FaultInjecting::new(local);
    let faults = injector.handle();
    let policy = RetryPolicy {
        max_attempts: 12,
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(100),
        max_elapsed: Duration::from_secs(30),
        ..RetryPolicy::default()
    };
    let storage: Arc<dyn Storage> =
        if retried { Arc::new(Retrying::new(injector, timeouts, policy)) } else { Arc::new(injector) };
    (Archive::new(storage, ArchiveLayout::root()), faults)
}

/// The primary's file archive through the fault-injecting store running `hook`.
pub fn hooked_archive(primary: &Primary, hook: Hook) -> Archive {
    let (archive, faults) = faulty_archive(primary, false);
    faults.set_hook(hook);
    archive
}

/// A hook that runs `interfere` once, in a blocking thread, when a backup stores its manifest
/// (after every part, before the commit marker).
pub fn before_the_manifest(interfere: impl FnOnce() + Send + 'static) -> Hook {
    once_before(|operation, key| operation == Operation::Put && key.ends_with("/manifest.json"), interfere)
}

/// A hook that runs `interfere` once, in a blocking thread, before the first read of a backup
/// part (a chain restore reads every part to verify it before it writes anything).
#[allow(dead_code)] // Not every test binary that includes this module uses it.
pub fn before_the_first_part_read(interfere: impl FnOnce() + Send + 'static) -> Hook {
    once_before(|operation, key| operation == Operation::Get && key.contains("/parts/"), interfere)
}

/// A hook that runs `interfere` once, in a blocking thread, before the first call `chosen` picks.
fn once_before(
    chosen: impl Fn(Operation, &str) -> bool + Send + Sync + 'static,
    interfere: impl FnOnce() + Send + 'static,
) -> Hook {
    let once = Arc::new(Mutex::new(Some(interfere)));
    Arc::new(move |operation, key| {
        if !chosen(operation, key) {
            return None;
        }
        let interfere = once.lock().expect("hook lock").take()?;
        Some(Box::pin(async move { tokio::task::spawn_blocking(interfere).await.expect("interference") }))
    })
}

/// Runs `command` (from a hook) and keeps its output for the test.
pub fn run_into(command: Command, output: Arc<Mutex<Option<Output>>>) -> impl FnOnce() + Send + 'static {
    move || *output.lock().expect("output lock") = Some(run_with_deadline(command, COMMAND_DEADLINE * 2))
}

/// A runtime like the agent's.
pub fn agent_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

/// The future of an incremental backup-push of `primary` building on `from`, through `archive`.
pub async fn push_incremental_async(
    primary: &Primary,
    archive: &Archive,
    from: &str,
) -> Result<BackupInfo, BackupError> {
    let config = super::agent_config(&primary.agent, &primary.cluster);
    let request = IncrementalRequest { from: from.to_string(), max_chain: DEFAULT_MAX_CHAIN };
    let options = PushOptions { incremental: Some(request), ..PushOptions::default() };
    push_backup(&config, archive, Some(&primary.cluster.data_dir), options).await
}

/// An incremental backup-push of `primary` building on `from`, in this process, through `archive`.
pub fn push_incremental(primary: &Primary, archive: &Archive, from: &str) -> Result<BackupInfo, BackupError> {
    agent_runtime().block_on(push_incremental_async(primary, archive, from))
}

/// backup-fetch of `backup` into `dest` to the end of the archive, in this process, through
/// `archive` (the restored copy does not archive).
pub fn fetch(config: &AgentConfig, archive: &Archive, backup: &str, dest: &Path) -> Result<FetchSummary, BackupError> {
    let request = FetchRequest {
        dest: dest.to_path_buf(),
        name: backup.to_string(),
        target: RecoveryTarget::EndOfArchive,
        action: None,
        standby: false,
        tablespace_mapping: Default::default(),
        timeline: TimelineRequest::Latest,
        archive: ArchiveMode::Off,
    };
    agent_runtime().block_on(fetch_backup(config, archive, &request))
}

/// Gives what the test's process stored to PostgreSQL's user, who runs the agent binary.
pub fn give_to_postgres(path: &Path) {
    let status = Command::new("chown").args(["-R", "postgres:postgres"]).arg(path).status().expect("chown");
    assert!(status.success(), "chown {}", path.display());
}

/// Points the restored copy's restore_command at the agent binary (the in-process restore wrote
/// the test binary's path) and switches its archiving off.
pub fn use_agent_binary(agent: &Agent, data_dir: &Path) {
    let auto_conf = data_dir.join("postgresql.auto.conf");
    let text = std::fs::read_to_string(&auto_conf).expect("read postgresql.auto.conf");
    let mut lines: Vec<String> =
        text.lines().filter(|line| !line.starts_with("restore_command")).map(str::to_string).collect();
    lines.push(agent.restore_command());
    lines.push("archive_mode = off".to_string());
    std::fs::write(&auto_conf, lines.join("\n") + "\n").expect("write postgresql.auto.conf");
    let status = std::process::Command::new("chown").args(["-R", "postgres:postgres"]).arg(data_dir).status();
    assert!(status.expect("chown").success(), "chown the restored data directory");
}
