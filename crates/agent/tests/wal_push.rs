//! `wal-push` on real WAL files of an initdb'd PostgreSQL 15 cluster, against the file backend:
//! repeated pushes, modified content, concurrent pushes, history files, files that are not WAL.

mod wal_common;

use std::path::{Path, PathBuf};

use pgec2_testkit::PgCluster;
use wal_common::{Agent, archived_content, runtime, stored_bytes};

const FIRST_SEGMENT: &str = "000000010000000000000001";

/// A fake data directory `<scratch>/<name>` with `pg_wal/` and a copy of the cluster's pg_control.
fn data_dir_like(agent: &Agent, cluster: &PgCluster, name: &str) -> PathBuf {
    let dir = agent.scratch.subdir(&format!("{name}/pg_wal")).expect("pg_wal").parent().expect("data").to_path_buf();
    let global = agent.scratch.subdir(&format!("{name}/global")).expect("global");
    std::fs::copy(cluster.data_dir.join("global/pg_control"), global.join("pg_control")).expect("pg_control");
    dir
}

/// Writes `content` as `<data_dir>/pg_wal/<file>` (readable by the postgres user).
fn place(data_dir: &Path, file: &str, content: &[u8]) {
    std::fs::write(data_dir.join("pg_wal").join(file), content).expect("write wal file");
}

/// The verified content archived under `file`.
fn archived(agent: &Agent, file: &str) -> Option<Vec<u8>> {
    let rt = runtime();
    let archive = rt.block_on(agent.archive());
    rt.block_on(archived_content(&archive, file))
}

fn push(agent: &Agent, data_dir: &Path, file: &str) -> std::process::Output {
    agent.run(&["wal-push", &format!("pg_wal/{file}")], data_dir)
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn first_line(output: &std::process::Output) -> String {
    stderr(output).lines().next().unwrap_or_default().to_string()
}

fn setup() -> (Agent, PgCluster, Vec<u8>) {
    let agent = Agent::with_file_archive();
    let cluster = agent.archiving_cluster("primary", &[]);
    let segment = std::fs::read(cluster.data_dir.join("pg_wal").join(FIRST_SEGMENT)).expect("initdb's first segment");
    (agent, cluster, segment)
}

/// The segment with one byte changed past its page header (still a valid segment of this cluster).
fn modified(segment: &[u8], at: usize) -> Vec<u8> {
    let mut copy = segment.to_vec();
    copy[at] ^= 0xFF;
    copy
}

#[test]
fn wal_push_of_the_same_segment_twice_succeeds() {
    let (agent, cluster, segment) = setup();
    for attempt in 1..=2 {
        let output = push(&agent, &cluster.data_dir, FIRST_SEGMENT);
        assert!(output.status.success(), "attempt {attempt}: {}", stderr(&output));
    }
    assert_eq!(archived(&agent, FIRST_SEGMENT).as_deref(), Some(segment.as_slice()));
}

#[test]
fn wal_push_refuses_different_content_for_same_segment() {
    let (agent, cluster, segment) = setup();
    assert!(push(&agent, &cluster.data_dir, FIRST_SEGMENT).status.success());
    let rt = runtime();
    let archive = rt.block_on(agent.archive());
    let before = rt.block_on(stored_bytes(&archive, FIRST_SEGMENT));

    let other = data_dir_like(&agent, &cluster, "other");
    place(&other, FIRST_SEGMENT, &modified(&segment, 100_000));
    let output = push(&agent, &other, FIRST_SEGMENT);

    assert!(!output.status.success());
    let message = first_line(&output);
    assert!(message.contains("refusing to overwrite") && message.contains(FIRST_SEGMENT), "{message}");
    assert_eq!(rt.block_on(stored_bytes(&archive, FIRST_SEGMENT)), before, "the archived object is unchanged");
}

#[test]
fn concurrent_pushes_of_different_content_store_exactly_one() {
    let (agent, cluster, segment) = setup();
    let variants: Vec<Vec<u8>> = (0..2).map(|n| modified(&segment, 50_000 + n)).collect();
    let dirs: Vec<PathBuf> = (0..2).map(|n| data_dir_like(&agent, &cluster, &format!("racer{n}"))).collect();
    for (dir, content) in dirs.iter().zip(&variants) {
        place(dir, FIRST_SEGMENT, content);
    }
    let outputs: Vec<std::process::Output> = std::thread::scope(|scope| {
        let handles: Vec<_> = dirs.iter().map(|dir| scope.spawn(|| push(&agent, dir, FIRST_SEGMENT))).collect();
        handles.into_iter().map(|handle| handle.join().expect("pusher")).collect()
    });

    let winners: Vec<usize> = (0..2).filter(|&n| outputs[n].status.success()).collect();
    assert_eq!(winners.len(), 1, "exactly one push wins: {:?}", outputs.iter().map(stderr).collect::<Vec<_>>());
    let loser = 1 - winners[0];
    assert!(first_line(&outputs[loser]).contains("refusing to overwrite"), "{}", stderr(&outputs[loser]));
    let stored = archived(&agent, FIRST_SEGMENT);
    assert_eq!(stored.as_deref(), Some(variants[winners[0]].as_slice()), "the winner's content is archived");
}

#[test]
fn wal_push_never_overwrites_a_history_file() {
    let (agent, cluster, _) = setup();
    let history = "00000002.history";
    place(&cluster.data_dir, history, b"1\t0/3000000\tno recovery target specified\n");
    assert!(push(&agent, &cluster.data_dir, history).status.success());
    assert!(push(&agent, &cluster.data_dir, history).status.success(), "same content again is fine");

    place(&cluster.data_dir, history, b"1\t0/4000000\tno recovery target specified\n");
    let output = push(&agent, &cluster.data_dir, history);

    assert!(!output.status.success());
    assert!(first_line(&output).contains("refusing to overwrite"), "{}", stderr(&output));
    assert_eq!(archived(&agent, history).as_deref(), Some(b"1\t0/3000000\tno recovery target specified\n".as_slice()));
}

#[test]
fn wal_push_refuses_files_that_are_not_wal_of_their_name() {
    let (agent, cluster, segment) = setup();
    let other = data_dir_like(&agent, &cluster, "other");
    place(&other, "000000010000000000000007", &segment);
    place(&other, "junk.txt", b"hello");
    place(&other, "000000010000000000000008", &segment[..20]);

    for (file, expected) in [
        ("000000010000000000000007", "segment 000000010000000000000001 and not 000000010000000000000007"),
        ("junk.txt", "not a WAL file name"),
        ("000000010000000000000008", "shorter than a page header"),
    ] {
        let output = push(&agent, &other, file);
        assert!(!output.status.success(), "{file} was archived");
        assert!(first_line(&output).contains(expected), "{file}: {}", stderr(&output));
    }
    assert_eq!(archived(&agent, "000000010000000000000007"), None);
}
