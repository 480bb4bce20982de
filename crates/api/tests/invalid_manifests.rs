//! Invalid manifests are refused, by the layer that can see the mistake: the schema (types,
//! ranges, patterns), its CEL rules (one-of fields, transitions) and, always, the Rust-side
//! validation the operator runs. A rule that disappears from the CRD makes these tests fail.

mod support;

use pgec2_api::rules::{self, CelRule};
use serde_json::{Value, json};
use support::{Verdict, judge, openapi_schema, remove, rules_at, set, yaml};

fn host() -> Value {
    yaml(
        "apiVersion: pgec2.io/v1alpha1
kind: PostgresHost
metadata: {name: orders-db, namespace: shop}
spec:
  postgresVersion: 15
  instance: {subnetId: subnet-0a1b2c3d4e5f60718}
  storage: {sizeGiB: 100}
  backup: {policyRef: {name: nightly}}
",
    )
}

fn restored_host() -> Value {
    let mut manifest = host();
    set(&mut manifest, "spec.bootstrap", json!({"recovery": {"source": {"host": "orders-db", "policy": "nightly"}}}));
    manifest
}

fn policy() -> Value {
    yaml(
        "apiVersion: pgec2.io/v1alpha1
kind: BackupPolicy
metadata: {name: nightly, namespace: shop}
spec:
  storage: {s3: {bucket: acme-postgres-backups}}
  schedule: '0 3 * * *'
",
    )
}

/// `rule` sits at `path` of `kind`'s CRD, and both the CEL interpreter and the Rust validation
/// refuse the manifest with the rule's message.
#[track_caller]
fn assert_refused_by_rule(verdict: &Verdict, kind: &str, path: &str, rule: CelRule) {
    let schema = openapi_schema(kind);
    assert!(rules_at(&schema, path).contains(&rule.rule.to_string()), "rule {:?} missing at {path}", rule.rule);
    assert!(verdict.cel_errors.contains(&rule.message.to_string()), "CEL accepted or said otherwise: {verdict:#?}");
    assert!(verdict.rust_messages().contains(&rule.message.to_string()), "Rust accepted: {verdict:#?}");
}

/// The schema refuses the manifest and so does the Rust side (when deserialising or validating).
#[track_caller]
fn assert_refused_by_schema(verdict: &Verdict) {
    assert!(!verdict.schema_errors.is_empty(), "the schema accepted: {verdict:#?}");
    assert!(!matches!(verdict.rust, Ok(Ok(()))), "Rust accepted: {verdict:#?}");
}

#[test]
fn the_base_manifests_of_these_tests_are_valid() {
    for manifest in [host(), restored_host(), policy()] {
        let verdict = judge(&manifest, None);
        assert!(verdict.all_accept(), "{verdict:#?}");
    }
}

#[test]
fn two_bootstrap_modes_are_refused() {
    let mut manifest = restored_host();
    set(&mut manifest, "spec.bootstrap.initdb", json!({}));
    assert_refused_by_rule(&judge(&manifest, None), "PostgresHost", "spec.bootstrap", rules::ONE_BOOTSTRAP_MODE);
}

#[test]
fn an_empty_bootstrap_is_refused() {
    let mut manifest = host();
    set(&mut manifest, "spec.bootstrap", json!({}));
    assert_refused_by_rule(&judge(&manifest, None), "PostgresHost", "spec.bootstrap", rules::ONE_BOOTSTRAP_MODE);
}

#[test]
fn two_recovery_targets_are_refused() {
    let mut manifest = restored_host();
    set(&mut manifest, "spec.bootstrap.recovery.target", json!({"time": "2026-03-01T14:30:00Z", "lsn": "0/3000060"}));
    let path = "spec.bootstrap.recovery.target";
    assert_refused_by_rule(&judge(&manifest, None), "PostgresHost", path, rules::ONE_RECOVERY_TARGET);
}

#[test]
fn immediate_false_is_refused() {
    let mut manifest = restored_host();
    set(&mut manifest, "spec.bootstrap.recovery.target", json!({"immediate": false}));
    let path = "spec.bootstrap.recovery.target.immediate";
    assert_refused_by_rule(&judge(&manifest, None), "PostgresHost", path, rules::IMMEDIATE_IS_TRUE);
}

