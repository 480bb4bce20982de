//! `pgec2-agent host apply` in the local profile against a real PostgreSQL 15, run as the
//! postgres user from a scratch directory.

mod host_support;

use host_support::{LocalHost, detail, outcome};
use pgec2_core::host_spec::StepOutcome;

#[tokio::test]
async fn applying_twice_starts_an_archiving_server_then_changes_nothing() {
    let host = LocalHost::new();

    let first = host.apply().await.succeeded();
    for step in ["data-directory", "agent-config", "postgresql-conf", "pg-hba", "service"] {
        assert_eq!(outcome(&first, step), StepOutcome::Changed, "{step}: {first:#?}");
    }
    for step in ["data-device", "filesystem", "fstab", "mount", "packages", "tls-certificate", "wal-receive"] {
        assert_eq!(outcome(&first, step), StepOutcome::Skipped, "{step} in the local profile");
    }
    assert!(detail(&first, "data-directory").contains("initdb"));
    let facts = first.postgres.clone().expect("facts about the running server");
    assert!(facts.version.starts_with("15"), "{}", facts.version);
    assert!(!facts.in_recovery);
    assert_eq!(facts.timeline, 1);
    assert_eq!(facts.port, host.spec.port);
    assert!(facts.system_identifier.parse::<u64>().is_ok());

    assert_eq!(host.psql("SELECT 1"), "1", "the server accepts connections");
    assert_eq!(host.psql("SHOW archive_mode"), "on");
    assert_eq!(host.psql("SHOW wal_level"), "replica");
    assert_eq!(host.psql("SHOW data_checksums"), "on");
    assert_eq!(host.psql("SHOW shared_buffers"), "256MB", "tuned for the spec's 1 GiB");
    let archive_command = host.psql("SHOW archive_command");
    let expected =
        format!("{} --config {} wal-push %p", host.spec.agent_binary.display(), host.spec.agent_config_path.display());
    assert_eq!(archive_command, expected);
    assert!(host.spec.agent_config_path.exists(), "the agent's configuration is written");
    assert_eq!(host.psql("SHOW password_encryption"), "scram-sha-256");
    host.psql("CREATE TABLE orders (id int); INSERT INTO orders VALUES (1)");
    host.switch_and_wait_archived().await;

    let second = host.apply().await.succeeded();
    assert!(second.changed_nothing(), "the second run changed something: {second:#?}");
    assert_eq!(detail(&second, "data-directory"), "existing PostgreSQL 15 cluster left as it is");
    assert_eq!(second.postgres.expect("facts").system_identifier, facts.system_identifier);
}

#[tokio::test]
async fn a_changed_parameter_is_reloaded_and_only_a_restart_parameter_restarts() {
    let mut host = LocalHost::new();
    host.apply().await.succeeded();
    let started_at = host.psql("SELECT pg_postmaster_start_time()");

    host.spec.parameters.insert("work_mem".into(), "8MB".into());
    let reloaded = host.apply().await.succeeded();
    assert_eq!(outcome(&reloaded, "postgresql-conf"), StepOutcome::Changed);
    assert_eq!(detail(&reloaded, "service"), "reloaded the configuration");
    assert_eq!(host.psql("SHOW work_mem"), "8MB");
    assert_eq!(host.psql("SELECT pg_postmaster_start_time()"), started_at, "a reload does not restart");

    host.spec.parameters.insert("shared_buffers".into(), "192MB".into());
    let restarted = host.apply().await.succeeded();
    assert_eq!(detail(&restarted, "service"), "restarted: shared_buffers need a restart");
    assert_eq!(host.psql("SHOW shared_buffers"), "192MB");
    assert_ne!(host.psql("SELECT pg_postmaster_start_time()"), started_at);

    assert!(host.apply().await.succeeded().changed_nothing());
}

#[tokio::test]
async fn a_parameter_postgresql_rejects_fails_the_step_and_keeps_the_previous_configuration() {
    let mut host = LocalHost::new();
    host.apply().await.succeeded();
    let before = std::fs::read_to_string(host.conf_file()).expect("read conf");

    host.spec.parameters.insert("shared_buffers".into(), "lots".into());
    let applied = host.apply().await;
    assert_eq!(applied.output.status.code(), Some(1));
    let report = applied.report();
    let failed = report.failed_step().expect("a failed step");
    assert_eq!(failed.step, "postgresql-conf");
    assert!(failed.detail.contains("shared_buffers"), "{}", failed.detail);
    assert!(applied.stderr().starts_with("error: host apply failed at step postgresql-conf:"), "{}", applied.stderr());
    assert_eq!(report.steps.last().map(|step| step.step.as_str()), Some("postgresql-conf"), "later steps do not run");
    assert_eq!(std::fs::read_to_string(host.conf_file()).expect("read conf"), before);
    assert_eq!(host.psql("SELECT 1"), "1", "the server keeps running");

    host.spec.parameters.clear();
    assert!(host.apply().await.succeeded().changed_nothing(), "the previous configuration is intact");
}

#[tokio::test]
async fn a_non_empty_data_directory_without_a_cluster_is_never_touched() {
    let host = LocalHost::new();
    let data = host.scratch.subdir("host/data").expect("data dir");
    std::fs::write(data.join("orders.csv"), b"1,widget\n").expect("write");

    let applied = host.apply().await;
    assert_eq!(applied.output.status.code(), Some(1));
    let report = applied.report();
    let failed = report.failed_step().expect("a failed step");
    assert_eq!(failed.step, "data-directory");
    assert!(failed.detail.contains("refusing to touch it"), "{}", failed.detail);
    assert_eq!(std::fs::read(data.join("orders.csv")).expect("read"), b"1,widget\n");
    assert!(!data.join("PG_VERSION").exists());
    assert!(report.postgres.is_none());
}

#[tokio::test]
async fn an_unreadable_spec_is_reported_as_a_failed_spec_step() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("spec.json");
    std::fs::write(&path, br#"{"host": "default/db1"}"#).expect("write");
    let applied = host_support::run_agent(&["host", "apply", &path.to_string_lossy()]).await;
    assert_eq!(applied.output.status.code(), Some(1));
    let report = applied.report();
    assert!(!report.succeeded);
    assert_eq!(report.steps.len(), 1);
    assert_eq!(report.steps[0].step, "spec");
    assert!(report.steps[0].detail.contains("not a valid HostSpec"), "{}", report.steps[0].detail);
}
