//! Base backups, restores, catalog, retention and verification: the agent's thin commands over
//! [`pgec2_core::catalog`], [`pgec2_core::retention`] and [`pgec2_core::recovery_window`].
//!
//! - [`push`]: `backup-push` ([`walk`] lists the data directory, [`pack`] and [`upload`] copy it);
//! - [`fetch`]: `backup-fetch` ([`destination`] checks, [`extract`] writes, [`restore_sync`]
//!   makes durable, [`recovery_conf`]);
//! - [`verify`]: `backup-verify`; [`delete`]: `delete`; `backup-list`, `backup-mark` and
//!   `wal-verify` are here.
//!
//! The storage format is described in `docs/storage-layout.md`, the commands in `docs/agent.md`.

use std::path::Path;
use std::process::ExitCode;

use pgec2_core::catalog::{self, InvalidTarget, RecoveryTarget};
use pgec2_core::layout::Archive;
use pgec2_core::recovery_window::{self, TimelineRequest};

use crate::cli::{
    BackupFetchArgs, BackupListArgs, BackupMarkArgs, BackupPushArgs, BackupVerifyArgs, DeleteArgs, JsonArgs,
    RecoveryTargetArgs,
};
use crate::config::AgentConfig;

pub mod block_check;
pub mod buffer_pool;
pub mod chain_restore;
pub mod chain_verify;
pub mod cluster_config;
pub mod delete;
pub mod destination;
mod error;
pub mod extract;
pub mod fetch;
pub mod increment;
pub mod pack;
pub mod parts;
pub mod push;
pub mod recovery_conf;
mod refusal;
pub mod restore_buffers;
#[cfg(test)]
mod restore_order_tests;
pub mod restore_spool;
pub mod restore_sync;
pub mod snapshot;
pub mod snapshot_restore;
pub mod stages;
pub mod two_stages;
pub mod upload;
pub mod verify;
pub mod walk;

pub use error::BackupError;
pub use refusal::Refusal;

