//! A standby restored from another host's archive: host apply leaves it in recovery following
//! the source's WAL, promotes it once when the spec turns `standby` off, and refuses to turn the
//! promoted server back into a standby.

mod host_support;

use host_support::{LocalHost, detail, outcome};
use pgec2_core::host_spec::StepOutcome;

#[tokio::test]
async fn a_standby_follows_the_source_archive_and_is_promoted_once_when_standby_is_turned_off() {
    let source = LocalHost::new();
    source.apply().await.succeeded();
    source.psql("CREATE TABLE orders (id int); INSERT INTO orders SELECT generate_series(1, 100)");
    source.backup_push();
    let mut standby = source.restored_copy("replica");
    standby.spec.standby = true;

    // A standby: in recovery, replaying what the source archives.
    let first = standby.apply().await.succeeded();
    assert!(detail(&first, "data-directory").ends_with("as a standby"), "{first:#?}");
    assert_eq!(outcome(&first, "promote"), StepOutcome::Unchanged);
    assert_eq!(standby.psql("SELECT pg_is_in_recovery()"), "t");
    standby.wait_for_answer("SELECT count(*) FROM orders", "100").await;
    source.psql("INSERT INTO orders SELECT generate_series(101, 150)");
    source.switch_and_wait_archived().await;
    standby.wait_for_answer("SELECT count(*) FROM orders", "150").await;
    assert!(standby.apply().await.succeeded().changed_nothing(), "a standby's second run changes nothing");

    // Standby off: promoted in this run, on a new timeline, restore_command on the own archive.
    standby.spec.standby = false;
    let promoted = standby.apply().await.succeeded();
    assert_eq!(outcome(&promoted, "promote"), StepOutcome::Changed, "{promoted:#?}");
    assert_eq!(standby.psql("SELECT pg_is_in_recovery()"), "f");
    let facts = promoted.postgres.clone().expect("facts");
    assert!(!facts.in_recovery);
    assert_eq!(facts.timeline, 2, "promotion starts a new timeline");
    // The restore's settings in postgresql.auto.conf are gone: conf.d's own archive is in effect.
    let effective = standby.psql("SHOW restore_command");
    assert!(effective.contains(&standby.spec.agent_config_path.display().to_string()), "{effective}");
    let left = standby.psql("SELECT count(*) FROM pg_file_settings WHERE sourcefile LIKE '%postgresql.auto.conf'");
    assert_eq!(left, "0", "recovery settings left in postgresql.auto.conf");
    assert_eq!(standby.psql("SELECT count(*) FROM orders"), "150", "promotion kept the replayed rows");

    // The promoted server writes and archives to its own prefix.
    standby.psql("INSERT INTO orders VALUES (151)");
    standby.switch_and_wait_archived().await;
    let own_wal = standby.scratch.path().join("archive/default/replica/wal");
    assert!(own_wal.join("00000002.history").exists(), "the new timeline's history is in the own archive");
    let after = standby.apply().await.succeeded();
    assert!(after.changed_nothing(), "promotion happens once: {after:#?}");
    assert_eq!(outcome(&after, "promote"), StepOutcome::Skipped);

    // A primary does not go back to standby: the run fails at the promote step, saying why.
    standby.spec.standby = true;
    let refused = standby.apply().await.report();
    assert!(!refused.succeeded);
    let failed = refused.failed_step().expect("a failed step");
    assert_eq!(failed.step, "promote");
    assert!(failed.detail.contains("cannot return to standby"), "{}", failed.detail);
    assert_eq!(standby.psql("SELECT count(*) FROM orders"), "151", "the refused run left the server alone");
}
