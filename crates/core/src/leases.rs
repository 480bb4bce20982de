//! Leases: what a running restore or standby still reads from an archive, so that retention and
//! garbage cleanup leave it alone.
//!
//! A lease is one object, `leases/<id>.json` (see `docs/storage-layout.md`), written by
//! `backup-fetch` and `snapshot-restore` when they start restoring and renewed by the restored
//! cluster's `wal-fetch` calls while recovery or standby replay runs; and by an incremental
//! `backup-push` for the chain it builds on, renewed while it runs and released at its end. Hosts may put but never delete, so a lease is
//! overwritten in place ([`PutMode::Overwrite`]) and ends by expiring; an expired lease protects
//! nothing and retention removes it.
//!
//! A live lease keeps the backup it names (while `backup_needed`), every ancestor of that backup
//! when it is incremental, and every WAL segment from `wal_from` on, on every timeline. A lease that cannot be read is taken to need everything
//! until it is older than [`LEASE_LIFETIME`]: it might be a live restore's.

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use crate::catalog::{self, CatalogError, Damaged};
use crate::layout::Archive;
use crate::storage::{ObjectMeta, PutMode};
use crate::wal::SegmentSize;

/// Version of the lease format this code writes.
pub const LEASE_FORMAT: u32 = 1;

/// How long a lease lives without renewal: long enough for a restore to be started the next
/// day, short enough that a restore given up on stops holding WAL within a day.
pub const LEASE_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// How many leases are read at once.
const LEASE_CONCURRENCY: usize = 8;

/// What holds a lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaseKind {
    /// Archive recovery of a restored copy, to a target or the archive's end.
    Restore,
    /// A standby replaying the archive for as long as it runs.
    Standby,
    /// An incremental `backup-push` building on the backup (and its chain) while it runs.
    Backup,
}

/// `leases/<id>.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// Unique per restore: also recorded in the restored data directory.
    pub id: String,
    pub kind: LeaseKind,
    /// Host name of the machine restoring.
    pub host: String,
    /// The restored data directory on that host.
    pub data_directory: String,
    /// The backup restored.
    pub backup: String,
    /// True while the backup's own objects are read (`backup-fetch` running); renewals by
    /// `wal-fetch` clear it.
    pub backup_needed: bool,
    /// The oldest WAL segment still needed (file name); every segment from its number on, on
    /// every timeline, is kept.
    pub wal_from: String,
    /// WAL segment size of the cluster, to read `wal_from`.
    pub wal_segment_size: u64,
    pub acquired_at: DateTime<Utc>,
    pub renewed_at: DateTime<Utc>,
    /// After this the lease protects nothing.
    pub expires_at: DateTime<Utc>,
    #[serde(default = "default_format")]
    pub format: u32,
}

fn default_format() -> u32 {
    LEASE_FORMAT
}

/// A lifetime as a chrono duration (saturating).
fn lifetime(duration: Duration) -> chrono::Duration {
    chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::MAX)
}

