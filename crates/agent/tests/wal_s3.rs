//! Continuous archiving to a real S3 API (moto) behind a fault-injecting TCP proxy, with a real
//! PostgreSQL 15: while the store resets connections or stalls, archive_command fails or times
//! out and PostgreSQL keeps the segments; nothing is marked done that is not stored; archiving
//! resumes by itself when the store comes back.

mod wal_common;

use std::time::Duration;

use pgec2_core::layout::Archive;
use pgec2_testkit::{FaultProxy, MotoServer, ProxyMode};
use wal_common::{Agent, archived_content, archiver_stats, done_files, switch_segment, wait_for, wait_until_archived};

const BUCKET: &str = "wal-archive";
const PREFIX: &str = "default/db";

/// An agent archiving through `endpoint`, with short deadlines so that an outage fails
/// archive_command within seconds.
fn s3_agent(moto: &MotoServer, endpoint: &str) -> Agent {
    let extra = "timeout_secs = 1\n\n[transfer]\ncommand_timeout_secs = 3\n";
    wal_common::s3_agent(moto, BUCKET, PREFIX, endpoint, extra)
}

/// The archive read straight from moto, past the proxy.
async fn direct_archive(moto: &MotoServer) -> Archive {
    wal_common::direct_s3_archive(moto, BUCKET, PREFIX).await
}

#[test]
fn archiving_to_s3_survives_outages_and_marks_nothing_done_that_is_not_stored() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let moto = MotoServer::start().expect("moto");
    rt.block_on(moto.create_bucket(BUCKET)).expect("bucket");
    let proxy = rt.block_on(FaultProxy::in_front_of(&moto)).expect("proxy");
    let agent = s3_agent(&moto, &proxy.endpoint());
    let archive = rt.block_on(direct_archive(&moto));
    let mut primary = agent.archiving_cluster("primary", &[]);
    primary.start().expect("start");
    wait_until_archived(&primary, &switch_segment(&primary));

    let mut held_back = Vec::new();
    for outage in [ProxyMode::Reset, ProxyMode::Stall] {
        proxy.set(outage);
        let failed_before = archiver_stats(&primary).1;
        let segment = switch_segment(&primary);
        wait_for(&format!("archive_command to fail under {outage:?}"), Duration::from_secs(60), || {
            archiver_stats(&primary).1 > failed_before
        });
        assert!(!done_files(&primary).contains(&segment), "{segment} marked done while the store is down");
        assert_eq!(rt.block_on(archived_content(&archive, &segment)), None);
        held_back.push(segment);
    }

    proxy.set(ProxyMode::PassThrough);
    let last = switch_segment(&primary);
    wait_until_archived(&primary, &last);

    for segment in &held_back {
        assert!(rt.block_on(archived_content(&archive, segment)).is_some(), "{segment} archived after the outage");
    }
    let mut compared = 0;
    for file in done_files(&primary) {
        let Ok(local) = std::fs::read(primary.data_dir.join("pg_wal").join(&file)) else { continue };
        assert!(rt.block_on(archived_content(&archive, &file)) == Some(local), "{file} is done but not stored intact");
        compared += 1;
    }
    assert!(compared >= 3, "only {compared} segments compared");

    // And back through the proxy: wal-fetch restores from S3 byte for byte.
    let data_dir = agent.scratch.subdir("restore/pg_wal").expect("pg_wal").parent().expect("data dir").to_path_buf();
    let output = agent.run(&["wal-fetch", &last, "pg_wal/RECOVERYXLOG"], &data_dir);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let local = std::fs::read(primary.data_dir.join("pg_wal").join(&last)).expect("local segment");
    assert!(std::fs::read(data_dir.join("pg_wal/RECOVERYXLOG")).expect("restored") == local);
}
