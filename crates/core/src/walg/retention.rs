//! Retention across pgec2's and wal-g's backups (`delete … [--include-wal-g]`).
//!
//! wal-g's full backups count toward the window: `retain N` keeps the newest N unpinned backups
//! of both kinds, `before` applies its boundary to both. By default nothing under the wal-g
//! prefix is deleted: wal-g backups over the window are only reported. With `--include-wal-g`
//! they are deleted, each sentinel first (so a half-deleted wal-g backup is never listed as
//! restorable) and then its objects, with wal-g's WAL older than the oldest kept backup. wal-g's
//! permanent backups, the bases of kept delta backups, and the WAL they need are never deleted.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{BACKUPS_DIR, SENTINEL_SUFFIX, WalgArchive, WalgBackup, WalgError};
use crate::catalog::{BackupInfo, WalArchive};
use crate::retention::{Boundary, DeletionPlan, Policy};
use crate::wal::{Lsn, SegmentSize};

/// The window both kinds of backup share.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    /// The policy for pgec2's own backups, with wal-g's in the window counted.
    pub own_policy: Policy,
    /// wal-g backups inside the window (or permanent): kept whatever the flag.
    pub walg_kept: Vec<String>,
    /// wal-g backups over the window: deleted only with `--include-wal-g`.
    pub walg_over: Vec<String>,
}

/// Splits `walg`'s backups by `policy` and derives the policy for pgec2's own `committed` backups.
/// Never asks to delete every pgec2 backup: when all backups in the window are wal-g's, pgec2's
/// newest backup stays too.
pub fn window(policy: &Policy, committed: &[BackupInfo], walg: &[WalgBackup]) -> Window {
    let full: Vec<&WalgBackup> = walg.iter().filter(|backup| backup.sentinel.increment_from.is_none()).collect();
    let counted: Vec<&WalgBackup> = full.iter().copied().filter(|backup| !backup.sentinel.permanent).collect();
    let (own_policy, over): (Policy, BTreeSet<String>) = match policy {
        Policy::Retain(count) => {
            let mut newest: Vec<(DateTime<Utc>, Option<&str>)> = committed
                .iter()
                .filter(|backup| !backup.permanent)
                .map(|backup| (backup.finish_time, None))
                .chain(counted.iter().map(|backup| (finish(backup), Some(backup.name.as_str()))))
                .collect();
            newest.sort_by_key(|entry| std::cmp::Reverse(entry.0));
            let (inside, outside) = newest.split_at((*count).min(newest.len()));
            let own = inside.iter().filter(|(_, walg)| walg.is_none()).count();
            let own = if own == 0 && committed.iter().any(|backup| !backup.permanent) { 1 } else { own };
            let over = outside.iter().filter_map(|(_, walg)| walg.map(str::to_string)).collect();
            (Policy::Retain(own.max(1)), over)
        }
        Policy::Before(boundary) => {
            let (own_boundary, before) = walg_boundary(boundary, committed, walg);
            let over = counted.iter().filter(|backup| before(backup)).map(|backup| backup.name.clone()).collect();
            (Policy::Before(own_boundary), over)
        }
        Policy::Garbage | Policy::Everything => (policy.clone(), BTreeSet::new()),
    };
    let (walg_over, walg_kept) = full.iter().map(|backup| backup.name.clone()).partition(|name| over.contains(name));
    Window { own_policy, walg_kept, walg_over }
}

fn finish(backup: &WalgBackup) -> DateTime<Utc> {
    backup.sentinel.finish_time.unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Whether a wal-g backup lies before a boundary.
type Before<'a> = Box<dyn Fn(&WalgBackup) -> bool + 'a>;

/// pgec2's boundary for `boundary` (a wal-g backup's name becomes the time it started) and
/// which wal-g backups lie before it.
fn walg_boundary<'a>(
    boundary: &'a Boundary,
    committed: &'a [BackupInfo],
    walg: &'a [WalgBackup],
) -> (Boundary, Before<'a>) {
    match boundary {
        Boundary::Time(time) => (boundary.clone(), Box::new(move |backup| finish(backup) < *time)),
        Boundary::Backup(name) => {
            if let Some(named) = walg.iter().find(|backup| &backup.name == name) {
                let start = named.sentinel.start_lsn;
                let own = named.sentinel.start_time.map(Boundary::Time).unwrap_or_else(|| boundary.clone());
                return (own, Box::new(move |backup| backup.sentinel.start_lsn < start));
            }
            let start = committed.iter().find(|backup| &backup.name == name).map(|backup| backup.start_lsn.0);
            (boundary.clone(), Box::new(move |backup| start.is_some_and(|start| backup.sentinel.start_lsn < start)))
        }
    }
}

/// Takes out of `plan` the WAL from `floor` on (the start of the oldest wal-g backup left
/// listed, whose recovery replays pgec2's WAL after the switch).
pub fn keep_wal_from(plan: &mut DeletionPlan, wal: &WalArchive, floor: Lsn) {
    let below: BTreeSet<String> = wal.files_before(wal.segment_size.segment_of(floor)).into_iter().collect();
    plan.wal.retain(|name| below.contains(name));
}

