//! `drill-check`: the checks of a restore drill, run on the restored copy. It waits until
//! PostgreSQL has finished recovery (noting when), reads how far the copy replayed and whether
//! it archives WAL, then runs `pg_amcheck` on every database and the user's SQL checks. Exit 0
//! whenever the report could be made, whatever the checks found: the report says which passed
//! (as `archive-status` does for archiving); the operator decides the drill's outcome.

use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use pgec2_contract::command::SqlCheck;
use pgec2_contract::output::tail;
use pgec2_core::drill_check::{CheckOutcome, DrillCheckReport};
use tokio_postgres::{Client, SimpleQueryMessage};

use crate::cli::DrillCheckArgs;
use crate::config::{AgentConfig, ConfigError, PostgresSettings};
use crate::postgres::{self, PostgresError, QUERY_TIMEOUT, timed};

/// How often recovery's end is looked for.
const RECOVERY_POLL: Duration = Duration::from_millis(200);

/// Failures of `drill-check` (a failed check is not one: the report carries it).
#[derive(Debug, thiserror::Error)]
pub enum DrillCheckError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Postgres(#[from] PostgresError),
    #[error("failed to render the drill report as JSON: {0}")]
    Render(#[from] serde_json::Error),
}

/// Runs the checks and prints the report (JSON with `--json`).
pub async fn command(config_path: Option<&Path>, args: DrillCheckArgs) -> Result<ExitCode, DrillCheckError> {
    let config = AgentConfig::load(config_path)?;
    let report = run(&config.postgres, &args).await?;
    if args.json {
        println!("{}", crate::output::json(&report)?);
    } else {
        println!("{}", render_text(&report));
    }
    Ok(ExitCode::SUCCESS)
}

/// Waits for recovery's end, then runs every check asked for.
pub async fn run(settings: &PostgresSettings, args: &DrillCheckArgs) -> Result<DrillCheckReport, DrillCheckError> {
    let client = postgres::connect(settings).await?;
    let recovered_at = wait_recovered(&client, Duration::from_secs(args.recovery_timeout)).await?;
    let mut report = facts(&client).await?;
    report.recovered = recovered_at.is_some();
    report.recovered_at = recovered_at;
    if !report.recovered {
        return Ok(report);
    }
    let started = Instant::now();
    let check_timeout = Duration::from_secs(args.check_timeout);
    if args.amcheck {
        report.checks.push(amcheck(&client, settings, args.heapallindexed, check_timeout).await);
    }
    for (index, check) in args.sql.iter().enumerate() {
        report.checks.push(sql_check(settings, index, check, check_timeout).await);
    }
    report.checks_milliseconds = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    Ok(report)
}

/// When the server was first seen out of recovery, or None when it was still recovering at
/// the deadline.
async fn wait_recovered(client: &Client, timeout: Duration) -> Result<Option<DateTime<Utc>>, PostgresError> {
    let deadline = Instant::now() + timeout;
    loop {
        let row = timed("read pg_is_in_recovery()", QUERY_TIMEOUT, client.query_one("SELECT pg_is_in_recovery()", &[]))
            .await?;
        let recovering: bool = row
            .try_get(0)
            .map_err(|error| PostgresError::Unexpected { what: "pg_is_in_recovery()", detail: error.to_string() })?;
        if !recovering {
            return Ok(Some(Utc::now()));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(RECOVERY_POLL).await;
    }
}

/// `archive_mode` and how far recovery replayed.
async fn facts(client: &Client) -> Result<DrillCheckReport, PostgresError> {
    let sql = "SELECT current_setting('archive_mode'), pg_last_wal_replay_lsn()::text, \
               (extract(epoch FROM pg_last_xact_replay_timestamp()) * 1000000)::int8";
    let row = timed("read the recovery facts", QUERY_TIMEOUT, client.query_one(sql, &[])).await?;
    let unexpected = |error: tokio_postgres::Error| PostgresError::Unexpected {
        what: "the recovery facts",
        detail: error.to_string(),
    };
    let archive_mode: String = row.try_get(0).map_err(unexpected)?;
    let lsn: Option<String> = row.try_get(1).map_err(unexpected)?;
    let micros: Option<i64> = row.try_get(2).map_err(unexpected)?;
    Ok(DrillCheckReport {
        archive_mode,
        recovered_to_lsn: lsn,
        recovered_to_time: micros.and_then(DateTime::from_timestamp_micros),
        ..DrillCheckReport::default()
    })
}

/// `pg_amcheck --all --install-missing`: heap tables and B-tree indexes of every database.
async fn amcheck(
    client: &Client,
    settings: &PostgresSettings,
    heapallindexed: bool,
    timeout: Duration,
) -> CheckOutcome {
    let outcome = |passed: bool, message: String| CheckOutcome { name: "amcheck".into(), passed, message };
    let bindir = match bin_directory(client).await {
        Ok(bindir) => bindir,
        Err(error) => return outcome(false, format!("cannot find pg_amcheck: {error}")),
    };
    let mut command = tokio::process::Command::new(bindir.join("pg_amcheck"));
    command
        .args(["--all", "--install-missing", "--host", &settings.host, "--port", &settings.port.to_string()])
        .args(["--username", &settings.user])
        .args(heapallindexed.then_some("--heapallindexed"))
        .env_remove("PGDATABASE")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = match tokio::time::timeout(timeout, command.output()).await {
        Err(_) => return outcome(false, format!("pg_amcheck did not finish within {timeout:?}")),
        Ok(Err(error)) => {
            return outcome(false, format!("cannot run {}: {error}", bindir.join("pg_amcheck").display()));
        }
        Ok(Ok(output)) => output,
    };
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    if output.status.success() {
        outcome(true, "pg_amcheck found no corruption in any database".into())
    } else {
        let code = output.status.code().map_or_else(|| "a signal".to_string(), |code| code.to_string());
        outcome(false, format!("pg_amcheck exited with {code}: {}", tail(&text)))
    }
}

/// The directory of the running server's programs (pg_amcheck lives beside postgres).
async fn bin_directory(client: &Client) -> Result<PathBuf, PostgresError> {
    let sql = "SELECT setting FROM pg_config WHERE name = 'BINDIR'";
    let row = timed("read BINDIR from pg_config", QUERY_TIMEOUT, client.query_one(sql, &[])).await?;
    let dir: String =
        row.try_get(0).map_err(|error| PostgresError::Unexpected { what: "pg_config", detail: error.to_string() })?;
    Ok(PathBuf::from(dir))
}

/// One SQL check: passes when the first column of the first row it returns is true.
async fn sql_check(settings: &PostgresSettings, index: usize, check: &SqlCheck, timeout: Duration) -> CheckOutcome {
    let name = format!("sql[{index}]");
    let (passed, message) = match answer(settings, check, timeout).await {
        Ok(Some(value)) if value == "t" => (true, "returned true".to_string()),
        Ok(Some(value)) => (false, format!("returned {value:?} in database {}, not true", check.database)),
        Ok(None) => (false, format!("returned no value in database {}", check.database)),
        Err(message) => (false, message),
    };
    CheckOutcome { name, passed, message }
}

/// The first column of the first row the check's query returns (as text).
async fn answer(settings: &PostgresSettings, check: &SqlCheck, timeout: Duration) -> Result<Option<String>, String> {
    let mut settings = settings.clone();
    settings.database = check.database.clone();
    let client = postgres::connect(&settings).await.map_err(|error| error.to_string())?;
    let messages = match tokio::time::timeout(timeout, client.simple_query(&check.sql)).await {
        Err(_) => return Err(format!("the query did not finish within {timeout:?}")),
        Ok(Err(error)) => {
            let detail = error.as_db_error().map_or_else(|| error.to_string(), |db| db.message().to_string());
            return Err(format!("the query failed in database {}: {detail}", check.database));
        }
        Ok(Ok(messages)) => messages,
    };
    let first_row = messages.iter().find_map(|message| match message {
        SimpleQueryMessage::Row(row) => Some(row.get(0).map(str::to_string)),
        _ => None,
    });
    Ok(first_row.flatten())
}

/// The human-readable report.
pub fn render_text(report: &DrillCheckReport) -> String {
    let mut lines = vec![match report.failure() {
        None => "drill-check: passed".to_string(),
        Some(failure) => format!("drill-check: FAILED: {failure}"),
    }];
    lines.push(format!(
        "recovered to: {} ({})",
        report.recovered_to_lsn.as_deref().unwrap_or("?"),
        report.recovered_to_time.map_or_else(|| "no transaction replayed".to_string(), |time| time.to_rfc3339())
    ));
    for check in &report.checks {
        lines.push(format!("{}: {} {}", check.name, if check.passed { "ok" } else { "FAILED" }, check.message));
    }
    lines.join("\n")
}
