//! The BackupPolicy status: a draft built during a reconcile, written once on the status
//! subresource.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use pgec2_api::{BackupPolicy, BackupPolicyStatus, BackupRun, FIELD_MANAGER, HostBackupSummary, condition};

use super::Error;
use crate::host::conditions::{self, ConditionUpdate, Truth};

/// The status being built.
pub struct Draft {
    status: BackupPolicyStatus,
    generation: Option<i64>,
    now: Timestamp,
    problems: Vec<String>,
    invalid: Option<String>,
    fresh_hosts: Vec<HostBackupSummary>,
    outcomes: std::collections::HashMap<String, Outcome>,
}

/// How the last backup of a host that finished during this reconcile ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Succeeded { backup: Option<String> },
    Failed { message: String },
}

impl Draft {
    pub fn new(policy: &BackupPolicy, now: Timestamp) -> Self {
        Self {
            status: policy.status.clone().unwrap_or_default(),
            generation: policy.metadata.generation,
            now,
            problems: Vec::new(),
            invalid: None,
            fresh_hosts: Vec::new(),
            outcomes: std::collections::HashMap::new(),
        }
    }

    /// The tick handled last (`lastScheduleTime`).
    pub fn last_schedule(&self) -> Option<Timestamp> {
        self.status.last_schedule_time.as_ref().map(|time| time.0)
    }

    pub fn scheduled(&mut self, tick: Timestamp) {
        self.status.last_schedule_time = Some(Time(tick));
    }

    pub fn next_schedule(&mut self, next: Option<Timestamp>) {
        self.status.next_schedule_time = next.map(Time);
    }

    pub fn invalid_schedule(&mut self, message: &str) {
        self.invalid = Some(message.to_string());
        self.status.next_schedule_time = None;
    }

    pub fn succeeded(&mut self, host: &str, backup: Option<String>, started: Timestamp, finished: Timestamp) {
        self.outcomes.insert(host.to_string(), Outcome::Succeeded { backup: backup.clone() });
        self.status.last_successful_backup = Some(BackupRun {
            host: host.to_string(),
            backup,
            start_time: Some(Time(started)),
            finish_time: Some(Time(finished)),
            message: None,
        });
    }

    pub fn failed(&mut self, host: &str, at: Timestamp, message: String) {
        self.outcomes.insert(host.to_string(), Outcome::Failed { message: message.clone() });
        self.problems.push(format!("{host}: {message}"));
        self.status.last_failed_backup = Some(BackupRun {
            host: host.to_string(),
            backup: None,
            start_time: None,
            finish_time: Some(Time(at)),
            message: Some(message),
        });
    }

    pub fn retention_failed(&mut self, host: &str, message: &str) {
        self.problems.push(format!("{host}: retention: {message}"));
    }

    /// How a backup of `host` (`namespace/name`) ended in this reconcile, if one did.
    pub fn outcome(&self, host: &str) -> Option<&Outcome> {
        self.outcomes.get(host)
    }

    pub fn host_summary(&mut self, summary: HostBackupSummary) {
        self.fresh_hosts.push(summary);
    }

    /// The finished status with its `Ready` condition.
    pub fn finish(mut self) -> BackupPolicyStatus {
        self.status.observed_generation = self.generation;
        let ready = match (&self.invalid, self.problems.is_empty()) {
            (Some(message), _) => {
                ConditionUpdate::new(condition::READY, Truth::False, "InvalidSchedule", message.clone())
            }
            (None, false) => {
                ConditionUpdate::new(condition::READY, Truth::False, "BackupFailed", self.problems.join("; "))
            }
            (None, true) => ConditionUpdate::new(condition::READY, Truth::True, "Scheduled", "backups run on schedule"),
        };
        conditions::set(&mut self.status.conditions, &ready, self.generation, self.now);
        if self.invalid.is_none() {
            self.fresh_hosts.sort_by(|a, b| a.host.cmp(&b.host));
            self.status.hosts = self.fresh_hosts;
        }
        self.status
    }
}

/// Writes `status` on the policy's status subresource (merge patch: other fields untouched).
pub async fn write(client: &kube::Client, policy: &BackupPolicy, status: BackupPolicyStatus) -> Result<(), Error> {
    if policy.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let api: Api<BackupPolicy> = Api::namespaced(client.clone(), &policy.namespace().unwrap_or_default());
    let patch = serde_json::json!({ "status": status });
    api.patch_status(&policy.name_any(), &PatchParams::apply(FIELD_MANAGER), &Patch::Merge(&patch))
        .await
        .map(|_| ())
        .map_err(|source| Error::WriteStatus { policy: policy.name_any(), source })
}
