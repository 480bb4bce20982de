use chrono::TimeZone;

use super::*;
use crate::walg::Sentinel;

const SEGMENT: u64 = 16 * 1024 * 1024;

fn at(hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, hour, 0, 0).single().expect("time")
}

/// A pgec2 backup starting at `segment`, finished at `hour`.
fn own(segment: u64, hour: u32, permanent: bool) -> BackupInfo {
    serde_json::from_value(serde_json::json!({
        "name": format!("own-{segment}"), "start_time": at(hour), "finish_time": at(hour),
        "start_lsn": Lsn(segment * SEGMENT + 0x28), "finish_lsn": Lsn(segment * SEGMENT + 0x1000), "timeline": 1,
        "pg_version": 150000, "system_identifier": "42", "data_bytes": 1, "stored_bytes": 1,
        "permanent": permanent, "wal_segment_size": SEGMENT,
    }))
    .expect("backup info")
}

/// A wal-g backup starting at `segment`, finished at `hour`.
fn walg(segment: u64, hour: u32, permanent: bool, increment_from: Option<&str>) -> WalgBackup {
    let sentinel: Sentinel = serde_json::from_value(serde_json::json!({
        "LSN": segment * SEGMENT + 0x28, "PgVersion": 150000, "FinishTime": at(hour), "StartTime": at(hour),
        "IsPermanent": permanent, "IncrementFrom": increment_from,
    }))
    .expect("sentinel");
    WalgBackup { name: name_of(segment), sentinel }
}

fn name_of(segment: u64) -> String {
    format!("base_{}", SegmentSize::default().segment_name(1, segment))
}

fn wal_objects(segments: std::ops::Range<u64>) -> Vec<(String, String)> {
    let mut objects: Vec<(String, String)> = segments
        .map(|segment| SegmentSize::default().segment_name(1, segment))
        .map(|name| (name.clone(), format!("wal_005/{name}.lz4")))
        .collect();
    objects.push(("00000002.history".to_string(), "wal_005/00000002.history.lz4".to_string()));
    objects
}

#[test]
fn retain_counts_wal_g_backups_toward_the_window() {
    let walg_backups = [walg(2, 1, false, None), walg(5, 2, false, None)];
    let committed = [own(8, 3, false), own(11, 4, false)];
    let window = window(&Policy::Retain(3), &committed, &walg_backups);
    assert_eq!(window.own_policy, Policy::Retain(2), "both pgec2 backups are among the newest three");
    assert_eq!(window.walg_kept, vec![name_of(5)]);
    assert_eq!(window.walg_over, vec![name_of(2)]);
}

#[test]
fn pgec2_keeps_its_newest_backup_even_when_the_window_holds_only_wal_g_backups() {
    let walg_backups = [walg(8, 3, false, None), walg(11, 4, false, None)];
    let window = window(&Policy::Retain(1), &[own(2, 1, false)], &walg_backups);
    assert_eq!(window.own_policy, Policy::Retain(1));
    assert_eq!(window.walg_over, vec![name_of(8)], "the older wal-g backup is over the window");
}

#[test]
fn permanent_wal_g_backups_are_neither_counted_nor_over_the_window() {
    let walg_backups = [walg(2, 1, true, None), walg(5, 2, false, None)];
    let window = window(&Policy::Retain(1), &[own(8, 3, false)], &walg_backups);
    assert_eq!(window.walg_kept, vec![name_of(2)]);
    assert_eq!(window.walg_over, vec![name_of(5)]);
}

#[test]
fn before_a_wal_g_backup_name_applies_to_both_kinds() {
    let walg_backups = [walg(2, 1, false, None), walg(5, 2, false, None)];
    let boundary = Policy::Before(Boundary::Backup(name_of(5)));
    let window = window(&boundary, &[own(1, 0, false), own(8, 3, false)], &walg_backups);
    assert_eq!(window.own_policy, Policy::Before(Boundary::Time(at(2))), "pgec2's boundary: when it started");
    assert_eq!(window.walg_over, vec![name_of(2)]);
    let window = window_for_time(&walg_backups);
    assert_eq!(window.walg_over, vec![name_of(2), name_of(5)]);
}

fn window_for_time(walg_backups: &[WalgBackup]) -> Window {
    window(&Policy::Before(Boundary::Time(at(3))), &[own(8, 3, false)], walg_backups)
}

#[test]
fn without_the_flag_nothing_under_the_wal_g_prefix_is_deleted() {
    let walg_backups = [walg(2, 1, false, None), walg(5, 2, false, None)];
    let window = window(&Policy::Retain(1), &[own(8, 3, false)], &walg_backups);
    let plan =
        plan(&window, &walg_backups, false, Some(Lsn(8 * SEGMENT)), &[], &wal_objects(2..10), SegmentSize::default());
    assert!(plan.backups.is_empty() && plan.wal.is_empty() && plan.leftovers.is_empty());
    assert_eq!(plan.over_window_kept, vec![name_of(2), name_of(5)]);
}

#[test]
fn with_the_flag_old_wal_g_backups_leftovers_and_wal_before_the_oldest_kept_backup_go() {
    let walg_backups = [walg(2, 1, false, None), walg(5, 2, false, None)];
    let window = window(&Policy::Retain(2), &[own(8, 3, false)], &walg_backups);
    let dirs = [name_of(1), name_of(2), name_of(5), name_of(9)];
    let plan =
        plan(&window, &walg_backups, true, Some(Lsn(8 * SEGMENT)), &dirs, &wal_objects(1..10), SegmentSize::default());
    assert_eq!(plan.backups, vec![name_of(2)]);
    assert_eq!(
        plan.leftovers,
        vec![name_of(1)],
        "an unfinished directory after the floor may be a running backup-push"
    );
    let expected: Vec<String> = wal_objects(1..5).into_iter().filter(|(n, _)| n.len() == 24).map(|(_, k)| k).collect();
    assert_eq!(plan.wal, expected, "WAL from the kept wal-g backup's start on stays, and the history file");
}

