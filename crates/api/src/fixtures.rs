//! Chainable builders of `PostgresHost` and `BackupPolicy` values for tests (feature
//! `fixtures`).
//!
//! ```
//! use pgec2_api::fixtures::{host, policy};
//!
//! let primary = host("orders-db").namespace("shop").size_gib(50).policy("nightly").build();
//! let nightly = policy("nightly").namespace("shop").local("/var/lib/pgec2/backups").build();
//! assert_eq!(primary.policy_name(), Some("nightly"));
//! assert!(nightly.spec.validate().is_ok());
//! ```

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::{
    BackupPolicy, BackupPolicySpec, BackupSpec, BackupStorage, Bootstrap, Compression, LocalStorage, PgHbaEntry,
    PolicyReference, PostgresHost, PostgresHostSpec, PostgresHostStatus, RecoveryBootstrap, RecoverySource,
    RecoveryTarget, Retention, S3Storage, TargetAction, VolumeSpec, VolumeType, WalArchiving,
};

/// A host named `name` in namespace `default` with a 10 GiB data volume and initdb bootstrap.
pub fn host(name: &str) -> HostBuilder {
    let spec = PostgresHostSpec {
        postgres_version: crate::DEFAULT_POSTGRES_VERSION,
        instance: Default::default(),
        storage: VolumeSpec {
            size_gib: 10,
            volume_type: VolumeType::Gp3,
            iops: None,
            throughput_mibps: None,
            kms_key_id: None,
            deletion_policy: Default::default(),
        },
        postgres: Default::default(),
        backup: None,
        bootstrap: Bootstrap::default(),
        standby: false,
        paused: false,
    };
    HostBuilder { host: PostgresHost { metadata: metadata(name), spec, status: None } }
}

/// A policy named `name` in namespace `default`, daily at 03:00 UTC, into local directory
/// `/var/lib/pgec2/backups`.
pub fn policy(name: &str) -> PolicyBuilder {
    let spec = BackupPolicySpec {
        storage: BackupStorage { s3: None, local: Some(LocalStorage { path: "/var/lib/pgec2/backups".into() }) },
        schedule: "0 3 * * *".into(),
        incremental_schedule: None,
        time_zone: None,
        suspend: false,
        retention: Retention::default(),
        compression: Compression::default(),
        wal_archiving: WalArchiving::default(),
        method: Default::default(),
        snapshot_lock: None,
        objectives: None,
        verification: None,
        encryption: None,
    };
    PolicyBuilder { policy: BackupPolicy { metadata: metadata(name), spec, status: None } }
}

fn metadata(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some("default".to_string()),
        uid: Some(format!("00000000-0000-4000-8000-{:012x}", fnv(name))),
        generation: Some(1),
        ..ObjectMeta::default()
    }
}

/// A stable number per name, so fixtures get distinct, repeatable uids.
fn fnv(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3))
        & 0xffff_ffff_ffff
}

/// Builds a [`PostgresHost`]; see [`host`].
#[derive(Clone, Debug)]
pub struct HostBuilder {
    host: PostgresHost,
}

impl HostBuilder {
    /// Sets the namespace.
    pub fn namespace(mut self, namespace: &str) -> Self {
        self.host.metadata.namespace = Some(namespace.to_string());
        self
    }

    /// Sets `metadata.generation`.
    pub fn generation(mut self, generation: i64) -> Self {
        self.host.metadata.generation = Some(generation);
        self
    }

    /// Adds an annotation.
    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.host.metadata.annotations.get_or_insert_with(BTreeMap::new).insert(key.into(), value.into());
        self
    }

    /// Sets `spec.postgresVersion`.
    pub fn version(mut self, version: i32) -> Self {
        self.host.spec.postgres_version = version;
        self
    }

    /// Sets `spec.storage.sizeGiB`.
    pub fn size_gib(mut self, size_gib: i32) -> Self {
        self.host.spec.storage.size_gib = size_gib;
        self
    }

    /// Sets `spec.instance.subnetId`.
    pub fn subnet(mut self, subnet_id: &str) -> Self {
        self.host.spec.instance.subnet_id = Some(subnet_id.to_string());
        self
    }

    /// References a BackupPolicy.
    pub fn policy(mut self, policy: &str) -> Self {
        self.host.spec.backup = Some(BackupSpec { policy_ref: PolicyReference { name: policy.to_string() } });
        self
    }

    /// Bootstraps from `source`'s LATEST backup in `policy`, replaying all archived WAL.
    pub fn recovery_from(mut self, source: &str, policy: &str) -> Self {
        let recovery = RecoveryBootstrap {
            source: RecoverySource { host: source.to_string(), policy: policy.to_string() },
            backup: crate::LATEST_BACKUP.to_string(),
            target: None,
            target_action: TargetAction::Promote,
            fast_snapshot_restore: false,
        };
        self.host.spec.bootstrap = Bootstrap { initdb: None, recovery: Some(recovery) };
        self
    }

    /// Sets the recovery target (call after [`Self::recovery_from`]).
    pub fn target(mut self, target: RecoveryTarget) -> Self {
        if let Some(recovery) = self.host.spec.bootstrap.recovery.as_mut() {
            recovery.target = Some(target);
        }
        self
    }

    /// Sets `spec.standby`.
    pub fn standby(mut self, standby: bool) -> Self {
        self.host.spec.standby = standby;
        self
    }

    /// Sets `spec.paused`.
    pub fn paused(mut self, paused: bool) -> Self {
        self.host.spec.paused = paused;
        self
    }

    /// Sets one postgresql.conf parameter.
    pub fn parameter(mut self, name: &str, value: &str) -> Self {
        self.host.spec.postgres.parameters.insert(name.to_string(), value.to_string());
        self
    }

    /// Appends a pg_hba entry.
    pub fn hba(mut self, entry: PgHbaEntry) -> Self {
        self.host.spec.postgres.pg_hba.push(entry);
        self
    }

    /// Sets the status.
    pub fn status(mut self, status: PostgresHostStatus) -> Self {
        self.host.status = Some(status);
        self
    }

    /// The host.
    pub fn build(self) -> PostgresHost {
        self.host
    }
}

