//! The local cloud's WAL receivers: a host whose policy streams WAL gets `pgec2-agent
//! wal-receive` beside its PostgreSQL, started again when it dies and stopped when the host is
//! deleted; while its primary is idle (`archive_timeout` an hour) the recovery point it reports,
//! in its status and in `local get`, stays seconds, and a write after the idle spell is streamed.

mod common;

use std::time::{Duration, Instant};

use common::streaming::{rpo_seconds, wait_for_receiver, wait_streamed};
use common::{READY_TIMEOUT, TestEnv};
use pgec2_api::fixtures::{host, policy};
use pgec2_api::{HostPhase, PostgresHost};
use pgec2_operator::cloud::local::wal_receive;

/// Waits until the receiver of host `name` is as `wanted` says; returns its pid when one runs.
async fn receiver(env: &TestEnv, name: &str, what: &str, wanted: impl Fn(Option<i32>) -> bool) -> Option<i32> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pid = wal_receive::running(&env.host_dir(name)).expect("read the receiver's record");
        if wanted(pid) {
            return pid;
        }
        assert!(Instant::now() < deadline, "{what} within 30 s (receiver: {pid:?})");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streaming_hosts_receiver_is_restarted_when_it_dies_and_stopped_when_the_host_is_deleted() {
    let env = TestEnv::start().await;
    let archive = env.archive_dir();
    let mut streaming = policy("streaming").local(&archive.display().to_string()).build();
    streaming.spec.wal_archiving.streaming = true;
    env.apply_policy(&streaming).await;
    env.apply_host(&host("db").policy("streaming").build()).await;
    env.wait_for("db", READY_TIMEOUT, |host| host.phase() == Some(HostPhase::Ready)).await;

    let first = receiver(&env, "db", "a receiver runs", |pid| pid.is_some()).await.expect("pid");
    let slot = env.psql(
        &env.hosts().get("db").await.expect("db"),
        "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'pgec2_wal_receive'",
    );
    assert_eq!(slot.as_deref(), Ok("1"), "the receiver streams from its slot");

    nix::sys::signal::kill(nix::unistd::Pid::from_raw(first), nix::sys::signal::Signal::SIGKILL).expect("kill");
    let second =
        receiver(&env, "db", "a new receiver after the first died", |pid| pid.is_some_and(|pid| pid != first)).await;
    assert!(second.is_some());

    env.delete_host("db").await;
    env.wait_gone("db", Duration::from_secs(60)).await;
    receiver(&env, "db", "the receiver stopped with its host", |pid| pid.is_none()).await;
    env.stop().await;
}

/// The recovery point the host must report with streaming.
const RPO_LIMIT_SECONDS: i64 = 10;
/// How long the primary stays idle: far longer than a recovery point counted from the last
/// write may grow before it passes the limit.
const IDLE: Duration = Duration::from_secs(75);

/// The cell of `column` in the row of `row` of a `local get` table (columns start where their
/// header does; cells hold no spaces).
fn table_cell(table: &str, row: &str, column: &str) -> Option<String> {
    let mut lines = table.lines();
    let start = lines.next()?.find(column)?;
    let line = lines.find(|line| line.split_whitespace().next() == Some(row))?;
    line.get(start..)?.split_whitespace().next().map(str::to_string)
}

/// The recovery point in seconds as the host's status, `local get -o json` and the `local get`
/// table show it now.
async fn reported_rpo(env: &TestEnv, name: &str) -> (Option<i64>, Option<i64>, Option<String>) {
    let status = rpo_seconds(&env.hosts().get(name).await.expect("read the host"));
    let json: serde_json::Value =
        serde_json::from_str(&env.local_get(&["-o", "json", "postgreshost", name])).expect("local get prints JSON");
    let json = json.pointer("/status/recoverability/rpoSeconds").and_then(serde_json::Value::as_i64);
    let table = table_cell(&env.local_get(&["postgreshost", name]), name, "RPO");
    (status, json, table)
}

