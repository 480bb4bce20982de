//! The CEL rules (`x-kubernetes-validations`) the API server enforces on pgec2 resources.
//!
//! Each rule is written once here with its message. The CRD derive puts it into the schema, and
//! [`crate::validation`] checks the same condition in Rust with the same message, for places
//! without an API server (local mode) and for the operator's own checks. A test evaluates every
//! rule with a CEL interpreter against the generated CRD and compares with the Rust checks.

use kube::core::Rule;

/// A CEL validation rule and the message the API server returns when it fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CelRule {
    /// The CEL expression; `self` is the field the rule is attached to, `oldSelf` its previous
    /// value (transition rules, only checked on update).
    pub rule: &'static str,
    /// The message shown when the expression is false.
    pub message: &'static str,
}

impl CelRule {
    /// True for transition rules, which compare with the previous value on update.
    pub fn is_transition(&self) -> bool {
        self.rule.contains("oldSelf")
    }
}

impl From<CelRule> for Rule {
    fn from(value: CelRule) -> Self {
        Rule::new(value.rule).message(value.message)
    }
}

// ---- PostgresHost ----

/// `spec`: a standby follows its source's whole archive.
pub const STANDBY_NEEDS_RECOVERY: CelRule = CelRule {
    rule: "!self.standby || (has(self.bootstrap.recovery) && !has(self.bootstrap.recovery.target))",
    message: "standby needs bootstrap.recovery without a target: a standby replays all of its source's WAL",
};

/// `spec.postgresVersion` is immutable.
pub const POSTGRES_VERSION_IMMUTABLE: CelRule = CelRule {
    rule: "self == oldSelf",
    message: "postgresVersion cannot change: major version upgrades are not supported, restore into a new host instead",
};

/// `spec.bootstrap` is immutable.
pub const BOOTSTRAP_IMMUTABLE: CelRule =
    CelRule { rule: "self == oldSelf", message: "bootstrap cannot change after the host is created" };

/// `spec.standby` may go from true to false (promotion), never back.
pub const STANDBY_NEVER_RETURNS: CelRule = CelRule {
    rule: "oldSelf || !self",
    message: "standby cannot be turned on again: a promoted host has its own timeline, create a new standby host",
};

/// `spec.instance.subnetId` cannot change once set (the data volume lives in its zone).
pub const SUBNET_STAYS: CelRule = CelRule {
    rule: "!has(oldSelf.subnetId) || (has(self.subnetId) && self.subnetId == oldSelf.subnetId)",
    message: "instance.subnetId cannot change once set: the data volume lives in the subnet's availability zone",
};

/// `spec.instance.tags`: no reserved keys.
pub const TAGS_NOT_RESERVED: CelRule = CelRule {
    rule: "self.all(k, !k.startsWith('pgec2.io/') && !k.startsWith('aws:'))",
    message: "instance.tags keys starting with pgec2.io/ or aws: are reserved",
};

/// `spec.instance.tags`: EC2's limits, leaving room for pgec2's own tags.
pub const TAGS_FIT_EC2: CelRule = CelRule {
    rule: "self.size() <= 40 && self.all(k, size(k) >= 1 && size(k) <= 128 && size(self[k]) <= 256)",
    message: "instance.tags allows at most 40 tags, keys of 1 to 128 characters and values up to 256",
};

/// `spec.storage.sizeGiB` may grow, never shrink.
pub const SIZE_NEVER_SHRINKS: CelRule = CelRule {
    rule: "self >= oldSelf",
    message: "storage.sizeGiB may grow but never shrink: EBS volumes cannot be made smaller",
};

/// `spec.storage`: only io2 volumes exceed 16 TiB.
pub const SIZE_FITS_TYPE: CelRule = CelRule {
    rule: "self.type == 'io2' || self.sizeGiB <= 16384",
    message: "storage.sizeGiB above 16384 needs type io2",
};