#[test]
fn a_recovery_time_that_postgres_would_not_read_or_has_no_zone_is_refused() {
    for time in ["yesterday at noon", "2026-12-04 15:25:03", "2026-12-04T15:25:03+5"] {
        let mut manifest = restored_host();
        set(&mut manifest, "spec.bootstrap.recovery.target", json!({ "time": time }));
        assert_refused_by_schema(&judge(&manifest, None));
    }
}

#[test]
fn recovery_times_as_psql_prints_them_or_in_rfc_3339_are_accepted() {
    for time in [
        "2026-12-04T15:25:03Z",
        "2026-12-04 15:25:03.429792+00",
        "2026-12-04 15:25:03 UTC",
        "2026-12-04t15:25:03.5+05:30",
        "2026-12-04 07:25-0800",
    ] {
        let mut manifest = restored_host();
        set(&mut manifest, "spec.bootstrap.recovery.target", json!({ "time": time }));
        let verdict = judge(&manifest, None);
        assert!(verdict.all_accept(), "{time}: {verdict:#?}");
    }
}

#[test]
fn postgres_versions_outside_13_to_17_are_refused() {
    for version in [12, 18] {
        let mut manifest = host();
        set(&mut manifest, "spec.postgresVersion", json!(version));
        let verdict = judge(&manifest, None);
        assert_refused_by_schema(&verdict);
        assert!(verdict.schema_errors.iter().any(|error| error.contains("/spec/postgresVersion")), "{verdict:#?}");
    }
}

#[test]
fn shrinking_the_data_volume_is_refused_and_growing_it_is_allowed() {
    let old = host();
    let mut shrunk = host();
    set(&mut shrunk, "spec.storage.sizeGiB", json!(99));
    let verdict = judge(&shrunk, Some(&old));
    assert_refused_by_rule(&verdict, "PostgresHost", "spec.storage.sizeGiB", rules::SIZE_NEVER_SHRINKS);
    // As a new object the same size is fine: the rule only compares with the previous value.
    assert!(judge(&shrunk, None).all_accept());

    let mut grown = host();
    set(&mut grown, "spec.storage.sizeGiB", json!(200));
    let verdict = judge(&grown, Some(&old));
    assert!(verdict.all_accept(), "{verdict:#?}");
}

#[test]
fn changing_the_bootstrap_or_the_major_version_is_refused() {
    let old = host();
    let mut restored = host();
    set(&mut restored, "spec.bootstrap", json!({"recovery": {"source": {"host": "a", "policy": "b"}}}));
    let verdict = judge(&restored, Some(&old));
    assert_refused_by_rule(&verdict, "PostgresHost", "spec.bootstrap", rules::BOOTSTRAP_IMMUTABLE);

    let mut upgraded = host();
    set(&mut upgraded, "spec.postgresVersion", json!(16));
    let verdict = judge(&upgraded, Some(&old));
    assert_refused_by_rule(&verdict, "PostgresHost", "spec.postgresVersion", rules::POSTGRES_VERSION_IMMUTABLE);
}

#[test]
fn a_standby_can_be_promoted_but_a_primary_cannot_become_a_standby() {
    let mut standby = restored_host();
    set(&mut standby, "spec.standby", json!(true));
    let primary = restored_host();
    assert!(judge(&primary, Some(&standby)).all_accept(), "promotion is allowed");
    let verdict = judge(&standby, Some(&primary));
    assert_refused_by_rule(&verdict, "PostgresHost", "spec.standby", rules::STANDBY_NEVER_RETURNS);
}

#[test]
fn a_standby_needs_recovery_without_a_target() {
    let mut from_initdb = host();
    set(&mut from_initdb, "spec.standby", json!(true));
    assert_refused_by_rule(&judge(&from_initdb, None), "PostgresHost", "spec", rules::STANDBY_NEEDS_RECOVERY);

    let mut with_target = restored_host();
    set(&mut with_target, "spec.standby", json!(true));
    set(&mut with_target, "spec.bootstrap.recovery.target", json!({"immediate": true}));
    assert_refused_by_rule(&judge(&with_target, None), "PostgresHost", "spec", rules::STANDBY_NEEDS_RECOVERY);
}

#[test]
fn the_subnet_and_the_volume_key_cannot_change_once_set() {
    let old = host();
    let mut moved = host();
    set(&mut moved, "spec.instance.subnetId", json!("subnet-0f1e2d3c4b5a69788"));
    assert_refused_by_rule(&judge(&moved, Some(&old)), "PostgresHost", "spec.instance", rules::SUBNET_STAYS);
    let mut without_subnet = host();
    remove(&mut without_subnet, "spec.instance.subnetId");
    assert!(judge(&old, Some(&without_subnet)).all_accept(), "a subnet may be added later");

    let mut rekeyed = host();
    set(&mut rekeyed, "spec.storage.kmsKeyId", json!("alias/other"));
    let verdict = judge(&rekeyed, Some(&old));
    assert_refused_by_rule(&verdict, "PostgresHost", "spec.storage", rules::VOLUME_KMS_KEY_IMMUTABLE);
}

