//! The BackupPolicy status: a draft built during a reconcile, applied on the status
//! subresource as the policy controller's field manager.
//!
//! The policy controller is the only writer of this status, and every reconcile starts from a
//! fresh read of it, so `activeBackups` and `lastScheduleTime` are authoritative: a restarted
//! operator, or a reconcile that runs before the watch cache has caught up, sees what the last
//! reconcile started and handled.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::{Api, ResourceExt};
use pgec2_api::{ActiveBackup, BackupPolicy, BackupPolicyStatus, BackupRun, HostBackupSummary, condition};

use super::Error;
use crate::kube_layer::conditions::{self, ConditionUpdate, Truth};
use crate::kube_layer::status::apply_policy_status;

/// The status being built.
pub struct Draft {
    status: BackupPolicyStatus,
    generation: Option<i64>,
    suspended: bool,
    now: Timestamp,
    retention_problems: Vec<String>,
    invalid: Option<String>,
    /// Summaries read from the catalogs in this reconcile; `None` keeps the recorded ones.
    fresh_hosts: Option<Vec<HostBackupSummary>>,
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
            suspended: policy.spec.suspend,
            now,
            retention_problems: Vec::new(),
            invalid: None,
            fresh_hosts: None,
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

    /// The incremental tick handled last (`lastIncrementalScheduleTime`).
    pub fn last_incremental_schedule(&self) -> Option<Timestamp> {
        self.status.last_incremental_schedule_time.as_ref().map(|time| time.0)
    }

    pub fn incremental_scheduled(&mut self, tick: Timestamp) {
        self.status.last_incremental_schedule_time = Some(Time(tick));
    }

    pub fn next_schedule(&mut self, next: Option<Timestamp>) {
        self.status.next_schedule_time = next.map(Time);
    }

    pub fn invalid_schedule(&mut self, message: &str) {
        self.invalid = Some(message.to_string());
        self.status.next_schedule_time = None;
    }

    /// Backups running now, as last recorded.
    pub fn active(&self) -> &[ActiveBackup] {
        &self.status.active_backups
    }

    /// True while `host` (`namespace/name`) runs a backup.
    pub fn is_active(&self, host: &str) -> bool {
        self.status.active_backups.iter().any(|active| active.host == host)
    }

    pub fn add_active(&mut self, backup: ActiveBackup) {
        self.status.active_backups.retain(|active| active.host != backup.host);
        self.status.active_backups.push(backup);
        self.status.active_backups.sort_by(|a, b| a.host.cmp(&b.host));
    }

    pub fn remove_active(&mut self, host: &str) {
        self.status.active_backups.retain(|active| active.host != host);
    }

    pub fn succeeded(&mut self, host: &str, backup: Option<String>, started: Timestamp, finished: Timestamp) {
        self.remove_active(host);
        self.outcomes.insert(host.to_string(), Outcome::Succeeded { backup: backup.clone() });
        self.status.last_successful_backup = Some(BackupRun {
            host: host.to_string(),
            backup,
            start_time: Some(Time(started)),
            finish_time: Some(Time(finished)),
            message: None,
        });
    }

    pub fn failed(&mut self, host: &str, started: Option<Timestamp>, at: Timestamp, message: String) {
        self.remove_active(host);
        self.outcomes.insert(host.to_string(), Outcome::Failed { message: message.clone() });
        self.status.last_failed_backup = Some(BackupRun {
            host: host.to_string(),
            backup: None,
            start_time: started.map(Time),
            finish_time: Some(Time(at)),
            message: Some(message),
        });
    }

    pub fn retention_failed(&mut self, host: &str, message: &str) {
        self.retention_problems.push(format!("{host}: {message}"));
    }

    /// Records what retention of `host` kept because it is locked (replacing the last record).
    pub fn retention_held(&mut self, host: &str, held: &[pgec2_core::storage::lock::Locked]) {
        let locked = &mut self.status.locked_backups;
        locked.retain(|entry| entry.host != host);
        locked.extend(held.iter().filter_map(|entry| {
            let until = crate::archive::time(entry.until)?;
            Some(pgec2_api::LockedBackup { host: host.to_string(), name: entry.name.clone(), until })
        }));
    }

