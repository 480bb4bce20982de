//! Checks of a `BackupPolicy` spec, mirroring its schema and CEL rules, plus the cron schedule.

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

use super::text::parse_duration_seconds;
use super::{Checker, InvalidSpec};
use crate::policy::spec::{
    BackupPolicySpec, Encryption, EncryptionMode, S3Storage, ServerSideEncryption, WalArchiving,
};
use crate::policy::verification::Verification;
use crate::rules;

/// Why a `schedule` is not a cron expression pgec2 accepts.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// Not five (or six) space-separated fields or one of the `@` shorthands.
    #[error(
        "schedule {schedule:?} must have 5 fields (minute hour day-of-month month day-of-week), 6 with a leading seconds field, or be @hourly, @daily, @weekly, @monthly or @yearly"
    )]
    Shape {
        /// The schedule as written.
        schedule: String,
    },
    /// Five fields, but a field is out of range or malformed.
    #[error("schedule {schedule:?} is not a valid cron expression: {reason}")]
    Invalid {
        /// The schedule as written.
        schedule: String,
        /// What the cron parser rejected.
        reason: String,
    },
}

const SHORTHANDS: [&str; 6] = ["@yearly", "@annually", "@monthly", "@weekly", "@daily", "@hourly"];

/// Parses a `schedule`: five space-separated fields (minute, hour, day of month, month, day of
/// week), six with a leading seconds field, or an `@` shorthand: the shapes the schema's pattern
/// allows.
pub fn parse_schedule(schedule: &str) -> Result<Cron, ScheduleError> {
    let shorthand = SHORTHANDS.contains(&schedule);
    let fields: Vec<&str> = schedule.split(' ').filter(|field| !field.is_empty()).collect();
    let five_fields = (fields.len() == 5 || fields.len() == 6)
        && !schedule.starts_with(' ')
        && !schedule.ends_with(' ')
        && !schedule.chars().any(|c| c.is_whitespace() && c != ' ');
    if !shorthand && !five_fields {
        return Err(ScheduleError::Shape { schedule: schedule.to_string() });
    }
    let parser = CronParser::builder().seconds(Seconds::Optional).year(Year::Disallowed).build();
    parser
        .parse(schedule)
        .map_err(|error| ScheduleError::Invalid { schedule: schedule.to_string(), reason: error.to_string() })
}

impl BackupPolicySpec {
    /// Checks the spec: every rule the API server enforces, plus a schedule that parses as cron.
    /// Returns every invalid field.
    pub fn validate(&self) -> Result<(), InvalidSpec> {
        let mut check = Checker::default();
        let storage = &self.storage;
        check.rule("spec.storage", storage.s3.is_some() != storage.local.is_some(), rules::ONE_STORAGE_BACKEND);
        if let Some(s3) = &storage.s3 {
            check_s3(&mut check, s3);
        }
        if let Some(local) = &storage.local
            && (!local.path.starts_with('/') || local.path.contains('\n'))
        {
            check.fail("spec.storage.local.path", "must be an absolute path on one line");
        }
        if let Err(error) = parse_schedule(&self.schedule) {
            check.fail("spec.schedule", error.to_string());
        }
        if let Some(Err(error)) = self.incremental_schedule.as_deref().map(parse_schedule) {
            check.fail("spec.incrementalSchedule", error.to_string());
        }
        let incremental_ok =
            self.incremental_schedule.is_none() || self.method == crate::policy::spec::BackupMethod::ObjectStore;
        check.rule("spec", incremental_ok, rules::INCREMENTAL_NEEDS_OBJECT_STORE);
        let snapshot_lock_ok =
            self.snapshot_lock.is_none() || self.method != crate::policy::spec::BackupMethod::ObjectStore;
        check.rule("spec", snapshot_lock_ok, rules::SNAPSHOT_LOCK_NEEDS_SNAPSHOTS);
        if let Some(zone) = &self.time_zone
            && !is_time_zone_name(zone)
        {
            check.fail("spec.timeZone", "must be an IANA time zone name such as Europe/Berlin");
        }
        check.range("spec.retention.fullBackups", self.retention.full_backups.into(), 1, 1000);
        let timeout_ok = self.wal_archiving.archive_timeout_seconds().is_some();
        check.rule("spec.walArchiving.archiveTimeout", timeout_ok, rules::ARCHIVE_TIMEOUT_RANGE);
        let objectives =
            self.objectives.iter().flat_map(|objectives| [("rpo", &objectives.rpo), ("rto", &objectives.rto)]);
        for (field, value) in objectives {
            if value.as_deref().is_some_and(|text| parse_duration_seconds(text).is_none_or(|seconds| seconds == 0)) {
                check.fail(format!("spec.objectives.{field}"), "must be a positive duration such as 30s, 5m or 1h30m");
            }
        }
        if let Some(encryption) = &self.encryption {
            check_encryption(&mut check, encryption);
        }
        if let Some(verification) = &self.verification {
            check_verification(&mut check, verification);
        }
        check.finish()
    }

    /// The parsed `schedule`.
    pub fn cron(&self) -> Result<Cron, ScheduleError> {
        parse_schedule(&self.schedule)
    }
}

impl WalArchiving {
    /// `archiveTimeout` in seconds, or None when it is not a duration between 1s and 24h.
    pub fn archive_timeout_seconds(&self) -> Option<u32> {
        let seconds = parse_duration_seconds(&self.archive_timeout)?;
        if (1..=86_400).contains(&seconds) { u32::try_from(seconds).ok() } else { None }
    }
}