/// What is deleted under the wal-g prefix.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct WalgPlan {
    /// wal-g backups deleted, oldest first: sentinel first, then every object under its name.
    pub backups: Vec<String>,
    /// Backup directories without a sentinel that start before the oldest kept backup (left by
    /// an interrupted deletion or an abandoned wal-g backup-push).
    pub leftovers: Vec<String>,
    /// wal-g WAL objects deleted (keys), oldest first.
    pub wal: Vec<String>,
    /// wal-g backups over the window kept because `--include-wal-g` was not given.
    pub over_window_kept: Vec<String>,
    /// wal-g's WAL below this segment goes, on every timeline (the log and segment part of its
    /// name, 16 hex digits); history files always stay.
    pub wal_boundary: Option<String>,
}

/// Plans the deletion under the wal-g prefix. `floor` is where the oldest kept pgec2 backup (or a
/// lease) needs WAL from; `None` when pgec2 keeps no backup. `dirs` are the backup directories
/// listed, `wal` the WAL objects (name without suffix, key).
pub fn plan(
    window: &Window,
    walg: &[WalgBackup],
    include: bool,
    floor: Option<Lsn>,
    dirs: &[String],
    wal: &[(String, String)],
    size: SegmentSize,
) -> WalgPlan {
    if !include {
        return WalgPlan { over_window_kept: window.walg_over.clone(), ..WalgPlan::default() };
    }
    let doomed = doomed_with_deltas(window, walg, floor);
    let kept_starts =
        walg.iter().filter(|backup| !doomed.contains(backup.name.as_str())).map(|b| Lsn(b.sentinel.start_lsn));
    let boundary = kept_starts.chain(floor).min().map(|lsn| size.segment_of(lsn));
    let named: BTreeSet<&str> = walg.iter().map(|backup| backup.name.as_str()).collect();
    let leftovers = dirs
        .iter()
        .filter(|dir| !named.contains(dir.as_str()))
        .filter(|dir| boundary.is_some_and(|boundary| start_segment(dir, size).is_some_and(|start| start < boundary)))
        .cloned()
        .collect();
    let mut wal_keys: Vec<(String, String)> = wal
        .iter()
        .filter(|(name, _)| {
            let segment = name.get(..24).and_then(|prefix| size.parse_segment(prefix).ok());
            !name.ends_with(".history")
                && boundary.zip(segment).is_some_and(|(boundary, (_, segment))| segment < boundary)
        })
        .cloned()
        .collect();
    wal_keys.sort();
    WalgPlan {
        backups: walg.iter().filter(|backup| doomed.contains(backup.name.as_str())).map(|b| b.name.clone()).collect(),
        leftovers,
        wal: wal_keys.into_iter().map(|(_, key)| key).collect(),
        over_window_kept: Vec::new(),
        wal_boundary: boundary.map(|segment| size.segment_name(1, segment)[8..].to_string()),
    }
}

/// The backups over the window, with the delta backups built on them that start before every
/// kept backup (pgec2's oldest from `floor`); a kept delta keeps the backups it is built on.
fn doomed_with_deltas<'a>(window: &'a Window, walg: &'a [WalgBackup], floor: Option<Lsn>) -> BTreeSet<&'a str> {
    let mut doomed: BTreeSet<&str> = window.walg_over.iter().map(String::as_str).collect();
    let cutoff = walg
        .iter()
        .filter(|backup| backup.sentinel.increment_from.is_none() && !doomed.contains(backup.name.as_str()))
        .map(|backup| Lsn(backup.sentinel.start_lsn))
        .chain(floor)
        .min();
    for delta in walg.iter().filter(|backup| backup.sentinel.increment_from.is_some()) {
        let base_doomed = delta.sentinel.increment_from.as_deref().is_some_and(|base| doomed.contains(base));
        if base_doomed && cutoff.is_none_or(|cutoff| Lsn(delta.sentinel.start_lsn) < cutoff) {
            doomed.insert(&delta.name);
        }
    }
    while let Some(base) = walg.iter().find_map(|backup| {
        let base = backup.sentinel.increment_from.as_deref()?;
        (!doomed.contains(backup.name.as_str()) && doomed.contains(base)).then_some(base)
    }) {
        doomed.remove(base);
    }
    doomed
}

/// The start segment in a wal-g backup's name (`base_<timeline><log><seg>`).
fn start_segment(name: &str, size: SegmentSize) -> Option<u64> {
    let segment = name.strip_prefix("base_")?.get(..24)?;
    size.parse_segment(segment).ok().map(|(_, number)| number)
}

/// Deletes what `plan` names: each backup's sentinel first, then its objects; then leftovers
/// and WAL. A failure stops at once: what is left is either still a whole backup (sentinel in
/// place) or an unlisted leftover that the next run removes.
pub async fn apply(walg: &WalgArchive, plan: &WalgPlan) -> Result<usize, WalgError> {
    let mut deleted = 0;
    for name in &plan.backups {
        walg.delete(&format!("{BACKUPS_DIR}{name}{SENTINEL_SUFFIX}")).await?;
        deleted += 1 + delete_under(walg, &format!("{BACKUPS_DIR}{name}/")).await?;
    }
    for name in &plan.leftovers {
        deleted += delete_under(walg, &format!("{BACKUPS_DIR}{name}/")).await?;
    }
    for key in &plan.wal {
        walg.delete(key).await?;
        deleted += 1;
    }
    Ok(deleted)
}

async fn delete_under(walg: &WalgArchive, prefix: &str) -> Result<usize, WalgError> {
    let objects = walg.list_keys(prefix).await?;
    for key in &objects {
        walg.delete(key).await?;
    }
    Ok(objects.len())
}

#[cfg(test)]
#[path = "retention_tests.rs"]
mod tests;