/// `spec.storage`: throughput is a gp3 setting.
pub const THROUGHPUT_ONLY_GP3: CelRule = CelRule {
    rule: "!has(self.throughputMiBps) || self.type == 'gp3'",
    message: "storage.throughputMiBps is only allowed with type gp3",
};

/// `spec.storage`: gp2 has no provisioned IOPS.
pub const IOPS_NOT_GP2: CelRule =
    CelRule { rule: "!has(self.iops) || self.type != 'gp2'", message: "storage.iops is not allowed with type gp2" };

/// `spec.storage`: io1 and io2 need provisioned IOPS.
pub const IOPS_REQUIRED_FOR_IO: CelRule = CelRule {
    rule: "!(self.type == 'io1' || self.type == 'io2') || has(self.iops)",
    message: "storage.iops is required with type io1 or io2",
};

/// `spec.storage.kmsKeyId` is immutable (it encrypts the existing volume).
pub const VOLUME_KMS_KEY_IMMUTABLE: CelRule = CelRule {
    rule: "(has(self.kmsKeyId) ? self.kmsKeyId : '') == (has(oldSelf.kmsKeyId) ? oldSelf.kmsKeyId : '')",
    message: "storage.kmsKeyId cannot change: it encrypts the existing volume",
};

/// `spec.postgres.parameters`: names as PostgreSQL spells them.
pub const PARAMETER_NAMES: CelRule = CelRule {
    rule: "self.all(k, k.matches('^[a-z][a-z0-9_]*([.][a-z0-9_]+)?$'))",
    message: "postgres.parameters names are lowercase PostgreSQL parameter names such as work_mem",
};

/// The CEL rule `self.all(k, !(k in ['a', 'b', …]))` over the given names, as one literal.
macro_rules! none_of_names {
    ($first:literal $(, $rest:literal)*) => {
        concat!("self.all(k, !(k in ['", $first, "'", $(", '", $rest, "'",)* "]))")
    };
}

/// `spec.postgres.parameters`: none of the parameters pgec2 manages
/// ([`pgec2_contract::parameters::MANAGED_PARAMETERS`]). The rule's list is built from that one
/// list at compile time.
pub const PARAMETERS_NOT_MANAGED: CelRule = CelRule {
    rule: pgec2_contract::with_managed_parameters!(none_of_names),
    message: "postgres.parameters cannot set parameters pgec2 manages (archiving, recovery, file paths, port, \
              listen_addresses, unix_socket_directories, hot_standby, ssl, password_encryption); use the \
              BackupPolicy and bootstrap fields instead",
};

/// `spec.postgres.parameters`: values stay on one line of postgresql.conf.
pub const PARAMETER_VALUES_SINGLE_LINE: CelRule = CelRule {
    rule: "self.all(k, !self[k].contains('\\n') && !self[k].contains('\\r'))",
    message: "postgres.parameters values cannot contain line breaks",
};

/// `spec.postgres.parameters`: archiving needs at least `replica` WAL.
pub const WAL_LEVEL_ARCHIVABLE: CelRule = CelRule {
    rule: "!('wal_level' in self) || self['wal_level'] in ['replica', 'logical']",
    message: "postgres.parameters.wal_level must be replica or logical: archiving and restores need it",
};

/// `spec.postgres.pgHba[]`: an address exactly for TCP entries.
pub const HBA_ADDRESS_MATCHES_TYPE: CelRule = CelRule {
    rule: "self.type == 'local' ? !has(self.address) : has(self.address)",
    message: "pgHba entries need an address unless their type is local, and local entries take none",
};

/// `spec.postgres.pgHba[].options`: `name=value` words that need no quoting.
pub const HBA_OPTIONS_SINGLE_WORDS: CelRule = CelRule {
    rule: r##"self.all(k, k.matches('^[a-zA-Z_]+$') && self[k].matches('^[^\\s"#]+$'))"##,
    message: "pgHba options are name: value pairs of single words (no spaces, quotes or #)",
};

