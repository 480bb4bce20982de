//! Restore drills end to end on the local cloud: a BackupPolicy with `verification` restores its
//! host's newest backup into a throwaway PostgresHost, runs pg_amcheck and SQL checks there
//! through `pgec2-agent drill-check`, records the result and the measured recovery time, and
//! deletes the drill host. The source's archive is compared before and after: a drill only
//! reads it.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{READY_TIMEOUT, TestEnv};
use pgec2_api::fixtures::{HostBuilder, host, policy};
use pgec2_api::{
    BACKUP_REQUEST_ANNOTATION, BackupPolicy, DRILL_POLICY_LABEL, DrillOutcome, DrillResult, HostPhase, PostgresHost,
    Verification, VerificationCheck, VerificationTarget, condition,
};

/// How long a drill may take from its tick to its result (restore, recovery, checks).
const DRILL_TIMEOUT: Duration = Duration::from_secs(240);

/// A daily drill schedule whose one tick comes a few seconds from now (UTC, with seconds), so
/// that exactly one drill runs during the test.
fn tick_soon() -> String {
    let at = chrono::Utc::now() + chrono::Duration::seconds(4);
    format!("{} {} {} * * *", at.format("%-S"), at.format("%-M"), at.format("%-H"))
}

fn verification(checks: Vec<VerificationCheck>, keep: bool) -> Verification {
    Verification { schedule: tick_soon(), target: VerificationTarget::Latest, checks, keep, timeout: "5m".into() }
}

/// Polls `check` until it returns Some; panics naming `what` after `timeout`.
async fn until<T>(what: &str, timeout: Duration, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "{what} did not happen within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Every file below `dir` with its content, by path relative to it.
fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut found = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if let Ok(content) = std::fs::read(&path) {
                found.insert(path.strip_prefix(dir).expect("below dir").to_path_buf(), content);
            }
        }
    }
    found
}

/// The backups and WAL of a host's archive (leases are left out: a restore takes one, as every
/// restore does, so that retention leaves the WAL it reads alone).
fn archive_data(archive: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut data = files(&archive.join("wal"));
    data.extend(
        files(&archive.join("backups")).into_iter().map(|(path, content)| (Path::new("b").join(path), content)),
    );
    data
}

/// What a drill may leave in its source's archive: nothing of its own. The source keeps
/// archiving its own WAL (timeline 1) meanwhile, so new segments of that timeline may appear;
/// no file may change or go, and no other timeline, history file or partial segment (what a
/// promoted copy writes) may appear.
fn assert_archive_only_read(before: &BTreeMap<PathBuf, Vec<u8>>, after: &BTreeMap<PathBuf, Vec<u8>>) {
    for (path, content) in before {
        assert_eq!(after.get(path), Some(content), "{} changed or went during the drill", path.display());
    }
    for path in after.keys().filter(|path| !before.contains_key(*path)) {
        let name = path.file_name().and_then(|name| name.to_str()).unwrap_or_default();
        assert!(
            name.starts_with("00000001") && !name.contains(".history") && !name.contains(".partial"),
            "the drill wrote {} into the source's archive",
            path.display()
        );
    }
}

/// Runs `sql` on the host; panics with the error.
fn sql(env: &TestEnv, host: &PostgresHost, sql: &str) -> String {
    env.psql(host, sql).unwrap_or_else(|error| panic!("{sql}: {error}"))
}

/// A source host `db` on policy `nightly` with 1000 rows in `orders` in a backup and 500 more
/// in archived WAL after it; returns the builders, the host and the name of the backup.
async fn source(
    env: &TestEnv,
    archive: &Path,
) -> (pgec2_api::fixtures::PolicyBuilder, HostBuilder, PostgresHost, String) {
    let nightly = policy("nightly").local(&archive.display().to_string()).objectives(None, Some("1h"));
    env.apply_policy(&nightly.clone().build()).await;
    let builder = host("db").policy("nightly");
    env.apply_host(&builder.clone().build()).await;
    let db = env.wait_for("db", READY_TIMEOUT, |host| host.phase() == Some(HostPhase::Ready)).await;
    sql(env, &db, "CREATE TABLE orders (id int PRIMARY KEY, payload text); SELECT 1");
    sql(env, &db, "INSERT INTO orders SELECT g, md5(g::text) FROM generate_series(1, 1000) g; SELECT 1");
    env.apply_host(&builder.clone().annotation(BACKUP_REQUEST_ANNOTATION, "first").build()).await;
    let backed_up = env.wait_for("db", Duration::from_secs(120), |host| {
        host.status.as_ref().and_then(|status| status.last_backup.as_ref()).is_some()
    });
    let backup = backed_up.await.status.and_then(|status| status.last_backup).expect("a backup").name;
    sql(env, &db, "INSERT INTO orders SELECT g, md5(g::text) FROM generate_series(1001, 1500) g; SELECT 1");
    let segment = sql(env, &db, "SELECT pg_walfile_name(pg_current_wal_lsn()) FROM pg_switch_wal()");
    let wal = archive.join("default/db/wal");
    until(&format!("archiving of {segment}"), Duration::from_secs(60), async || {
        files(&wal).keys().any(|path| path.to_string_lossy().contains(&segment)).then_some(())
    })
    .await;
    (nightly, builder, db, backup)
}