#[test]
fn a_kept_delta_backup_keeps_the_backups_it_is_built_on() {
    let base = name_of(2);
    let walg_backups = [walg(2, 1, false, None), walg(4, 2, false, Some(&base)), walg(9, 5, false, Some(&name_of(4)))];
    let window = window(&Policy::Retain(1), &[own(8, 3, false)], &walg_backups);
    assert_eq!(window.walg_over, vec![base.clone()], "deltas are not counted");
    let plan =
        plan(&window, &walg_backups, true, Some(Lsn(8 * SEGMENT)), &[], &wal_objects(1..10), SegmentSize::default());
    assert!(plan.backups.is_empty(), "the delta started after pgec2's oldest kept backup keeps its chain: {plan:?}");
    assert_eq!(plan.wal.len(), 1, "only WAL before the chain's base goes: {plan:?}");

    let old_deltas = [walg(2, 1, false, None), walg(4, 2, false, Some(&base))];
    let old = super::plan(
        &window,
        &old_deltas,
        true,
        Some(Lsn(8 * SEGMENT)),
        &[],
        &wal_objects(1..10),
        SegmentSize::default(),
    );
    assert_eq!(old.backups, vec![base, name_of(4)], "an old chain goes whole");
}

/// A wal-g archive in memory with the backups `walg_backups` (a sentinel and two partitions
/// each) and WAL segments 1 to 9, behind a fault-injecting wrapper.
async fn stored_archive(walg_backups: &[WalgBackup]) -> (WalgArchive, crate::storage::fault::FaultHandle) {
    use crate::storage::fault::FaultInjecting;
    use crate::storage::memory::MemoryStorage;
    use crate::storage::{ObjectKey, PutMode, Storage};
    let store = FaultInjecting::new(MemoryStorage::new());
    let handle = store.handle();
    let mut keys: Vec<String> = walg_backups
        .iter()
        .flat_map(|backup| {
            let dir = format!("{BACKUPS_DIR}{}", backup.name);
            [format!("{dir}/tar_partitions/part_001.tar.lz4"), format!("{dir}/tar_partitions/pg_control.tar.lz4")]
        })
        .collect();
    keys.extend(wal_objects(1..10).into_iter().map(|(_, key)| key));
    for key in keys {
        store.put(&ObjectKey::new(&key).expect("key"), "x".into(), PutMode::Overwrite).await.expect("put");
    }
    for backup in walg_backups {
        let sentinel = serde_json::json!({"LSN": backup.sentinel.start_lsn, "PgVersion": 150000, "FinishTime": backup.sentinel.finish_time});
        let key = format!("{BACKUPS_DIR}{}{SENTINEL_SUFFIX}", backup.name);
        let body = serde_json::to_vec(&sentinel).expect("json");
        store.put(&ObjectKey::new(&key).expect("key"), body.into(), PutMode::Overwrite).await.expect("put");
    }
    (WalgArchive::new(std::sync::Arc::new(store)), handle)
}

#[tokio::test]
async fn an_interrupted_deletion_never_leaves_a_listed_wal_g_backup_and_the_next_run_finishes_it() {
    use crate::storage::fault::{Fault, Operation};
    let walg_backups = [walg(2, 1, false, None), walg(5, 2, false, None)];
    let (archive, faults) = stored_archive(&walg_backups).await;
    let window = window(&Policy::Retain(2), &[own(8, 3, false)], &walg_backups);
    let size = SegmentSize::default();
    let floor = Some(Lsn(8 * SEGMENT));
    let dirs = archive.backup_dirs().await.expect("dirs");
    let wal = archive.wal_files().await.expect("wal");
    let first = plan(&window, &walg_backups, true, floor, &dirs, &wal, size);
    assert_eq!(first.backups, vec![name_of(2)]);

    faults.add(
        crate::storage::fault::Rule::new(Fault::Permanent).on(Operation::Delete).matching(|key| key.contains("part_")),
    );
    apply(&archive, &first).await.expect_err("the partition's deletion fails");
    let listed: Vec<String> = archive.backups().await.expect("backups").into_iter().map(|backup| backup.name).collect();
    assert_eq!(listed, vec![name_of(5)], "the half-deleted backup lost its sentinel first, so it is not listed");

    faults.clear();
    let remaining = archive.backups().await.expect("backups");
    let dirs = archive.backup_dirs().await.expect("dirs");
    let wal = archive.wal_files().await.expect("wal");
    let window = super::window(&Policy::Retain(2), &[own(8, 3, false)], &remaining);
    let second = plan(&window, &remaining, true, floor, &dirs, &wal, size);
    assert_eq!(second.leftovers, vec![name_of(2)], "the rest of it is a leftover now");
    apply(&archive, &second).await.expect("apply");
    assert_eq!(archive.backup_dirs().await.expect("dirs"), vec![name_of(5)]);
    let wal_left: Vec<String> = archive.wal_files().await.expect("wal").into_iter().map(|(name, _)| name).collect();
    assert_eq!(wal_left.len(), 6, "segments 5 to 9 and the history file stay: {wal_left:?}");
}