#[test]
fn volume_settings_that_ebs_refuses_are_refused() {
    let cases = [
        (json!({"sizeGiB": 100, "type": "gp2", "iops": 3000}), rules::IOPS_NOT_GP2),
        (json!({"sizeGiB": 100, "type": "io2"}), rules::IOPS_REQUIRED_FOR_IO),
        (json!({"sizeGiB": 100, "type": "io1", "iops": 3000, "throughputMiBps": 250}), rules::THROUGHPUT_ONLY_GP3),
        (json!({"sizeGiB": 20000}), rules::SIZE_FITS_TYPE),
    ];
    for (storage, rule) in cases {
        let mut manifest = host();
        set(&mut manifest, "spec.storage", storage);
        assert_refused_by_rule(&judge(&manifest, None), "PostgresHost", "spec.storage", rule);
    }
}

#[test]
fn parameters_pgec2_manages_or_that_break_the_config_file_are_refused() {
    let path = "spec.postgres.parameters";
    let cases = [
        (json!({"archive_command": "/bin/true"}), rules::PARAMETERS_NOT_MANAGED),
        (json!({"port": "6543"}), rules::PARAMETERS_NOT_MANAGED),
        (json!({"work_mem": "4MB\narchive_command = '/bin/true'"}), rules::PARAMETER_VALUES_SINGLE_LINE),
        (json!({"wal_level": "minimal"}), rules::WAL_LEVEL_ARCHIVABLE),
        (json!({"Work Mem": "4MB"}), rules::PARAMETER_NAMES),
    ];
    for (parameters, rule) in cases {
        let mut manifest = host();
        set(&mut manifest, path, parameters);
        assert_refused_by_rule(&judge(&manifest, None), "PostgresHost", path, rule);
    }
}

#[test]
fn every_parameter_the_agent_manages_is_refused_by_the_crd_and_the_rust_validation() {
    let path = "spec.postgres.parameters";
    for name in pgec2_contract::parameters::MANAGED_PARAMETERS {
        let mut manifest = host();
        set(&mut manifest, path, json!({ *name: "on" }));
        assert_refused_by_rule(&judge(&manifest, None), "PostgresHost", path, rules::PARAMETERS_NOT_MANAGED);
    }
}

#[test]
fn pg_hba_entries_need_an_address_exactly_for_tcp_and_single_word_options() {
    let cases = [
        (json!({"type": "local", "address": "10.0.0.0/8", "method": "peer"}), "spec.postgres.pgHba[]"),
        (json!({"type": "hostssl", "method": "scram-sha-256"}), "spec.postgres.pgHba[]"),
    ];
    for (entry, path) in cases {
        let mut manifest = host();
        set(&mut manifest, "spec.postgres.pgHba", json!([entry]));
        assert_refused_by_rule(&judge(&manifest, None), "PostgresHost", path, rules::HBA_ADDRESS_MATCHES_TYPE);
    }
    let mut manifest = host();
    let entry = json!({"type": "host", "address": "all", "method": "ldap", "options": {"ldapserver": "a b"}});
    set(&mut manifest, "spec.postgres.pgHba", json!([entry]));
    let path = "spec.postgres.pgHba[].options";
    assert_refused_by_rule(&judge(&manifest, None), "PostgresHost", path, rules::HBA_OPTIONS_SINGLE_WORDS);
}

#[test]
fn reserved_tags_are_refused() {
    let mut manifest = host();
    set(&mut manifest, "spec.instance.tags", json!({"pgec2.io/host": "someone/else"}));
    let path = "spec.instance.tags";
    assert_refused_by_rule(&judge(&manifest, None), "PostgresHost", path, rules::TAGS_NOT_RESERVED);
}

#[test]
fn a_misspelt_field_is_refused_by_the_schema() {
    let mut manifest = host();
    set(&mut manifest, "spec.storage.sizeGb", json!(100));
    let verdict = judge(&manifest, None);
    assert!(verdict.schema_errors.iter().any(|error| error.contains("sizeGb")), "{verdict:#?}");
}

