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

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

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

/// Waits until backup-list holds a backup that `matches`; returns its name.
async fn wait_for_backup(env: &TestEnv, what: &str, matches: impl Fn(&serde_json::Value) -> bool) -> String {
    let deadline = Instant::now() + BACKUP_TIMEOUT;
    loop {
        let backups = backup_list(env, "db");
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

/// Waits until the host's status says the streamed WAL reaches `lsn`.
async fn wait_streamed(env: &TestEnv, host: &PostgresHost, lsn: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let current = env.hosts().get("db").await.expect("read db");
        let streaming = current.status.as_ref().and_then(|status| status.archiving.as_ref()?.streaming.clone());
        let archived = streaming.as_ref().and_then(|streaming| streaming.archived_lsn.clone());
        if let Some(archived) = archived {
            let reached = env.psql(host, &format!("SELECT '{archived}'::pg_lsn >= '{lsn}'::pg_lsn"));
            if reached.as_deref() == Ok("t") {
                return;
            }
        }
        assert!(Instant::now() < deadline, "the stream did not reach {lsn}: {streaming:#?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
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
        let socket = env.host_dir("db").join("volume/run");
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

/// Loses host `db` as a machine failure would: PostgreSQL stopped at once, its data removed.
fn lose_the_primary(env: &TestEnv) -> SystemTime {
    let data = env.data_dir("db");
    let lost_at = SystemTime::now();
    let pg_ctl = postgres_bin_dir().expect("PostgreSQL binaries").join("pg_ctl");
    let output = as_postgres(pg_ctl).args(["stop", "-m", "immediate", "-t", "30", "-D"]).arg(&data).output();
    let output = output.expect("run pg_ctl stop");
    assert!(output.status.success(), "pg_ctl stop: {}", String::from_utf8_lossy(&output.stderr));
    std::fs::remove_dir_all(&data).expect("remove the data directory");
    lost_at
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
    let deadline = Instant::now() + Duration::from_secs(30);
    while pgec2_operator::cloud::local::wal_receive::running(&env.host_dir("db")).expect("receiver").is_none() {
        assert!(Instant::now() < deadline, "no wal-receive runs for db");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A full backup of the full schedule's tick (the first tick of either schedule takes a full
    // one too), then an incremental on it after batch 2, another on that one after batch 3.
    let full = wait_for_backup(&env, "full backup of a full tick", |backup| {
        let tick = backup.pointer("/annotations/pgec2.io~1schedule-tick").and_then(serde_json::Value::as_str);
        field(backup, "type") == Some("full") && tick.is_some_and(|tick| tick.ends_with(":00Z"))
    })
    .await;
    insert(&env, &db, 2, 1001, 1500);
    let first = wait_for_backup(&env, "incremental on the full", |backup| {
        field(backup, "type") == Some("incremental") && field(backup, "parent") == Some(full.as_str())
    })
    .await;
    insert(&env, &db, 3, 1501, 1700);
    let second = wait_for_backup(&env, "second incremental", |backup| {
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

    // A slow writer: the recovery point the host reports stays under the limit while it runs.
    env.psql(&db, "CREATE TABLE ticks (id int PRIMARY KEY)").expect("create ticks");
    let writer = Writer::start(&env, &db);
    let mut reported = Vec::new();
    let sampling = Instant::now();
    while sampling.elapsed() < Duration::from_secs(16) {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let current = env.hosts().get("db").await.expect("read db");
        let rpo = current.status.as_ref().and_then(|status| status.recoverability.as_ref()?.rpo_seconds);
        if sampling.elapsed() > Duration::from_secs(4) {
            reported.push(rpo.expect("status.recoverability.rpoSeconds"));
        }
    }
    assert!(reported.iter().all(|rpo| *rpo < RPO_LIMIT_SECONDS), "rpoSeconds while streaming: {reported:?}");
    assert!(writer.committed().len() > 20, "the writer kept writing: {:?}", writer.committed().len());

    // The host is lost; its PostgresHost goes too (nothing may set up a new cluster there).
    let lost_at = lose_the_primary(&env);
    let committed = writer.finish();
    env.delete_host("db").await;
    env.apply_host(&host("recovered").recovery_from("db", "weekly").build()).await;
    let recovered = restored(&env, "recovered").await;
    let present =
        env.psql(&recovered, "SELECT count(*) || ' ' || coalesce(max(id), 0) FROM ticks").expect("read ticks");
    let (count, max) = present.split_once(' ').expect("count and max");
    let (count, max): (u32, u32) = (count.parse().expect("count"), max.parse().expect("max"));
    assert_eq!(count, max, "the restored rows are a prefix of the writes, without holes");
    let limit = Duration::from_secs(u64::try_from(RPO_LIMIT_SECONDS).expect("positive"));
    let must_survive = committed.iter().filter(|(_, at)| lost_at.duration_since(*at).unwrap_or_default() > limit);
    let must_survive = must_survive.map(|(id, _)| *id).max().unwrap_or(0);
    assert!(
        max >= must_survive,
        "row {must_survive} was committed over 10 s before the loss, the restore ends at {max}"
    );
    let newest_kept = committed.iter().filter(|(id, _)| *id <= max).map(|(_, at)| *at).max();
    let lost = newest_kept.map(|at| lost_at.duration_since(at).unwrap_or_default());
    println!(
        "rpoSeconds reported while streaming: {reported:?}; rows committed {}, restored {max}; \
         the restore lost the last {lost:?} before the loss",
        committed.len()
    );
    assert!(lost.is_some_and(|lost| lost < limit), "lost {lost:?} of writes");
    env.stop().await;
}
