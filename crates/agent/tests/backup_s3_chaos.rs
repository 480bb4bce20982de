//! The whole data path against S3 (moto) through the TCP fault proxy in seeded chaos mode —
//! connections reset, answers lost after the server stored the object, `503 SlowDown`, short
//! stalls and hangs on about one request in seven — under pgbench load on a real PostgreSQL 15
//! whose archive_command is the agent's wal-push: every backup-push commits, every segment
//! PostgreSQL marked done reads back byte-identical, and a restore of the last backup (its WAL
//! fetched through the same chaos) holds exactly the source's rows.

mod backup_support;
mod wal_common;

use std::time::{Duration, Instant};

use backup_support::{Primary, table_digests};
use pgec2_core::catalog;
use pgec2_testkit::{Chaos, FaultProxy, MotoServer, ProxyMode};
use wal_common::{Agent, archived_content, done_files};

const BUCKET: &str = "chaos-archive";
const PREFIX: &str = "default/orders";
const BACKUPS: usize = 3;

/// About one request in seven gets a fault, lost answers the most; the seed fixes which.
fn chaos() -> Chaos {
    Chaos {
        seed: 14,
        resets: 20,
        lost_answers: 60,
        slow_downs: 40,
        stalls: 20,
        stall: Duration::from_millis(700),
        hangs: 10,
    }
}

/// An agent storing through `endpoint`, with a stall limit of 3 s so that hangs cost little.
fn s3_agent(moto: &MotoServer, endpoint: &str) -> Agent {
    let extra = "timeout_secs = 3\n\n[compression]\nalgorithm = \"zstd\"\nlevel = 1\n";
    wal_common::s3_agent(moto, BUCKET, PREFIX, endpoint, extra)
}

#[test]
fn every_backup_commits_and_every_archived_segment_reads_back_through_a_chaotic_network() {
    let started = Instant::now();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let moto = MotoServer::start().expect("moto");
    rt.block_on(moto.create_bucket(BUCKET)).expect("bucket");
    let proxy = rt.block_on(FaultProxy::in_front_of(&moto)).expect("proxy");
    let primary = Primary::start_with(s3_agent(&moto, &proxy.endpoint()));
    let archive = rt.block_on(wal_common::direct_s3_archive(&moto, BUCKET, PREFIX));

    // Backups one after another while pgbench writes, every request through the chaos.
    proxy.set(ProxyMode::Chaos(chaos()));
    let names: Vec<String> = std::thread::scope(|scope| {
        let load = scope.spawn(|| primary.cluster.run_tool("pgbench", &["-n", "-c", "2", "-T", "25"]));
        let names = (0..BACKUPS).map(|_| primary.backup().name).collect();
        load.join().expect("pgbench thread").expect("pgbench");
        names
    });
    primary.archive_current_wal();
    let expected = table_digests(&primary.cluster);

    let committed = rt.block_on(catalog::scan_backups(&archive)).expect("scan backups").committed;
    let committed: Vec<String> = committed.into_iter().map(|info| info.name).collect();
    assert_eq!(committed, names, "every attempted backup-push committed");

    let done = done_files(&primary.cluster);
    assert!(done.len() > 3, "segments were archived: {done:?}");
    for segment in done.iter().filter(|name| name.len() == 24) {
        let local = std::fs::read(primary.cluster.data_dir.join("pg_wal").join(segment)).expect("segment in pg_wal");
        let stored = rt.block_on(archived_content(&archive, segment));
        assert!(stored.as_deref() == Some(local.as_slice()), "{segment} marked done but not archived identically");
    }

    let restored = primary.restore_copy("restored", names.last().expect("a backup"), &[]);
    assert_eq!(table_digests(&restored), expected, "the restored tables differ from the source");

    let counts = proxy.control().chaos_counts();
    eprintln!(
        "chaos over {:?}: {} requests passed, {} resets, {} lost answers, {} SlowDown, {} stalls, {} hangs",
        started.elapsed(),
        counts.passed(),
        counts.resets(),
        counts.lost_answers(),
        counts.slow_downs(),
        counts.stalls(),
        counts.hangs()
    );
    assert!(counts.lost_answers() > 0 && counts.slow_downs() > 0 && counts.resets() > 0, "faults were dealt");
}