/// A recovery target at an RFC 3339 time.
pub fn target_time(time: &str) -> RecoveryTarget {
    RecoveryTarget { time: Some(time.to_string()), lsn: None, xid: None, name: None, immediate: None }
}

/// Builds a [`BackupPolicy`]; see [`policy`].
#[derive(Clone, Debug)]
pub struct PolicyBuilder {
    policy: BackupPolicy,
}

impl PolicyBuilder {
    /// Sets the namespace.
    pub fn namespace(mut self, namespace: &str) -> Self {
        self.policy.metadata.namespace = Some(namespace.to_string());
        self
    }

    /// Stores into a local directory.
    pub fn local(mut self, path: &str) -> Self {
        self.policy.spec.storage = BackupStorage { s3: None, local: Some(LocalStorage { path: path.to_string() }) };
        self
    }

    /// Stores into an S3 bucket, optionally at a custom (path-style) endpoint.
    pub fn s3(mut self, bucket: &str, endpoint: Option<&str>) -> Self {
        let s3 = S3Storage {
            bucket: bucket.to_string(),
            prefix: None,
            region: None,
            endpoint: endpoint.map(str::to_string),
            force_path_style: endpoint.is_some(),
            storage_class: None,
            server_side_encryption: None,
            kms_key_id: None,
            walg_compatible: None,
            object_lock: None,
        };
        self.policy.spec.storage = BackupStorage { s3: Some(s3), local: None };
        self
    }

    /// Sets `spec.method`.
    pub fn method(mut self, method: crate::BackupMethod) -> Self {
        self.policy.spec.method = method;
        self
    }

    /// Sets `spec.snapshotLock`.
    pub fn snapshot_lock(mut self, mode: crate::ObjectLockMode, days: Option<i32>) -> Self {
        self.policy.spec.snapshot_lock = Some(crate::ObjectLockPolicy { mode, days });
        self
    }

    /// Sets `spec.objectives`.
    pub fn objectives(mut self, rpo: Option<&str>, rto: Option<&str>) -> Self {
        let objectives = crate::RecoveryObjectives { rpo: rpo.map(str::to_string), rto: rto.map(str::to_string) };
        self.policy.spec.objectives = Some(objectives);
        self
    }

    /// Sets `spec.verification`.
    pub fn verification(mut self, verification: crate::Verification) -> Self {
        self.policy.spec.verification = Some(verification);
        self
    }

    /// Sets `spec.schedule`.
    pub fn schedule(mut self, schedule: &str) -> Self {
        self.policy.spec.schedule = schedule.to_string();
        self
    }

    /// Sets `spec.incrementalSchedule`.
    pub fn incremental_schedule(mut self, schedule: &str) -> Self {
        self.policy.spec.incremental_schedule = Some(schedule.to_string());
        self
    }

    /// Sets `spec.suspend`.
    pub fn suspend(mut self, suspend: bool) -> Self {
        self.policy.spec.suspend = suspend;
        self
    }

    /// Sets `spec.retention.fullBackups`.
    pub fn keep(mut self, full_backups: i32) -> Self {
        self.policy.spec.retention.full_backups = full_backups;
        self
    }

    /// Sets `spec.compression`.
    pub fn compression(mut self, compression: Compression) -> Self {
        self.policy.spec.compression = compression;
        self
    }

    /// Sets `spec.walArchiving.archiveTimeout`.
    pub fn archive_timeout(mut self, timeout: &str) -> Self {
        self.policy.spec.wal_archiving.archive_timeout = timeout.to_string();
        self
    }

    /// The policy.
    pub fn build(self) -> BackupPolicy {
        self.policy
    }
}
