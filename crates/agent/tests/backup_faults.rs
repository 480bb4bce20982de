//! wal-push, backup-push and backup-fetch through the fault-injecting store with a fixed seed,
//! against a real PostgreSQL 15: on one store call in ten the store fails, throttles, stalls,
//! hangs past the stall limit or loses its answer after a successful write, and still every
//! segment is archived intact, the backup commits and a restore of it holds exactly the
//! source's rows.
//!
//! PostgreSQL's archive_command copies each WAL file into a spool; this test pushes the spool
//! in-process through the faulty store, as PostgreSQL would (again after a failure), while the
//! backup runs in-process through the same store. The restored copy fetches its WAL with the
//! agent binary from the archive directory.

mod backup_support;
mod wal_common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use backup_support::{start_restored, table_digests};
use pgec2_agent::backup::push::{PushOptions, push_backup};
use pgec2_agent::wal;
use pgec2_core::catalog;
use pgec2_core::compression::Compression;
use pgec2_core::layout::Archive;
use pgec2_core::storage::fault::{Chaos, Fault, FaultHandle, Operation, Rule};
use pgec2_testkit::{PgCluster, PgOptions};
use wal_common::{Agent, archived_content, switch_segment, wait_for};

const SEED: u64 = 0x5eed_0014;

/// The agent's file archive behind the seeded fault injector, retried as the agent retries.
fn faulty_archive(directory: &Path) -> (Archive, FaultHandle) {
    let (archive, faults) = backup_support::in_process::faulty_store(directory, true);
    faults.set_chaos(Chaos::new(SEED, 0.10).with_hang(Duration::from_secs(1)));
    // Besides chaos, the first write of every kind of object loses its answer.
    for kind in ["cluster.json", "wal/", "backup_label", "manifest.json", "complete.json", "parts/000003"] {
        faults.add(Rule::new(Fault::AckLost).on(Operation::Put).matching(move |key| key.contains(kind)).times(1));
    }
    (archive, faults)
}

/// A primary whose archive_command copies WAL files into `spool`, with pgbench tables.
fn spooling_primary(agent: &Agent, spool: &Path) -> PgCluster {
    let spool = spool.display();
    let archive_command =
        format!("archive_command = 'test ! -f {spool}/%f && cp %p {spool}/%f.part && mv {spool}/%f.part {spool}/%f'");
    let config = vec!["wal_level = replica".to_string(), "archive_mode = on".to_string(), archive_command];
    let mut cluster =
        PgCluster::init(&agent.scratch, "primary", &PgOptions { data_checksums: true, config }).expect("initdb");
    cluster.start().expect("start primary");
    cluster.run_tool("pgbench", &["-i", "-q", "-s", "2"]).expect("pgbench -i");
    cluster
}

/// Pushes every complete file of the spool through `archive` until `stop`, retrying a failed
/// push later as PostgreSQL does; returns the files pushed.
async fn push_spool(archive: Archive, spool: PathBuf, data_dir: PathBuf, stop: Arc<AtomicBool>) -> BTreeSet<String> {
    let mut pushed = BTreeSet::new();
    loop {
        let finishing = stop.load(Ordering::Relaxed);
        let mut names: Vec<String> = std::fs::read_dir(&spool)
            .expect("read spool")
            .map(|entry| entry.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|name| !name.ends_with(".part") && !pushed.contains(name))
            .collect();
        names.sort();
        for name in names {
            match wal::push(&archive, Compression::default(), &spool.join(&name), Some(&data_dir)).await {
                Ok(_) => {
                    pushed.insert(name);
                }
                Err(error) => eprintln!("wal-push of {name} failed, PostgreSQL would retry it: {error}"),
            }
        }
        if finishing {
            return pushed;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn a_backup_under_ten_percent_store_faults_commits_and_restores_every_row() {
    let agent = Agent::with_file_archive();
    let spool = agent.scratch.subdir("spool").expect("spool");
    let primary = spooling_primary(&agent, &spool);
    let config = backup_support::agent_config(&agent, &primary);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let (archive, faults) = faulty_archive(&agent.scratch.path().join("archive"));

    let stop = Arc::new(AtomicBool::new(false));
    let pusher = rt.spawn(push_spool(archive.clone(), spool.clone(), primary.data_dir.clone(), stop.clone()));
    let backup = std::thread::scope(|scope| {
        let load = scope.spawn(|| primary.run_tool("pgbench", &["-n", "-c", "2", "-T", "8"]));
        let backup = rt.block_on(push_backup(&config, &archive, Some(&primary.data_dir), PushOptions::default()));
        load.join().expect("pgbench thread").expect("pgbench during the backup");
        backup.expect("the backup commits under faults")
    });
    primary.run_tool("pgbench", &["-n", "-c", "2", "-t", "200"]).expect("pgbench after the backup");
    let last = switch_segment(&primary);
    wait_for(&format!("{last} in the spool"), Duration::from_secs(60), || spool.join(&last).exists());
    let expected = table_digests(&primary);
    stop.store(true, Ordering::Relaxed);
    let pushed = rt.block_on(pusher).expect("pusher");

    let committed = rt.block_on(catalog::scan_backups(&archive)).expect("scan").committed;
    assert_eq!(committed.iter().map(|info| info.name.clone()).collect::<Vec<_>>(), vec![backup.name.clone()]);
    let clean = rt.block_on(agent.archive());
    for name in &pushed {
        let local = std::fs::read(spool.join(name)).expect("spooled file");
        assert!(rt.block_on(archived_content(&clean, name)) == Some(local), "{name} archived intact");
    }
    assert!(pushed.contains(&last), "the last segment was pushed");

    let dest = agent.scratch.subdir("restored").expect("restore parent").join("data");
    let fetched = backup_support::in_process::fetch(&config, &archive, &backup.name, &dest);
    fetched.expect("the restore succeeds under faults");
    backup_support::in_process::use_agent_binary(&agent, &dest);
    let restored = start_restored(&agent, "restored", &dest);
    assert_eq!(table_digests(&restored), expected, "the restored tables differ from the source");

    eprintln!(
        "faults injected: {} of {} store calls, {} answers lost after a write",
        faults.injected(),
        faults.total_calls(),
        faults.acks_lost()
    );
    assert!(faults.acks_lost() >= 6, "every kind of object lost an answer: {}", faults.acks_lost());
    assert!(faults.injected() * 10 > faults.total_calls(), "faults on about one call in ten");
}
