//! Checks of a `PostgresHost` spec, mirroring its schema and CEL rules.

use super::text::{
    is_lsn, is_object_name, is_option_name, is_parameter_name, is_single_word, is_target_time, is_token, is_xid,
};
use super::{Checker, InvalidSpec};
use crate::host::bootstrap::{Bootstrap, RecoveryTarget};
use crate::host::spec::{HbaConnectionType, InstanceSpec, PostgresHostSpec, PostgresSpec, VolumeSpec, VolumeType};
use crate::rules;

impl PostgresHostSpec {
    /// Checks the spec on its own: every rule the API server enforces on creation, plus RFC 3339
    /// recovery target times. Returns every invalid field.
    pub fn validate(&self) -> Result<(), InvalidSpec> {
        let mut check = Checker::default();
        check.range("spec.postgresVersion", self.postgres_version.into(), 13, 17);
        check_instance(&mut check, &self.instance);
        check_volume(&mut check, &self.storage);
        check_postgres(&mut check, &self.postgres);
        check_bootstrap(&mut check, &self.bootstrap);
        let standby_ok =
            !self.standby || self.bootstrap.recovery.as_ref().is_some_and(|recovery| recovery.target.is_none());
        check.rule("spec", standby_ok, rules::STANDBY_NEEDS_RECOVERY);
        check.finish()
    }

    /// Checks an update from `old` to `self`: [`Self::validate`] plus the transition rules
    /// (immutable version, bootstrap and KMS key; a volume that never shrinks; a subnet that
    /// stays; no return to standby).
    pub fn validate_update(&self, old: &Self) -> Result<(), InvalidSpec> {
        let mut check = Checker::default();
        if let Err(invalid) = self.validate() {
            check.errors = invalid.errors;
        }
        check.rule(
            "spec.postgresVersion",
            self.postgres_version == old.postgres_version,
            rules::POSTGRES_VERSION_IMMUTABLE,
        );
        check.rule("spec.bootstrap", self.bootstrap == old.bootstrap, rules::BOOTSTRAP_IMMUTABLE);
        check.rule("spec.standby", old.standby || !self.standby, rules::STANDBY_NEVER_RETURNS);
        let subnet_ok = old.instance.subnet_id.is_none() || self.instance.subnet_id == old.instance.subnet_id;
        check.rule("spec.instance", subnet_ok, rules::SUBNET_STAYS);
        check.rule("spec.storage.sizeGiB", self.storage.size_gib >= old.storage.size_gib, rules::SIZE_NEVER_SHRINKS);
        check.rule("spec.storage", self.storage.kms_key_id == old.storage.kms_key_id, rules::VOLUME_KMS_KEY_IMMUTABLE);
        check.finish()
    }
}

fn check_instance(check: &mut Checker, instance: &InstanceSpec) {
    let tags = &instance.tags;
    if !is_token(&instance.instance_type, 64, ".-") || !instance.instance_type.contains('.') {
        check.fail("spec.instance.instanceType", "must be an EC2 instance type such as m7i.large");
    }
    let reserved = tags.keys().any(|key| key.starts_with("pgec2.io/") || key.starts_with("aws:"));
    check.rule("spec.instance.tags", !reserved, rules::TAGS_NOT_RESERVED);
    let fits = tags.len() <= 40
        && tags.iter().all(|(key, value)| (1..=128).contains(&key.chars().count()) && value.chars().count() <= 256);
    check.rule("spec.instance.tags", fits, rules::TAGS_FIT_EC2);
    check.range("spec.instance.rootVolume.sizeGiB", instance.root_volume.size_gib.into(), 8, 1024);
    if instance.security_group_ids.len() > 5 {
        check.fail("spec.instance.securityGroupIds", "at most 5 security groups");
    }
}

fn check_volume(check: &mut Checker, volume: &VolumeSpec) {
    let kind = volume.volume_type;
    check.range("spec.storage.sizeGiB", volume.size_gib.into(), 1, 65536);
    check.rule("spec.storage", kind == VolumeType::Io2 || volume.size_gib <= 16384, rules::SIZE_FITS_TYPE);
    if let Some(iops) = volume.iops {
        check.range("spec.storage.iops", iops.into(), 100, 256_000);
    }
    if let Some(throughput) = volume.throughput_mibps {
        check.range("spec.storage.throughputMiBps", throughput.into(), 125, 2000);
    }
    check.rule(
        "spec.storage",
        volume.throughput_mibps.is_none() || kind == VolumeType::Gp3,
        rules::THROUGHPUT_ONLY_GP3,
    );
    check.rule("spec.storage", volume.iops.is_none() || kind != VolumeType::Gp2, rules::IOPS_NOT_GP2);
    let io = matches!(kind, VolumeType::Io1 | VolumeType::Io2);
    check.rule("spec.storage", !io || volume.iops.is_some(), rules::IOPS_REQUIRED_FOR_IO);
}