#[test]
fn a_policy_with_a_bad_cron_is_refused() {
    // Wrong shape: the schema's pattern and the Rust parser both refuse it.
    for schedule in ["0 3 * *", "0 0 0 3 * * *", "every day", "@reboot"] {
        let mut manifest = policy();
        set(&mut manifest, "spec.schedule", json!(schedule));
        let verdict = judge(&manifest, None);
        assert_refused_by_schema(&verdict);
        assert!(verdict.schema_errors.iter().any(|error| error.contains("/spec/schedule")), "{verdict:#?}");
    }
    // Right shape, impossible values: only a cron parser can tell, so the operator's
    // validation (which parks the policy with a condition) refuses it.
    for schedule in ["61 * * * *", "0 25 * * *", "0 3 * * funday"] {
        let mut manifest = policy();
        set(&mut manifest, "spec.schedule", json!(schedule));
        let verdict = judge(&manifest, None);
        let messages = verdict.rust_messages();
        assert!(messages.iter().any(|message| message.contains("not a valid cron expression")), "{verdict:#?}");
    }
}

#[test]
fn a_policy_needs_exactly_one_storage_backend() {
    let mut both = policy();
    set(&mut both, "spec.storage.local", json!({"path": "/var/lib/pgec2/backups"}));
    assert_refused_by_rule(&judge(&both, None), "BackupPolicy", "spec.storage", rules::ONE_STORAGE_BACKEND);
    let mut neither = policy();
    set(&mut neither, "spec.storage", json!({}));
    assert_refused_by_rule(&judge(&neither, None), "BackupPolicy", "spec.storage", rules::ONE_STORAGE_BACKEND);
}

#[test]
fn a_kms_key_needs_kms_encryption() {
    let mut manifest = policy();
    set(&mut manifest, "spec.storage.s3.kmsKeyId", json!("alias/backups"));
    set(&mut manifest, "spec.storage.s3.serverSideEncryption", json!("AES256"));
    let verdict = judge(&manifest, None);
    assert_refused_by_rule(&verdict, "BackupPolicy", "spec.storage.s3", rules::KMS_KEY_NEEDS_AWS_KMS);
    set(&mut manifest, "spec.storage.s3.serverSideEncryption", json!("aws:kms"));
    assert!(judge(&manifest, None).all_accept());
}

#[test]
fn encryption_without_a_key_or_with_two_key_sources_is_refused() {
    let mut manifest = policy();
    set(&mut manifest, "spec.encryption", json!({"mode": "aes-256-gcm"}));
    assert_refused_by_rule(&judge(&manifest, None), "BackupPolicy", "spec.encryption", rules::ENCRYPTION_NEEDS_KEY);
    set(&mut manifest, "spec.encryption", json!({"key": {"kms": "alias/pgec2", "file": "/etc/pgec2/key"}}));
    let verdict = judge(&manifest, None);
    assert_refused_by_rule(&verdict, "BackupPolicy", "spec.encryption.key", rules::ONE_ENCRYPTION_KEY);
    set(&mut manifest, "spec.encryption", json!({"key": {"kms": "alias/pgec2"}, "readKeys": [{"file": "/old.key"}]}));
    assert!(judge(&manifest, None).all_accept());
    set(&mut manifest, "spec.encryption", json!({"mode": "none"}));
    assert!(judge(&manifest, None).all_accept());
    set(&mut manifest, "spec.encryption", json!({"key": {"file": "/k", "kmsEndpoint": "http://kms:8080"}}));
    assert_refused_by_rule(
        &judge(&manifest, None),
        "BackupPolicy",
        "spec.encryption.key",
        rules::KMS_ENDPOINT_NEEDS_KMS,
    );
    let endpoint = |kms: &str, endpoint: &str| json!({"kms": kms, "kmsEndpoint": endpoint});
    let two = json!({"key": endpoint("alias/new", "http://kms-a:8080"), "readKeys": [endpoint("alias/old", "http://kms-b:8080")]});
    set(&mut manifest, "spec.encryption", two);
    assert!(!judge(&manifest, None).all_accept(), "two KMS endpoints are refused");
    let same = json!({"key": endpoint("alias/new", "http://kms-a:8080"), "readKeys": [endpoint("alias/old", "http://kms-a:8080")]});
    set(&mut manifest, "spec.encryption", same);
    assert!(judge(&manifest, None).all_accept());
}

