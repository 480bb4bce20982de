//! The agent's side of leases ([`pgec2_core::leases`]): `backup-fetch` takes one before it
//! checks what it will restore and keeps it renewed while it checks and copies; the restored cluster's `wal-fetch` calls
//! renew it while recovery or standby replay runs. An incremental `backup-push` takes one on
//! its parent (retention keeps the parent's chain with it) for as long as it runs.
//!
//! The lease is also kept in the restored data directory as [`LEASE_FILE`], so that `wal-fetch`
//! knows its id and expiry without reading the archive: on the normal path a renewal costs one
//! small local read. `wal-fetch` writes to the archive only when less than half of the lease's
//! lifetime is left, or once after the restore to say the backup itself is no longer read.
//! Renewals move `wal_from` up to the segment of the latest restartpoint's redo position
//! (`pg_control`), so a long-running standby does not hold WAL it will never read again.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::Utc;
use pgec2_core::catalog::{BackupInfo, RestorePlan};
use pgec2_core::layout::Archive;
use pgec2_core::leases::{self, LEASE_LIFETIME, Lease, LeaseKind};
use pgec2_core::wal::{Lsn, SegmentSize};

use crate::backup::BackupError;
use crate::backup::destination::Destination;
use crate::config::AgentConfig;

/// The lease of a restored data directory, relative to it (never copied into backups).
pub const LEASE_FILE: &str = "pgec2_lease.json";

/// Deadline of one renewal by `wal-fetch`; a renewal that fails is retried on the next call.
const RENEWAL_TIMEOUT: Duration = Duration::from_secs(30);

/// A lease held by a running `backup-fetch`, renewed in the background until dropped.
#[derive(Debug)]
pub struct RestoreLease {
    pub lease: Lease,
    renewer: tokio::task::JoinHandle<()>,
}

impl Drop for RestoreLease {
    fn drop(&mut self) {
        self.renewer.abort();
    }
}

/// Takes the lease for restoring `plan` into `destination` and keeps its copy there: see
/// [`take_for_restore`] and [`RestoreLease::keep_in`].
pub async fn hold_for_restore(
    archive: &Archive,
    plan: &RestorePlan,
    destination: &Destination,
    standby: bool,
) -> Result<RestoreLease, BackupError> {
    let lease = take_for_restore(archive, plan, &destination.data_dir, standby).await;
    lease.keep_in(destination)?;
    Ok(lease)
}

/// Takes the lease for restoring `plan` into `data_dir`: stored in the archive, renewed every
/// quarter lifetime while the restore runs. Nothing is written locally, so a restore takes it
/// before it checks what it will read (retention then keeps the backup, its chain and its WAL
/// while they are checked). A lease the archive does not accept is a warning on stderr, not a
/// failed restore.
pub async fn take_for_restore(archive: &Archive, plan: &RestorePlan, data_dir: &Path, standby: bool) -> RestoreLease {
    let backup = &plan.backup;
    let kind = if standby { LeaseKind::Standby } else { LeaseKind::Restore };
    let wal_from = backup.segment_size().segment_name(backup.timeline, backup.start_segment());
    let data_dir = data_dir.display().to_string();
    let lease = Lease::new(kind, &host_name(), &data_dir, &backup.name, wal_from, backup.wal_segment_size, Utc::now());
    if let Err(error) = leases::write(archive, &lease).await {
        // A restore is not refused for want of a lease (a store that lets this host read but
        // not write the source's prefix); it is told what it risks.
        eprintln!(
            "warning: could not take a lease on {} for this restore ({error}); retention may delete WAL it still \
             needs: allow this host to put leases/* there",
            archive.describe()
        );
    }
    let renewer = tokio::spawn(renew_every(archive.clone(), lease.clone(), LEASE_LIFETIME / 4));
    RestoreLease { lease, renewer }
}

impl RestoreLease {
    /// Keeps a copy of the lease in the restored data directory ([`LEASE_FILE`]), where the
    /// restored cluster's `wal-fetch` renews it from.
    pub fn keep_in(&self, destination: &Destination) -> Result<(), BackupError> {
        let path = destination.data_dir.join(LEASE_FILE);
        write_local(&path, &self.lease)?;
        destination.give(&path)
    }
}

/// A lease held by a running incremental `backup-push` on its parent backup, renewed in the
/// background until released.
#[derive(Debug)]
pub struct PushLease {
    held: Option<RestoreLease>,
    archive: Archive,
}

/// Takes the lease of an incremental backup of `pgdata` building on `parent`: retention keeps
/// `parent` and its ancestors while it is live. A lease the archive does not accept is a warning
/// (the push checks its chain again before committing).
pub async fn hold_for_push(archive: &Archive, parent: &BackupInfo, pgdata: &Path) -> PushLease {
    let wal_from = parent.segment_size().segment_name(parent.timeline, parent.start_segment());
    let data_dir = pgdata.display().to_string();
    let lease = Lease::new(
        LeaseKind::Backup,
        &host_name(),
        &data_dir,
        &parent.name,
        wal_from,
        parent.wal_segment_size,
        Utc::now(),
    );
    let held = match leases::write(archive, &lease).await {
        Ok(()) => {
            let renewer = tokio::spawn(renew_every(archive.clone(), lease.clone(), LEASE_LIFETIME / 4));
            Some(RestoreLease { lease, renewer })
        }
        Err(error) => {
            eprintln!(
                "warning: could not take a lease on {} for the chain of {} ({error}); a concurrent delete may remove                  it, and this backup would then not be committed: allow this host to put leases/* there",
                archive.describe(),
                parent.name
            );
            None
        }
    };
    PushLease { held, archive: archive.clone() }
}

