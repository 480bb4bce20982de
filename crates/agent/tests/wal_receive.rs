//! `wal-receive` against a real PostgreSQL 15: the recovery point of a lost primary is the
//! streamed position (seconds), not the last complete segment; an LSN target inside the streamed
//! tail is reachable and one past its end refused; a server restart mid-stream resumes from the
//! slot without a gap; archive_command and wal-receive archive the same segments side by side
//! and agree.
//!
//! `PGEC2_RPO_TRIALS` sets how many kill-and-restore trials the RPO test runs (default 2); each
//! prints its figures (`rpo trial ...`).

mod backup_support;
mod wal_common;

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use backup_support::{Primary, agent_command, batches_present, commit_batch, stderr, table_digests};
use pgec2_core::catalog;
use pgec2_core::stream_status::StreamStatus;
use pgec2_core::wal::{Lsn, SegmentSize};
use pgec2_testkit::PgCluster;
use wal_common::{Agent, archiver_stats, runtime, switch_segment, wait_for};

/// A running `wal-receive` for a primary.
struct Receiver {
    child: Option<Child>,
    spool: PathBuf,
    log: PathBuf,
}

impl Receiver {
    fn start(primary: &Primary, name: &str) -> Self {
        Self::start_with(primary, name, &[])
    }

    /// Like [`Receiver::start`], with `overrides` applied to its environment last.
    fn start_with(primary: &Primary, name: &str, overrides: &[(String, String)]) -> Self {
        Self::start_for(&primary.agent, &primary.cluster, name, overrides)
    }

    /// A receiver of `cluster` archiving with `agent`'s configuration.
    fn start_for(agent: &Agent, cluster: &PgCluster, name: &str, overrides: &[(String, String)]) -> Self {
        let spool = agent.scratch.subdir(&format!("{name}-spool")).expect("spool");
        let log = agent.scratch.path().join(format!("{name}.log"));
        let _ = std::fs::remove_file(spool.join("status.json"));
        let mut env = vec![
            ("PGHOST".to_string(), cluster.socket_dir.display().to_string()),
            ("PGPORT".to_string(), cluster.port.to_string()),
            ("PGUSER".to_string(), "postgres".to_string()),
            ("PGDATABASE".to_string(), "postgres".to_string()),
            ("PGDATA".to_string(), cluster.data_dir.display().to_string()),
        ];
        env.push(("PGEC2_LOG".into(), "info,pg_walstream=warn".into()));
        env.extend(overrides.iter().cloned());
        let spool_arg = spool.display().to_string();
        let args = [
            "wal-receive",
            "--spool",
            &spool_arg,
            "--slot",
            "pgec2_test",
            "--partial-interval",
            "1",
            "--receive-timeout",
            "10",
        ];
        let mut command = agent_command(agent, &args, &env, true);
        let log_file = std::fs::File::create(&log).expect("receiver log");
        command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log_file);
        let receiver = Self { child: Some(command.spawn().expect("start wal-receive")), spool, log };
        receiver.wait_until("streaming", |status| status.state == "streaming");
        receiver
    }

    fn status(&self) -> Option<StreamStatus> {
        let text = std::fs::read(self.spool.join("status.json")).ok()?;
        serde_json::from_slice(&text).ok()
    }

    fn wait_until(&self, what: &str, mut done: impl FnMut(&StreamStatus) -> bool) {
        wait_for(&format!("wal-receive {what}\n{}", self.log_tail()), Duration::from_secs(60), || {
            self.status().is_some_and(|status| done(&status))
        });
    }

    /// Waits until the archive holds WAL up to `lsn` by the receiver's account.
    fn wait_archived(&self, lsn: Lsn) {
        self.wait_until(&format!("archived {lsn}"), |status| status.archived_lsn.is_some_and(|at| at >= lsn));
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// SIGKILL: the receiver dies with its host.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.kill();
    }
}