/// The first finished drill of policy `nightly`.
async fn first_result(env: &TestEnv) -> DrillResult {
    until("a finished drill", DRILL_TIMEOUT, async || {
        let policy = env.policies().get("nightly").await.expect("policy");
        policy.status?.verification?.results.last().cloned()
    })
    .await
}

async fn policy_now(env: &TestEnv) -> BackupPolicy {
    env.policies().get("nightly").await.expect("policy")
}

/// Waits until the drill host is gone from the API and from the local cloud, with no
/// PostgreSQL left running for it.
async fn assert_drill_host_cleaned_up(env: &TestEnv, name: &str) {
    env.wait_gone(name, Duration::from_secs(60)).await;
    assert!(!env.host_dir(name).exists(), "the drill host's directory (and volume) is removed");
    assert!(!env.postgres_running(name), "no PostgreSQL of the drill host runs");
    let labelled = env.hosts().list(&Default::default()).await.expect("hosts");
    let left: Vec<String> = labelled
        .items
        .iter()
        .filter(|host| host.metadata.labels.as_ref().is_some_and(|labels| labels.contains_key(DRILL_POLICY_LABEL)))
        .filter_map(|host| host.metadata.name.clone())
        .collect();
    assert!(left.is_empty(), "drill hosts left: {left:?}");
}

/// The first drill, which must have failed saying `expected`: in its result, in the policy's
/// `RestoreVerified` condition (False) and with a `DrillFailed` event.
async fn failed_drill(env: &TestEnv, expected: &str) -> DrillResult {
    let result = first_result(env).await;
    assert_eq!(result.outcome, DrillOutcome::Failed, "{result:#?}");
    assert!(result.message.contains(expected), "{expected:?} in {}", result.message);
    let policy = policy_now(env).await;
    let (status, reason, message) = condition_of(&policy, condition::RESTORE_VERIFIED);
    assert_eq!((status.as_str(), reason.as_str()), ("False", "DrillFailed"));
    assert!(message.contains("default/db") && message.contains(expected), "{message}");
    assert!(env.event_reasons("nightly").await.contains(&"DrillFailed".to_string()));
    result
}

