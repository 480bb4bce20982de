//! Holes in the WAL archive with a real PostgreSQL 15: a missing segment with later WAL after
//! it is never taken for the end of the archive. Before a restore, `backup-fetch` refuses it and
//! `wal-verify` names it; appearing after `backup-fetch` (retention, a lost object, a copy still
//! arriving), recovery stops with FATAL naming it, and the server is never writable with rows
//! missing. The end of the archive and probes for future timelines stay quiet.

mod backup_support;
mod wal_common;

use std::path::Path;
use std::time::Duration;

use backup_support::{Primary, assert_success, run_agent, stderr};
use pgec2_core::wal::SegmentSize;
use pgec2_testkit::PgCluster;
use wal_common::{runtime, switch_segment, wait_for, wait_until_archived};

/// Batches of rows, each in its own WAL segment.
const BATCHES: u32 = 12;
const ROWS_PER_BATCH: u32 = 1000;

/// A primary with a backup, then [`BATCHES`] batches of rows in `orders`, one segment each, all
/// archived. Returns the primary and the archived segments written after the backup.
fn primary_with_segments_after_a_backup() -> (Primary, Vec<String>) {
    let primary = Primary::start();
    primary.cluster.psql("CREATE TABLE orders (id int PRIMARY KEY, batch int NOT NULL)").expect("create orders");
    primary.backup();
    let mut segments = Vec::new();
    for batch in 0..BATCHES {
        let (first, last) = (batch * ROWS_PER_BATCH + 1, (batch + 1) * ROWS_PER_BATCH);
        let sql = format!("INSERT INTO orders SELECT g, {batch} FROM generate_series({first}, {last}) g");
        primary.cluster.psql(&sql).expect("insert a batch");
        segments.push(switch_segment(&primary.cluster));
    }
    wait_until_archived(&primary.cluster, segments.last().expect("segments"));
    (primary, segments)
}

fn order_count(cluster: &PgCluster) -> String {
    cluster.psql("SELECT count(*) FROM orders").expect("count orders")
}

/// Removes `file` from the archive and returns its stored object, to put back later.
fn take_from_archive(primary: &Primary, file: &str) -> bytes::Bytes {
    let rt = runtime();
    let archive = rt.block_on(primary.agent.archive());
    let key = archive.layout.wal_file(file).expect("key");
    let stored = rt.block_on(archive.storage.get(&key)).expect("the segment is archived");
    rt.block_on(archive.storage.delete(&key)).expect("delete the segment");
    stored
}

fn put_back(primary: &Primary, file: &str, stored: bytes::Bytes) {
    let rt = runtime();
    let archive = rt.block_on(primary.agent.archive());
    let key = archive.layout.wal_file(file).expect("key");
    rt.block_on(archive.storage.put(&key, stored, pgec2_core::storage::PutMode::CreateNew)).expect("put back");
}

/// The segment after `name` on its timeline.
fn next_segment(name: &str) -> String {
    let size = SegmentSize::default();
    let (timeline, number) = size.parse_segment(name).expect("segment name");
    size.segment_name(timeline, number + 1)
}

/// `wal-fetch FILE DEST` run by hand as PostgreSQL would, into `data_dir/pg_wal`.
fn wal_fetch(primary: &Primary, file: &str, data_dir: &Path, dest: &str) -> std::process::Output {
    let dest = data_dir.join("pg_wal").join(dest);
    run_agent(&primary.agent, &["wal-fetch", file, dest.to_str().expect("utf-8 path")], &[], true)
}

fn postmaster_running(data_dir: &Path) -> bool {
    data_dir.join("postmaster.pid").exists()
}

#[test]
fn a_hole_present_before_the_restore_is_refused_by_backup_fetch_and_named_by_wal_verify() {
    let (primary, segments) = primary_with_segments_after_a_backup();
    let victim = &segments[5];
    take_from_archive(&primary, victim);

    let (dest, output) = primary.restore("refused", "LATEST", &[]);
    assert!(!output.status.success(), "backup-fetch restored across a hole");
    let first_line = stderr(&output).lines().next().unwrap_or_default().to_string();
    assert!(first_line.contains(victim.as_str()) && first_line.contains("missing"), "{}", stderr(&output));
    assert!(!dest.exists(), "{} was created", dest.display());

    let verify = primary.agent(&["wal-verify"]);
    assert_ne!(verify.status.code(), Some(0), "wal-verify passed an archive with a hole");
    assert!(stderr(&verify).contains(victim.as_str()), "wal-verify does not name {victim}: {}", stderr(&verify));
}

