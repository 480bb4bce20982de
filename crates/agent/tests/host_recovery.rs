//! A host whose spec restores from another host's archive: host apply runs backup-fetch with
//! the read-only source configuration, PostgreSQL recovers and promotes, and the restored host
//! then archives to its own prefix.

mod host_support;

use std::time::Duration;

use host_support::{LocalHost, detail, outcome};
use pgec2_core::host_spec::{BootstrapSpec, RecoverySpec, StepOutcome, StorageSpec, TargetAction};
use pgec2_testkit::as_postgres;

/// Takes a base backup of `host` with its own agent configuration, as the operator would.
fn backup_push(host: &LocalHost) {
    let output = as_postgres(&host.spec.agent_binary)
        .arg("--config")
        .arg(&host.spec.agent_config_path)
        .arg("backup-push")
        .output()
        .expect("run backup-push");
    assert!(output.status.success(), "backup-push failed: {}", String::from_utf8_lossy(&output.stderr));
}

/// Polls until the server has left recovery.
async fn wait_until_promoted(host: &LocalHost) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while host.psql("SELECT pg_is_in_recovery()") != "f" {
        assert!(tokio::time::Instant::now() < deadline, "still in recovery after 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_host_restored_from_another_archive_promotes_and_then_archives_to_its_own() {
    let source = LocalHost::new();
    source.apply().await.succeeded();
    source.psql("CREATE TABLE orders (id int); INSERT INTO orders SELECT generate_series(1, 100)");
    backup_push(&source);
    source.psql("INSERT INTO orders VALUES (101)");
    source.switch_and_wait_archived().await;
    let source_archive = source.spec.archive.clone().expect("source archive").storage;

    let mut restored = LocalHost::new();
    restored.spec.host = "default/db2".into();
    let own = restored.spec.archive.as_mut().expect("own archive");
    own.storage.prefix = Some("default/db2".into());
    restored.spec.bootstrap = BootstrapSpec::Recovery(RecoverySpec {
        source: StorageSpec::new(source_archive.url.clone()).with_prefix("default/db1"),
        backup: "LATEST".into(),
        target: None,
        target_action: TargetAction::Promote,
    });

    let first = restored.apply().await.succeeded();
    assert!(detail(&first, "data-directory").starts_with("restored backup LATEST"), "{first:#?}");
    assert_eq!(outcome(&first, "agent-config"), StepOutcome::Changed);
    assert!(restored.spec.source_config_path().exists(), "the source configuration is written beside agent.toml");
    wait_until_promoted(&restored).await;
    assert_eq!(restored.psql("SELECT count(*) FROM orders"), "101", "recovery replayed the archived WAL");
    assert_eq!(
        source.psql("SELECT system_identifier FROM pg_control_system()"),
        restored.psql("SELECT system_identifier FROM pg_control_system()")
    );

    let after_promotion = restored.apply().await.succeeded();
    assert_eq!(outcome(&after_promotion, "data-directory"), StepOutcome::Unchanged);
    let restore_command = restored.psql(
        "SELECT setting FROM pg_file_settings WHERE name = 'restore_command' AND sourcefile LIKE '%01-pgec2.conf'",
    );
    assert!(restore_command.contains(&restored.spec.agent_config_path.display().to_string()), "{restore_command}");
    let facts = after_promotion.postgres.expect("facts");
    assert!(!facts.in_recovery);
    assert_eq!(facts.timeline, 2, "promotion starts a new timeline");

    restored.psql("INSERT INTO orders VALUES (102)");
    restored.switch_and_wait_archived().await;
    let own_wal = restored.scratch.path().join("archive/default/db2");
    assert!(own_wal.exists(), "the restored host archives to its own prefix");
    assert!(restored.apply().await.succeeded().changed_nothing());
}