/// `spec.bootstrap`: exactly one mode.
pub const ONE_BOOTSTRAP_MODE: CelRule = CelRule {
    rule: "has(self.initdb) != has(self.recovery)",
    message: "bootstrap needs exactly one of initdb or recovery",
};

/// `spec.bootstrap.recovery.target`: exactly one target.
pub const ONE_RECOVERY_TARGET: CelRule = CelRule {
    rule: "(has(self.time) ? 1 : 0) + (has(self.lsn) ? 1 : 0) + (has(self.xid) ? 1 : 0) + \
           (has(self.name) ? 1 : 0) + (has(self.immediate) ? 1 : 0) == 1",
    message: "recovery target needs exactly one of time, lsn, xid, name or immediate",
};

/// `spec.bootstrap.recovery.target.immediate` is true when set.
pub const IMMEDIATE_IS_TRUE: CelRule =
    CelRule { rule: "self", message: "recovery target immediate must be true when set; leave it out otherwise" };

// ---- BackupPolicy ----

/// `spec.storage`: exactly one backend.
pub const ONE_STORAGE_BACKEND: CelRule =
    CelRule { rule: "has(self.s3) != has(self.local)", message: "storage needs exactly one of s3 or local" };

/// `spec`: incremental backups copy blocks into the storage; a snapshot cannot be incremental.
pub const INCREMENTAL_NEEDS_OBJECT_STORE: CelRule = CelRule {
    rule: "!has(self.incrementalSchedule) || !has(self.method) || self.method == 'objectStore'",
    message: "incrementalSchedule needs method objectStore: snapshot backups cannot be incremental",
};

/// `spec`: a snapshot lock needs backups that take snapshots.
pub const SNAPSHOT_LOCK_NEEDS_SNAPSHOTS: CelRule = CelRule {
    rule: "!has(self.snapshotLock) || (has(self.method) && self.method != 'objectStore')",
    message: "snapshotLock needs method snapshot or both: objectStore backups take no snapshots",
};

/// `spec.storage.s3`: a KMS key only with KMS encryption.
pub const KMS_KEY_NEEDS_AWS_KMS: CelRule = CelRule {
    rule: "!has(self.kmsKeyId) || (has(self.serverSideEncryption) && self.serverSideEncryption == 'aws:kms')",
    message: "s3.kmsKeyId needs serverSideEncryption: aws:kms",
};

/// `spec.encryption`: encrypting needs a key.
pub const ENCRYPTION_NEEDS_KEY: CelRule = CelRule {
    rule: "(has(self.mode) && self.mode == 'none') || has(self.key)",
    message: "encryption with mode aes-256-gcm needs a key: kms, file or env",
};

/// `spec.encryption.key` and `readKeys[]`: exactly one source.
pub const ONE_ENCRYPTION_KEY: CelRule = CelRule {
    rule: "[has(self.kms), has(self.file), has(self.env)].filter(x, x).size() == 1",
    message: "an encryption key is exactly one of kms, file or env",
};

/// `spec.encryption.key` and `readKeys[]`: a KMS endpoint only for a KMS key.
pub const KMS_ENDPOINT_NEEDS_KMS: CelRule =
    CelRule { rule: "!has(self.kmsEndpoint) || has(self.kms)", message: "an encryption key's kmsEndpoint needs kms" };

/// `spec.walArchiving.archiveTimeout`: between one second and one day.
pub const ARCHIVE_TIMEOUT_RANGE: CelRule = CelRule {
    rule: "duration(self) >= duration('1s') && duration(self) <= duration('24h')",
    message: "walArchiving.archiveTimeout must be between 1s and 24h",
};

/// `spec.verification.checks[]`: one kind of check per entry.
pub const ONE_VERIFICATION_CHECK: CelRule = CelRule {
    rule: "has(self.amcheck) != has(self.sql) && (!has(self.database) || has(self.sql))",
    message: "a verification check is exactly one of amcheck or sql (database only with sql)",
};