fn condition_of(policy: &BackupPolicy, type_: &str) -> (String, String, String) {
    let found = policy.condition(type_).unwrap_or_else(|| panic!("condition {type_}: {:#?}", policy.status));
    (found.status.clone(), found.reason.clone(), found.message.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passing_drill_records_its_recovery_time_turns_rto_met_true_and_leaves_nothing_behind() {
    let env = TestEnv::start().await;
    let archive = env.archive_dir();
    let (nightly, _, _, backup) = source(&env, &archive).await;
    let before = archive_data(&archive.join("default/db"));
    let checks = vec![VerificationCheck::amcheck(), VerificationCheck::sql("SELECT count(*) = 1500 FROM orders", None)];
    env.apply_policy(&nightly.verification(verification(checks, false)).build()).await;

    let result = first_result(&env).await;
    assert_eq!(result.outcome, DrillOutcome::Passed, "{result:#?}");
    assert_eq!(result.host, "default/db");
    assert_eq!(result.backup.as_deref(), Some(backup.as_str()));
    assert_eq!(result.backup_kind.as_deref(), Some("objectStore"));
    assert!(result.recovered_to_lsn.is_some(), "{result:#?}");
    let recovered = result.phases.recovered_seconds.expect("recovered seconds");
    let accepting = result.phases.accepting_connections_seconds.expect("accepting seconds");
    assert!(accepting > 0 && accepting <= recovered, "{:?}", result.phases);
    assert!(result.phases.data_directory_seconds.is_some(), "{:?}", result.phases);
    let names: Vec<(&str, bool)> = result.checks.iter().map(|check| (check.name.as_str(), check.passed)).collect();
    assert_eq!(names, vec![("amcheck", true), ("sql[0]", true)]);

    let policy = policy_now(&env).await;
    let (status, reason, _) = condition_of(&policy, condition::RESTORE_VERIFIED);
    assert_eq!((status.as_str(), reason.as_str()), ("True", "DrillPassed"));
    let reasons = env.event_reasons("nightly").await;
    assert!(
        reasons.contains(&"DrillStarted".to_string()) && reasons.contains(&"DrillPassed".to_string()),
        "{reasons:?}"
    );

    // The source host's recoverability takes the drill's recovery time; RtoMet holds.
    let db = env
        .wait_for("db", Duration::from_secs(30), |host| {
            host.status
                .as_ref()
                .and_then(|status| status.recoverability.as_ref())
                .and_then(|known| known.last_verified_rto_seconds)
                == Some(recovered)
        })
        .await;
    let rto = db.condition(condition::RTO_MET).expect("RtoMet");
    assert_eq!(rto.status, "True", "{rto:?}");
    assert!(rto.message.contains(&format!("took {recovered}s")), "{}", rto.message);
    let metrics = env.metrics.encode().expect("metrics");
    let gauge = format!("pgec2_last_verified_rto_seconds{{namespace=\"default\",host=\"db\"}} {recovered}");
    assert!(metrics.lines().any(|line| line.starts_with(&gauge)), "{gauge} in\n{metrics}");

    assert_drill_host_cleaned_up(&env, &result.drill_host).await;
    assert_archive_only_read(&before, &archive_data(&archive.join("default/db")));
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_sql_check_fails_the_drill_and_a_kept_drill_host_archives_nothing() {
    let env = TestEnv::start().await;
    let archive = env.archive_dir();
    let (nightly, _, _, _) = source(&env, &archive).await;
    let before = archive_data(&archive.join("default/db"));
    let checks = vec![VerificationCheck::sql("SELECT count(*) = 1000 FROM orders", None)];
    env.apply_policy(&nightly.verification(verification(checks, true)).build()).await;

    let result = failed_drill(&env, "check sql[0] failed").await;
    assert_eq!(result.message, "check sql[0] failed: returned \"f\" in database postgres, not true");
    assert!(result.phases.recovered_seconds.is_some(), "the restore itself worked: {result:#?}");
    let db = env.hosts().get("db").await.expect("db");
    let rto = db.condition(condition::RTO_MET).expect("RtoMet");
    assert_eq!(rto.status, "Unknown", "a failed drill verifies no recovery time: {rto:?}");

    // `keep`: the drill host stays, restored, promoted, and archiving nothing.
    let kept = env.hosts().get(&result.drill_host).await.expect("the kept drill host");
    assert_eq!(sql(&env, &kept, "SHOW archive_mode"), "off");
    assert_eq!(sql(&env, &kept, "SELECT pg_is_in_recovery()"), "f");
    assert_eq!(sql(&env, &kept, "SELECT count(*) FROM orders"), "1500");
    env.delete_host(&result.drill_host).await;
    assert_drill_host_cleaned_up(&env, &result.drill_host).await;
    assert_archive_only_read(&before, &archive_data(&archive.join("default/db")));
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hole_in_the_archived_wal_fails_the_drill_and_its_host_is_deleted() {
    let env = TestEnv::start().await;
    let archive = env.archive_dir();
    let (nightly, _, db, _) = source(&env, &archive).await;
    // Two more segments; the first of them is then lost from the archive: WAL after it exists,
    // so replay to the end of the archive meets a hole, not the end.
    let wal = archive.join("default/db/wal");
    let mut switched = Vec::new();
    for batch in 0..2 {
        let first = 2000 + batch * 100;
        sql(
            &env,
            &db,
            &format!("INSERT INTO orders SELECT g, 'x' FROM generate_series({first}, {}) g; SELECT 1", first + 99),
        );
        let segment = sql(&env, &db, "SELECT pg_walfile_name(pg_current_wal_lsn()) FROM pg_switch_wal()");
        until(&format!("archiving of {segment}"), Duration::from_secs(60), async || {
            files(&wal).keys().any(|path| path.to_string_lossy().contains(&segment)).then_some(())
        })
        .await;
        switched.push(segment);
    }
    let lost: Vec<PathBuf> =
        files(&wal).into_keys().filter(|path| path.to_string_lossy().contains(&switched[0])).collect();
    assert!(!lost.is_empty());
    for path in &lost {
        std::fs::remove_file(wal.join(path)).expect("remove the segment");
    }
    let before = archive_data(&archive.join("default/db"));
    let checks = vec![VerificationCheck::amcheck()];
    env.apply_policy(&nightly.verification(verification(checks, false)).build()).await;

    let result = failed_drill(&env, &switched[0]).await;
    assert!(result.phases.recovered_seconds.is_none() && result.checks.is_empty(), "{result:#?}");
    assert_drill_host_cleaned_up(&env, &result.drill_host).await;
    assert_archive_only_read(&before, &archive_data(&archive.join("default/db")));
    env.stop().await;
}
