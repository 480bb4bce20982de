//! `import-check`: what a wal-g archive would let pgec2 restore: its backups, the WAL from
//! each backup's start to its end, and the gaps in the WAL after the oldest backup.

use std::path::Path;
use std::process::ExitCode;

use pgec2_core::wal::SegmentSize;
use pgec2_core::walg::continuity::{self, Continuity};

use crate::cli::ImportCheckArgs;
use crate::config::{AgentConfig, ConfigError};

/// What can stop `import-check`.
#[derive(Debug, thiserror::Error)]
pub enum ImportCheckError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Walg(#[from] pgec2_core::walg::WalgError),
    #[error("no wal-g archive to check: pass --prefix URL or set storage.walg_prefix (PGEC2_WALG_PREFIX)")]
    NoPrefix,
    #[error("invalid --segment-size {0}: a power of two from 1 MiB to 1 GiB")]
    SegmentSize(u64),
    #[error("failed to render JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// Prints the report; exits 0 when the newest wal-g backup restores and its WAL has no gap,
/// 2 otherwise.
pub async fn command(config_path: Option<&Path>, args: ImportCheckArgs) -> Result<ExitCode, ImportCheckError> {
    let mut config = AgentConfig::load(config_path)?;
    if let Some(prefix) = args.prefix {
        config.storage.walg_prefix = Some(prefix);
    }
    let walg = super::open(&config).await?.ok_or(ImportCheckError::NoPrefix)?;
    let size = SegmentSize::new(args.segment_size).map_err(|_| ImportCheckError::SegmentSize(args.segment_size))?;
    let backups = walg.backups().await?;
    let wal: Vec<String> = walg.wal_files().await?.into_iter().map(|(name, _)| name).collect();
    let report = continuity::check(&backups, &wal, size);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_text(&report);
    }
    Ok(if report.restorable_to_newest { ExitCode::SUCCESS } else { ExitCode::from(2) })
}

fn print_text(report: &Continuity) {
    println!("wal-g backups: {}", report.backups.len());
    for backup in &report.backups {
        let finished = backup.finish_time.map(|time| time.format("%Y-%m-%dT%H:%M:%SZ").to_string()).unwrap_or_default();
        let state =
            if backup.restorable { "restorable".to_string() } else { format!("missing {}", backup.missing.join(", ")) };
        println!("  {} finished {finished} WAL {}..{}: {state}", backup.name, backup.start_segment, backup.end_segment);
    }
    println!("WAL segments: {}, newest {}", report.segments, report.newest_segment.as_deref().unwrap_or("none"));
    for gap in &report.gaps {
        println!("  gap: {} to {} ({} segments missing)", gap.first, gap.last, gap.count);
    }
    if report.restorable_to_newest {
        println!(
            "restorable: the newest backup, then WAL without a gap to {}",
            report.newest_segment.as_deref().unwrap_or("its end")
        );
    } else {
        println!("NOT fully restorable: see the missing segments and gaps above");
    }
}
