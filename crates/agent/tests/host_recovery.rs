//! A host whose spec restores from another host's archive: host apply runs backup-fetch with
//! the read-only source configuration, PostgreSQL recovers and promotes, and the restored host
//! then archives to its own prefix.

mod host_support;

use host_support::{LocalHost, detail, outcome};
use pgec2_core::host_spec::StepOutcome;

#[tokio::test]
async fn a_host_restored_from_another_archive_promotes_and_then_archives_to_its_own() {
    let source = LocalHost::new();
    source.apply().await.succeeded();
    source.psql("CREATE TABLE orders (id int); INSERT INTO orders SELECT generate_series(1, 100)");
    source.backup_push();
    source.psql("INSERT INTO orders VALUES (101)");
    source.switch_and_wait_archived().await;
    let restored = source.restored_copy("db2");

    let first = restored.apply().await.succeeded();
    assert!(detail(&first, "data-directory").starts_with("restored backup LATEST"), "{first:#?}");
    assert_eq!(outcome(&first, "agent-config"), StepOutcome::Changed);
    assert!(restored.spec.source_config_path().exists(), "the source configuration is written beside agent.toml");
    // The apply waited for the restore to promote, and left conf.d in charge of archiving.
    assert_eq!(restored.psql("SELECT pg_is_in_recovery()"), "f", "{first:#?}");
    let first_facts = first.postgres.clone().expect("facts of the promoted server");
    assert_eq!((first_facts.in_recovery, first_facts.timeline), (false, 2), "{first:#?}");
    assert!(detail(&first, "promote").contains("reset the restore's restore_command"), "{first:#?}");
    let effective = restored.psql("SHOW restore_command");
    assert!(effective.contains(&restored.spec.agent_config_path.display().to_string()), "{effective}");
    let left = restored.psql("SELECT count(*) FROM pg_file_settings WHERE sourcefile LIKE '%postgresql.auto.conf'");
    assert_eq!(left, "0", "recovery settings left in postgresql.auto.conf");
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
    let own_wal = restored.scratch.path().join("archive/default/db2/wal");
    assert!(own_wal.join("00000002.history").exists(), "the restored host archives its timeline to its own prefix");
    let source_wal = source.scratch.path().join("archive/default/db1/wal");
    let source_files: Vec<String> = std::fs::read_dir(&source_wal)
        .expect("source wal")
        .map(|entry| entry.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        source_files.iter().all(|name| name.starts_with("00000001")),
        "the restored host wrote into its source's archive: {source_files:?}"
    );
    assert!(restored.apply().await.succeeded().changed_nothing());
}

#[tokio::test]
async fn a_restore_whose_target_is_never_reached_fails_the_apply_instead_of_waiting() {
    let source = LocalHost::new();
    source.apply().await.succeeded();
    source.psql("CREATE TABLE orders (id int); INSERT INTO orders SELECT generate_series(1, 10)");
    source.backup_push();
    source.switch_and_wait_archived().await;
    let mut restored = source.restored_copy("never");
    if let pgec2_core::host_spec::BootstrapSpec::Recovery(recovery) = &mut restored.spec.bootstrap {
        // A transaction id far beyond any the source assigned: recovery ends without reaching it.
        recovery.target = Some(pgec2_core::host_spec::RecoveryTarget::Xid("4000000000".into()));
    }

    let started = std::time::Instant::now();
    let applied = restored.apply().await;
    let report = applied.report();
    assert!(!applied.output.status.success() && !report.succeeded, "{report:#?}");
    let failed = report.steps.iter().find(|step| step.outcome == StepOutcome::Failed).expect("a failed step");
    assert!(["service", "promote"].contains(&failed.step.as_str()), "{report:#?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(120), "the apply waited {:?}", started.elapsed());
}
