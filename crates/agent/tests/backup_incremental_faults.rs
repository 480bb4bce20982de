//! The incremental data path through the fault-injecting store with a fixed seed, against a
//! real PostgreSQL 15:
//! - an incremental push whose store fails, throttles (`503 SlowDown`), stalls and loses
//!   answers commits a complete incremental that restores exactly the rows; one whose store
//!   keeps throttling past the retry budget fails and leaves nothing listed;
//! - a restore of a chain whose middle backup has a corrupt or unreadable part fails naming
//!   that backup and object, and leaves the target directory as it was;
//! - a push stopped dead after N store calls (its process killed), for N spread over a whole
//!   push, commits nothing, and the next push succeeds and restores.

mod backup_support;
mod wal_common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use backup_support::in_process::{
    agent_runtime, archive_dir, faulty_archive, fetch, give_to_postgres, hooked_archive, push_incremental,
    push_incremental_async,
};
use backup_support::{Primary, table_digests};
use pgec2_core::catalog::BackupType;
use pgec2_core::storage::fault::{Chaos, Fault, Hook, Operation, Rule};

const SEED: u64 = 0x5eed_0019;

fn sql(primary: &Primary, statement: &str) {
    primary.cluster.psql(statement).unwrap_or_else(|error| panic!("{statement}: {error}"));
}

fn committed(primary: &Primary) -> Vec<String> {
    primary.backups().into_iter().map(|backup| backup.name).collect()
}

/// Archives the current WAL, restores `backup` with the agent binary and compares every table.
fn assert_restores_exactly(primary: &Primary, name: &str, backup: &str) {
    give_to_postgres(&archive_dir(primary));
    primary.archive_current_wal();
    let expected = table_digests(&primary.cluster);
    let restored = primary.restore_and_start(name, backup, &[]);
    assert_eq!(table_digests(&restored), expected, "{backup} restored different rows");
}

#[test]
fn an_incremental_push_under_store_faults_commits_a_restorable_chain_or_lists_nothing() {
    let primary = Primary::start();
    let full = primary.backup();
    sql(&primary, "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid <= 5000");

    // One call in four fails, throttles, stalls or loses its answer; besides, the first write of
    // every kind of object loses its answer and the first parts are throttled.
    let (archive, faults) = faulty_archive(&primary, true);
    faults.set_chaos(Chaos::new(SEED, 0.25).with_hang(Duration::from_secs(1)));
    for kind in ["leases/", "parts/000000", "backup_label", "manifest.json", "complete.json"] {
        faults.add(Rule::new(Fault::AckLost).on(Operation::Put).matching(move |key| key.contains(kind)).times(1));
    }
    faults.add(Rule::new(Fault::Throttle).on(Operation::Put).matching(|key| key.contains("/parts/")).times(3));
    let pushed = push_incremental(&primary, &archive, "LATEST").expect("the incremental commits under faults");
    eprintln!(
        "faults injected: {} of {} store calls, {} answers lost after a write",
        faults.injected(),
        faults.total_calls(),
        faults.acks_lost()
    );
    assert!(faults.acks_lost() >= 5 && faults.injected() > 8, "chaos injected faults besides the rules");
    assert_eq!((pushed.backup_type, pushed.parent.as_deref()), (BackupType::Incremental, Some(full.name.as_str())));
    assert_eq!(committed(&primary), vec![full.name.clone(), pushed.name.clone()]);
    assert_restores_exactly(&primary, "under-faults", &pushed.name);

    // A store that throttles every part upload past the retry budget: the push fails and
    // nothing is listed; the next push succeeds.
    sql(&primary, "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid <= 5000");
    let (archive, faults) = faulty_archive(&primary, true);
    faults.add(Rule::new(Fault::Throttle).on(Operation::Put).matching(|key| key.contains("/parts/")));
    let refused = push_incremental(&primary, &archive, "LATEST").expect_err("every part upload is throttled");
    assert!(refused.to_string().contains("SlowDown"), "{refused}");
    assert_eq!(committed(&primary), vec![full.name.clone(), pushed.name.clone()], "nothing new is listed");
    give_to_postgres(&archive_dir(&primary));
    let next = primary.incremental();
    assert_eq!(next.parent.as_deref(), Some(pushed.name.as_str()));
    assert_restores_exactly(&primary, "after-throttling", &next.name);
}