#[test]
fn a_verification_check_is_exactly_one_of_amcheck_or_sql() {
    let mut manifest = policy();
    let checks = |checks: serde_json::Value| json!({"schedule": "0 2 * * *", "checks": checks});
    set(&mut manifest, "spec.verification", checks(json!([{"amcheck": {}, "sql": "SELECT true"}])));
    let path = "spec.verification.checks[]";
    assert_refused_by_rule(&judge(&manifest, None), "BackupPolicy", path, rules::ONE_VERIFICATION_CHECK);
    set(&mut manifest, "spec.verification", checks(json!([{"amcheck": {}, "database": "shop"}])));
    assert_refused_by_rule(&judge(&manifest, None), "BackupPolicy", path, rules::ONE_VERIFICATION_CHECK);
    set(
        &mut manifest,
        "spec.verification",
        checks(json!([{"amcheck": {}}, {"sql": "SELECT true", "database": "shop"}])),
    );
    assert!(judge(&manifest, None).all_accept());
}

#[test]
fn archive_timeouts_outside_a_second_to_a_day_are_refused() {
    for timeout in ["0s", "25h"] {
        let mut manifest = policy();
        set(&mut manifest, "spec.walArchiving.archiveTimeout", json!(timeout));
        let path = "spec.walArchiving.archiveTimeout";
        assert_refused_by_rule(&judge(&manifest, None), "BackupPolicy", path, rules::ARCHIVE_TIMEOUT_RANGE);
    }
    let mut manifest = policy();
    set(&mut manifest, "spec.walArchiving.archiveTimeout", json!("soon"));
    assert_refused_by_schema(&judge(&manifest, None));
}

#[test]
fn values_that_could_break_out_of_config_files_or_commands_are_refused() {
    let host_cases = [
        ("spec.bootstrap", json!({"initdb": {"locale": "C.UTF-8 --auth=trust"}})),
        ("spec.bootstrap", json!({"initdb": {"encoding": "UTF8'"}})),
        (
            "spec.bootstrap",
            json!({"recovery": {"source": {"host": "a", "policy": "b"}, "target": {"name": "x' or '1"}}}),
        ),
        ("spec.bootstrap", json!({"recovery": {"source": {"host": "../other", "policy": "b"}}})),
        ("spec.bootstrap", json!({"recovery": {"source": {"host": "a", "policy": "b"}, "backup": "../../etc"}})),
        ("spec.postgres.pgHba", json!([{"type": "host", "database": "\"all\"", "address": "all", "method": "trust"}])),
        ("spec.instance.instanceType", json!("m7i.large; curl evil")),
    ];
    for (path, value) in host_cases {
        let mut manifest = host();
        set(&mut manifest, path, value.clone());
        let verdict = judge(&manifest, None);
        assert!(!verdict.schema_errors.is_empty(), "the schema accepted {value}: {verdict:#?}");
        assert!(!verdict.rust_messages().is_empty(), "Rust accepted {value}: {verdict:#?}");
    }
    let mut manifest = policy();
    set(&mut manifest, "spec.storage", json!({"local": {"path": "relative/backups"}}));
    assert_refused_by_schema(&judge(&manifest, None));
}

#[test]
fn a_snapshot_lock_needs_backups_that_take_snapshots() {
    let mut object_store = policy();
    set(&mut object_store, "spec.snapshotLock", json!({"mode": "compliance", "days": 30}));
    assert_refused_by_rule(&judge(&object_store, None), "BackupPolicy", "spec", rules::SNAPSHOT_LOCK_NEEDS_SNAPSHOTS);
    let mut snapshots = object_store.clone();
    set(&mut snapshots, "spec.method", json!("both"));
    let verdict = judge(&snapshots, None);
    assert!(verdict.all_accept(), "{verdict:#?}");
}

#[test]
fn an_incremental_schedule_needs_object_store_backups_and_a_cron_expression() {
    let mut snapshot = policy();
    set(&mut snapshot, "spec.incrementalSchedule", json!("0 3 * * 1-6"));
    set(&mut snapshot, "spec.method", json!("snapshot"));
    assert_refused_by_rule(&judge(&snapshot, None), "BackupPolicy", "spec", rules::INCREMENTAL_NEEDS_OBJECT_STORE);
    let mut bad = policy();
    set(&mut bad, "spec.incrementalSchedule", json!("0 25 * * *"));
    let verdict = judge(&bad, None);
    assert!(
        verdict.rust_messages().iter().any(|message| message.contains("not a valid cron expression")),
        "{verdict:#?}"
    );
}
