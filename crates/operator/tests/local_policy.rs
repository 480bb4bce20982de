//! BackupPolicy end to end on the local cloud: base backups run on the host through the cloud's
//! command runner by the real agent against a real PostgreSQL, retention applied by the operator
//! itself, status read from the storage catalog.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{READY_TIMEOUT, TestEnv};
use pgec2_api::fixtures::{host, policy};
use pgec2_api::{BACKUP_REQUEST_ANNOTATION, BackupPolicy, HostPhase};

/// Committed backups in a host's local archive (those with a commit marker).
fn committed_backups(archive: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(archive.join("backups"))
        .map(|entries| {
            entries
                .flatten()
                .filter(|entry| entry.path().join("complete.json").exists())
                .map(|entry| entry.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

async fn wait_for_policy(
    env: &TestEnv,
    name: &str,
    timeout: Duration,
    done: impl Fn(&BackupPolicy) -> bool,
) -> BackupPolicy {
    let deadline = Instant::now() + timeout;
    loop {
        let policy = env.policies().get(name).await.expect("read policy");
        if done(&policy) {
            return policy;
        }
        assert!(Instant::now() < deadline, "policy {name} did not get there: {:#?}", policy.status);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn host_condition<'a>(
    conditions: &'a [k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    type_: &str,
) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    conditions
        .iter()
        .find(|condition| condition.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} in {conditions:#?}"))
}

fn last_success(policy: &BackupPolicy) -> Option<String> {
    policy.status.as_ref()?.last_successful_backup.as_ref()?.backup.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requested_backups_run_on_the_host_and_retention_keeps_the_newest_two_plus_pinned() {
    let env = TestEnv::start().await;
    let archive = env.archive_dir();
    let nightly = policy("nightly").local(&archive.display().to_string()).schedule("0 3 * * *").keep(2).build();
    env.apply_policy(&nightly).await;
    env.apply_host(&host("db").policy("nightly").build()).await;
    let ready = env.wait_for("db", READY_TIMEOUT, |host| host.phase() == Some(HostPhase::Ready)).await;
    env.psql(&ready, "CREATE TABLE orders AS SELECT g AS id FROM generate_series(1, 1000) g").expect("write rows");

    let mut taken = Vec::new();
    for request in ["first", "second", "third", "fourth"] {
        let previous = taken.last().cloned();
        env.apply_host(&host("db").policy("nightly").annotation(BACKUP_REQUEST_ANNOTATION, request).build()).await;
        let done = wait_for_policy(&env, "nightly", Duration::from_secs(120), |policy| {
            last_success(policy).is_some() && last_success(policy) != previous
        })
        .await;
        taken.push(last_success(&done).expect("backup name"));
        let host = env.hosts().get("db").await.expect("read host");
        assert_eq!(host.status.as_ref().and_then(|status| status.handled_backup_request.as_deref()), Some(request));
        if request == "first" {
            // Pinned (what `pgec2-agent backup-mark` does): retention never deletes it.
            let policy = env.policies().get("nightly").await.expect("policy");
            let archive = pgec2_operator::archive::open(&policy, &host).await.expect("open archive");
            pgec2_core::catalog::set_permanent(&archive, &taken[0], true).await.expect("pin the first backup");
        }
    }

    // The operator applied retention itself: the two newest backups are kept, plus the pinned one.
    let host_archive = archive.join("default/db");
    let expected = vec![taken[0].clone(), taken[2].clone(), taken[3].clone()];
    let deadline = Instant::now() + Duration::from_secs(30);
    while committed_backups(&host_archive) != expected {
        assert!(Instant::now() < deadline, "kept {:?}, expected {expected:?}", committed_backups(&host_archive));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let policy = wait_for_policy(&env, "nightly", Duration::from_secs(30), |policy| {
        policy.status.as_ref().is_some_and(|status| status.hosts.first().is_some_and(|host| host.backups_kept == 3))
    })
    .await;
    let summary = &policy.status.as_ref().expect("status").hosts[0];
    assert_eq!(summary.host, "default/db");
    assert_eq!(summary.last_backup.as_ref().map(|backup| backup.name.as_str()), taken.last().map(String::as_str));
    assert!(summary.recovery_window.is_some(), "no recovery window in {summary:#?}");

    // The host's own status tells the same story.
    let newest = taken.last().cloned();
    let host = env
        .wait_for("db", Duration::from_secs(30), |host| {
            host.status.as_ref().and_then(|status| status.last_backup.as_ref()).map(|backup| backup.name.clone())
                == newest
        })
        .await;
    let status = host.status.expect("status");
    assert!(status.recovery_window.is_some(), "no recovery window on the host");
    let last = host_condition(&status.conditions, "LastBackupSucceeded");
    assert_eq!((last.status.as_str(), last.reason.as_str()), ("True", "BackupSucceeded"));
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_schedule_is_reported_in_a_condition() {
    let env = TestEnv::start().await;
    let mut broken = policy("broken").local("/tmp/pgec2-unused").build();
    // Shaped like cron, so the CRD's pattern lets it through (words are refused at apply time);
    // minute 61 is what only the controller's cron parser can catch.
    broken.spec.schedule = "61 3 * * *".to_string();
    env.apply_policy(&broken).await;
    let policy = wait_for_policy(&env, "broken", Duration::from_secs(30), |policy| {
        policy.status.as_ref().is_some_and(|status| !status.conditions.is_empty())
    })
    .await;
    let ready = &policy.status.as_ref().expect("status").conditions[0];
    assert_eq!(
        (ready.type_.as_str(), ready.status.as_str(), ready.reason.as_str()),
        ("Ready", "False", "InvalidSchedule")
    );
    assert!(ready.message.contains("61 3 * * *"), "{}", ready.message);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_command_already_running_on_the_host_is_followed_not_doubled() {
    use kube::ResourceExt;
    use pgec2_operator::cloud::local::{LocalCloud, LocalCloudConfig};
    use pgec2_operator::cloud::{Cloud, HostCommand, HostRef};

    let env = TestEnv::start().await;
    let archive = env.archive_dir();
    env.apply_policy(&policy("nightly").local(&archive.display().to_string()).build()).await;
    env.apply_host(&host("db").policy("nightly").build()).await;
    let ready = env.wait_for("db", READY_TIMEOUT, |host| host.phase() == Some(HostPhase::Ready)).await;

    // What an operator that crashed right after sending a backup leaves: the command runs on the
    // host, and no status knows of it.
    let cloud = LocalCloud::new(LocalCloudConfig::new(&env.state_dir, common::agent_binary())).expect("cloud");
    let reference = HostRef { namespace: "default".into(), name: "db".into(), uid: ready.uid().expect("uid") };
    let instance = cloud.find_host(&reference).await.expect("find").expect("instance");
    let orphan = HostCommand {
        purpose: "backup".into(),
        // It answers as backup-push --json does: its BackupInfo, the one JSON document on stdout.
        script: format!(
            // Long enough to still run when the request is reconciled on a loaded machine.
            "sleep 15; echo '{}'",
            serde_json::json!({
                "name": "base_sent_before_the_crash", "start_time": "2026-01-01T03:00:00Z",
                "finish_time": "2026-01-01T03:05:00Z", "start_lsn": "0/2000028", "finish_lsn": "0/3000100",
                "timeline": 1, "pg_version": 150012, "system_identifier": "7300000000000000001", "data_bytes": 1,
                "stored_bytes": 1, "permanent": false, "wal_segment_size": 16777216
            })
        ),
        timeout: Duration::from_secs(60),
    };
    cloud.send_command(&instance, &orphan).await.expect("send the orphan backup");

    env.apply_host(&host("db").policy("nightly").annotation(BACKUP_REQUEST_ANNOTATION, "after-crash").build()).await;
    let done = wait_for_policy(&env, "nightly", Duration::from_secs(60), |policy| last_success(policy).is_some()).await;
    assert_eq!(last_success(&done).as_deref(), Some("base_sent_before_the_crash"), "the running command was followed");
    assert!(committed_backups(&archive.join("default/db")).is_empty(), "a second backup was started");
    let host = env.hosts().get("db").await.expect("read host");
    assert_eq!(host.status.and_then(|status| status.handled_backup_request).as_deref(), Some("after-crash"));
    env.stop().await;
}