#[test]
fn a_chain_whose_middle_backup_has_a_corrupt_or_unreadable_part_fails_to_restore_and_writes_nothing() {
    let primary = Primary::start();
    let full = primary.backup();
    sql(&primary, "UPDATE pgbench_accounts SET abalance = 5 WHERE aid <= 3000");
    let middle = primary.incremental();
    sql(&primary, "UPDATE pgbench_accounts SET abalance = 6 WHERE aid > 90000");
    let newest = primary.incremental();
    assert_eq!(newest.parent.as_deref(), Some(middle.name.as_str()));
    primary.archive_current_wal();
    // The middle backup's part holding the blocks it changed, which the newest did not change again.
    let accounts = primary.cluster.psql("SELECT pg_relation_filepath('pgbench_accounts')").expect("file path");
    let recorded = primary.manifest(&middle.name);
    let file = recorded.files.iter().find(|file| file.path == accounts).expect("the accounts table in the middle");
    assert!(file.blocks.is_some(), "stored as changed blocks");
    let part = format!("backups/{}/parts/{:06}", middle.name, file.chunks[0].part);

    for (case, fault) in [("corrupt", Fault::Corrupt), ("unreadable", Fault::Permanent)] {
        let (archive, faults) = faulty_archive(&primary, true);
        let wanted = part.clone();
        faults.add(Rule::new(fault).on(Operation::Get).matching(move |key| key == wanted));
        let parent = primary.agent.scratch.subdir(case).expect("restore parent");
        let dest = parent.join("data");
        let config = backup_support::agent_config(&primary.agent, &primary.cluster);
        let failed = fetch(&config, &archive, &newest.name, &dest).expect_err("the restore must fail");
        let message = failed.to_string();
        eprintln!("{case}: {message}");
        assert!(message.contains(&middle.name) && message.contains(&part), "names the backup and part: {message}");
        assert!(
            !dest.exists(),
            "nothing is left in the target: {:?}",
            std::fs::read_dir(&dest).ok().map(Iterator::count)
        );
        assert_eq!(std::fs::read_dir(&parent).expect("list").count(), 0, "nothing beside it either");
        assert!(faults.injected() >= 1, "the part was read");
    }
    let restored = primary.restore_and_start("whole", &newest.name, &[]);
    assert_eq!(table_digests(&restored), table_digests(&primary.cluster), "the stored chain itself is intact");
    assert_eq!(full.backup_type, BackupType::Full);
}

/// A hook that lets `calls` store calls through, then stops every later call forever (the
/// process killed at that point); `stopped` counts the calls it stopped.
fn stop_after(calls: u64, stopped: Arc<AtomicU64>) -> Hook {
    let seen = Arc::new(AtomicU64::new(0));
    Arc::new(move |_, _| {
        if seen.fetch_add(1, Ordering::SeqCst) < calls {
            return None;
        }
        stopped.fetch_add(1, Ordering::SeqCst);
        Some(Box::pin(std::future::pending()))
    })
}

/// Runs `push` until the hook stopped it (then gives calls in flight half a second to reach
/// the hook too); `None` when it was stopped, its outcome when it finished.
async fn run_until_stopped<T>(push: impl std::future::Future<Output = T>, stopped: &AtomicU64) -> Option<T> {
    tokio::pin!(push);
    while stopped.load(Ordering::SeqCst) == 0 {
        tokio::select! {
            outcome = &mut push => return Some(outcome),
            () = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    }
    tokio::time::timeout(Duration::from_millis(500), push).await.ok()
}

#[test]
fn a_push_stopped_after_any_number_of_store_calls_commits_nothing_and_the_next_push_succeeds() {
    let primary = Primary::start();
    let full = primary.backup();
    sql(&primary, "UPDATE pgbench_accounts SET abalance = 7 WHERE aid <= 3000");
    // A whole incremental push, to count its store calls.
    let (archive, faults) = faulty_archive(&primary, false);
    let parent = push_incremental(&primary, &archive, "LATEST").expect("a clean incremental");
    let total = faults.total_calls();
    eprintln!("a whole incremental push made {total} store calls");
    let listed = vec![full.name.clone(), parent.name.clone()];

    for calls in [1, total / 5, 2 * total / 5, 3 * total / 5, 4 * total / 5, total - 2, total - 1] {
        sql(&primary, &format!("UPDATE pgbench_accounts SET abalance = {calls} WHERE aid <= 3000"));
        let stopped = Arc::new(AtomicU64::new(0));
        let archive = hooked_archive(&primary, stop_after(calls, stopped.clone()));
        let rt = agent_runtime();
        let push = push_incremental_async(&primary, &archive, "LATEST");
        let finished = rt.block_on(run_until_stopped(push, &stopped));
        rt.shutdown_background();
        let finished = finished.map(|pushed| pushed.map(|info| info.name));
        assert!(finished.is_none(), "stopped after {calls} calls, the push finished: {finished:?}");
        assert_eq!(committed(&primary), listed, "stopped after {calls} of {total} calls, nothing is committed");
    }

    give_to_postgres(&archive_dir(&primary));
    let next = primary.incremental();
    assert_eq!(next.parent.as_deref(), Some(parent.name.as_str()), "the next push builds on the last committed");
    assert_restores_exactly(&primary, "after-kills", &next.name);
}