fn current_lsn(cluster: &PgCluster) -> Lsn {
    cluster.psql("SELECT pg_current_wal_flush_lsn()").expect("lsn").parse().expect("an LSN")
}

/// Inserts one row per `pace` for `count` rows; returns when each commit returned.
fn write_slowly(cluster: &PgCluster, count: usize, pace: Duration) -> Vec<Instant> {
    (1..=count)
        .map(|id| {
            cluster.psql(&format!("INSERT INTO ticks (id) VALUES ({id})")).expect("insert");
            let committed = Instant::now();
            std::thread::sleep(pace);
            committed
        })
        .collect()
}

/// One trial: back up, stream, write slowly, lose the host (receiver and server at once, data
/// directory removed), restore from the archive. Returns (rows committed, rows restored, RPO).
fn lose_the_primary_and_restore(trial: usize) -> (usize, usize, Duration) {
    let mut primary = Primary::start();
    primary.cluster.psql("CREATE TABLE ticks (id int PRIMARY KEY)").expect("create table");
    primary.backup();
    let mut receiver = Receiver::start(&primary, "receiver");
    let commits = write_slowly(&primary.cluster, 24, Duration::from_millis(250));
    let (_, failed, _) = archiver_stats(&primary.cluster);
    assert_eq!(failed, 0, "archive_command never failed beside wal-receive");
    receiver.wait_until("without errors", |status| status.last_error.is_none());
    let lost_at = Instant::now();
    receiver.kill();
    primary.cluster.stop_immediately().expect("stop -m immediate");
    std::fs::remove_dir_all(&primary.cluster.data_dir).expect("remove the data directory");

    let mut restored = primary.restore_copy(&format!("restored-{trial}"), "LATEST", &[]);
    let ids = restored.psql("SELECT coalesce(string_agg(id::text, ',' ORDER BY id), '') FROM ticks").expect("rows");
    restored.stop().expect("stop");
    let ids: Vec<usize> = ids.split(',').filter(|id| !id.is_empty()).map(|id| id.parse().expect("id")).collect();
    let kept = ids.len();
    assert_eq!(ids, (1..=kept).collect::<Vec<_>>(), "the restored rows are a prefix of the commits, without holes");
    let rpo = commits.get(kept).map(|first_lost| lost_at - *first_lost).unwrap_or_default();
    for (index, committed) in commits.iter().enumerate() {
        let age = lost_at - *committed;
        assert!(
            age < Duration::from_secs(3) || index < kept,
            "row {} committed {age:?} before the host was lost is missing (restored {kept} of {})",
            index + 1,
            commits.len()
        );
    }
    (commits.len(), kept, rpo)
}

#[test]
fn rows_committed_seconds_before_the_primary_host_is_lost_are_restored_from_the_streamed_archive() {
    let trials: usize = std::env::var("PGEC2_RPO_TRIALS").ok().and_then(|text| text.parse().ok()).unwrap_or(2);
    for trial in 1..=trials {
        let (committed, restored, rpo) = lose_the_primary_and_restore(trial);
        println!("rpo trial {trial}: committed {committed} restored {restored} rpo_ms {}", rpo.as_millis());
    }
}

