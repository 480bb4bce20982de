//! The streamed tail in recovery (`wal-fetch` and `wal-receive`'s `.partial` objects): used at
//! the end of the archive only, padded to a whole segment; never over a hole; a complete segment
//! always wins over its partial; an LSN target up to where the partial ends is reached through it.

mod backup_support;
mod wal_common;

use std::path::{Path, PathBuf};

use backup_support::run_agent;
use bytes::Bytes;
use pgec2_core::compression::Compression;
use pgec2_core::envelope;
use pgec2_core::storage::PutMode;
use wal_common::{Agent, runtime, segment_name, synthetic_segment};

const SYSTEM: u64 = 7_300_000_000_000_000_001;
const SEGMENT: usize = 16 << 20;

fn store(agent: &Agent, file: &str, content: &[u8]) {
    let rt = runtime();
    let archive = rt.block_on(agent.archive());
    let key = archive.layout.wal_file(file).expect("key");
    let (sealed, _) = envelope::seal(content, Compression::default()).expect("seal");
    rt.block_on(archive.storage.put(&key, Bytes::from(sealed), PutMode::CreateNew)).expect("store");
}

/// A data directory in archive recovery (`recovery.signal`), owned by postgres.
fn recovering_data_dir(agent: &Agent) -> PathBuf {
    let data_dir = agent.scratch.subdir("data").expect("data dir");
    agent.scratch.subdir("data/pg_wal").expect("pg_wal");
    std::fs::write(data_dir.join("recovery.signal"), "").expect("recovery.signal");
    data_dir
}

fn wal_fetch(agent: &Agent, file: &str, data_dir: &Path) -> (i32, Option<Vec<u8>>) {
    let dest = data_dir.join("pg_wal").join("RECOVERYXLOG");
    let _ = std::fs::remove_file(&dest);
    let output = run_agent(agent, &["wal-fetch", file, dest.to_str().expect("utf-8 path")], &[], true);
    (output.status.code().unwrap_or(-1), std::fs::read(&dest).ok())
}

#[test]
fn at_the_end_of_the_archive_the_streamed_partial_is_restored_padded_to_a_whole_segment() {
    let agent = Agent::with_file_archive();
    let data_dir = recovering_data_dir(&agent);
    store(&agent, &segment_name(2), &synthetic_segment(SYSTEM, 2));
    let streamed = synthetic_segment(SYSTEM, 3);
    store(&agent, &format!("{}.partial", segment_name(3)), &streamed);

    let (code, restored) = wal_fetch(&agent, &segment_name(3), &data_dir);
    assert_eq!(code, 0, "the partial tail is restored");
    let restored = restored.expect("the segment was written");
    assert_eq!(restored.len(), SEGMENT);
    assert_eq!(&restored[..streamed.len()], &streamed[..]);
    assert!(restored[streamed.len()..].iter().all(|byte| *byte == 0), "padded with zeros");

    let (code, _) = wal_fetch(&agent, &segment_name(4), &data_dir);
    assert_eq!(code, 1, "after the tail: the end of the archive");
}

#[test]
fn a_streamed_partial_is_never_used_over_a_hole_and_a_complete_segment_wins_over_its_partial() {
    let agent = Agent::with_file_archive();
    let data_dir = recovering_data_dir(&agent);
    let complete = synthetic_segment(SYSTEM, 2);
    store(&agent, &segment_name(2), &complete);
    store(&agent, &format!("{}.partial", segment_name(2)), &complete[..1000]);
    store(&agent, &format!("{}.partial", segment_name(3)), &synthetic_segment(SYSTEM, 3));
    store(&agent, &segment_name(4), &synthetic_segment(SYSTEM, 4));

    let (code, restored) = wal_fetch(&agent, &segment_name(2), &data_dir);
    assert_eq!((code, restored.as_deref()), (0, Some(&complete[..])), "the complete segment, not its partial");
    let (code, restored) = wal_fetch(&agent, &segment_name(3), &data_dir);
    assert_eq!(code, 255, "segment 3 is a hole: segment 4 exists after it");
    assert_eq!(restored, None, "nothing was restored over the hole");
}

#[test]
fn an_lsn_target_up_to_the_streamed_end_restores_the_partial_and_one_past_it_stops_recovery_naming_the_end() {
    let agent = Agent::with_file_archive();
    let data_dir = recovering_data_dir(&agent);
    store(&agent, &segment_name(2), &synthetic_segment(SYSTEM, 2));
    let streamed = synthetic_segment(SYSTEM, 3);
    store(&agent, &format!("{}.partial", segment_name(3)), &streamed);
    let streamed_end = format!("0/{:X}", (3 << 24) + streamed.len());
    let target = |lsn: &str| {
        std::fs::write(data_dir.join("postgresql.auto.conf"), format!("recovery_target_lsn = '{lsn}'\n"))
            .expect("write the target")
    };

    target(&streamed_end);
    let (code, restored) = wal_fetch(&agent, &segment_name(3), &data_dir);
    assert_eq!(code, 0, "the target lies in the streamed tail");
    assert_eq!(restored.as_deref().map(|restored| &restored[..streamed.len()]), Some(&streamed[..]));

    target(&format!("0/{:X}", (3 << 24) + streamed.len() + 1));
    let (code, restored) = wal_fetch(&agent, &segment_name(3), &data_dir);
    assert_eq!(code, 255, "one byte past the tail: recovery must stop, not promote");
    assert_eq!(restored, None);
    let note = std::fs::read_to_string(data_dir.join("pgec2-recovery-failure")).expect("the failure note");
    assert!(
        note.contains(&format!("beyond the end of the streamed {}.partial ({streamed_end})", segment_name(3))),
        "{note}"
    );
}