fn check_verification(check: &mut Checker, verification: &Verification) {
    if let Err(error) = parse_schedule(&verification.schedule) {
        check.fail("spec.verification.schedule", error.to_string());
    }
    if verification.timeout_seconds().is_none() {
        check.fail("spec.verification.timeout", "must be a positive duration such as 30m or 2h");
    }
    for (index, item) in verification.checks.iter().enumerate() {
        let one = item.amcheck.is_some() != item.sql.is_some() && (item.database.is_none() || item.sql.is_some());
        check.rule(&format!("spec.verification.checks[{index}]"), one, rules::ONE_VERIFICATION_CHECK);
    }
}

impl Verification {
    /// `timeout` in seconds, or None when it is not a positive duration.
    pub fn timeout_seconds(&self) -> Option<u64> {
        parse_duration_seconds(&self.timeout).filter(|seconds| *seconds > 0)
    }
}

fn check_encryption(check: &mut Checker, encryption: &Encryption) {
    let has_key = encryption.mode == EncryptionMode::None || encryption.key.is_some();
    check.rule("spec.encryption", has_key, rules::ENCRYPTION_NEEDS_KEY);
    let keys = encryption.key.iter().map(|key| ("spec.encryption.key".to_string(), key));
    let read_keys =
        encryption.read_keys.iter().enumerate().map(|(index, key)| (format!("spec.encryption.readKeys[{index}]"), key));
    for (field, key) in keys.chain(read_keys) {
        let sources = usize::from(key.kms.is_some()) + usize::from(key.file.is_some()) + usize::from(key.env.is_some());
        check.rule(&field, sources == 1, rules::ONE_ENCRYPTION_KEY);
        if key.file.as_ref().is_some_and(|path| !path.starts_with('/') || path.contains(['\n', ','])) {
            check.fail(&field, "file must be an absolute path on one line, without ','");
        }
        check.rule(&field, key.kms_endpoint.is_none() || key.kms.is_some(), rules::KMS_ENDPOINT_NEEDS_KMS);
    }
    let mut endpoints = encryption.key.iter().chain(&encryption.read_keys).filter_map(|key| key.kms_endpoint.as_ref());
    if let Some(first) = endpoints.next()
        && endpoints.any(|other| other != first)
    {
        check.fail("spec.encryption", "every kmsEndpoint of the policy's keys must be the same endpoint");
    }
}

fn check_s3(check: &mut Checker, s3: &S3Storage) {
    let bucket = &s3.bucket;
    let edges_ok = !bucket.starts_with(['.', '-']) && !bucket.ends_with(['.', '-']);
    if !(3..=63).contains(&bucket.len())
        || !edges_ok
        || !bucket.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
    {
        check.fail(
            "spec.storage.s3.bucket",
            "must be an S3 bucket name: 3 to 63 lowercase letters, digits, dots and hyphens",
        );
    }
    if s3.object_lock.as_ref().and_then(|lock| lock.days).is_some_and(|days| !(1..=36_500).contains(&days)) {
        check.fail("spec.storage.s3.objectLock.days", "must be from 1 to 36500");
    }
    let kms_ok = s3.kms_key_id.is_none() || s3.server_side_encryption == Some(ServerSideEncryption::AwsKms);
    check.rule("spec.storage.s3", kms_ok, rules::KMS_KEY_NEEDS_AWS_KMS);
    if let Some(prefix) = &s3.prefix
        && (prefix.starts_with('/') || prefix.ends_with('/') || prefix.contains("//"))
    {
        check.fail("spec.storage.s3.prefix", "must not start or end with / or contain //");
    }
}

/// `^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$`.
fn is_time_zone_name(zone: &str) -> bool {
    let part_ok = |part: &str| !part.is_empty() && part.chars().all(|c| c.is_ascii_alphanumeric() || "_+-".contains(c));
    zone.chars().next().is_some_and(|c| c.is_ascii_alphabetic()) && zone.split('/').all(part_ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_take_five_fields_or_a_shorthand() {
        for good in ["0 3 * * *", "*/15 * * * *", "30 2 * * MON-FRI", "0 0 1 * *", "@daily", "@hourly", "*/5 * * * * *"]
        {
            assert!(parse_schedule(good).is_ok(), "{good}");
        }
        for bad in ["", "0 3 * *", "0 0 0 3 * * *", " 0 3 * * *", "0\t3 * * *", "@every 5m", "@reboot"] {
            assert!(matches!(parse_schedule(bad), Err(ScheduleError::Shape { .. })), "{bad}");
        }
    }

    #[test]
    fn schedules_with_out_of_range_fields_are_refused() {
        for bad in ["61 * * * *", "0 24 * * *", "0 0 32 * *", "0 0 * 13 *", "x y z w v", "60 0 3 * * *"] {
            assert!(matches!(parse_schedule(bad), Err(ScheduleError::Invalid { .. })), "{bad}");
        }
    }

    #[test]
    fn archive_timeout_is_between_a_second_and_a_day() {
        let timeout =
            |text: &str| WalArchiving { archive_timeout: text.to_string(), streaming: false }.archive_timeout_seconds();
        assert_eq!(timeout("60s"), Some(60));
        assert_eq!(timeout("24h"), Some(86_400));
        assert_eq!(timeout("0s"), None);
        assert_eq!(timeout("25h"), None);
        assert_eq!(timeout("soon"), None);
    }
}