#[test]
fn an_lsn_target_inside_the_streamed_tail_restores_exactly_the_rows_up_to_it_and_one_past_the_tail_is_refused() {
    // archive_timeout is off: the batches reach the archive only through the stream.
    let mut primary = Primary::start();
    primary.cluster.psql("CREATE TABLE batches (id serial PRIMARY KEY, batch int NOT NULL)").expect("create table");
    primary.backup();
    let mut receiver = Receiver::start(&primary, "receiver");
    let marks: Vec<_> = (1..=3).map(|batch| commit_batch(&primary.cluster, batch)).collect();
    receiver.wait_archived(current_lsn(&primary.cluster));
    let target: Lsn = marks[1].lsn.parse().expect("an LSN");
    let size = SegmentSize::default();
    let (segment, rt) = (size.segment_of(target), runtime());
    let archive = rt.block_on(primary.agent.archive());
    let complete = archive.layout.wal_file(&size.segment_name(1, segment)).expect("key");
    assert_eq!(rt.block_on(archive.storage.head(&complete)).expect("head"), None, "only the stream has batch 2");
    receiver.kill();
    primary.cluster.stop_immediately().expect("stop -m immediate");
    std::fs::remove_dir_all(&primary.cluster.data_dir).expect("remove the data directory");

    let streamed_end = rt.block_on(catalog::partial_end(&archive, size, 1, segment)).expect("read").expect("a tail");
    assert!(streamed_end >= target, "the tail holds batch 2: {streamed_end} < {target}");
    let past = Lsn(streamed_end.0 + 8).to_string();
    let (dest, output) = primary.restore("past-the-tail", "LATEST", &["--target-lsn", &past]);
    let message = stderr(&output);
    assert!(!output.status.success(), "a target past the streamed tail is refused");
    assert!(
        message.contains(&format!("refusing to restore: LSN {past} is after the last archived WAL in ")),
        "{message}"
    );
    assert!(message.contains(&format!("(LSN {streamed_end}, where the streamed ")), "{message}");
    assert!(!dest.exists(), "nothing was written before the refusal");

    let restore = ["--target-lsn", marks[1].lsn.as_str(), "--target-action", "promote"];
    let mut restored = primary.restore_copy("in-the-tail", "LATEST", &restore);
    assert_eq!(batches_present(&restored), vec![1, 2], "exactly the batches up to the target");
    restored.stop().expect("stop");
}

/// A primary whose WAL reaches the archive through wal-receive alone: archive_mode is on, as
/// backup-push requires, but no archive_command is set.
fn primary_archiving_only_by_streaming() -> Primary {
    let agent = Agent::with_file_archive();
    let mut cluster = agent_cluster_without_archiving(&agent);
    cluster.start().expect("start");
    Primary { agent, cluster }
}

#[test]
fn a_server_restart_mid_stream_resumes_from_the_slot_without_a_gap() {
    let mut primary = primary_archiving_only_by_streaming();
    primary.cluster.psql("CREATE TABLE ticks (id int PRIMARY KEY)").expect("create table");
    let receiver = Receiver::start(&primary, "receiver");
    primary.backup();
    write_rows(&primary.cluster, 1..=500);
    switch_segment(&primary.cluster);
    primary.cluster.stop().expect("stop");
    primary.cluster.start().expect("start again");
    write_rows(&primary.cluster, 501..=1000);
    switch_segment(&primary.cluster);
    write_rows(&primary.cluster, 1001..=1100);
    let end = current_lsn(&primary.cluster);
    receiver.wait_archived(end);
    let status = receiver.status().expect("status");
    assert!(status.warnings.iter().all(|warning| warning.kind != "SlotLost"), "{status:?}");
    let expected = table_digests(&primary.cluster);
    let mut restored = primary.restore_copy("restored", "LATEST", &[]);
    assert_eq!(table_digests(&restored), expected, "the restore replayed every streamed segment and the tail");
    restored.stop().expect("stop");
}

fn agent_cluster_without_archiving(agent: &Agent) -> PgCluster {
    let config = ["wal_level = replica", "archive_mode = on", "archive_command = ''", "checkpoint_timeout = 30min"];
    let options =
        pgec2_testkit::PgOptions { data_checksums: true, config: config.iter().map(|line| line.to_string()).collect() };
    PgCluster::init(&agent.scratch, "primary", &options).expect("initdb")
}

fn write_rows(cluster: &PgCluster, ids: std::ops::RangeInclusive<u32>) {
    let sql = format!("INSERT INTO ticks SELECT generate_series({}, {})", ids.start(), ids.end());
    cluster.psql(&sql).expect("insert rows");
}

