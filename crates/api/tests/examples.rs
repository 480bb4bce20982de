//! The manifests in `deploy/examples` are valid for every judge: the CRD's schema, its CEL rules
//! and the Rust types with their validation.

mod support;

use pgec2_api::{BackupPolicy, PostgresHost};
use support::{example_documents, judge};

#[test]
fn every_example_is_accepted_by_schema_cel_and_rust_validation() {
    let documents = example_documents();
    assert!(documents.len() >= 6, "expected at least six example documents, found {}", documents.len());
    for (file, manifest) in &documents {
        let verdict = judge(manifest, None);
        assert!(verdict.all_accept(), "{file}: {} is refused: {verdict:#?}", manifest["metadata"]["name"]);
    }
}

#[test]
fn examples_cover_minimal_policy_restore_standby_and_local_mode() {
    let mut hosts = Vec::new();
    let mut policies = Vec::new();
    for (file, manifest) in example_documents() {
        match manifest["kind"].as_str() {
            Some("PostgresHost") => hosts.push(serde_json::from_value::<PostgresHost>(manifest).expect(&file)),
            Some("BackupPolicy") => policies.push(serde_json::from_value::<BackupPolicy>(manifest).expect(&file)),
            other => panic!("{file}: unexpected kind {other:?}"),
        }
    }
    let minimal = hosts.iter().find(|host| host.spec.backup.is_none()).expect("a host without a policy");
    assert!(minimal.spec.bootstrap.is_initdb(), "a host with no bootstrap gets initdb");
    assert_eq!(minimal.spec.postgres_version, pgec2_api::DEFAULT_POSTGRES_VERSION);

    let with_policy = hosts.iter().find(|host| host.policy_name().is_some() && host.spec.bootstrap.is_initdb());
    let policy_name = with_policy.and_then(|host| host.policy_name()).expect("an initdb host with a policy");
    let policy = policies.iter().find(|policy| policy.metadata.name.as_deref() == Some(policy_name));
    assert!(policy.is_some_and(|policy| policy.spec.storage.s3.is_some()), "its policy is in the examples, on S3");

    let pitr = hosts.iter().filter_map(|host| host.recovery()).find_map(|recovery| recovery.target.as_ref());
    assert!(pitr.and_then(|target| target.point()).is_some(), "a point-in-time restore");
    assert!(hosts.iter().any(|host| host.spec.standby && host.recovery().is_some()), "a standby");
    assert!(policies.iter().any(|policy| policy.spec.storage.local.is_some()), "a local-mode policy");
}

#[test]
fn example_policies_have_schedules_the_operator_can_run() {
    for (file, manifest) in example_documents() {
        if manifest["kind"] == "BackupPolicy" {
            let policy: BackupPolicy = serde_json::from_value(manifest).expect(&file);
            assert!(policy.spec.cron().is_ok(), "{file}: the schedule parses");
            assert!(policy.spec.wal_archiving.archive_timeout_seconds().is_some(), "{file}");
        }
    }
}
