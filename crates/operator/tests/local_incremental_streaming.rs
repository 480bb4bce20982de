//! A BackupPolicy of weekly full and daily incremental backups with WAL streaming, end to end on
//! the local cloud with real PostgreSQL 15, its week compressed into a minute: the full schedule
//! ticks at second 0 of each minute, the incremental one at seconds 20 and 40. `archive_timeout`
//! is an hour, so WAL written after the last backup reaches the archive only through
//! `pgec2-agent wal-receive`, which the local cloud runs beside the host's PostgreSQL.
//!
//! - `backup-list` shows a full backup and two incrementals chained on it;
//! - a restore to a time between two later batches holds exactly the rows committed before it;
//! - the host reports a recovery point under 10 s while streaming runs, and after the host is
//!   lost (`pg_ctl stop -m immediate`, data directory removed) a restore to the end of the
//!   archive holds every row committed more than 10 s before the loss.
//!
//! `PGEC2_RPO_TRIALS` sets how many kill-and-restore trials run (default 1): the first loses the
//! host of the chain above, each further one a fresh host of the same policy after its first
//! backup. Each trial prints its figures (`rpo trial ...`), and the run a summary (`rpo summary
//! ...`).

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use common::streaming::{rpo_seconds, wait_for_receiver, wait_streamed};
use common::{READY_TIMEOUT, TestEnv};
use pgec2_api::fixtures::{PolicyBuilder, host, policy, target_time};
use pgec2_api::{HostPhase, PostgresHost};
use pgec2_testkit::{as_postgres, postgres_bin_dir};

/// "Weekly" full backups: second 0 of every minute.
const FULL_SCHEDULE: &str = "0 * * * * *";
/// "Daily" incremental backups: seconds 20 and 40 of every minute.
const INCREMENTAL_SCHEDULE: &str = "20,40 * * * * *";
/// How long a backup of the schedule may take to show up (a minute's ticks and the backup).
const BACKUP_TIMEOUT: Duration = Duration::from_secs(150);
/// How long a restored host may take to be Ready and promoted.
const RESTORE_TIMEOUT: Duration = Duration::from_secs(240);
/// The recovery point the policy promises with streaming.
const RPO_LIMIT_SECONDS: i64 = 10;

fn streaming_policy(storage: &Path) -> PolicyBuilder {
    policy("weekly")
        .local(&storage.display().to_string())
        .schedule(FULL_SCHEDULE)
        .incremental_schedule(INCREMENTAL_SCHEDULE)
        .archive_timeout("1h")
        .keep(10)
}

async fn apply_streaming_policy(env: &TestEnv, builder: PolicyBuilder) {
    let mut policy = builder.build();
    policy.spec.wal_archiving.streaming = true;
    env.apply_policy(&policy).await;
}

/// `pgec2-agent backup-list --json` with the host's own agent configuration, oldest first.
fn backup_list(env: &TestEnv, name: &str) -> Vec<serde_json::Value> {
    let config = env.host_dir(name).join("agent/agent.toml");
    let output = std::process::Command::new(common::agent_binary())
        .arg("--config")
        .arg(&config)
        .args(["backup-list", "--json"])
        .output()
        .expect("run backup-list");
    assert!(output.status.success(), "backup-list: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("backup-list prints a JSON array")
}

fn field<'a>(backup: &'a serde_json::Value, key: &str) -> Option<&'a str> {
    backup.get(key).and_then(serde_json::Value::as_str)
}

