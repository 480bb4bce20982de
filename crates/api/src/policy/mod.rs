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
}
