//! The operator's restore check (before any instance is launched) against a source archive
//! whose WAL ends in a streamed `.partial`: `spec.bootstrap.recovery.target.lsn` up to where the
//! partial ends is reachable, one byte past it waits with a message naming the target, the
//! archive and its end.

mod fake_cloud;

use bytes::Bytes;
use pgec2_api::fixtures::{host, policy};
use pgec2_api::{BackupPolicy, PostgresHost, RecoveryTarget};
use pgec2_core::catalog::{self, BackupInfo};
use pgec2_core::compression::Compression;
use pgec2_core::envelope;
use pgec2_core::layout::Archive;
use pgec2_core::storage::PutMode;
use pgec2_core::wal::SegmentSize;
use pgec2_operator::host::recovery_check::{self, Reachable};

use self::fake_cloud::{FakeCloud, Faults};

async fn store(archive: &Archive, file: &str, content: &[u8]) {
    let key = archive.layout.wal_file(file).expect("key");
    let (sealed, _) = envelope::seal(content, Compression::default()).expect("seal");
    archive.storage.put(&key, Bytes::from(sealed), PutMode::CreateNew).await.expect("store");
}

/// The archive of `default/db` under `policy`: backup b2 (segment 2), segments 2 to 6 and the
/// first 5000 bytes of segment 7 streamed (it ends at 0/7001388).
async fn source_with_a_streamed_tail(policy: &BackupPolicy) {
    let archive = pgec2_operator::archive::open_named(policy, "default/db").await.expect("open");
    let backup = BackupInfo::builder().named("b2").segments(2, 2).build();
    let manifest = archive.layout.backup_manifest("b2").expect("key");
    archive.storage.put(&manifest, Bytes::from_static(b"manifest"), PutMode::CreateNew).await.expect("manifest");
    let complete = archive.layout.backup_complete("b2").expect("key");
    catalog::put_json(&archive, &complete, &backup, PutMode::CreateNew).await.expect("commit");
    let size = SegmentSize::default();
    for segment in 2..=6 {
        store(&archive, &size.segment_name(1, segment), b"complete").await;
    }
    store(&archive, &format!("{}.partial", size.segment_name(1, 7)), &[1; 5000]).await;
}

fn restore_to_lsn(lsn: &str) -> PostgresHost {
    let target = RecoveryTarget { time: None, lsn: Some(lsn.to_string()), xid: None, name: None, immediate: None };
    host("pitr").policy("nightly").recovery_from("db", "nightly").target(target).build()
}

#[tokio::test]
async fn an_lsn_target_up_to_the_end_of_the_streamed_tail_is_reachable_and_one_past_it_waits_naming_the_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = policy("nightly").local(dir.path().to_str().expect("utf-8 path")).build();
    source_with_a_streamed_tail(&policy).await;
    let cloud = FakeCloud::new(Faults::default());

    let reachable =
        recovery_check::check(&restore_to_lsn("0/7001388"), &policy, cloud.as_ref()).await.expect("checked");
    assert_eq!(reachable, Ok(Reachable { backup: "b2".into(), snapshot_id: None }), "the stream holds WAL up to it");

    let past = recovery_check::check(&restore_to_lsn("0/7001389"), &policy, cloud.as_ref()).await.expect("checked");
    let unreachable = past.expect_err("one byte past the streamed tail");
    assert_eq!((unreachable.reason, unreachable.may_resolve), ("RecoveryTargetUnreachable", true));
    let message = &unreachable.message;
    assert!(message.contains("LSN 0/7001389 is after the last archived WAL in file://"), "{message}");
    assert!(message.contains("(LSN 0/7001388, where the streamed 000000010000000000000007.partial ends)"), "{message}");
}
