//! `snapshot-restore` holds the same lease as `backup-fetch`, with a real PostgreSQL 15: the
//! test plays the operator's part of a snapshot backup (the volume snapshot is a copy of the
//! data directory taken while the backup session is open), prepares the copy with
//! `snapshot-restore`, and runs retention before the copy is started: the snapshot backup and
//! the WAL its recovery replays stay, and the restored copy recovers every committed batch.

mod backup_support;
mod wal_common;

use std::process::{Command, Stdio};
use std::time::Duration;

use backup_support::{Primary, agent_command, assert_success, batches_present, start_restored, stderr};
use pgec2_core::catalog::snapshot::{self, COMPLETED, SnapshotAnswer, TAKEN};
use pgec2_core::catalog::{BackupInfo, BackupKind};
use pgec2_core::leases::{self, Lease, LeaseKind};
use pgec2_testkit::PgCluster;
use wal_common::{runtime, wait_for};

fn stored_leases(primary: &Primary) -> Vec<Lease> {
    let rt = runtime();
    let archive = rt.block_on(primary.agent.archive());
    rt.block_on(leases::load(&archive)).expect("load leases").leases
}

/// `backup-push --method snapshot`, answering as the operator does: the snapshot is a copy of
/// the data directory (`cp -a`) into `volume`, taken once the agent asks for it.
fn snapshot_backup(primary: &Primary, volume: &std::path::Path) -> BackupInfo {
    let data_dir = primary.cluster.data_dir.display().to_string();
    let args = ["backup-push", "--json", "--method", "snapshot", "--pgdata", &data_dir];
    let mut command = agent_command(&primary.agent, &args, &primary.connection_env(), true);
    let child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("start backup-push");
    let rt = runtime();
    let archive = rt.block_on(primary.agent.archive());
    let mut backup = None;
    wait_for("the snapshot request", Duration::from_secs(60), || {
        backup = rt.block_on(snapshot::list(&archive)).expect("handshakes").first().map(|h| h.request.backup.clone());
        backup.is_some()
    });
    let backup = backup.expect("requested");
    let copied = Command::new("cp").arg("-a").arg(&primary.cluster.data_dir).arg(volume).status().expect("cp -a");
    assert!(copied.success(), "copy the data directory");
    let answer = SnapshotAnswer { snapshot_id: "snap-test".to_string() };
    rt.block_on(snapshot::put(&archive, &backup, TAKEN, &answer)).expect("taken");
    rt.block_on(snapshot::put(&archive, &backup, COMPLETED, &answer)).expect("completed");
    let output = child.wait_with_output().expect("backup-push");
    assert_success("backup-push --method snapshot", &output);
    serde_json::from_slice(&output.stdout).expect("commit record")
}

#[test]
fn snapshot_restore_takes_a_lease_that_keeps_the_backup_and_its_wal_from_retention() {
    let primary = Primary::start();
    primary.cluster.psql("CREATE TABLE batches (id serial PRIMARY KEY, batch int NOT NULL)").expect("create table");
    primary.commit_and_archive(1);
    let volume = primary.agent.scratch.subdir("volume").expect("volume").join("data");
    let snapshot = snapshot_backup(&primary, &volume);
    assert_eq!(snapshot.kind, BackupKind::Snapshot);
    primary.commit_and_archive(2);
    let newer = primary.backup();
    primary.commit_and_archive(3);

    let prepared = primary.agent(&["snapshot-restore", volume.to_str().expect("utf-8"), &snapshot.name]);
    assert_success("snapshot-restore", &prepared);
    let taken = stored_leases(&primary);
    assert_eq!(taken.len(), 1, "{taken:?}");
    let lease = &taken[0];
    assert_eq!(
        (lease.kind, lease.backup.as_str(), lease.backup_needed),
        (LeaseKind::Restore, snapshot.name.as_str(), true)
    );
    assert_eq!(lease.data_directory, volume.display().to_string());
    assert!(volume.join(pgec2_agent::lease::LEASE_FILE).exists(), "the data directory records its lease");

    // Retention on another host before the copy starts: the snapshot backup and its WAL stay.
    let held = primary.agent(&["delete", "retain", "1", "--confirm"]);
    assert_success("delete retain 1 under the snapshot restore's lease", &held);
    let printed = String::from_utf8_lossy(&held.stdout);
    assert!(printed.contains(&format!("held by lease {}", lease.id)), "{printed}\n{}", stderr(&held));
    let names: Vec<String> = primary.backups().into_iter().map(|backup| backup.name).collect();
    assert_eq!(names, vec![snapshot.name.clone(), newer.name.clone()]);

    let copy = PgCluster::existing(&primary.agent.scratch, "volume-run", &volume).expect("restored cluster");
    copy.append_config("\narchive_mode = off\n").expect("switch archiving off");
    let mut copy = start_restored(&primary.agent, "volume", &volume);
    assert_eq!(batches_present(&copy), vec![1, 2, 3], "recovery replayed every segment since the snapshot");
    copy.stop().expect("stop");
    let renewed = stored_leases(&primary);
    assert!(!renewed[0].backup_needed, "wal-fetch renewed the lease: the backup is no longer read");
}
