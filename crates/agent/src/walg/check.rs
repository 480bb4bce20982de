//! `import-check`: what a wal-g archive would let pgec2 restore: its backups, the WAL from
//! each backup's start to its end, the gaps in the WAL after the oldest backup, and whether the
//! newest backup's objects read (decrypted with the wal-g key when wal-g encrypted them).

use std::path::Path;
use std::process::ExitCode;

use pgec2_core::wal::SegmentSize;
use pgec2_core::walg::WalgArchive;
use pgec2_core::walg::continuity::{self, Continuity};
use serde::Serialize;

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

/// Prints the report; exits 0 when the newest wal-g backup restores, reads, and its WAL has no
/// gap, 2 otherwise.
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
    let read = read_check(&walg, backups.last().map(|backup| backup.name.as_str())).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&Report { continuity: &report, read_check: read.as_ref() })?);
    } else {
        print_text(&report);
        print_read_check(read.as_ref());
    }
    let readable = read.as_ref().is_none_or(|read| read.error.is_none());
    Ok(if report.restorable_to_newest && readable { ExitCode::SUCCESS } else { ExitCode::from(2) })
}

/// `import-check --json`.
#[derive(Serialize)]
struct Report<'a> {
    #[serde(flatten)]
    continuity: &'a Continuity,
    read_check: Option<&'a ReadCheck>,
}

/// Whether the newest backup's smallest object (its pg_control partition) reads: decrypted with
/// the configured wal-g key, if any, and decompressed.
#[derive(Serialize)]
struct ReadCheck {
    object: String,
    error: Option<String>,
}

async fn read_check(walg: &WalgArchive, newest: Option<&str>) -> Result<Option<ReadCheck>, ImportCheckError> {
    let Some(name) = newest else { return Ok(None) };
    let partitions = walg.partitions(name).await?;
    let Some(object) = partitions.iter().find(|key| key.contains("/pg_control.")).or(partitions.last()) else {
        return Ok(None);
    };
    let stored = walg.get(object).await?;
    let content = walg.content(object);
    let error = content.open(&stored[..]).and_then(|mut reader| {
        std::io::copy(&mut reader, &mut std::io::sink()).map(|_| ()).map_err(|error| content.explain(&error))
    });
    Ok(Some(ReadCheck { object: object.clone(), error: error.err().map(|error| error.to_string()) }))
}

fn print_read_check(read: Option<&ReadCheck>) {
    match read {
        Some(ReadCheck { object, error: None }) => println!("read check: {object} reads"),
        Some(ReadCheck { object, error: Some(error) }) => println!("read check FAILED on {object}: {error}"),
        None => {}
    }
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