#[test]
fn a_hole_appearing_after_backup_fetch_stops_recovery_with_fatal_naming_the_segment() {
    let (primary, segments) = primary_with_segments_after_a_backup();
    let all_orders = order_count(&primary.cluster);
    assert_eq!(all_orders, (BATCHES * ROWS_PER_BATCH).to_string());
    let (dest, output) = primary.restore("holed", "LATEST", &[]);
    assert_success("backup-fetch of a complete archive", &output);

    // The hole appears after backup-fetch checked the archive, before the server starts.
    let victim = &segments[5];
    let stored = take_from_archive(&primary, victim);
    let mut copy = PgCluster::existing(&primary.agent.scratch, "holed-run", &dest).expect("restored cluster");
    copy.append_config("\narchive_mode = off\n").expect("switch archiving off");
    // pg_ctl may return once the copy is consistent (hot standby), or fail if it stops first.
    let started = copy.start();
    wait_for("recovery to stop at the hole", Duration::from_secs(120), || {
        // Never writable meanwhile: while it runs, it refuses writes.
        if let Ok(answer) = copy.psql("INSERT INTO orders VALUES (0, -1) RETURNING 'written'") {
            panic!("the copy accepted a write with a hole in its WAL: {answer}");
        }
        !postmaster_running(&dest)
    });
    let log = std::fs::read_to_string(&copy.log_file).unwrap_or_default();
    assert!(log.contains("FATAL") && log.contains(victim.as_str()), "start: {started:?}\nlog:\n{log}");
    assert!(log.contains(&format!("WAL segment {victim} is missing from the archive")), "log:\n{log}");
    assert!(!log.contains("selected new timeline ID"), "the copy promoted:\n{log}");
    assert!(dest.join("recovery.signal").exists(), "the copy left recovery");
    let note = std::fs::read_to_string(dest.join("pgec2-recovery-failure")).expect("the failure note");
    assert!(note.contains(victim.as_str()), "{note}");

    // With the segment back, the same data directory recovers everything and promotes.
    put_back(&primary, victim, stored);
    copy.start().expect("start again once the segment is back");
    wait_for("the copy to finish recovery", Duration::from_secs(120), || {
        copy.psql("SELECT pg_is_in_recovery()").is_ok_and(|answer| answer == "f")
    });
    assert_eq!(order_count(&copy), all_orders, "every committed row is back");
    assert!(!dest.join("pgec2-recovery-failure").exists(), "the failure note outlived the fix");
    copy.stop().expect("stop");
}

#[test]
fn the_end_of_the_archive_promotes_and_probes_for_future_histories_stay_quiet() {
    let (primary, segments) = primary_with_segments_after_a_backup();
    let all_orders = order_count(&primary.cluster);
    let (dest, output) = primary.restore("probed", "LATEST", &[]);
    assert_success("backup-fetch", &output);
    let after_the_end = next_segment(segments.last().expect("segments"));
    for (file, into) in [("0000000A.history", "RECOVERYHISTORY"), (after_the_end.as_str(), "RECOVERYXLOG")] {
        let probe = wal_fetch(&primary, file, &dest, into);
        assert_eq!(probe.status.code(), Some(1), "{file}: {}", stderr(&probe));
        assert_eq!(stderr(&probe), "", "{file}: a normal miss is quiet");
    }
    // A miss in the middle, by hand: the hole answer, without a server.
    let victim = &segments[3];
    let stored = take_from_archive(&primary, victim);
    let hole = wal_fetch(&primary, victim, &dest, "RECOVERYXLOG");
    assert_eq!(hole.status.code(), Some(255), "{}", stderr(&hole));
    assert!(stderr(&hole).starts_with(&format!("error: WAL segment {victim} is missing")), "{}", stderr(&hole));
    assert!(stderr(&hole).contains(&segments[4]), "names the later segment it found: {}", stderr(&hole));
    put_back(&primary, victim, stored);
    std::fs::remove_file(dest.join("pgec2-recovery-failure")).expect("the note of the hand-made miss");

    let mut restored = backup_support::start_restored(&primary.agent, "probed", &dest);
    assert_eq!(order_count(&restored), all_orders, "recovery to the end replays every segment");
    restored.stop().expect("stop");
}

