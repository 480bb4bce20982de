//! The table of invalid specs: each CEL rule of `pgec2_api::rules::ALL` and each kind of schema
//! constraint the CRDs use, at least once, with what the API server must answer.

#![allow(dead_code)]

use pgec2_api::rules::{self, CelRule};
use serde_json::{Value, json};

/// What the server must say when it refuses a case.
#[derive(Clone, Copy, Debug)]
pub enum Expect {
    /// A CEL rule's message, as the docs (and `pgec2_api::rules`) promise it.
    Rule(CelRule),
    /// A schema constraint (its OpenAPI keyword): the field path and the API server's words.
    Schema { keyword: &'static str, field: &'static str, says: &'static str },
}

/// One invalid object: `spec` merged over the kind's smallest valid spec; for transition rules
/// `before` is applied first (valid) and the case is the update to `spec`.
#[derive(Clone, Debug)]
pub struct Case {
    pub name: &'static str,
    pub kind: &'static str,
    pub before: Option<Value>,
    pub spec: Value,
    pub expect: Expect,
}

pub const HOST: &str = "PostgresHost";
pub const POLICY: &str = "BackupPolicy";

/// The smallest valid spec of each kind.
pub fn base_spec(kind: &str) -> Value {
    match kind {
        HOST => json!({"storage": {"sizeGiB": 20}}),
        _ => json!({"schedule": "0 3 * * *", "storage": {"local": {"path": "/var/lib/pgec2/backups"}}}),
    }
}

/// The whole object of a case (`spec` merged over the base spec).
pub fn object(kind: &str, namespace: &str, name: &str, spec: &Value) -> Value {
    let mut merged = base_spec(kind);
    merge(&mut merged, spec);
    json!({
        "apiVersion": pgec2_api::API_GROUP_VERSION,
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace},
        "spec": merged,
    })
}

/// JSON merge patch semantics (RFC 7386): `null` removes a key.
fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                if value.is_null() {
                    target.remove(key);
                } else {
                    merge(target.entry(key.clone()).or_insert(Value::Null), value);
                }
            }
        }
        (target, patch) => *target = patch.clone(),
    }
}

fn host(name: &'static str, spec: Value, expect: Expect) -> Case {
    Case { name, kind: HOST, before: None, spec, expect }
}

fn policy(name: &'static str, spec: Value, expect: Expect) -> Case {
    Case { name, kind: POLICY, before: None, spec, expect }
}

fn host_update(name: &'static str, before: Value, spec: Value, rule: CelRule) -> Case {
    Case { name, kind: HOST, before: Some(before), spec, expect: Expect::Rule(rule) }
}

fn schema(field: &'static str, says: &'static str) -> Expect {
    Expect::Schema { keyword: keyword_of(says), field, says }
}

/// Every case. The names become object names (DNS labels).
pub fn cases() -> Vec<Case> {
    let mut all = cel_cases();
    all.extend(schema_cases());
    all
}

fn recovery(target: Value) -> Value {
    json!({"bootstrap": {"recovery": {"source": {"host": "a", "policy": "b"}, "target": target}}})
}