impl PushLease {
    /// The lease, when the archive took it.
    pub fn lease(&self) -> Option<&Lease> {
        self.held.as_ref().map(|held| &held.lease)
    }

    /// Stops renewing and stores the lease expired, so it protects nothing from now on (a
    /// failure is a warning: the lease then ends by expiring).
    pub async fn release(mut self) {
        let Some(held) = self.held.take() else { return };
        held.renewer.abort();
        let released = held.lease.clone().released(Utc::now());
        if let Err(error) = leases::write(&self.archive, &released).await {
            tracing::warn!(lease = released.id, %error, "failed to release the backup's lease; it expires by itself");
        }
    }
}

async fn renew_every(archive: Archive, mut lease: Lease, period: Duration) {
    loop {
        tokio::time::sleep(period).await;
        lease = lease.renewed(Utc::now());
        if let Err(error) = leases::write(&archive, &lease).await {
            tracing::warn!(lease = lease.id, %error, "failed to renew the restore's lease; retrying later");
        }
    }
}

/// Renews the lease of the data directory `dest` lies in (`<data>/pg_wal/…`) when it is due;
/// does nothing for a data directory without a lease. Never fails the fetch: a renewal that
/// does not work is logged and tried again by the next call.
pub async fn renew_if_due(config: &AgentConfig, dest: &Path) {
    let Some(data_dir) = dest.parent().filter(|dir| dir.ends_with("pg_wal")).and_then(Path::parent) else { return };
    let path = data_dir.join(LEASE_FILE);
    let Ok(text) = std::fs::read(&path) else { return };
    let Ok(lease) = serde_json::from_slice::<Lease>(&text) else {
        tracing::warn!(path = %path.display(), "the restore's lease file is unreadable; not renewing it");
        return;
    };
    let now = Utc::now();
    if !lease.backup_needed && !lease.renewal_due(now) {
        return;
    }
    let mut renewed = lease.renewed(now);
    renewed.backup_needed = false;
    renewed.wal_from = still_needed_from(data_dir, &renewed).unwrap_or(renewed.wal_from.clone());
    let stored = tokio::time::timeout(RENEWAL_TIMEOUT, async {
        let archive = config.storage().await.map_err(|error| error.to_string())?;
        leases::write(&archive, &renewed).await.map_err(|error| error.to_string())
    })
    .await
    .unwrap_or_else(|_| Err(format!("timed out after {RENEWAL_TIMEOUT:?}")));
    match stored
        .map_err(|error| error.to_string())
        .and_then(|()| write_local(&path, &renewed).map_err(|error| error.to_string()))
    {
        Ok(()) => tracing::debug!(lease = renewed.id, wal_from = renewed.wal_from, "renewed the lease"),
        Err(error) => tracing::warn!(lease = renewed.id, %error, "failed to renew the restore's lease"),
    }
}

/// The oldest segment a crash restart of `data_dir` would read: the segment of the redo
/// position in `pg_control`, once PostgreSQL has taken over from `backup_label`. Never lower
/// than what the lease already says; `None` when it cannot be told.
fn still_needed_from(data_dir: &Path, lease: &Lease) -> Option<String> {
    if data_dir.join("backup_label").exists() {
        return None;
    }
    let control = std::fs::read(data_dir.join("global/pg_control")).ok()?;
    let (redo, timeline) = checkpoint_redo(&control)?;
    let size = SegmentSize::new(lease.wal_segment_size).ok()?;
    let segment = size.segment_of(redo);
    (segment > lease.wal_from_segment()?).then(|| size.segment_name(timeline, segment))
}

/// `checkPointCopy.redo` and its timeline from `pg_control` (the same offsets in PostgreSQL
/// 13 to 17: system identifier, version, catalog version, state, time, checkPoint, then the
/// checkpoint record whose first fields are the redo LSN and the timeline).
fn checkpoint_redo(control: &[u8]) -> Option<(Lsn, u32)> {
    let u32_at = |offset: usize| control.get(offset..offset + 4)?.try_into().ok().map(u32::from_le_bytes);
    let u64_at = |offset: usize| control.get(offset..offset + 8)?.try_into().ok().map(u64::from_le_bytes);
    let version = u32_at(8)?;
    if !(1100..2000).contains(&version) {
        return None;
    }
    let redo = u64_at(40)?;
    let timeline = u32_at(48)?;
    (redo > 0 && timeline > 0).then_some((Lsn(redo), timeline))
}

/// Writes the local copy of the lease (temporary file, then rename, so a reader never sees half).
fn write_local(path: &Path, lease: &Lease) -> Result<(), BackupError> {
    let json = serde_json::to_vec_pretty(lease)
        .map_err(|error| BackupError::Task(format!("failed to render the lease: {error}")))?;
    let temporary = PathBuf::from(format!("{}.tmp", path.display()));
    std::fs::write(&temporary, json).map_err(BackupError::io("write", &temporary))?;
    std::fs::rename(&temporary, path).map_err(BackupError::io("replace", path))
}

/// This machine's host name, for the lease's holder.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "unknown".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_redo_position_is_read_from_pg_control() {
        let mut control = vec![0u8; 512];
        control[8..12].copy_from_slice(&1300u32.to_le_bytes());
        control[40..48].copy_from_slice(&0x5_0000_0028u64.to_le_bytes());
        control[48..52].copy_from_slice(&2u32.to_le_bytes());
        assert_eq!(checkpoint_redo(&control), Some((Lsn(0x5_0000_0028), 2)));
        control[8..12].copy_from_slice(&42u32.to_le_bytes());
        assert_eq!(checkpoint_redo(&control), None, "not a pg_control of a known version");
        assert_eq!(checkpoint_redo(&control[..20]), None);
    }
}
