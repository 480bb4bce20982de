//! EBS Snapshot Lock on backup snapshots: LockSnapshot in `governance` or `compliance` mode for
//! a number of days, and DescribeLockedSnapshots to learn when a lock ends, so retention never
//! asks EC2 to delete a snapshot it would refuse. No cool-off period: a compliance lock holds
//! from the moment it is set.

use aws_sdk_ec2::types::{LockMode as Ec2LockMode, LockState};
use chrono::{DateTime, Utc};
use pgec2_core::storage::lock::LockMode;

use super::AwsCloud;
use super::error::{classify, has_code};
use crate::cloud::{CloudError, SnapshotLock};

/// EC2's name of a lock mode.
fn ec2_mode(mode: LockMode) -> Ec2LockMode {
    match mode {
        LockMode::Governance => Ec2LockMode::Governance,
        LockMode::Compliance => Ec2LockMode::Compliance,
    }
}

fn to_chrono(time: &aws_smithy_types::DateTime) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(time.secs(), time.subsec_nanos())
}

/// True for the states of a lock that still holds.
fn holds(state: Option<&LockState>) -> bool {
    matches!(state, Some(LockState::Governance | LockState::Compliance | LockState::ComplianceCooloff))
}

impl AwsCloud {
    /// Locks `snapshot_id` for `lock.days` from now; returns when the lock ends.
    pub(crate) async fn lock_backup_snapshot(
        &self,
        snapshot_id: &str,
        lock: &SnapshotLock,
    ) -> Result<DateTime<Utc>, CloudError> {
        let days = i32::try_from(lock.days).unwrap_or(i32::MAX);
        let requested = Utc::now() + chrono::Duration::days(i64::from(lock.days));
        let output = self
            .retry(|| {
                self.ec2
                    .lock_snapshot()
                    .snapshot_id(snapshot_id)
                    .lock_mode(ec2_mode(lock.mode))
                    .lock_duration(days)
                    .send()
            })
            .await
            .map_err(|error| classify("ec2", "lock snapshot", &error))?;
        let until = output.lock_expires_on().and_then(to_chrono).unwrap_or(requested);
        tracing::info!(snapshot_id, mode = %lock.mode, %until, "backup snapshot locked");
        Ok(until)
    }

    /// When the lock of `snapshot_id` ends; `None` when it has none (or an expired one) or
    /// is gone.
    pub(crate) async fn snapshot_lock_end(&self, snapshot_id: &str) -> Result<Option<DateTime<Utc>>, CloudError> {
        let output = match self.retry(|| self.ec2.describe_locked_snapshots().snapshot_ids(snapshot_id).send()).await {
            Ok(output) => output,
            Err(error) if has_code(&error, "InvalidSnapshot.NotFound") => return Ok(None),
            Err(error) => return Err(classify("ec2", "read snapshot lock", &error)),
        };
        let now = Utc::now();
        let found = output.snapshots().iter().find(|info| info.snapshot_id() == Some(snapshot_id));
        Ok(found
            .filter(|info| holds(info.lock_state()))
            .and_then(|info| info.lock_expires_on())
            .and_then(to_chrono)
            .filter(|until| *until > now))
    }
}