/// Samples the reported recovery point every 2.5 s for `period`; asserts each reading is under
/// the limit in all three places; returns the readings of the status.
async fn rpo_stays_low(env: &TestEnv, name: &str, period: Duration, what: &str) -> Vec<i64> {
    let started = Instant::now();
    let mut seen = Vec::new();
    while started.elapsed() < period {
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let (status, json, table) = reported_rpo(env, name).await;
        let at = started.elapsed().as_secs();
        let status = status.unwrap_or_else(|| panic!("{what}, {at} s in: no status.recoverability.rpoSeconds"));
        let json = json.unwrap_or_else(|| panic!("{what}, {at} s in: local get -o json shows no rpoSeconds"));
        seen.push(status);
        assert!(
            status < RPO_LIMIT_SECONDS && json < RPO_LIMIT_SECONDS,
            "{what}, {at} s in: rpoSeconds {status} (local get -o json: {json}); readings so far {seen:?}"
        );
        let table = table.unwrap_or_else(|| panic!("{what}, {at} s in: local get shows no RPO for {name}"));
        let seconds: i64 = table.trim_end_matches('s').parse().unwrap_or_else(|_| panic!("RPO cell {table:?}"));
        assert!(seconds < RPO_LIMIT_SECONDS, "{what}, {at} s in: local get shows RPO {table}; readings {seen:?}");
    }
    seen
}

fn current_lsn(env: &TestEnv, host: &PostgresHost) -> String {
    env.psql(host, "SELECT pg_current_wal_lsn()").expect("read the WAL position")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_streaming_hosts_recovery_point_stays_under_ten_seconds_and_a_later_write_is_streamed() {
    // The operator's own check interval is left at the harness's hour: the policy's streaming
    // and its 10 s objective are what make the operator look often enough.
    let env = TestEnv::start_local_mode_with(|_| {}).await;
    let archive = env.archive_dir();
    let mut streaming = policy("streaming")
        .local(&archive.display().to_string())
        .archive_timeout("1h")
        .objectives(Some("10s"), None)
        .build();
    streaming.spec.wal_archiving.streaming = true;
    env.apply_policy(&streaming).await;
    env.apply_host(&host("db").policy("streaming").build()).await;
    let db = env.wait_for("db", READY_TIMEOUT, |host| host.phase() == Some(HostPhase::Ready)).await;
    wait_for_receiver(&env, "db").await;
    env.psql(&db, "CREATE TABLE orders (id int PRIMARY KEY); INSERT INTO orders SELECT generate_series(1, 100)")
        .expect("write rows");
    wait_streamed(&env, &db, &current_lsn(&env, &db)).await;

    // Nothing is written: no segment fills and archive_timeout (an hour) switches none, so only
    // the receiver's confirmations keep the recovery point from counting the idle time.
    let idle = rpo_stays_low(&env, "db", IDLE, "idle primary").await;
    let archived = env.hosts().get("db").await.expect("read db");
    let archiving = archived.status.as_ref().and_then(|status| status.archiving.clone()).expect("status.archiving");
    let streaming = archiving.streaming.as_ref().expect("status.archiving.streaming");
    assert_eq!(streaming.state, "streaming", "{streaming:#?}");
    assert_eq!(streaming.lag_bytes, Some(0), "the archive holds all the idle server's WAL: {streaming:#?}");
    let status = archived.status.as_ref().expect("status");
    let rpo_met = status.conditions.iter().find(|condition| condition.type_ == pgec2_api::condition::RPO_MET);
    assert_eq!(rpo_met.map(|condition| condition.status.as_str()), Some("True"), "the 10 s objective: {rpo_met:#?}");

    // A write after the idle spell reaches the archive within seconds, and the recovery point
    // stays low while and after it is streamed.
    env.psql(&db, "INSERT INTO orders SELECT generate_series(101, 200)").expect("write after the idle spell");
    let took = wait_streamed(&env, &db, &current_lsn(&env, &db)).await;
    assert!(
        took < Duration::from_secs(15),
        "the status showed the write after the idle spell streamed only after {took:?}"
    );
    let after = rpo_stays_low(&env, "db", Duration::from_secs(10), "after the write").await;
    println!("rpoSeconds while idle: {idle:?}; streamed the later write in {took:?}; rpoSeconds after it: {after:?}");
    env.stop().await;
}