impl Lease {
    /// A new lease with a fresh random id, living [`LEASE_LIFETIME`] from `now`.
    pub fn new(
        kind: LeaseKind,
        host: &str,
        data_directory: &str,
        backup: &str,
        wal_from: String,
        wal_segment_size: u64,
        now: DateTime<Utc>,
    ) -> Self {
        let id = format!("{}-{:016x}", kind.word(), rand::random::<u64>());
        Self {
            id,
            kind,
            host: host.to_string(),
            data_directory: data_directory.to_string(),
            backup: backup.to_string(),
            backup_needed: true,
            wal_from,
            wal_segment_size,
            acquired_at: now,
            renewed_at: now,
            expires_at: now + lifetime(LEASE_LIFETIME),
            format: LEASE_FORMAT,
        }
    }

    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.expires_at > now
    }

    /// True when less than half of the lifetime is left.
    pub fn renewal_due(&self, now: DateTime<Utc>) -> bool {
        self.expires_at - now < lifetime(LEASE_LIFETIME / 2)
    }

    /// The lease renewed at `now`: it lives another [`LEASE_LIFETIME`].
    pub fn renewed(mut self, now: DateTime<Utc>) -> Self {
        self.renewed_at = now;
        self.expires_at = now + lifetime(LEASE_LIFETIME);
        self
    }

    /// The lease given up at `now`: it protects nothing any more, and `delete garbage` removes
    /// it (hosts may not delete it themselves).
    pub fn released(mut self, now: DateTime<Utc>) -> Self {
        self.backup_needed = false;
        self.renewed_at = now;
        self.expires_at = now;
        self
    }

    /// The segment number of `wal_from`; `None` when it cannot be read (then all WAL is kept).
    pub fn wal_from_segment(&self) -> Option<u64> {
        let size = SegmentSize::new(self.wal_segment_size).ok()?;
        size.parse_segment(&self.wal_from).ok().map(|(_, segment)| segment)
    }

    /// `lease <id> (restore on host:/dir, until <time>)`, for messages.
    pub fn describe(&self) -> String {
        format!(
            "lease {} ({} on {}:{}, until {})",
            self.id,
            self.kind.word(),
            self.host,
            self.data_directory,
            self.expires_at.to_rfc3339()
        )
    }
}

impl LeaseKind {
    fn word(self) -> &'static str {
        match self {
            LeaseKind::Restore => "restore",
            LeaseKind::Standby => "standby",
            LeaseKind::Backup => "backup",
        }
    }
}

/// A lease object that could not be read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DamagedLease {
    pub id: String,
    pub damage: Damaged,
    pub last_modified: Option<DateTime<Utc>>,
}

impl DamagedLease {
    /// True while it may still be a live restore's: younger than a lease lifetime, or of unknown age.
    pub fn may_be_live(&self, now: DateTime<Utc>) -> bool {
        self.last_modified.is_none_or(|at| at + lifetime(LEASE_LIFETIME) > now)
    }
}

/// Every lease of an archive.
#[derive(Clone, Debug, Default)]
pub struct LeaseSet {
    pub leases: Vec<Lease>,
    pub damaged: Vec<DamagedLease>,
}

impl LeaseSet {
    /// Leases that protect what they name at `now`.
    pub fn live(&self, now: DateTime<Utc>) -> impl Iterator<Item = &Lease> {
        self.leases.iter().filter(move |lease| lease.is_live(now))
    }

    /// Unreadable leases that might still be live: they hold everything.
    pub fn holding_everything(&self, now: DateTime<Utc>) -> impl Iterator<Item = &DamagedLease> {
        self.damaged.iter().filter(move |lease| lease.may_be_live(now))
    }

    /// Ids of leases that protect nothing any more (expired, or unreadable and older than a lifetime).
    pub fn expired(&self, now: DateTime<Utc>) -> Vec<String> {
        let expired = self.leases.iter().filter(|lease| !lease.is_live(now)).map(|lease| lease.id.clone());
        let stale = self.damaged.iter().filter(|lease| !lease.may_be_live(now)).map(|lease| lease.id.clone());
        expired.chain(stale).collect()
    }

    /// Every lease id, readable or not.
    pub fn ids(&self) -> Vec<String> {
        let ids = self.leases.iter().map(|lease| lease.id.clone());
        ids.chain(self.damaged.iter().map(|lease| lease.id.clone())).collect()
    }
}

/// Writes (or renews) `lease`, replacing what is stored under its id.
pub async fn write(archive: &Archive, lease: &Lease) -> Result<(), CatalogError> {
    let key = archive.layout.lease(&lease.id).map_err(|source| CatalogError::Storage {
        action: "name",
        key: lease.id.clone(),
        source: Box::new(source),
    })?;
    catalog::put_json(archive, &key, lease, PutMode::Overwrite).await
}