fn cel_cases() -> Vec<Case> {
    use Expect::Rule;
    let standby_from_initdb = json!({"standby": true});
    vec![
        host("standby-initdb", standby_from_initdb, Rule(rules::STANDBY_NEEDS_RECOVERY)),
        host_update(
            "version-change",
            json!({"postgresVersion": 15}),
            json!({"postgresVersion": 16}),
            rules::POSTGRES_VERSION_IMMUTABLE,
        ),
        host_update(
            "bootstrap-change",
            json!({"bootstrap": {"initdb": {"encoding": "UTF8"}}}),
            json!({"bootstrap": {"initdb": {"encoding": "LATIN1"}}}),
            rules::BOOTSTRAP_IMMUTABLE,
        ),
        host_update(
            "standby-again",
            json!({"standby": false, "bootstrap": {"recovery": {"source": {"host": "a", "policy": "b"}}}}),
            json!({"standby": true, "bootstrap": {"recovery": {"source": {"host": "a", "policy": "b"}}}}),
            rules::STANDBY_NEVER_RETURNS,
        ),
        host_update(
            "subnet-change",
            json!({"instance": {"subnetId": "subnet-0123456789abcdef0"}}),
            json!({"instance": {"subnetId": "subnet-0123456789abcdef1"}}),
            rules::SUBNET_STAYS,
        ),
        host("reserved-tag", json!({"instance": {"tags": {"pgec2.io/host": "x"}}}), Rule(rules::TAGS_NOT_RESERVED)),
        // 41 tags are refused by the schema's maxProperties first; a key over 128 characters
        // only by the rule (a schema cannot bound key lengths).
        host("tag-key-long", json!({"instance": {"tags": {"k".repeat(129): "x"}}}), Rule(rules::TAGS_FIT_EC2)),
        host_update(
            "shrink",
            json!({"storage": {"sizeGiB": 20}}),
            json!({"storage": {"sizeGiB": 10}}),
            rules::SIZE_NEVER_SHRINKS,
        ),
        host("huge-gp3", json!({"storage": {"sizeGiB": 20000}}), Rule(rules::SIZE_FITS_TYPE)),
        host(
            "throughput-gp2",
            json!({"storage": {"type": "gp2", "throughputMiBps": 200}}),
            Rule(rules::THROUGHPUT_ONLY_GP3),
        ),
        host("iops-gp2", json!({"storage": {"type": "gp2", "iops": 3000}}), Rule(rules::IOPS_NOT_GP2)),
        host("io2-no-iops", json!({"storage": {"type": "io2"}}), Rule(rules::IOPS_REQUIRED_FOR_IO)),
        host_update(
            "kms-change",
            json!({"storage": {"kmsKeyId": "alias/one"}}),
            json!({"storage": {"kmsKeyId": "alias/two"}}),
            rules::VOLUME_KMS_KEY_IMMUTABLE,
        ),
        host("param-name", json!({"postgres": {"parameters": {"Work_Mem": "4MB"}}}), Rule(rules::PARAMETER_NAMES)),
        host(
            "param-managed",
            json!({"postgres": {"parameters": {"archive_command": "true"}}}),
            Rule(rules::PARAMETERS_NOT_MANAGED),
        ),
        host(
            "param-newline",
            json!({"postgres": {"parameters": {"work_mem": "4MB\nport = 1"}}}),
            Rule(rules::PARAMETER_VALUES_SINGLE_LINE),
        ),
        host(
            "wal-minimal",
            json!({"postgres": {"parameters": {"wal_level": "minimal"}}}),
            Rule(rules::WAL_LEVEL_ARCHIVABLE),
        ),
        host(
            "hba-no-address",
            json!({"postgres": {"pgHba": [{"type": "host", "method": "scram-sha-256"}]}}),
            Rule(rules::HBA_ADDRESS_MATCHES_TYPE),
        ),
        host(
            "hba-options",
            json!({"postgres": {"pgHba": [{"type": "local", "method": "peer", "options": {"map": "a b"}}]}}),
            Rule(rules::HBA_OPTIONS_SINGLE_WORDS),
        ),
        host(
            "two-bootstraps",
            json!({"bootstrap": {"initdb": {}, "recovery": {"source": {"host": "a", "policy": "b"}}}}),
            Rule(rules::ONE_BOOTSTRAP_MODE),
        ),
        host("two-targets", recovery(json!({"xid": "100", "name": "before-drop"})), Rule(rules::ONE_RECOVERY_TARGET)),
        host("immediate-false", recovery(json!({"immediate": false})), Rule(rules::IMMEDIATE_IS_TRUE)),
        policy(
            "two-stores",
            json!({"storage": {"s3": {"bucket": "backups"}, "local": {"path": "/b"}}}),
            Rule(rules::ONE_STORAGE_BACKEND),
        ),
        policy(
            "kms-aes",
            json!({"storage": {"local": null, "s3": {"bucket": "backups", "kmsKeyId": "alias/k"}}}),
            Rule(rules::KMS_KEY_NEEDS_AWS_KMS),
        ),
        policy("timeout-long", json!({"walArchiving": {"archiveTimeout": "25h"}}), Rule(rules::ARCHIVE_TIMEOUT_RANGE)),
        policy("encryption-no-key", json!({"encryption": {"mode": "aes-256-gcm"}}), Rule(rules::ENCRYPTION_NEEDS_KEY)),
        policy(
            "encryption-two-keys",
            json!({"encryption": {"key": {"file": "/etc/pgec2/key", "env": "PGEC2_KEY"}}}),
            Rule(rules::ONE_ENCRYPTION_KEY),
        ),
        policy(
            "kms-endpoint-file-key",
            json!({"encryption": {"key": {"file": "/etc/pgec2/key", "kmsEndpoint": "https://kms.example"}}}),
            Rule(rules::KMS_ENDPOINT_NEEDS_KMS),
        ),
        policy(
            "incremental-snapshot",
            json!({"method": "snapshot", "incrementalSchedule": "0 3 * * 1-6"}),
            Rule(rules::INCREMENTAL_NEEDS_OBJECT_STORE),
        ),
        policy(
            "snapshot-lock-object-store",
            json!({"snapshotLock": {"mode": "governance", "days": 7}}),
            Rule(rules::SNAPSHOT_LOCK_NEEDS_SNAPSHOTS),
        ),
        policy(
            "verification-two-checks",
            json!({"verification": {"schedule": "0 2 * * *", "checks": [{"amcheck": {}, "sql": "SELECT true"}]}}),
            Rule(rules::ONE_VERIFICATION_CHECK),
        ),
    ]
}