    /// How a backup of `host` (`namespace/name`) ended in this reconcile, if one did.
    pub fn outcome(&self, host: &str) -> Option<&Outcome> {
        self.outcomes.get(host)
    }

    pub fn host_summary(&mut self, summary: HostBackupSummary) {
        self.fresh_hosts.get_or_insert_with(Vec::new).push(summary);
    }

    /// True when a backup of some host finished in this reconcile.
    pub fn any_outcome(&self) -> bool {
        !self.outcomes.is_empty()
    }

    /// The hosts (`namespace/name`) the recorded summaries describe.
    pub fn summarized_hosts(&self) -> Vec<&str> {
        self.status.hosts.iter().map(|summary| summary.host.as_str()).collect()
    }

    /// The restore drills' part of the status (see [`super::drill`]).
    pub fn verification(&mut self) -> &mut pgec2_api::VerificationStatus {
        self.status.verification.get_or_insert_with(Default::default)
    }

    /// The restore drills' part of the status, when it has one.
    pub fn verification_if_any(&mut self) -> Option<&mut pgec2_api::VerificationStatus> {
        self.status.verification.as_mut()
    }

    /// Sets a condition other than the two [`Draft::finish`] derives.
    pub fn set_condition(&mut self, update: &ConditionUpdate) {
        conditions::set(&mut self.status.conditions, update, self.generation, self.now);
    }

    pub fn remove_condition(&mut self, type_: &str) {
        self.status.conditions.retain(|condition| condition.type_ != type_);
    }

    /// The status as it stands, for a write in the middle of a reconcile (just after backups
    /// were started): the catalog summaries and conditions are left as they were.
    pub fn snapshot(&self) -> BackupPolicyStatus {
        self.status.clone()
    }

    /// The finished status with its `Ready` and `LastBackupSucceeded` conditions.
    pub fn finish(mut self) -> BackupPolicyStatus {
        self.status.observed_generation = self.generation;
        let ready = match (&self.invalid, self.retention_problems.is_empty()) {
            (Some(message), _) => {
                ConditionUpdate::new(condition::READY, Truth::False, "InvalidSchedule", message.clone())
            }
            (None, false) => ConditionUpdate::new(
                condition::READY,
                Truth::False,
                "RetentionFailed",
                format!("old backups could not be deleted: {}", self.retention_problems.join("; ")),
            ),
            (None, true) if self.suspended => ConditionUpdate::new(
                condition::READY,
                Truth::True,
                "Suspended",
                "scheduled backups are suspended; on-demand backups still run",
            ),
            (None, true) => ConditionUpdate::new(condition::READY, Truth::True, "Scheduled", "backups run on schedule"),
        };
        conditions::set(&mut self.status.conditions, &ready, self.generation, self.now);
        let last = last_backup_condition(&self.status);
        conditions::set(&mut self.status.conditions, &last, self.generation, self.now);
        if self.invalid.is_none()
            && let Some(mut fresh) = self.fresh_hosts
        {
            fresh.sort_by(|a, b| a.host.cmp(&b.host));
            self.status.hosts = fresh;
        }
        self.status
    }
}

/// `LastBackupSucceeded`: how the most recent finished backup run, on any host, ended.
fn last_backup_condition(status: &BackupPolicyStatus) -> ConditionUpdate {
    let finished = |run: &Option<BackupRun>| run.as_ref().and_then(|run| run.finish_time.as_ref()).map(|time| time.0);
    let type_ = condition::LAST_BACKUP_SUCCEEDED;
    let succeeded = finished(&status.last_successful_backup);
    let failed = finished(&status.last_failed_backup);
    match (succeeded, failed) {
        (succeeded, Some(failed)) if succeeded.is_none_or(|succeeded| failed > succeeded) => {
            let run = status.last_failed_backup.as_ref();
            let host = run.map(|run| run.host.as_str()).unwrap_or_default();
            let message = run.and_then(|run| run.message.as_deref()).unwrap_or("the backup failed");
            ConditionUpdate::new(type_, Truth::False, "BackupFailed", format!("{host}: {message}"))
        }
        (Some(_), _) => {
            let run = status.last_successful_backup.as_ref();
            let host = run.map(|run| run.host.as_str()).unwrap_or_default();
            let backup = run.and_then(|run| run.backup.as_deref()).unwrap_or("a backup");
            ConditionUpdate::new(type_, Truth::True, "BackupSucceeded", format!("{backup} of {host} committed"))
        }
        _ => ConditionUpdate::new(type_, Truth::Unknown, "NoBackupYet", "no backup has run yet"),
    }
}

