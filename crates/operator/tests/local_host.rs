//! A PostgresHost end to end on the local cloud: the real controller on the in-memory API, real
//! PostgreSQL set up by the real agent, WAL archived to local storage.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{READY_TIMEOUT, TestEnv};
use pgec2_api::fixtures::{host, policy};
use pgec2_api::{DeletionPolicy, HostPhase, PostgresHost, condition};
use pgec2_kube_memory::Fault;

fn phase(host: &PostgresHost) -> Option<HostPhase> {
    host.phase()
}

fn condition_of(host: &PostgresHost, type_: &str) -> (String, String, String) {
    let found = host.condition(type_).unwrap_or_else(|| panic!("condition {type_} missing: {:#?}", host.status));
    (found.status.clone(), found.reason.clone(), found.message.clone())
}

/// True when a file whose name starts with `segment` exists below `dir`.
fn archived(dir: &Path, segment: &str) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else { return false };
    entries.flatten().any(|entry| {
        let path = entry.path();
        if path.is_dir() { archived(&path, segment) } else { entry.file_name().to_string_lossy().starts_with(segment) }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_becomes_ready_with_postgres_archiving_wal_and_stays_quiet() {
    let env = TestEnv::start().await;
    let archive = env.archive_dir();
    env.apply_policy(&policy("nightly").local(&archive.display().to_string()).archive_timeout("60s").build()).await;
    env.apply_host(&host("db").policy("nightly").build()).await;

    // Pending → Ready, through the phases in between.
    let mut seen = Vec::new();
    let ready = env
        .wait_for("db", READY_TIMEOUT, |host| {
            if let Some(phase) = phase(host).filter(|phase| seen.last() != Some(phase)) {
                seen.push(phase);
            }
            assert_ne!(phase(host), Some(HostPhase::Failed), "host failed: {:#?}", host.status);
            phase(host) == Some(HostPhase::Ready)
        })
        .await;
    assert!(seen.len() >= 2, "expected phases before Ready, saw {seen:?}");
    let status = ready.status.clone().expect("status");
    assert!(status.instance_id.as_deref().is_some_and(|id| id.starts_with("local-")), "{status:#?}");
    assert!(status.volume_id.is_some());
    assert_eq!(status.observed_generation, ready.metadata.generation);
    assert_eq!(condition_of(&ready, condition::READY).0, "True");
    assert_eq!(condition_of(&ready, condition::CONTINUOUS_ARCHIVING).0, "True");
    let postgres = status.postgres.clone().expect("postgres facts");
    assert!(postgres.version.as_deref().is_some_and(|version| version.starts_with("15")), "{postgres:?}");

    // PostgreSQL accepts connections and is the cluster status describes.
    let identifier = env.psql(&ready, "SELECT system_identifier FROM pg_control_system()").expect("query");
    assert_eq!(postgres.system_identifier.as_deref(), Some(identifier.as_str()));

    // WAL is archived through the agent.
    let segment = env
        .psql(
            &ready,
            "CREATE TABLE t AS SELECT 1 AS x; SELECT pg_walfile_name(pg_current_wal_lsn()); SELECT pg_switch_wal();",
        )
        .expect("switch wal");
    let segment = segment.lines().find(|line| line.len() == 24).expect("segment name").to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !archived(&archive.join("default/db"), &segment) {
        assert!(Instant::now() < deadline, "segment {segment} was not archived under {}", archive.display());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Reconciling again changes nothing: no new command, the same status.
    let commands = env.metrics.cloud_call_count("send_command");
    let reconciles = env.metrics.reconcile_count("PostgresHost");
    let before = env.hosts().get("db").await.expect("read host");
    let mut touched = host("db").policy("nightly").build();
    touched.metadata.annotations = Some([("example.com/touch".to_string(), "1".to_string())].into());
    env.apply_host(&touched).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while env.metrics.reconcile_count("PostgresHost") < reconciles + 1 {
        assert!(Instant::now() < deadline, "the annotation change was not reconciled");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = env.hosts().get("db").await.expect("read host");
    assert_eq!(after.status, before.status, "status churned");
    assert_eq!(env.metrics.cloud_call_count("send_command"), commands, "a command was sent again");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_write_conflicts_are_retried() {
    let env = TestEnv::start().await;
    env.server.inject_fault(Fault::status_conflicts("postgreshosts", 3));
    env.apply_host(&host("conflicted").build()).await;
    let ready = env.wait_for("conflicted", READY_TIMEOUT, |host| phase(host) == Some(HostPhase::Ready)).await;
    assert_eq!(env.server.pending_faults(), 0, "the injected conflicts were not all hit");
    assert!(env.psql(&ready, "SELECT 1").is_ok());
    assert_eq!(env.metrics.cloud_call_count("launch_host"), 1, "the host was launched once");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_host_stops_postgres_and_honours_the_deletion_policy() {
    let env = TestEnv::start().await;
    env.apply_host(&host("kept").build()).await;
    let mut deleted = host("removed").build();
    deleted.spec.storage.deletion_policy = DeletionPolicy::Delete;
    env.apply_host(&deleted).await;
    for name in ["kept", "removed"] {
        env.wait_for(name, READY_TIMEOUT, |host| phase(host) == Some(HostPhase::Ready)).await;
        assert!(env.postgres_running(name), "{name}: PostgreSQL should run");
    }

    env.delete_host("kept").await;
    env.delete_host("removed").await;
    env.wait_gone("kept", Duration::from_secs(60)).await;
    env.wait_gone("removed", Duration::from_secs(60)).await;

    assert!(!env.postgres_running("kept"), "PostgreSQL of a deleted host still runs");
    assert!(env.data_dir("kept").join("PG_VERSION").exists(), "Retain must keep the data directory");
    assert!(!env.host_dir("removed").exists(), "Delete must remove the host directory");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parameter_postgres_rejects_parks_the_host_without_a_hot_loop() {
    let env = TestEnv::start().await;
    env.apply_host(&host("bad").parameter("shared_buffers", "banana").build()).await;
    let parked = env
        .wait_for("bad", READY_TIMEOUT, |host| {
            host.condition(condition::POSTGRES_READY).is_some_and(|postgres| postgres.reason == "SetupFailed")
        })
        .await;
    let (status, _, message) = condition_of(&parked, condition::POSTGRES_READY);
    assert_eq!(status, "False");
    assert!(message.contains("shared_buffers"), "the message should name the parameter: {message}");
    assert_eq!(phase(&parked), Some(HostPhase::Failed));
    assert_eq!(condition_of(&parked, condition::READY).0, "False");

    // No hot loop: over a few seconds, no new command and only a handful of reconciles.
    let commands = env.metrics.cloud_call_count("send_command");
    let reconciles = env.metrics.reconcile_count("PostgresHost");
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(env.metrics.cloud_call_count("send_command"), commands, "the failed setup was re-sent at once");
    let extra = env.metrics.reconcile_count("PostgresHost") - reconciles;
    assert!(extra <= 3, "{extra} reconciles in 4 s: a hot loop");

    // Fixing the spec applies at once (no waiting out the backoff).
    env.apply_host(&host("bad").parameter("shared_buffers", "32MB").build()).await;
    env.wait_for("bad", READY_TIMEOUT, |host| phase(host) == Some(HostPhase::Ready)).await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_operator_follows_the_running_setup_instead_of_sending_it_again() {
    let mut env = TestEnv::start().await;
    env.apply_host(&host("db").build()).await;
    let configuring = env
        .wait_for("db", READY_TIMEOUT, |host| {
            host.status.as_ref().and_then(|status| status.last_command.as_ref()).is_some()
        })
        .await;
    let sent = configuring.status.and_then(|status| status.last_command).expect("last command");
    env.restart_operator().await;

    let ready = env.wait_for("db", READY_TIMEOUT, |host| phase(host) == Some(HostPhase::Ready)).await;
    assert_eq!(env.metrics.cloud_call_count("send_command"), 0, "the restarted operator sent the setup again");
    assert_eq!(env.metrics.cloud_call_count("launch_host"), 0, "the restarted operator launched again");
    let finished = ready.status.and_then(|status| status.last_command).expect("last command");
    assert_eq!(finished.id, sent.id, "the command the first operator sent is the one that finished");
    env.stop().await;
}