/// Waits until host `name`'s backup-list holds a backup that `matches`; returns its name.
async fn wait_for_backup(
    env: &TestEnv,
    name: &str,
    what: &str,
    matches: impl Fn(&serde_json::Value) -> bool,
) -> String {
    let deadline = Instant::now() + BACKUP_TIMEOUT;
    loop {
        let backups = backup_list(env, name);
        if let Some(found) = backups.iter().find(|backup| matches(backup)) {
            return field(found, "name").expect("a name").to_string();
        }
        assert!(Instant::now() < deadline, "no {what} within {BACKUP_TIMEOUT:?}: {backups:#?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Inserts rows `first..=last` of `batch` into `orders`.
fn insert(env: &TestEnv, host: &PostgresHost, batch: u32, first: u32, last: u32) {
    let sql =
        format!("INSERT INTO orders SELECT g, {batch}, md5(g::text) FROM generate_series({first}, {last}) g; SELECT 1");
    env.psql(host, &sql).unwrap_or_else(|error| panic!("insert batch {batch}: {error}"));
}

/// Count and md5 of the rows of `orders` matching `filter`.
fn rows(env: &TestEnv, host: &PostgresHost, filter: &str) -> String {
    let sql = format!(
        "SELECT count(*) || ' ' || coalesce(md5(string_agg(id || ':' || batch || ':' || payload, ',' ORDER BY id)), '-') \
         FROM orders WHERE {filter}"
    );
    env.psql(host, &sql).unwrap_or_else(|error| panic!("read orders: {error}"))
}

/// The server's clock now, as a recovery target (UTC, microseconds).
fn server_clock(env: &TestEnv, host: &PostgresHost) -> String {
    env.psql(host, "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
        .expect("read the clock")
}

/// Waits until host `name` is Ready and out of recovery.
async fn restored(env: &TestEnv, name: &str) -> PostgresHost {
    let host = env
        .wait_for(name, RESTORE_TIMEOUT, |host| {
            assert_ne!(host.phase(), Some(HostPhase::Failed), "{name} failed: {:#?}", host.status);
            host.phase() == Some(HostPhase::Ready) && host.status_is_current()
        })
        .await;
    let deadline = Instant::now() + RESTORE_TIMEOUT;
    while env.psql(&host, "SELECT pg_is_in_recovery()").as_deref() != Ok("f") {
        assert!(Instant::now() < deadline, "{name} did not finish recovery");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    host
}

/// Rows committed by a slow writer: one a second-half, each with the time its commit returned.
struct Writer {
    stop: Arc<AtomicBool>,
    committed: Arc<Mutex<Vec<(u32, SystemTime)>>>,
    thread: std::thread::JoinHandle<()>,
}

impl Writer {
    fn start(env: &TestEnv, host: &PostgresHost) -> Self {
        let socket = env.host_dir(host.metadata.name.as_deref().expect("name")).join("volume/run");
        let port = host.status.as_ref().and_then(|status| status.endpoint.as_ref()).map(|endpoint| endpoint.port);
        let port = u16::try_from(port.expect("endpoint")).expect("a port");
        let stop = Arc::new(AtomicBool::new(false));
        let committed = Arc::new(Mutex::new(Vec::new()));
        let (flag, log) = (stop.clone(), committed.clone());
        let thread = std::thread::spawn(move || {
            for id in 1.. {
                if flag.load(Ordering::SeqCst) {
                    return;
                }
                let sql = format!("INSERT INTO ticks VALUES ({id}); SELECT 1");
                if pgec2_testkit::psql_at(&socket, port, &sql).is_err() {
                    return;
                }
                log.lock().expect("log").push((id, SystemTime::now()));
                std::thread::sleep(Duration::from_millis(500));
            }
        });
        Self { stop, committed, thread }
    }

    fn committed(&self) -> Vec<(u32, SystemTime)> {
        self.committed.lock().expect("log").clone()
    }

    fn finish(self) -> Vec<(u32, SystemTime)> {
        self.stop.store(true, Ordering::SeqCst);
        let committed = self.committed.clone();
        let _ = self.thread.join();
        committed.lock().expect("log").clone()
    }
}

/// Loses host `name` as a machine failure would: PostgreSQL stopped at once, its data removed.
fn lose_the_primary(env: &TestEnv, name: &str) -> SystemTime {
    let data = env.data_dir(name);
    let lost_at = SystemTime::now();
    let pg_ctl = postgres_bin_dir().expect("PostgreSQL binaries").join("pg_ctl");
    let output = as_postgres(pg_ctl).args(["stop", "-m", "immediate", "-t", "30", "-D"]).arg(&data).output();
    let output = output.expect("run pg_ctl stop");
    assert!(output.status.success(), "pg_ctl stop: {}", String::from_utf8_lossy(&output.stderr));
    std::fs::remove_dir_all(&data).expect("remove the data directory");
    lost_at
}

/// What one kill-and-restore trial measured.
struct Trial {
    committed: usize,
    restored: u32,
    /// Age, at the loss, of the oldest commit the restore lacks (zero when it lacks none).
    lost: Duration,
    /// Age, at the loss, of the newest commit the restore holds.
    newest_kept: Duration,
    /// `status.recoverability.rpoSeconds` sampled every 2 s while the writer ran.
    reported: Vec<i64>,
}

/// A slow writer on `primary` (a host of policy `weekly` whose WAL streams) for 16 s while the
/// host's reported recovery point is sampled; then the host is lost, its PostgresHost deleted,
/// and `recovered` restored from its backups and streamed WAL. Asserts what a user relies on:
/// the reported recovery point stayed under the limit, the restore holds a prefix of the writes
/// including every row committed more than the limit before the loss.
async fn lose_and_restore(env: &TestEnv, primary: &PostgresHost, recovered: &str) -> Trial {
    let name = primary.metadata.name.as_deref().expect("name");
    env.psql(primary, "CREATE TABLE IF NOT EXISTS ticks (id int PRIMARY KEY)").expect("create ticks");
    let writer = Writer::start(env, primary);
    let mut reported = Vec::new();
    let sampling = Instant::now();
    while sampling.elapsed() < Duration::from_secs(16) {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let rpo = rpo_seconds(&env.hosts().get(name).await.expect("read the primary"));
        if sampling.elapsed() > Duration::from_secs(4) {
            reported.push(rpo.expect("status.recoverability.rpoSeconds"));
        }
    }
    assert!(reported.iter().all(|rpo| *rpo < RPO_LIMIT_SECONDS), "rpoSeconds of {name} while streaming: {reported:?}");
    assert!(writer.committed().len() > 20, "the writer kept writing: {:?}", writer.committed().len());

    // The host is lost; its PostgresHost goes too (nothing may set up a new cluster there).
    let lost_at = lose_the_primary(env, name);
    let committed = writer.finish();
    env.delete_host(name).await;
    env.apply_host(&host(recovered).recovery_from(name, "weekly").build()).await;
    let restored_host = restored(env, recovered).await;
    let present =
        env.psql(&restored_host, "SELECT count(*) || ' ' || coalesce(max(id), 0) FROM ticks").expect("read ticks");
    let (count, max) = present.split_once(' ').expect("count and max");
    let (count, max): (u32, u32) = (count.parse().expect("count"), max.parse().expect("max"));
    assert_eq!(count, max, "the restored rows are a prefix of the writes, without holes");
    let limit = Duration::from_secs(u64::try_from(RPO_LIMIT_SECONDS).expect("positive"));
    let age = |at: SystemTime| lost_at.duration_since(at).unwrap_or_default();
    let must_survive = committed.iter().filter(|(_, at)| age(*at) > limit).map(|(id, _)| *id).max().unwrap_or(0);
    assert!(
        max >= must_survive,
        "row {must_survive} was committed over 10 s before the loss, the restore ends at {max}"
    );
    let newest_kept = committed.iter().filter(|(id, _)| *id <= max).map(|(_, at)| age(*at)).min();
    let newest_kept = newest_kept.expect("the restore holds rows of the writer");
    assert!(newest_kept < limit, "the newest restored row was committed {newest_kept:?} before the loss");
    let lost = committed.iter().filter(|(id, _)| *id > max).map(|(_, at)| age(*at)).max().unwrap_or_default();
    env.delete_host(recovered).await;
    env.wait_gone(recovered, Duration::from_secs(120)).await;
    Trial { committed: committed.len(), restored: max, lost, newest_kept, reported }
}

/// A fresh host `name` of policy `weekly` with its first backup taken, the policy suspended
/// again after it (as for the first trial: no backup runs while the writer writes).
async fn fresh_primary(env: &TestEnv, storage: &Path, name: &str) -> PostgresHost {
    apply_streaming_policy(env, streaming_policy(storage)).await;
    env.apply_host(&host(name).policy("weekly").build()).await;
    let primary = env.wait_for(name, READY_TIMEOUT, |host| host.phase() == Some(HostPhase::Ready)).await;
    wait_for_receiver(env, name).await;
    wait_for_backup(env, name, "first backup", |backup| field(backup, "type") == Some("full")).await;
    apply_streaming_policy(env, streaming_policy(storage).suspend(true)).await;
    primary
}

/// Prints the distribution of the trials' data loss and of the recovery points reported.
fn print_summary(trials: &[Trial]) {
    let mut lost: Vec<u128> = trials.iter().map(|trial| trial.lost.as_millis()).collect();
    lost.sort_unstable();
    let middle = lost.len() / 2;
    let median = match lost.len() {
        0 => 0,
        even if even % 2 == 0 => (lost[middle - 1] + lost[middle]) / 2,
        _ => lost[middle],
    };
    let reported: Vec<i64> = trials.iter().flat_map(|trial| trial.reported.iter().copied()).collect();
    let (low, high) = (reported.iter().min(), reported.iter().max());
    println!(
        "rpo summary: trials {} lost_ms min {} median {median} max {} rpoSeconds min {low:?} max {high:?}",
        trials.len(),
        lost.first().unwrap_or(&0),
        lost.last().unwrap_or(&0),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weekly_fulls_and_daily_incrementals_with_streaming_restore_exactly_and_lose_under_ten_seconds() {
    let env = TestEnv::start_with(|config| config.archive_check_interval = Duration::from_secs(2)).await;
    let storage = env.archive_dir();
    apply_streaming_policy(&env, streaming_policy(&storage)).await;
    env.apply_host(&host("db").policy("weekly").build()).await;
    let db = env.wait_for("db", READY_TIMEOUT, |host| host.phase() == Some(HostPhase::Ready)).await;
    env.psql(&db, "CREATE TABLE orders (id int PRIMARY KEY, batch int NOT NULL, payload text NOT NULL)")
        .expect("create orders");
    insert(&env, &db, 1, 1, 1000);

    // The local cloud runs wal-receive beside the host's PostgreSQL.
    wait_for_receiver(&env, "db").await;

    // A full backup of the full schedule's tick (the first tick of either schedule takes a full
    // one too), then an incremental on it after batch 2, another on that one after batch 3.
    let full = wait_for_backup(&env, "db", "full backup of a full tick", |backup| {
        let tick = backup.pointer("/annotations/pgec2.io~1schedule-tick").and_then(serde_json::Value::as_str);
        field(backup, "type") == Some("full") && tick.is_some_and(|tick| tick.ends_with(":00Z"))
    })
    .await;
    insert(&env, &db, 2, 1001, 1500);
    let first = wait_for_backup(&env, "db", "incremental on the full", |backup| {
        field(backup, "type") == Some("incremental") && field(backup, "parent") == Some(full.as_str())
    })
    .await;
    insert(&env, &db, 3, 1501, 1700);
    let second = wait_for_backup(&env, "db", "second incremental", |backup| {
        field(backup, "type") == Some("incremental") && field(backup, "parent") == Some(first.as_str())
    })
    .await;
    // No further backup: the restores below replay the chain and the streamed WAL after it.
    apply_streaming_policy(&env, streaming_policy(&storage).suspend(true)).await;
    let listed: Vec<(String, String)> = backup_list(&env, "db")
        .iter()
        .map(|backup| (field(backup, "name").unwrap_or("-").into(), field(backup, "parent").unwrap_or("-").into()))
        .collect();
    assert!(
        listed.contains(&(first.clone(), full.clone())) && listed.contains(&(second.clone(), first.clone())),
        "backup-list shows the chain {full} <- {first} <- {second}: {listed:?}"
    );

    // Batch 4 before the target, batch 5 after it: both only in the streamed WAL.
    insert(&env, &db, 4, 1701, 1800);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let target = server_clock(&env, &db);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    insert(&env, &db, 5, 1801, 1900);
    let end = env.psql(&db, "SELECT pg_current_wal_lsn()").expect("read the WAL position");
    wait_streamed(&env, &db, &end).await;
    let before_target = rows(&env, &db, "batch <= 4");
    assert!(before_target.starts_with("1800 "), "{before_target}");

    env.apply_host(&host("pitr").recovery_from("db", "weekly").target(target_time(&target)).build()).await;
    let pitr = restored(&env, "pitr").await;
    assert_eq!(rows(&env, &pitr, "true"), before_target, "the restore to {target} holds exactly batches 1 to 4");
    env.delete_host("pitr").await;

    // Kill-and-restore trials: the host of the chain first, then fresh hosts of the policy.
    let count: usize = std::env::var("PGEC2_RPO_TRIALS").ok().and_then(|text| text.parse().ok()).unwrap_or(1);
    let mut trials = Vec::new();
    for number in 1..=count.max(1) {
        let primary = match number {
            1 => db.clone(),
            _ => fresh_primary(&env, &storage, &format!("db-{number}")).await,
        };
        let trial = lose_and_restore(&env, &primary, &format!("recovered-{number}")).await;
        println!(
            "rpo trial {number}: committed {} restored {} lost_ms {} newest_kept_ms {} rpoSeconds {:?}",
            trial.committed,
            trial.restored,
            trial.lost.as_millis(),
            trial.newest_kept.as_millis(),
            trial.reported
        );
        trials.push(trial);
    }
    print_summary(&trials);
    env.stop().await;
}