/// Applies `status` on `policy` (the object it was computed from) unless nothing changed.
/// Returns the policy as stored afterwards.
pub async fn write(
    client: &kube::Client,
    policy: &BackupPolicy,
    status: BackupPolicyStatus,
) -> Result<BackupPolicy, Error> {
    let api: Api<BackupPolicy> = Api::namespaced(client.clone(), &policy.namespace().unwrap_or_default());
    apply_policy_status(&api, policy, &status)
        .await
        .map_err(|source| Error::WriteStatus { policy: policy.name_any(), source })
}

#[cfg(test)]
mod tests {
    use pgec2_api::fixtures::policy;

    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().expect("timestamp")
    }

    fn condition<'a>(status: &'a BackupPolicyStatus, type_: &str) -> (&'a str, &'a str) {
        let found = status.conditions.iter().find(|condition| condition.type_ == type_).expect("condition");
        (found.status.as_str(), found.reason.as_str())
    }

    #[test]
    fn last_backup_succeeded_follows_the_newest_finished_run_on_any_host() {
        let nightly = policy("nightly").build();
        let none = Draft::new(&nightly, at("2026-01-01T03:00:00Z")).finish();
        assert_eq!(condition(&none, condition::LAST_BACKUP_SUCCEEDED), ("Unknown", "NoBackupYet"));

        let mut draft = Draft::new(&nightly, at("2026-01-01T03:10:00Z"));
        draft.succeeded("default/a", Some("base_1".into()), at("2026-01-01T03:00:00Z"), at("2026-01-01T03:05:00Z"));
        draft.failed("default/b", None, at("2026-01-01T03:06:00Z"), "disk full".into());
        let failed = draft.finish();
        assert_eq!(condition(&failed, condition::LAST_BACKUP_SUCCEEDED), ("False", "BackupFailed"));
        assert_eq!(condition(&failed, condition::READY), ("True", "Scheduled"), "a failed backup is not a bad spec");

        let mut later = nightly.clone();
        later.status = Some(failed);
        let mut draft = Draft::new(&later, at("2026-01-02T03:10:00Z"));
        draft.succeeded("default/b", Some("base_2".into()), at("2026-01-02T03:00:00Z"), at("2026-01-02T03:05:00Z"));
        let recovered = draft.finish();
        assert_eq!(condition(&recovered, condition::LAST_BACKUP_SUCCEEDED), ("True", "BackupSucceeded"));
    }

    #[test]
    fn a_finished_backup_leaves_the_active_list_and_suspension_shows_in_ready() {
        let mut suspended = policy("nightly").suspend(true).build();
        let tick = at("2026-01-01T03:00:00Z");
        let mut draft = Draft::new(&suspended, tick);
        draft.add_active(ActiveBackup {
            host: "default/a".into(),
            command_id: "cmd-1".into(),
            start_time: Time(tick),
            schedule_tick: None,
            request: Some("now".into()),
            method: None,
        });
        assert!(draft.is_active("default/a") && !draft.is_active("default/b"));
        suspended.status = Some(draft.finish());
        let mut draft = Draft::new(&suspended, tick);
        assert!(draft.is_active("default/a"), "a restarted reconcile still knows the running backup");
        draft.succeeded("default/a", None, tick, at("2026-01-01T03:01:00Z"));
        let status = draft.finish();
        assert!(status.active_backups.is_empty());
        assert_eq!(condition(&status, condition::READY), ("True", "Suspended"));
    }
}
