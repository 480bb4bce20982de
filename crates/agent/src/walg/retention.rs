//! `delete` with a wal-g archive beside pgec2's: wal-g's backups count toward the retention
//! window ([`pgec2_core::walg::retention`]); every wal-g backup that stays listed keeps the
//! pgec2 WAL its recovery replays; wal-g's objects are deleted only with `--include-wal-g`.

use pgec2_core::layout::Archive;
use pgec2_core::retention::{DeletionPlan, Policy};
use pgec2_core::wal::{Lsn, SegmentSize};
use pgec2_core::walg::retention::{self, WalgPlan, Window};
use pgec2_core::walg::{WalgArchive, WalgBackup};

use crate::backup::{BackupError, Refusal};
use crate::config::AgentConfig;

/// The wal-g archive's part in one `delete`.
pub struct WalgRetention {
    walg: WalgArchive,
    backups: Vec<WalgBackup>,
    pub window: Window,
    include: bool,
}

impl WalgRetention {
    /// Reads the wal-g archive and splits its backups by `policy`; `None` without
    /// `storage.walg_prefix`. Refuses `--include-wal-g` where it cannot apply.
    pub async fn load(
        config: &AgentConfig,
        archive: &Archive,
        policy: &Policy,
        include: bool,
    ) -> Result<Option<Self>, BackupError> {
        let Some(walg) = super::open(config).await? else {
            return match include {
                true => {
                    Err(Refusal::IncludeWalg("needs storage.walg_prefix: there is no wal-g archive to delete from")
                        .into())
                }
                false => Ok(None),
            };
        };
        if include && matches!(policy, Policy::Garbage | Policy::Everything) {
            return Err(Refusal::IncludeWalg(
                "applies to retain and before: garbage and everything never delete wal-g objects",
            )
            .into());
        }
        let backups = walg.backups().await?;
        let committed = pgec2_core::catalog::scan_backups(archive).await?.committed;
        let window = retention::window(policy, &committed, &backups);
        Ok(Some(Self { walg, backups, window, include }))
    }

    /// pgec2's WAL from here on stays: the start of the oldest wal-g backup this run leaves listed.
    pub fn keep_wal_from(&self) -> Option<Lsn> {
        let deleted = |name: &str| self.include && self.window.walg_over.iter().any(|over| over == name);
        self.backups.iter().filter(|backup| !deleted(&backup.name)).map(|backup| Lsn(backup.sentinel.start_lsn)).min()
    }

    /// What goes under the wal-g prefix, given pgec2's own `plan` (whose WAL boundary is where the
    /// oldest kept pgec2 backup, or a lease, needs WAL from). Nothing while a lease is live.
    pub async fn plan(&self, own: &DeletionPlan, size: SegmentSize) -> Result<WalgPlan, BackupError> {
        let floor = own.wal_boundary.as_deref().and_then(|name| size.parse_segment(name).ok());
        let floor = floor.map(|(_, segment)| size.start_of(segment));
        let include = self.include && own.held_by.is_empty();
        let (dirs, wal) = if include {
            (self.walg.backup_dirs().await?, self.walg.wal_files().await?)
        } else {
            (Vec::new(), Vec::new())
        };
        Ok(retention::plan(&self.window, &self.backups, include, floor, &dirs, &wal, size))
    }

    /// Deletes what `plan` names; returns how many objects went.
    pub async fn apply(&self, plan: &WalgPlan) -> Result<usize, BackupError> {
        Ok(retention::apply(&self.walg, plan).await?)
    }
}

/// `plan` as text lines (`verb`: "deleted" or "would delete").
pub fn render(plan: &WalgPlan, verb: &str) -> String {
    let mut out = String::new();
    for backup in &plan.backups {
        out.push_str(&format!("{verb} wal-g backup {backup}\n"));
    }
    for leftover in &plan.leftovers {
        out.push_str(&format!("{verb} unfinished wal-g backup directory {leftover}\n"));
    }
    if let (Some(first), Some(last)) = (plan.wal.first(), plan.wal.last()) {
        out.push_str(&format!("{verb} {} wal-g WAL files ({first} to {last})\n", plan.wal.len()));
    }
    for backup in &plan.over_window_kept {
        out.push_str(&format!(
            "keep wal-g backup {backup}: over the retention window; pass --include-wal-g to delete it\n"
        ));
    }
    out
}