#[test]
fn a_miss_before_the_recovery_target_is_a_hole_and_a_read_ahead_past_it_is_quiet() {
    let (primary, segments) = primary_with_segments_after_a_backup();
    let last = segments.last().expect("segments");
    let after_the_end = next_segment(last);

    // The target lies at the start of the segment after the archive's end: it is needed.
    let target = primary.cluster.psql("SELECT pg_current_wal_lsn()").expect("lsn");
    let (dest, output) = primary.restore("targeted", "LATEST", &["--target-lsn", &target]);
    assert_success("backup-fetch to an LSN", &output);
    let miss = wal_fetch(&primary, &after_the_end, &dest, "RECOVERYXLOG");
    assert_eq!(miss.status.code(), Some(255), "{}", stderr(&miss));
    let message = stderr(&miss);
    assert!(message.contains(&after_the_end) && message.contains("recovery_target_lsn"), "{message}");

    // Inside the last segment: PostgreSQL may read ahead past it; that miss is not needed.
    let size = SegmentSize::default();
    let (_, number) = size.parse_segment(last).expect("segment");
    let inside = pgec2_core::wal::Lsn(size.start_of(number).0 + 0x100).to_string();
    let (dest, output) = primary.restore("inside", "LATEST", &["--target-lsn", &inside]);
    assert_success("backup-fetch to an LSN in the last segment", &output);
    let read_ahead = wal_fetch(&primary, &after_the_end, &dest, "RECOVERYXLOG");
    assert_eq!(read_ahead.status.code(), Some(1), "{}", stderr(&read_ahead));
    assert_eq!(stderr(&read_ahead), "");
}

#[test]
fn a_later_timeline_that_branched_after_a_missing_segment_proves_it_a_hole() {
    let (primary, segments) = primary_with_segments_after_a_backup();
    let (dest, output) = primary.restore("branched", "LATEST", &[]);
    assert_success("backup-fetch", &output);

    // Meanwhile timeline 2 branched off timeline 1 inside segments[8] (its history file is
    // archived), and timeline 1's segments from segments[5] on are lost: nothing later of
    // timeline 1 is left, only the history says that timeline 1 went on past segments[5].
    let size = SegmentSize::default();
    let (_, branch_segment) = size.parse_segment(&segments[8]).expect("segment");
    let switch_point = pgec2_core::wal::Lsn(size.start_of(branch_segment).0 + 0x100);
    let history = format!("1\t{switch_point}\tno recovery target specified\n");
    let none = pgec2_core::compression::Compression { algorithm: pgec2_core::compression::Algorithm::None, level: 0 };
    let (sealed, _) = pgec2_core::envelope::seal(history.as_bytes(), none).expect("seal");
    let rt = runtime();
    let archive = rt.block_on(primary.agent.archive());
    let key = archive.layout.wal_file("00000002.history").expect("key");
    rt.block_on(archive.storage.put(&key, sealed.into(), pgec2_core::storage::PutMode::CreateNew)).expect("history");
    for lost in &segments[5..] {
        take_from_archive(&primary, lost);
    }

    let mut copy = PgCluster::existing(&primary.agent.scratch, "branched-run", &dest).expect("restored cluster");
    copy.append_config("\narchive_mode = off\n").expect("switch archiving off");
    let started = copy.start();
    wait_for("recovery to stop at the hole", Duration::from_secs(120), || !postmaster_running(&dest));
    let log = std::fs::read_to_string(&copy.log_file).unwrap_or_default();
    let victim = &segments[5];
    assert!(log.contains(&format!("WAL segment {victim} is missing from the archive")), "{started:?}\n{log}");
    assert!(log.contains("00000002.history says the timeline went on to"), "{log}");
    assert!(!log.contains("selected new timeline ID"), "the copy promoted:\n{log}");
}