/// Every rule with the schema path (below `openAPIV3Schema`) it is attached to, for tests and
/// documentation.
pub const ALL: [(&str, CelRule); 33] = [
    ("PostgresHost spec", STANDBY_NEEDS_RECOVERY),
    ("PostgresHost spec.postgresVersion", POSTGRES_VERSION_IMMUTABLE),
    ("PostgresHost spec.bootstrap", BOOTSTRAP_IMMUTABLE),
    ("PostgresHost spec.standby", STANDBY_NEVER_RETURNS),
    ("PostgresHost spec.instance", SUBNET_STAYS),
    ("PostgresHost spec.instance.tags", TAGS_NOT_RESERVED),
    ("PostgresHost spec.instance.tags", TAGS_FIT_EC2),
    ("PostgresHost spec.storage.sizeGiB", SIZE_NEVER_SHRINKS),
    ("PostgresHost spec.storage", SIZE_FITS_TYPE),
    ("PostgresHost spec.storage", THROUGHPUT_ONLY_GP3),
    ("PostgresHost spec.storage", IOPS_NOT_GP2),
    ("PostgresHost spec.storage", IOPS_REQUIRED_FOR_IO),
    ("PostgresHost spec.storage", VOLUME_KMS_KEY_IMMUTABLE),
    ("PostgresHost spec.postgres.parameters", PARAMETER_NAMES),
    ("PostgresHost spec.postgres.parameters", PARAMETERS_NOT_MANAGED),
    ("PostgresHost spec.postgres.parameters", PARAMETER_VALUES_SINGLE_LINE),
    ("PostgresHost spec.postgres.parameters", WAL_LEVEL_ARCHIVABLE),
    ("PostgresHost spec.postgres.pgHba[]", HBA_ADDRESS_MATCHES_TYPE),
    ("PostgresHost spec.postgres.pgHba[].options", HBA_OPTIONS_SINGLE_WORDS),
    ("PostgresHost spec.bootstrap", ONE_BOOTSTRAP_MODE),
    ("PostgresHost spec.bootstrap.recovery.target", ONE_RECOVERY_TARGET),
    ("PostgresHost spec.bootstrap.recovery.target.immediate", IMMEDIATE_IS_TRUE),
    ("BackupPolicy spec", INCREMENTAL_NEEDS_OBJECT_STORE),
    ("BackupPolicy spec", SNAPSHOT_LOCK_NEEDS_SNAPSHOTS),
    ("BackupPolicy spec.storage", ONE_STORAGE_BACKEND),
    ("BackupPolicy spec.storage.s3", KMS_KEY_NEEDS_AWS_KMS),
    ("BackupPolicy spec.walArchiving.archiveTimeout", ARCHIVE_TIMEOUT_RANGE),
    ("BackupPolicy spec.encryption", ENCRYPTION_NEEDS_KEY),
    ("BackupPolicy spec.encryption.key", ONE_ENCRYPTION_KEY),
    ("BackupPolicy spec.encryption.readKeys[]", ONE_ENCRYPTION_KEY),
    ("BackupPolicy spec.encryption.key", KMS_ENDPOINT_NEEDS_KMS),
    ("BackupPolicy spec.encryption.readKeys[]", KMS_ENDPOINT_NEEDS_KMS),
    ("BackupPolicy spec.verification.checks[]", ONE_VERIFICATION_CHECK),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_managed_parameters_rule_lists_exactly_the_managed_parameters() {
        let quoted: Vec<String> =
            pgec2_contract::parameters::MANAGED_PARAMETERS.iter().map(|name| format!("'{name}'")).collect();
        let expected = format!("self.all(k, !(k in [{}]))", quoted.join(", "));
        assert_eq!(PARAMETERS_NOT_MANAGED.rule, expected);
    }

    #[test]
    fn every_rule_is_listed_once() {
        for (index, (location, rule)) in ALL.iter().enumerate() {
            let again =
                ALL.iter().skip(index + 1).any(|(other_location, other)| other_location == location && other == rule);
            assert!(!again, "{location} {:?} is listed twice", rule.rule);
        }
    }
}
