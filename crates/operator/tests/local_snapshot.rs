//! Snapshot backups end to end on the local cloud: `method: snapshot` makes the agent hold a
//! non-exclusive backup open while the operator copies the host's volume directory; the backup
//! is committed in the archive with its labels and the snapshot's id, counted by retention like
//! any backup, and its snapshot deleted with its catalog entry; with `snapshotLock` the
//! snapshot is locked before its backup commits and outlives retention until the lock ends.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{READY_TIMEOUT, TestEnv};
use pgec2_api::fixtures::{HostBuilder, host, policy};
use pgec2_api::{BACKUP_REQUEST_ANNOTATION, BackupMethod, HostPhase};
use pgec2_core::catalog::{self, BackupKind};

/// Polls `check` until it returns true; panics naming `what` after `timeout`.
async fn eventually(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "{what} did not happen within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Committed backups in a host's local archive.
fn committed_backups(archive: &Path) -> Vec<String> {
    let dir = archive.join("backups");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .map(|entries| entries.flatten().map(|entry| entry.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.retain(|name| dir.join(name).join("complete.json").exists());
    names.sort();
    names
}

/// Snapshot directories of the local cloud (complete ones only).
fn snapshot_dirs(state: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(state.join("volume-snapshots"))
        .map(|entries| entries.flatten().map(|entry| entry.path()).collect())
        .unwrap_or_default();
    dirs.retain(|dir| dir.join("snapshot.json").exists());
    dirs.sort();
    dirs
}

/// Asks for a backup and waits until a new one is committed; returns its name.
async fn take_backup(env: &TestEnv, archive: &Path, builder: &HostBuilder, request: &str) -> String {
    let before = committed_backups(archive);
    env.apply_host(&builder.clone().annotation(BACKUP_REQUEST_ANNOTATION, request).build()).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    while committed_backups(archive).len() == before.len() {
        if Instant::now() > deadline {
            let policy = env.policies().get("snapshots").await.expect("policy");
            let listing = std::process::Command::new("find").arg(archive).arg(&env.state_dir).output().expect("find");
            panic!(
                "backup {request} was not committed: {:#?}\n{}",
                policy.status.map(|status| status.active_backups),
                String::from_utf8_lossy(&listing.stdout)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    committed_backups(archive).into_iter().find(|backup| !before.contains(backup)).expect("the new backup")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_backup_under_load_commits_with_its_snapshot_and_retention_deletes_both_together() {
    let env = TestEnv::start().await;
    let archive = env.archive_dir();
    let snapshots = policy("snapshots").local(&archive.display().to_string()).method(BackupMethod::Snapshot).keep(1);
    env.apply_policy(&snapshots.build()).await;
    let builder = host("db").policy("snapshots");
    env.apply_host(&builder.clone().build()).await;
    let ready = env.wait_for("db", READY_TIMEOUT, |host| host.phase() == Some(HostPhase::Ready)).await;
    let mut load = env.pgbench(&ready, 60);

    let host_archive = archive.join("default/db");
    let first = take_backup(&env, &host_archive, &builder, "first").await;
    let policy_object = env.policies().get("snapshots").await.expect("policy");
    let opened = pgec2_operator::archive::open(&policy_object, &ready).await.expect("open archive");
    let info = catalog::read_info(&opened, &first).await.expect("commit record");
    assert_eq!(info.kind, BackupKind::Snapshot);
    let snapshot_id = info.snapshot_id.clone().expect("the snapshot's id in the commit record");
    let snapshot = env.state_dir.join("volume-snapshots").join(&snapshot_id);
    assert!(snapshot.join("volume/data/PG_VERSION").exists(), "the snapshot holds the data directory");
    assert!(!snapshot.join("volume/data/backup_label").exists(), "a non-exclusive backup writes no label");
    let label = catalog::get_content(&opened, &opened.layout.backup_label(&first).expect("key")).await.expect("label");
    assert!(String::from_utf8_lossy(&label).contains("LABEL: pgec2-agent backup-push --method snapshot"));
    assert_eq!(snapshot_dirs(&env.state_dir), vec![snapshot.clone()]);
    assert!(info.finish_lsn > info.start_lsn, "pgbench wrote during the backup");

    // The second snapshot backup replaces the first: retention keeps one, and the first's
    // snapshot goes with its catalog entry; the handshakes are cleaned up.
    let second = take_backup(&env, &host_archive, &builder, "second").await;
    // The local cloud removes a snapshot's record first and then its files: wait for both.
    eventually("retention of the first backup and its snapshot", Duration::from_secs(60), || {
        committed_backups(&host_archive) == vec![second.clone()]
            && snapshot_dirs(&env.state_dir).len() == 1
            && !snapshot.exists()
    })
    .await;
    let second_info = catalog::read_info(&opened, &second).await.expect("commit record");
    let kept = env.state_dir.join("volume-snapshots").join(second_info.snapshot_id.expect("id"));
    assert_eq!(snapshot_dirs(&env.state_dir), vec![kept]);
    eventually("handshakes removed", Duration::from_secs(30), || {
        std::fs::read_dir(host_archive.join("snapshot-requests")).map(|dir| dir.count() == 0).unwrap_or(true)
    })
    .await;
    let _ = load.kill();
    let _ = load.wait();
    env.stop().await;
}

/// Sets back the end of the local cloud's lock on `snapshot_id` to a second ago.
fn end_lock(state: &Path, snapshot_id: &str) {
    let path = state.join("volume-snapshots").join(format!("{snapshot_id}.lock"));
    let mut record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("lock file")).expect("json");
    record["until"] = serde_json::json!((chrono::Utc::now() - chrono::Duration::seconds(1)).to_rfc3339());
    std::fs::write(&path, serde_json::to_vec(&record).expect("json")).expect("end the lock");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_snapshot_backup_outlives_retention_until_its_lock_ends_and_status_says_until_when() {
    let env = TestEnv::start().await;
    let archive = env.archive_dir();
    let locked = policy("snapshots")
        .local(&archive.display().to_string())
        .method(BackupMethod::Snapshot)
        .snapshot_lock(pgec2_api::ObjectLockMode::Governance, Some(2))
        .keep(1);
    env.apply_policy(&locked.build()).await;
    let builder = host("db").policy("snapshots");
    env.apply_host(&builder.clone().build()).await;
    let ready = env.wait_for("db", READY_TIMEOUT, |host| host.phase() == Some(HostPhase::Ready)).await;
    let host_archive = archive.join("default/db");
    let policy_object = env.policies().get("snapshots").await.expect("policy");
    let opened = pgec2_operator::archive::open(&policy_object, &ready).await.expect("open archive");
    let snapshot_of = |name: String| {
        let opened = &opened;
        async move { catalog::read_info(opened, &name).await.expect("commit record").snapshot_id.expect("id") }
    };

    // The snapshot is locked before its backup commits: two days, governance mode.
    let first = take_backup(&env, &host_archive, &builder, "first").await;
    let first_snapshot = snapshot_of(first.clone()).await;
    let lock_file = env.state_dir.join("volume-snapshots").join(format!("{first_snapshot}.lock"));
    let record: serde_json::Value = serde_json::from_slice(&std::fs::read(&lock_file).expect("locked")).expect("json");
    assert_eq!(record["mode"], "governance");
    let until: chrono::DateTime<chrono::Utc> = record["until"].as_str().expect("until").parse().expect("time");
    let two_days = chrono::Utc::now() + chrono::Duration::days(2);
    assert!((two_days - until).num_minutes().abs() < 10, "locked until {until}");
    assert!(env.event_reasons("snapshots").await.contains(&"SnapshotLocked".to_string()));

    // Retention keeps one backup, but the first is locked: it stays, listed, with its snapshot,
    // and the status says until when.
    let second = take_backup(&env, &host_archive, &builder, "second").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let held = loop {
        let status = env.policies().get("snapshots").await.expect("policy").status.unwrap_or_default();
        if !status.locked_backups.is_empty() {
            break status.locked_backups;
        }
        assert!(Instant::now() < deadline, "no locked backup in status: {status:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(held.iter().map(|entry| entry.name.as_str()).collect::<Vec<_>>(), [first.as_str()]);
    assert_eq!(held[0].host, "default/db");
    assert_eq!(committed_backups(&host_archive), vec![first.clone(), second.clone()]);
    assert!(env.state_dir.join("volume-snapshots").join(&first_snapshot).exists(), "the locked snapshot stays");
    assert!(env.event_reasons("snapshots").await.contains(&"RetentionHeld".to_string()));

    // Once the first lock ended, the next pass deletes that backup and its snapshot; the second,
    // still locked, is kept in turn.
    end_lock(&env.state_dir, &first_snapshot);
    let third = take_backup(&env, &host_archive, &builder, "third").await;
    eventually("retention of the first backup and its snapshot", Duration::from_secs(60), || {
        committed_backups(&host_archive) == vec![second.clone(), third.clone()]
            && !env.state_dir.join("volume-snapshots").join(&first_snapshot).exists()
    })
    .await;
    assert!(!lock_file.exists(), "the lock file goes with its snapshot");
    env.stop().await;
}