fn check_postgres(check: &mut Checker, postgres: &PostgresSpec) {
    let field = "spec.postgres.parameters";
    let parameters = &postgres.parameters;
    check.rule(field, parameters.keys().all(|name| is_parameter_name(name)), rules::PARAMETER_NAMES);
    let managed = parameters.keys().any(|name| pgec2_contract::parameters::is_managed(name));
    check.rule(field, !managed, rules::PARAMETERS_NOT_MANAGED);
    let single_line = parameters.values().all(|value| !value.contains(['\n', '\r']));
    check.rule(field, single_line, rules::PARAMETER_VALUES_SINGLE_LINE);
    let wal_level_ok = parameters.get("wal_level").is_none_or(|level| level == "replica" || level == "logical");
    check.rule(field, wal_level_ok, rules::WAL_LEVEL_ARCHIVABLE);
    if parameters.len() > 200 || parameters.values().any(|value| value.chars().count() > 1024) {
        check.fail(field, "at most 200 parameters with values of up to 1024 characters");
    }

    if postgres.pg_hba.len() > 100 {
        check.fail("spec.postgres.pgHba", "at most 100 entries");
    }
    for (index, entry) in postgres.pg_hba.iter().enumerate() {
        let field = format!("spec.postgres.pgHba[{index}]");
        let local = entry.connection_type == HbaConnectionType::Local;
        check.rule(&field, local == entry.address.is_none(), rules::HBA_ADDRESS_MATCHES_TYPE);
        let words = [Some(&entry.database), Some(&entry.user), entry.address.as_ref()];
        if !words.into_iter().flatten().all(|word| is_single_word(word)) {
            check.fail(&field, "database, user and address are single words without spaces, quotes or #");
        }
        let options_ok = entry.options.iter().all(|(name, value)| is_option_name(name) && is_single_word(value));
        check.rule(&format!("{field}.options"), options_ok, rules::HBA_OPTIONS_SINGLE_WORDS);
    }
}

fn check_bootstrap(check: &mut Checker, bootstrap: &Bootstrap) {
    check.rule("spec.bootstrap", bootstrap.initdb.is_some() != bootstrap.recovery.is_some(), rules::ONE_BOOTSTRAP_MODE);
    if let Some(initdb) = &bootstrap.initdb {
        if !is_token(&initdb.encoding, 63, "_") {
            check.fail("spec.bootstrap.initdb.encoding", "must be an encoding name such as UTF8");
        }
        if !is_token(&initdb.locale, 63, "_.@-") {
            check.fail("spec.bootstrap.initdb.locale", "must be a locale name such as C.UTF-8");
        }
    }
    let Some(recovery) = &bootstrap.recovery else { return };
    for (field, name) in [("host", &recovery.source.host), ("policy", &recovery.source.policy)] {
        if !is_object_name(name) {
            check.fail(format!("spec.bootstrap.recovery.source.{field}"), "must be a Kubernetes object name");
        }
    }
    let backup = &recovery.backup;
    if !is_token(backup, 128, "._-") || backup.starts_with(['.', '_', '-']) {
        check.fail("spec.bootstrap.recovery.backup", "must be LATEST or a backup name");
    }
    if let Some(target) = &recovery.target {
        check_target(check, target);
    }
}

fn check_target(check: &mut Checker, target: &RecoveryTarget) {
    let field = "spec.bootstrap.recovery.target";
    let chosen = [
        target.time.is_some(),
        target.lsn.is_some(),
        target.xid.is_some(),
        target.name.is_some(),
        target.immediate.is_some(),
    ];
    check.rule(field, chosen.iter().filter(|set| **set).count() == 1, rules::ONE_RECOVERY_TARGET);
    check.rule(&format!("{field}.immediate"), target.immediate != Some(false), rules::IMMEDIATE_IS_TRUE);
    if target.time.as_deref().is_some_and(|time| !is_target_time(time)) {
        check.fail(
            format!("{field}.time"),
            "must be a time with a zone, e.g. 2026-12-04T15:25:03Z or 2026-12-04 15:25:03.429792+00",
        );
    }
    if target.lsn.as_deref().is_some_and(|lsn| !is_lsn(lsn)) {
        check.fail(format!("{field}.lsn"), "must be a WAL location such as 0/3000060");
    }
    if target.xid.as_deref().is_some_and(|xid| !is_xid(xid)) {
        check.fail(format!("{field}.xid"), "must be a transaction id (digits only)");
    }
    let name_ok =
        |name: &str| (1..=63).contains(&name.chars().count()) && !name.contains(['\'', '"', '\\', '\r', '\n']);
    if target.name.as_deref().is_some_and(|name| !name_ok(name)) {
        check.fail(format!("{field}.name"), "must be 1 to 63 characters without quotes, backslashes or line breaks");
    }
}