fn many_tags(count: usize) -> Value {
    Value::Object((0..count).map(|index| (format!("team{index}"), json!("x"))).collect())
}

fn schema_cases() -> Vec<Case> {
    vec![
        host("no-storage", json!({"storage": null, "paused": true}), schema("spec.storage", "Required value")),
        host(
            "size-required",
            json!({"storage": {"sizeGiB": null, "type": "gp3"}}),
            schema("spec.storage.sizeGiB", "Required value"),
        ),
        host("size-text", json!({"storage": {"sizeGiB": "big"}}), schema("spec.storage.sizeGiB", "expected numeric")),
        host(
            "size-zero",
            json!({"storage": {"sizeGiB": 0}}),
            schema("spec.storage.sizeGiB", "greater than or equal to 1"),
        ),
        host(
            "version-12",
            json!({"postgresVersion": 12}),
            schema("spec.postgresVersion", "greater than or equal to 13"),
        ),
        host("version-18", json!({"postgresVersion": 18}), schema("spec.postgresVersion", "less than or equal to 17")),
        host("volume-type", json!({"storage": {"type": "st1"}}), schema("spec.storage.type", "Unsupported value")),
        host(
            "deletion-policy",
            json!({"storage": {"deletionPolicy": "Orphan"}}),
            schema("spec.storage.deletionPolicy", "Unsupported value"),
        ),
        host(
            "instance-type",
            json!({"instance": {"instanceType": "T3 medium"}}),
            schema("spec.instance.instanceType", "should match"),
        ),
        host(
            "subnet-pattern",
            json!({"instance": {"subnetId": "sub-1"}}),
            schema("spec.instance.subnetId", "should match"),
        ),
        host(
            "groups-too-many",
            json!({"instance": {"securityGroupIds": ["sg-00000001", "sg-00000002", "sg-00000003", "sg-00000004", "sg-00000005", "sg-00000006"]}}),
            schema("spec.instance.securityGroupIds", "must have at most 5 items"),
        ),
        host(
            "root-small",
            json!({"instance": {"rootVolume": {"sizeGiB": 4}}}),
            schema("spec.instance.rootVolume.sizeGiB", "greater than or equal to 8"),
        ),
        host(
            "profile-empty",
            json!({"instance": {"iamInstanceProfile": ""}}),
            schema("spec.instance.iamInstanceProfile", "at least 1"),
        ),
        host(
            "encoding-long",
            json!({"bootstrap": {"initdb": {"encoding": "U".repeat(64)}}}),
            schema("spec.bootstrap.initdb.encoding", "may not be more than 63 bytes"),
        ),
        host(
            "lsn-pattern",
            recovery(json!({"lsn": "0/XYZ"})),
            schema("spec.bootstrap.recovery.target.lsn", "should match"),
        ),
        host(
            "target-action",
            json!({"bootstrap": {"recovery": {"source": {"host": "a", "policy": "b"}, "targetAction": "resume"}}}),
            schema("spec.bootstrap.recovery.targetAction", "Unsupported value"),
        ),
        host(
            "source-required",
            json!({"bootstrap": {"recovery": {"backup": "LATEST"}}}),
            schema("spec.bootstrap.recovery.source", "Required value"),
        ),
        host(
            "hba-method",
            json!({"postgres": {"pgHba": [{"type": "local", "method": "none"}]}}),
            schema("spec.postgres.pgHba[0].method", "Unsupported value"),
        ),
        host(
            "param-long",
            json!({"postgres": {"parameters": {"search_path": "x".repeat(1025)}}}),
            schema("spec.postgres.parameters.search_path", "may not be more than 1024 bytes"),
        ),
        host(
            "policy-ref-name",
            json!({"backup": {"policyRef": {"name": "Nightly"}}}),
            schema("spec.backup.policyRef.name", "should match"),
        ),
        policy("no-schedule", json!({"schedule": null}), schema("spec.schedule", "Required value")),
        policy("schedule-pattern", json!({"schedule": "every day"}), schema("spec.schedule", "should match")),
        policy(
            "keep-zero",
            json!({"retention": {"fullBackups": 0}}),
            schema("spec.retention.fullBackups", "greater than or equal to 1"),
        ),
        policy(
            "keep-many",
            json!({"retention": {"fullBackups": 1001}}),
            schema("spec.retention.fullBackups", "less than or equal to 1000"),
        ),
        policy("compression", json!({"compression": "gzip"}), schema("spec.compression", "Unsupported value")),
        policy("method", json!({"method": "pg_dump"}), schema("spec.method", "Unsupported value")),
        policy(
            "local-relative",
            json!({"storage": {"local": {"path": "backups"}}}),
            schema("spec.storage.local.path", "should match"),
        ),
        policy(
            "bucket-pattern",
            json!({"storage": {"local": null, "s3": {"bucket": "My_Bucket"}}}),
            schema("spec.storage.s3.bucket", "should match"),
        ),
        policy(
            "storage-class",
            json!({"storage": {"local": null, "s3": {"bucket": "backups", "storageClass": "DEEP_ARCHIVE"}}}),
            schema("spec.storage.s3.storageClass", "Unsupported value"),
        ),
        policy(
            "timeout-short",
            json!({"walArchiving": {"archiveTimeout": "1"}}),
            schema("spec.walArchiving.archiveTimeout", "at least 2"),
        ),
        policy("timezone", json!({"timeZone": "Europe Berlin"}), schema("spec.timeZone", "should match")),
    ]
}

/// The schema keyword behind the API server's words for a violated constraint.
fn keyword_of(says: &str) -> &'static str {
    [
        ("Required value", "required"),
        ("expected numeric", "type"),
        ("greater than or equal", "minimum"),
        ("less than or equal", "maximum"),
        ("Unsupported value", "enum"),
        ("should match", "pattern"),
        ("items", "maxItems"),
        ("properties", "maxProperties"),
        ("may not be more than", "maxLength"),
        ("at least", "minLength"),
    ]
    .into_iter()
    .find(|(words, _)| says.contains(words))
    .map_or_else(|| panic!("no schema keyword says {says:?}"), |(_, keyword)| keyword)
}