#[test]
fn wal_receive_status_prints_the_receivers_state_as_json() {
    let primary = Primary::start();
    // As on a pgec2 host: replication only over the Unix socket, never from the network.
    let hba = primary.cluster.data_dir.join("pg_hba.conf");
    let rules = std::fs::read_to_string(&hba).expect("pg_hba.conf");
    std::fs::write(&hba, format!("host replication all 127.0.0.1/32 reject\n{rules}")).expect("write pg_hba.conf");
    primary.cluster.psql("SELECT pg_reload_conf()").expect("reload");
    let receiver = Receiver::start(&primary, "receiver");
    let end = current_lsn(&primary.cluster);
    receiver.wait_archived(end);
    let spool = receiver.spool.display().to_string();
    let output = primary.agent(&["wal-receive", "--status", "--json", "--spool", &spool]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let status: StreamStatus = serde_json::from_slice(&output.stdout).expect("a StreamStatus");
    assert_eq!(status.state, "streaming");
    assert!(status.archived_lsn.is_some_and(|lsn| lsn >= end) && status.lag_bytes.is_some(), "{status:?}");
    assert!(
        status.warnings.iter().any(|warning| warning.kind == "SlotUncapped"),
        "the test server sets no cap: {status:?}"
    );
    let _ = runtime();
}

#[test]
fn the_slot_cap_gives_up_a_dead_receivers_slot_and_the_next_receiver_recreates_it_and_says_so() {
    let primary = Primary::start();
    let cluster = &primary.cluster;
    cluster.psql("ALTER SYSTEM SET max_slot_wal_keep_size = '64MB'").expect("cap");
    cluster.psql("SELECT pg_reload_conf()").expect("reload");
    let mut receiver = Receiver::start(&primary, "receiver");
    let status = receiver.status().expect("status");
    assert_eq!(status.max_slot_wal_keep_size_mb, Some(64), "{status:?}");
    assert!(status.warnings.iter().all(|warning| warning.kind != "SlotUncapped"), "{status:?}");
    receiver.kill();
    // The receiver is gone; the primary writes on, far past the cap.
    for _ in 0..8 {
        cluster.run_tool("pgbench", &["-n", "-t", "200", "-b", "simple-update"]).expect("pgbench");
        switch_segment(cluster);
    }
    cluster.psql("CHECKPOINT").expect("checkpoint");
    let slot =
        cluster.psql("SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'pgec2_test'").expect("slot");
    assert_eq!(slot, "lost", "the server gave the slot up instead of keeping WAL without bound");
    let wal_bytes: u64 =
        cluster.psql("SELECT sum(size) FROM pg_ls_waldir()").expect("pg_wal size").parse().expect("bytes");
    assert!(wal_bytes < 1 << 30, "pg_wal stayed bounded: {wal_bytes} bytes");

    let receiver = Receiver::start(&primary, "receiver");
    let status = receiver.status().expect("status");
    let lost = status.warnings.iter().find(|warning| warning.kind == "SlotLost").expect("a SlotLost warning");
    assert!(lost.message.contains("archive_command"), "{}", lost.message);
    receiver.wait_archived(current_lsn(cluster));
}

#[test]
fn archive_command_and_wal_receive_archive_the_same_segments_side_by_side_and_agree() {
    let primary = Primary::start();
    primary.cluster.psql("CREATE TABLE ticks (id int PRIMARY KEY)").expect("create table");
    let receiver = Receiver::start(&primary, "receiver");
    primary.backup();
    let mut last = String::new();
    for round in 0..4u32 {
        write_rows(&primary.cluster, round * 1000 + 1..=round * 1000 + 1000);
        last = switch_segment(&primary.cluster);
    }
    wal_common::wait_until_archived(&primary.cluster, &last);
    receiver.wait_archived(current_lsn(&primary.cluster));
    let (archived, failed, _) = archiver_stats(&primary.cluster);
    assert!(archived >= 4, "archive_command archived the switched segments too ({archived})");
    assert_eq!(failed, 0, "archive_command found the receiver's copies identical, never different");
    let status = receiver.status().expect("status");
    assert!(status.last_error.is_none() && status.state == "streaming", "{status:?}");
    let expected = table_digests(&primary.cluster);
    let mut restored = primary.restore_copy("restored", "LATEST", &[]);
    assert_eq!(table_digests(&restored), expected);
    restored.stop().expect("stop");
}

#[test]
fn network_faults_mid_stream_end_in_a_resume_from_the_slot_without_a_gap() {
    use pgec2_testkit::{FaultProxy, ProxyMode};
    let primary = primary_archiving_only_by_streaming();
    primary.cluster.psql("CREATE TABLE ticks (id int PRIMARY KEY)").expect("create table");
    let network = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let server = std::net::SocketAddr::from(([127, 0, 0, 1], primary.cluster.port));
    let proxy = network.block_on(FaultProxy::start(server)).expect("proxy");
    let port = proxy.endpoint().rsplit(':').next().expect("a port").trim_end_matches('/').to_string();
    let through_proxy = [("PGHOST".to_string(), "127.0.0.1".to_string()), ("PGPORT".to_string(), port)];
    let receiver = Receiver::start_with(&primary, "receiver", &through_proxy);
    primary.backup();
    write_rows(&primary.cluster, 1..=500);
    for (round, fault) in [ProxyMode::Reset, ProxyMode::Stall].into_iter().enumerate() {
        // The fault cuts the stream and every new connection fails (reset) or hangs (stall).
        proxy.set(fault);
        let from = 1000 * (round as u32 + 1);
        write_rows(&primary.cluster, from..=from + 500);
        switch_segment(&primary.cluster);
        std::thread::sleep(Duration::from_secs(12));
        proxy.set(ProxyMode::PassThrough);
        receiver.wait_archived(current_lsn(&primary.cluster));
    }
    let status = receiver.status().expect("status");
    assert_eq!(status.state, "streaming", "{status:?}");
    let log = std::fs::read_to_string(&receiver.log).unwrap_or_default();
    assert!(log.matches("resuming from the slot").count() >= 2, "both faults broke the stream:\n{log}");
    let expected = table_digests(&primary.cluster);
    let mut restored = primary.restore_copy("restored", "LATEST", &[]);
    assert_eq!(table_digests(&restored), expected, "nothing streamed before, during or after the faults is missing");
    restored.stop().expect("stop");
}

#[test]
fn the_cluster_restored_after_the_loss_archives_and_streams_again_into_the_same_archive() {
    let mut primary = Primary::start();
    primary.cluster.psql("CREATE TABLE ticks (id int PRIMARY KEY)").expect("create table");
    primary.backup();
    let mut receiver = Receiver::start(&primary, "receiver");
    write_rows(&primary.cluster, 1..=100);
    receiver.wait_archived(current_lsn(&primary.cluster));
    receiver.kill();
    primary.cluster.stop_immediately().expect("stop -m immediate");
    std::fs::remove_dir_all(&primary.cluster.data_dir).expect("remove the data directory");

    // The disaster runbook: the original cluster comes back from its own archive and goes on
    // archiving into it (timeline 2), by archive_command and by a new receiver with a new slot.
    let restored = primary.restore_and_start("recovered", "LATEST", &["--archive-mode", "preserve"]);
    assert_eq!(restored.psql("SELECT count(*) FROM ticks").expect("rows"), "100", "the streamed tail was replayed");
    let receiver = Receiver::start_for(&primary.agent, &restored, "receiver-2", &[]);
    write_rows(&restored, 101..=200);
    let segment = switch_segment(&restored);
    assert!(segment.starts_with("00000002"), "{segment}");
    wal_common::wait_until_archived(&restored, &segment);
    receiver.wait_archived(current_lsn(&restored));
    let (_, failed, _) = archiver_stats(&restored);
    assert_eq!(failed, 0, "archive_command never found the streamed copies different");
    let status = receiver.status().expect("status");
    assert!(status.last_error.is_none() && status.timeline == Some(2), "{status:?}");
}