/// Reads every lease of the archive; an unreadable one is listed as damaged.
pub async fn load(archive: &Archive) -> Result<LeaseSet, CatalogError> {
    let prefix = archive.layout.leases_prefix();
    let listing = archive.storage.list(&prefix).await.map_err(|source| CatalogError::Storage {
        action: "list",
        key: prefix.clone(),
        source: Box::new(source),
    })?;
    let listed: Vec<(String, ObjectMeta)> = listing
        .into_iter()
        .filter_map(|meta| Some((archive.layout.parse_lease_key(meta.key.as_str())?.to_string(), meta)))
        .collect();
    let read: Vec<Result<Lease, DamagedLease>> = futures::stream::iter(listed)
        .map(|(id, meta)| read_lease(archive, id, meta))
        .buffer_unordered(LEASE_CONCURRENCY)
        .try_collect()
        .await?;
    let mut set = LeaseSet::default();
    for lease in read {
        match lease {
            Ok(lease) => set.leases.push(lease),
            Err(damaged) => set.damaged.push(damaged),
        }
    }
    set.leases.sort_by(|left, right| left.id.cmp(&right.id));
    Ok(set)
}

/// One listed lease, or why it is damaged.
async fn read_lease(
    archive: &Archive,
    id: String,
    meta: ObjectMeta,
) -> Result<Result<Lease, DamagedLease>, CatalogError> {
    let read = catalog::get_json::<Lease>(archive, &meta.key).await.and_then(|lease| {
        if lease.id == id {
            Ok(lease)
        } else {
            Err(CatalogError::Corrupt { key: meta.key.to_string(), reason: format!("it names lease {:?}", lease.id) })
        }
    });
    match read {
        Ok(lease) => Ok(Ok(lease)),
        Err(error) => catalog::damage_of(&id, meta.key.as_str(), error)
            .map(|damage| Err(DamagedLease { id, damage, last_modified: meta.last_modified })),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::layout::ArchiveLayout;
    use crate::storage::memory::MemoryStorage;

    fn lease(now: DateTime<Utc>) -> Lease {
        let size = SegmentSize::default();
        Lease::new(LeaseKind::Restore, "db2", "/data", "base_x", size.segment_name(1, 7), size.bytes(), now)
    }

    #[test]
    fn a_lease_is_renewed_only_in_the_second_half_of_its_life() {
        let now = Utc::now();
        let lease = lease(now);
        assert!(lease.is_live(now) && !lease.renewal_due(now));
        assert!(!lease.renewal_due(now + chrono::Duration::hours(11)));
        let later = now + chrono::Duration::hours(13);
        assert!(lease.renewal_due(later));
        let renewed = lease.clone().renewed(later);
        assert_eq!(renewed.expires_at, later + chrono::Duration::hours(24));
        assert!(!lease.is_live(now + chrono::Duration::hours(24)));
        assert_eq!(lease.wal_from_segment(), Some(7));
        let released = renewed.released(later);
        assert!(!released.is_live(later) && !released.backup_needed);
    }

    #[tokio::test]
    async fn leases_round_trip_and_an_unreadable_one_is_listed_as_damaged() {
        let archive = Archive::new(Arc::new(MemoryStorage::new()), ArchiveLayout::under("db").expect("layout"));
        let now = Utc::now();
        let first = lease(now);
        write(&archive, &first).await.expect("write");
        let broken = archive.layout.lease("restore-broken").expect("key");
        archive.storage.put(&broken, bytes::Bytes::from_static(b"{"), PutMode::Overwrite).await.expect("put");
        let set = load(&archive).await.expect("load");
        assert_eq!(set.leases, vec![first]);
        assert_eq!(set.damaged.len(), 1);
        assert_eq!(set.damaged[0].damage.key, "db/leases/restore-broken.json");
        assert_eq!(set.holding_everything(now).count(), 1, "a fresh unreadable lease may be live");
        assert!(set.expired(now).is_empty());
        assert_eq!(set.expired(now + chrono::Duration::hours(25)).len(), 2);
    }
}
