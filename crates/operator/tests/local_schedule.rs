//! BackupPolicy schedules end to end on the local cloud, with ticks seconds apart: each tick
//! gives one backup per host (recorded in the backup's commit record), an operator that is down
//! while a backup runs follows it to the end after its restart, ticks missed while it was down
//! run once, and `suspend` stops scheduled backups but not on-demand ones.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{READY_TIMEOUT, TestEnv};
use k8s_openapi::jiff::Timestamp;
use pgec2_api::fixtures::{host, policy};
use pgec2_api::{BACKUP_REQUEST_ANNOTATION, BackupPolicy, HostPhase, PostgresHost};
use pgec2_core::catalog::{self, BackupInfo};
use pgec2_operator::archive;
use pgec2_operator::policy::backups::SCHEDULE_TICK_ANNOTATION;

/// Every 10 seconds: long enough for a small backup to finish between ticks.
const EVERY_TEN_SECONDS: &str = "*/10 * * * * *";

async fn committed(policy: &BackupPolicy, host: &PostgresHost) -> Vec<BackupInfo> {
    let archive = archive::open(policy, host).await.expect("open the host's archive");
    catalog::scan_backups(&archive).await.expect("scan the catalog").committed
}

fn tick_of(backup: &BackupInfo) -> Option<String> {
    backup.annotations.get(SCHEDULE_TICK_ANNOTATION).cloned()
}

async fn wait_for_policy(
    env: &TestEnv,
    timeout: Duration,
    what: &str,
    done: impl Fn(&BackupPolicy) -> bool,
) -> BackupPolicy {
    let deadline = Instant::now() + timeout;
    loop {
        let policy = env.policies().get("frequent").await.expect("read policy");
        if done(&policy) {
            return policy;
        }
        assert!(Instant::now() < deadline, "{what}: {:#?}", policy.status);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn last_success(policy: &BackupPolicy) -> Option<String> {
    policy.status.as_ref()?.last_successful_backup.as_ref()?.backup.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tick_runs_once_across_an_operator_restart_and_suspend_stops_the_schedule() {
    let mut env = TestEnv::start().await;
    let storage = env.archive_dir();
    let frequent = policy("frequent").local(&storage.display().to_string()).schedule(EVERY_TEN_SECONDS).keep(20);
    env.apply_policy(&frequent.clone().build()).await;
    env.apply_host(&host("db").policy("frequent").build()).await;
    let ready = env.wait_for("db", READY_TIMEOUT, |host| host.phase() == Some(HostPhase::Ready)).await;
    env.psql(&ready, "CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 1000) g").expect("write rows");

    // A scheduled backup succeeds and is recorded in the status and in the catalog.
    let first =
        wait_for_policy(&env, Duration::from_secs(90), "no scheduled backup", |policy| last_success(policy).is_some())
            .await;
    let first_status = first.status.clone().expect("status");
    assert!(first_status.last_schedule_time.is_some() && first_status.next_schedule_time.is_some());
    let policy_object = env.policies().get("frequent").await.expect("policy");
    let first_backups = committed(&policy_object, &ready).await;
    assert!(first_backups.iter().all(|backup| tick_of(backup).is_some()), "{first_backups:#?}");

    // The operator goes down while the next backup runs, and stays down across a tick.
    let running = wait_for_policy(&env, Duration::from_secs(60), "no backup started", |policy| {
        policy.status.as_ref().is_some_and(|status| !status.active_backups.is_empty())
    })
    .await;
    env.stop_operator().await;
    let in_flight = running.status.expect("status").active_backups[0].clone();
    let in_flight_tick = in_flight.schedule_tick.clone().expect("a scheduled backup").0;
    tokio::time::sleep(Duration::from_secs(13)).await;
    let restarted_at = Timestamp::now();
    env.start_operator();

    // After the restart, the backup that ran meanwhile is recorded (not lost, not run again) and
    // the ticks missed while down run once.
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    let after_restart = loop {
        let policy = env.policies().get("frequent").await.expect("read policy");
        if let Some(name) = last_success(&policy)
            && seen.last() != Some(&name)
        {
            seen.push(name);
        }
        let scheduled_after_restart = policy
            .status
            .as_ref()
            .and_then(|status| status.last_schedule_time.as_ref())
            .is_some_and(|tick| tick.0 > in_flight_tick);
        if seen.len() >= 2 && scheduled_after_restart {
            break policy;
        }
        assert!(Instant::now() < deadline, "after the restart: seen {seen:?}, status {:#?}", policy.status);
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let backups = committed(&after_restart, &ready).await;
    let mut per_tick: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for backup in &backups {
        per_tick
            .entry(tick_of(backup).expect("every scheduled backup names its tick"))
            .or_default()
            .push(backup.name.clone());
    }
    assert!(per_tick.values().all(|names| names.len() == 1), "a tick ran twice: {per_tick:#?}");
    let in_flight_backup = &per_tick.get(&in_flight_tick.to_string()).expect("the in-flight backup committed")[0];
    assert!(seen.contains(in_flight_backup), "the in-flight backup was not recorded after the restart: {seen:?}");
    let missed: Vec<&String> = per_tick
        .keys()
        .filter(|tick| {
            let tick: Timestamp = tick.parse().expect("tick");
            tick > in_flight_tick && tick <= restarted_at
        })
        .collect();
    assert!(missed.len() <= 1, "ticks missed while down ran more than once: {missed:?}");
    let last_tick = after_restart.status.as_ref().and_then(|status| status.last_schedule_time.clone()).expect("tick");
    assert!(last_tick.0 > in_flight_tick, "the schedule did not go on after the restart");

    // Suspended: no scheduled backup starts, yet an on-demand one still runs.
    env.apply_policy(&frequent.clone().suspend(true).build()).await;
    let suspended = wait_for_policy(&env, Duration::from_secs(60), "not suspended", |policy| {
        policy.status.as_ref().is_some_and(|status| {
            status.active_backups.is_empty()
                && status.next_schedule_time.is_none()
                && status.conditions.iter().any(|condition| condition.reason == "Suspended")
        })
    })
    .await;
    let before = committed(&suspended, &ready).await;
    tokio::time::sleep(Duration::from_secs(25)).await;
    let during = committed(&suspended, &ready).await;
    assert_eq!(
        before.iter().map(|backup| &backup.name).collect::<Vec<_>>(),
        during.iter().map(|backup| &backup.name).collect::<Vec<_>>(),
        "a scheduled backup ran while suspended"
    );
    env.apply_host(&host("db").policy("frequent").annotation(BACKUP_REQUEST_ANNOTATION, "while-suspended").build())
        .await;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let backups = committed(&suspended, &ready).await;
        if let Some(requested) = backups.iter().find(|backup| {
            backup.annotations.get(BACKUP_REQUEST_ANNOTATION).map(String::as_str) == Some("while-suspended")
        }) {
            assert!(tick_of(requested).is_none(), "an on-demand backup is not a tick's: {requested:#?}");
            break;
        }
        assert!(Instant::now() < deadline, "the on-demand backup did not run while suspended");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    env.stop().await;
}