/// Loads the configuration and opens the archive.
async fn open(config_path: Option<&Path>) -> Result<(AgentConfig, Archive), BackupError> {
    let config = AgentConfig::load(config_path)?;
    let archive = config.storage().await?;
    Ok((config, archive))
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String, BackupError> {
    crate::output::json(value).map_err(|error| BackupError::Task(format!("failed to render JSON: {error}")))
}

/// `backup-push`: prints the new backup's name (or its commit record with `--json`).
pub async fn push_command(config_path: Option<&Path>, args: BackupPushArgs) -> Result<ExitCode, BackupError> {
    let (config, archive) = open(config_path).await?;
    if args.incremental && args.method == crate::cli::PushMethod::Snapshot {
        return Err(increment::IncrementalError::WithSnapshot.into());
    }
    let incremental = args.incremental.then(|| increment::IncrementalRequest {
        from: args.from.clone().unwrap_or_else(|| "LATEST".to_string()),
        max_chain: args.max_chain.map_or(config.transfer.max_incremental_chain, usize::from),
    });
    let options = push::PushOptions {
        permanent: args.permanent,
        annotations: args.annotations.into_iter().collect(),
        incremental,
    };
    let info = match args.method {
        crate::cli::PushMethod::ObjectStore => {
            push::push_backup(&config, &archive, args.pgdata.as_deref(), options).await?
        }
        crate::cli::PushMethod::Snapshot => {
            let wait = std::time::Duration::from_secs(args.snapshot_timeout);
            snapshot::push_snapshot_backup(&config, &archive, args.pgdata.as_deref(), options, wait).await?
        }
    };
    if args.json {
        println!("{}", to_json(&info)?);
    } else {
        println!("{}", info.name);
    }
    Ok(ExitCode::SUCCESS)
}

/// `backup-fetch`: restores and prints what was restored and how to start it.
pub async fn fetch_command(config_path: Option<&Path>, args: BackupFetchArgs) -> Result<ExitCode, BackupError> {
    let recovery = args.recovery;
    let request = fetch::FetchRequest {
        target: recovery_target(&recovery.target)?,
        dest: args.dest,
        name: args.name,
        action: recovery.target_action,
        standby: recovery.standby,
        tablespace_mapping: destination::parse_tablespace_mapping(&args.tablespace_mapping)?,
        timeline: match &args.target_timeline {
            Some(text) => text.parse().map_err(|_: String| Refusal::InvalidOption {
                option: "--target-timeline",
                value: text.clone(),
                expected: "latest, current or a timeline id".into(),
            })?,
            None => TimelineRequest::Latest,
        },
        archive: cluster_config::ArchiveMode::from_args(
            recovery.archive_mode.as_deref(),
            recovery.archive_config.as_deref(),
        ),
    };
    let (config, archive) = open(config_path).await?;
    let summary = match crate::walg::restore::choose(&config, &archive, &request).await? {
        Some((walg, backup)) => crate::walg::restore::fetch_walg_backup(&config, &walg, &backup, &request).await?,
        None => fetch::fetch_backup(&config, &archive, &request).await?,
    };
    println!(
        "restored backup {} into {} ({} files, {} bytes); recovery to {} on timeline {}; archiving {}; start it with: \
         pg_ctl start -D {}",
        summary.backup,
        summary.dest.display(),
        summary.files,
        summary.data_bytes,
        summary.target,
        summary.timeline,
        summary.archiving,
        summary.dest.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The recovery target the options ask for (clap allows at most one), refused naming the option
/// when its value cannot be read.
pub fn recovery_target(args: &RecoveryTargetArgs) -> Result<RecoveryTarget, BackupError> {
    let spelled: Option<pgec2_contract::recovery::RecoveryTarget> = args.into();
    RecoveryTarget::try_from(spelled.as_ref()).map_err(|error| {
        let (option, value, expected) = match error {
            InvalidTarget::Time(error) => return Refusal::TargetTime(error).into(),
            InvalidTarget::Lsn(value) => ("--target-lsn", value, "an LSN such as 0/3000060"),
            InvalidTarget::Xid(value) => ("--target-xid", value, "a transaction id"),
        };
        Refusal::InvalidOption { option, value, expected: expected.into() }.into()
    })
}

/// `backup-list`: committed backups, oldest first (the JSON array the command line documents);
/// damaged entries are named on stderr, or listed alone with `--damaged`. Exit 0 either way:
/// one damaged entry does not hide the others.
pub async fn list_command(config_path: Option<&Path>, args: BackupListArgs) -> Result<ExitCode, BackupError> {
    let (config, archive) = open(config_path).await?;
    let backups = catalog::scan_backups(&archive).await?;
    if args.damaged {
        if args.json {
            println!("{}", to_json(&backups.damaged)?);
        }
        for damaged in backups.damaged.iter().filter(|_| !args.json) {
            println!("{}\t{}\t{}", damaged.name, damaged.key, damaged.reason);
        }
        return Ok(ExitCode::SUCCESS);
    }
    for damaged in &backups.damaged {
        eprintln!(
            "warning: backup {damaged}; it is left out of this list, kept by retention, and deleted only by \
             `delete garbage {} --confirm`",
            damaged.name
        );
    }
    let walg = match crate::walg::open(&config).await? {
        Some(walg) => Some(crate::walg::list::backups(&walg).await?),
        None => None,
    };
    if args.json {
        println!("{}", list_json(&backups.committed, walg.as_deref())?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<48} {:<25} {:>3} {:>14} {:>14} {:<6} {:<11} parent",
        "name", "finished", "tli", "data bytes", "stored bytes", "pinned", "type"
    );
    for backup in &backups.committed {
        println!(
            "{:<48} {:<25} {:>3} {:>14} {:>14} {:<6} {:<11} {}",
            backup.name,
            backup.finish_time.format("%Y-%m-%dT%H:%M:%SZ"),
            backup.timeline,
            backup.data_bytes,
            backup.stored_bytes,
            if backup.permanent { "yes" } else { "no" },
            backup.backup_type.as_str(),
            backup.parent.as_deref().unwrap_or("-")
        );
    }
    for backup in walg.iter().flatten() {
        let finished = backup.finish_time.map(|time| time.format("%Y-%m-%dT%H:%M:%SZ").to_string()).unwrap_or_default();
        println!(
            "{:<48} {:<25} {:>3} {:>14} {:>14} {} wal-g",
            backup.name,
            finished,
            backup.timeline,
            backup.data_bytes,
            backup.stored_bytes,
            if backup.permanent { "yes" } else { "no" }
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `backup-list --json`: pgec2's backups as before (`format` is their commit record's format
/// number); with a wal-g archive configured, wal-g's backups follow, with `"format": "wal-g"`.
fn list_json(
    committed: &[pgec2_core::catalog::BackupInfo],
    walg: Option<&[crate::walg::list::ListedWalgBackup]>,
) -> Result<String, BackupError> {
    let Some(walg) = walg else { return to_json(&committed) };
    let mut entries = Vec::new();
    for backup in committed {
        entries.push(serde_json::to_value(backup).map_err(|error| BackupError::Task(error.to_string()))?);
    }
    for backup in walg {
        entries.push(serde_json::to_value(backup).map_err(|error| BackupError::Task(error.to_string()))?);
    }
    to_json(&entries)
}

/// `backup-mark`: pins or unpins a backup.
pub async fn mark_command(config_path: Option<&Path>, args: BackupMarkArgs) -> Result<ExitCode, BackupError> {
    let (_, archive) = open(config_path).await?;
    catalog::set_permanent(&archive, &args.name, !args.undo).await?;
    println!("{} {}", if args.undo { "unpinned" } else { "pinned" }, args.name);
    Ok(ExitCode::SUCCESS)
}

/// `backup-verify`: prints the report; fails when anything is damaged.
pub async fn verify_command(config_path: Option<&Path>, args: BackupVerifyArgs) -> Result<ExitCode, BackupError> {
    let (config, archive) = open(config_path).await?;
    let report = verify::verify_backup(&archive, &args.name, config.transfer.download_concurrency).await?;
    if args.json {
        println!("{}", to_json(&report)?);
    } else {
        print!("{}", report.render());
    }
    match report.first_problem() {
        None => Ok(ExitCode::SUCCESS),
        Some((backup, first)) => Err(BackupError::Damaged { backup: backup.to_string(), detail: first.to_string() }),
    }
}

/// `delete`: prints the plan, applies it with `--confirm`. With `storage.walg_prefix`, wal-g's
/// backups count toward the window and are deleted only with `--include-wal-g`.
pub async fn delete_command(config_path: Option<&Path>, args: DeleteArgs) -> Result<ExitCode, BackupError> {
    let (config, archive) = open(config_path).await?;
    let policy = delete::policy_of(&args.what);
    let walg = crate::walg::retention::WalgRetention::load(&config, &archive, &policy, args.include_walg).await?;
    let options = delete::DeleteOptions {
        grace: delete::parse_grace(args.grace_period.as_deref())?,
        confirm: args.confirm,
        damaged: delete::damaged_of(&args.what).to_vec(),
        ignore_leases: args.ignore_leases,
        keep_wal_from: walg.as_ref().and_then(|walg| walg.keep_wal_from()),
    };
    let own_policy = walg.as_ref().map(|walg| walg.window.own_policy.clone()).unwrap_or(policy);
    let (plan, applied, locked) = delete::delete(&archive, &own_policy, &options).await?;
    let size = catalog::scan_backups(&archive).await?.segment_size();
    let walg_plan = match &walg {
        Some(walg) => Some(walg.plan(&plan, size).await?),
        None => None,
    };
    if let (Some(walg), Some(walg_plan), true) = (&walg, &walg_plan, args.confirm) {
        walg.apply(walg_plan).await?;
    }
    if args.json {
        let mut report = serde_json::to_value(&plan)
            .map_err(|error| BackupError::Task(format!("failed to render JSON: {error}")))?;
        report["kept_at_deletion"] = serde_json::to_value(&applied.kept).unwrap_or_default();
        report["walg"] = serde_json::to_value(&walg_plan).unwrap_or_default();
        report["locked"] = serde_json::to_value(&locked).unwrap_or_default();
        println!("{}", to_json(&report)?);
    } else {
        let verb = if args.confirm { "deleted" } else { "would delete" };
        print!("{}", walg_plan.map(|walg_plan| crate::walg::retention::render(&walg_plan, verb)).unwrap_or_default());
        print!("{}", delete::render(&plan, &applied, &locked, args.confirm));
    }
    Ok(ExitCode::SUCCESS)
}

/// `wal-verify`: WAL continuity from the oldest kept backup; exit 1 naming what is missing.
pub async fn wal_verify_command(config_path: Option<&Path>, args: JsonArgs) -> Result<ExitCode, BackupError> {
    let (_, archive) = open(config_path).await?;
    let backups = catalog::scan_backups(&archive).await?;
    let wal = catalog::load_wal_archive(&archive, backups.segment_size()).await?;
    let report = recovery_window::verify_continuity(&backups.committed, &wal);
    if args.json {
        println!("{}", to_json(&report)?);
    } else {
        for timeline in &report.timelines {
            println!(
                "timeline {}: from {} (backup {}) to {}: {}",
                timeline.timeline,
                timeline.first_segment,
                timeline.from_backup,
                timeline.newest_segment.as_deref().unwrap_or("nothing archived"),
                if timeline.missing_segments.is_empty() {
                    "complete".to_string()
                } else {
                    format!("{} missing", timeline.missing_segments.len())
                }
            );
            for missing in &timeline.missing_segments {
                println!("  missing {missing}");
            }
        }
        for history in &report.missing_history_files {
            println!("missing timeline history file {history}");
        }
        for damaged in &report.damaged_history_files {
            println!("damaged timeline history file {damaged}");
        }
    }
    if report.ok {
        return Ok(ExitCode::SUCCESS);
    }
    let first = report
        .timelines
        .iter()
        .find_map(|timeline| {
            timeline
                .missing_segments
                .first()
                .map(|segment| format!("WAL segment {segment} (timeline {})", timeline.timeline))
        })
        .or_else(|| report.missing_history_files.first().map(|history| format!("timeline history file {history}")))
        .unwrap_or_default();
    if first.is_empty()
        && let Some(damaged) = report.damaged_history_files.first()
    {
        eprintln!(
            "error: timeline history file {} in {} is damaged ({}: {}): restores along timeline {} and later ones \
             fail until it is restored from a copy",
            damaged.name,
            archive.describe(),
            damaged.key,
            damaged.reason,
            damaged.name.get(..8).and_then(|hex| u32::from_str_radix(hex, 16).ok()).unwrap_or_default()
        );
        return Ok(ExitCode::from(1));
    }
    eprintln!(
        "error: {first} is missing from the archive {}: point-in-time recovery past it is impossible; take a new backup",
        archive.describe()
    );
    Ok(ExitCode::from(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreadable_recovery_target_is_refused_naming_the_option() {
        let lsn = RecoveryTargetArgs { target_lsn: Some("3000060".into()), ..Default::default() };
        let refused = recovery_target(&lsn);
        assert!(
            matches!(&refused, Err(BackupError::Refused(Refusal::InvalidOption { option: "--target-lsn", value, .. })) if value == "3000060"),
            "{refused:?}"
        );
        let time = RecoveryTargetArgs { target_time: Some("2026-12-04 15:25:03".into()), ..Default::default() };
        let refused = recovery_target(&time).expect_err("no time zone");
        assert!(matches!(refused, BackupError::Refused(Refusal::TargetTime(_))), "{refused:?}");
        assert!(refused.to_string().starts_with("invalid --target-time: \"2026-12-04 15:25:03\" has no time zone"));
    }
}
