//! The `BackupPolicy` resource.

pub mod spec;
pub mod status;
pub mod verification;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use self::spec::BackupPolicy;

impl BackupPolicy {
    /// The status condition of this type (see [`crate::constants::condition`]).
    pub fn condition(&self, condition_type: &str) -> Option<&Condition> {
        self.status.as_ref()?.conditions.iter().find(|condition| condition.type_ == condition_type)
    }

    /// True when the status describes the current generation of the spec.
    pub fn status_is_current(&self) -> bool {
        let observed = self.status.as_ref().and_then(|status| status.observed_generation);
        observed.is_some() && observed == self.metadata.generation
    }

    /// Seconds from the start of the newest passed restore drill of `host` (`namespace/name`)
    /// to its recovery, when a drill of that host has passed: the host's last verified RTO.
    pub fn last_verified_rto(&self, host: &str) -> Option<i64> {
        let results = &self.status.as_ref()?.verification.as_ref()?.results;
        results
            .iter()
            .find(|result| result.host == host && result.outcome == verification::DrillOutcome::Passed)
            .and_then(|result| result.phases.recovered_seconds)
    }
}
