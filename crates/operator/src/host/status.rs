//! Status (pure): the new PostgresHost status from the old one and what this reconcile saw and
//! did. Fields other controllers own (lastBackup, recoveryWindow, handledBackupRequest, the
//! LastBackupSucceeded condition) are carried over untouched.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use pgec2_api::{
    ArchivingStatus, BackupPolicySpec, CommandPurpose, CommandState, CommandStatus, Endpoint, HostPhase,
    PostgresHostStatus, PostgresStatus, RESTORE_OBJECT_STORE, RESTORE_SNAPSHOT, Recoverability, RestoreStatus,
    condition,
};
use pgec2_core::archiver::{ArchiveHealth, ArchiverStatus};
use pgec2_core::host_spec::{HostReport, HostSpec};

use super::validate::Invalid;
use super::{archive_state, objectives};
use crate::cloud::{self, HostInstance, HostLayout, InstanceState};
use crate::kube_layer::conditions::{self, ConditionUpdate, Truth};

/// Longest command message kept in status.
const MESSAGE_LIMIT: usize = 2048;

/// A status being built for one reconcile.
#[derive(Clone, Debug)]
pub struct Draft {
    pub status: PostgresHostStatus,
    generation: Option<i64>,
    now: Timestamp,
    /// The host restores from backups (phase Restoring instead of Configuring at first).
    recovery: bool,
    /// The host references a BackupPolicy (Ready needs archiving).
    archives: bool,
    /// Explicit phase (Failed on an invalid spec, Deleting); derived otherwise.
    phase: Option<HostPhase>,
    /// Ready was set explicitly and is not summarized from the other conditions.
    ready_set: bool,
}

impl Draft {
    pub fn new(old: Option<&PostgresHostStatus>, generation: Option<i64>, now: Timestamp) -> Self {
        let status = old.cloned().unwrap_or_default();
        Self { status, generation, now, recovery: false, archives: false, phase: None, ready_set: false }
    }

    /// What the spec asks for that changes how phases and Ready read.
    pub fn expecting(mut self, recovery: bool, archives: bool) -> Self {
        self.recovery = recovery;
        self.archives = archives;
        self
    }

    fn set(&mut self, type_: &'static str, truth: Truth, reason: &str, message: impl Into<String>) {
        let update = ConditionUpdate::new(type_, truth, reason, message);
        conditions::set(&mut self.status.conditions, &update, self.generation, self.now);
    }

    /// The backup a restore starts from, chosen before the launch.
    pub fn restore_chosen(&mut self, backup: &str, snapshot_id: Option<&str>) {
        let kind = if snapshot_id.is_some() { RESTORE_SNAPSHOT } else { RESTORE_OBJECT_STORE };
        self.status.restore = Some(RestoreStatus {
            backup: backup.to_string(),
            kind: kind.to_string(),
            snapshot_id: snapshot_id.map(str::to_string),
            start_time: Some(Time(self.now)),
            ..RestoreStatus::default()
        });
        self.phase = Some(HostPhase::Pending);
        self.status.message = Some(format!("restoring from {kind} backup {backup}: launching the host"));
    }

    /// Seconds from the restore's start until now.
    fn restore_elapsed(&self) -> Option<i64> {
        let start = self.status.restore.as_ref()?.start_time.as_ref()?.0;
        Some(self.now.duration_since(start).as_secs())
    }

    /// The spec cannot be acted on: phase Failed, Ready False with the reason.
    pub fn invalid(&mut self, invalid: &Invalid) {
        self.phase = Some(HostPhase::Failed);
        self.set(condition::READY, Truth::False, invalid.reason, invalid.message.clone());
        self.status.message = Some(invalid.message.clone());
    }

    /// A restore whose target the source's archive cannot reach (yet): nothing is launched.
    pub fn restore_unreachable(&mut self, unreachable: &super::recovery_check::Unreachable) {
        self.phase = Some(if unreachable.may_resolve { HostPhase::Pending } else { HostPhase::Failed });
        self.set(condition::READY, Truth::False, unreachable.reason, unreachable.message.clone());
        self.status.message = Some(unreachable.message.clone());
        self.ready_set = true;
    }

    /// `spec.paused`: nothing changes; Ready keeps its status and says why.
    pub fn paused(&mut self) {
        let current = conditions::find(&self.status.conditions, condition::READY).map(|ready| ready.status.clone());
        let truth = match current.as_deref() {
            Some("True") => Truth::True,
            Some("False") => Truth::False,
            _ => Truth::Unknown,
        };
        let message = "spec.paused is true: the operator makes no change to this host until it is false";
        self.set(condition::READY, truth, "Paused", message);
        self.phase = self.status.phase.or(Some(HostPhase::Pending));
        self.status.message = Some(message.to_string());
    }

    /// The host is being deleted.
    pub fn deleting(&mut self, detail: &str) {
        self.phase = Some(HostPhase::Deleting);
        self.set(condition::READY, Truth::False, "Deleting", detail.to_string());
        self.status.message = Some(detail.to_string());
    }

    /// What the cloud says about the instance (and where PostgreSQL listens on it).
    pub fn instance(&mut self, instance: Option<&HostInstance>, layout: Option<&HostLayout>) {
        let Some(instance) = instance else {
            self.set(condition::INSTANCE_RUNNING, Truth::False, "NotLaunched", "no instance exists for this host yet");
            self.set(condition::AGENT_READY, Truth::Unknown, "NotLaunched", "no instance exists for this host yet");
            return;
        };
        self.status.instance_id = Some(instance.instance_id.clone());
        self.status.volume_id = instance.volume_id.clone();
        self.status.private_ip = instance.private_ip.clone();
        self.status.availability_zone = instance.availability_zone.clone();
        let running = instance.state == InstanceState::Running;
        let state = format!("{:?}", instance.state);
        let message = format!("instance {} is {}", instance.instance_id, state.to_lowercase());
        self.set(condition::INSTANCE_RUNNING, Truth::from_bool(running), &state, message);
        if instance.agent_online {
            self.set(condition::AGENT_READY, Truth::True, "Online", "the agent on the host accepts commands");
        } else {
            self.set(condition::AGENT_READY, Truth::False, "Offline", "waiting for the host's agent to come online");
        }
        if let (Some(layout), Some(host)) = (layout, layout.and_then(|layout| layout.endpoint_host.clone())) {
            self.status.endpoint = Some(Endpoint { host, port: i32::from(layout.port) });
        }
    }

    /// The cloud could not create the instance for a reason only a change can fix.
    pub fn launch_refused(&mut self, reason: &str, message: &str) {
        self.set(condition::INSTANCE_RUNNING, Truth::False, reason, message.to_string());
        self.status.message = Some(message.to_string());
    }

    /// A setup command was sent.
    pub fn setup_sent(&mut self, id: &str, digest: &str) {
        let elapsed = self.restore_elapsed();
        if let Some(restore) = self.status.restore.as_mut().filter(|restore| restore.volume_seconds.is_none()) {
            restore.volume_seconds = elapsed;
        }
        self.setup_followed(id);
        self.status.setup_digest = Some(digest.to_string());
    }

    /// A setup command runs on the host (sent by us, or found running there after a restart
    /// whose status write was lost): `lastCommand` follows it.
    pub fn setup_followed(&mut self, id: &str) {
        self.status.last_command = Some(CommandStatus {
            id: id.to_string(),
            purpose: CommandPurpose::Setup,
            status: CommandState::InProgress,
            start_time: Some(Time(self.now)),
            finish_time: None,
            exit_code: None,
            message: None,
        });
        if !conditions::is_true(&self.status.conditions, condition::POSTGRES_READY) {
            self.set(
                condition::POSTGRES_READY,
                Truth::False,
                "Configuring",
                format!("host setup is running (command {id})"),
            );
        }
    }

    /// Progress of the command in `lastCommand`; returns the outcome once it finished.
    pub fn command_progress(&mut self, progress: &cloud::CommandStatus) -> Option<CommandOutcome> {
        let now = self.now;
        let command = self.status.last_command.as_mut()?;
        let outcome = match progress {
            cloud::CommandStatus::Pending => {
                command.status = CommandState::Pending;
                return None;
            }
            cloud::CommandStatus::InProgress => {
                command.status = CommandState::InProgress;
                return None;
            }
            cloud::CommandStatus::Succeeded { stdout } => {
                command.status = CommandState::Succeeded;
                command.exit_code = Some(0);
                command.message = None;
                CommandOutcome::Succeeded { report: host_report(stdout) }
            }
            cloud::CommandStatus::Failed { exit_code, stdout, stderr_tail } => {
                let report = host_report(stdout);
                let message = failure_message(report.as_ref(), stderr_tail);
                command.status =
                    if stderr_tail.contains("timed out") { CommandState::TimedOut } else { CommandState::Failed };
                command.exit_code = *exit_code;
                command.message = Some(message.clone());
                CommandOutcome::Failed { message }
            }
        };
        command.finish_time = Some(Time(now));
        Some(outcome)
    }

    /// The setup succeeded: PostgreSQL runs the wanted configuration.
    pub fn setup_succeeded(&mut self, report: Option<&HostReport>, spec: Option<&HostSpec>) {
        self.restore_finished(report);
        if let Some(facts) = report.and_then(|report| report.postgres.as_ref()) {
            self.status.postgres = Some(PostgresStatus {
                version: Some(facts.version.clone()),
                system_identifier: Some(facts.system_identifier.clone()),
                timeline: Some(i64::from(facts.timeline)),
            });
        }
        let version = self.status.postgres.as_ref().and_then(|postgres| postgres.version.clone()).unwrap_or_default();
        let endpoint = self.status.endpoint.as_ref().map(|endpoint| format!(" on {}:{}", endpoint.host, endpoint.port));
        let message = format!("PostgreSQL {version} accepts connections{}", endpoint.unwrap_or_default());
        self.set(condition::POSTGRES_READY, Truth::True, "Running", message);
        match spec.and_then(|spec| spec.archive.as_ref()) {
            Some(archive) => {
                let place = format!("{}/{}", archive.storage.url, archive.storage.prefix.clone().unwrap_or_default());
                let message = format!("archive_command archives WAL through the agent to {place}");
                self.set(condition::CONTINUOUS_ARCHIVING, Truth::True, "Configured", message);
            }
            None => self.no_archive(),
        }
    }

    /// The first successful setup of a restored host: the agent's phase timings and the total.
    fn restore_finished(&mut self, report: Option<&HostReport>) {
        let total = self.restore_elapsed();
        let now = self.now;
        let Some(restore) = self.status.restore.as_mut().filter(|restore| restore.finish_time.is_none()) else {
            return;
        };
        let seconds = |step: &str| {
            let step = report?.steps.iter().find(|report| report.step == step)?;
            step.milliseconds.and_then(|milliseconds| i64::try_from(milliseconds.div_ceil(1000)).ok())
        };
        restore.data_directory_seconds = seconds("data-directory");
        restore.start_seconds = seconds("service");
        restore.total_seconds = total;
        restore.finish_time = Some(Time(now));
    }

    /// `status.recoverability` from the archiver's last reported state and the policy's
    /// objectives; `RpoMet` and `RtoMet` when the policy sets them. `verified_rto` is the
    /// recovery time of the newest passing restore drill of the host, when one is recorded.
    pub fn recoverability(&mut self, policy: &BackupPolicySpec, verified_rto: Option<i64>) {
        let timeout = policy.wal_archiving.archive_timeout_seconds().map_or(60, i64::from);
        let rpo =
            self.status.archiving.as_ref().and_then(|archiving| objectives::rpo_seconds(archiving, timeout, self.now));
        let known = self.status.recoverability.as_ref().and_then(|known| known.last_verified_rto_seconds);
        let rto = verified_rto.or(known);
        self.status.recoverability = Some(Recoverability {
            rpo_seconds: rpo,
            last_verified_rto_seconds: rto,
            recovery_window: self.status.recovery_window.clone(),
        });
        let (rpo_objective, rto_objective) =
            policy.objectives.as_ref().map_or((None, None), objectives::objective_seconds);
        for (type_, verdict) in [
            (condition::RPO_MET, rpo_objective.map(|objective| objectives::rpo_verdict(rpo, objective))),
            (condition::RTO_MET, rto_objective.map(|objective| objectives::rto_verdict(rto, objective))),
        ] {
            match verdict {
                Some(verdict) => self.verdict(type_, verdict),
                None => self.status.conditions.retain(|found| found.type_ != type_),
            }
        }
    }

    fn verdict(&mut self, type_: &'static str, verdict: objectives::Verdict) {
        match verdict {
            objectives::Verdict::Met { message } => self.set(type_, Truth::True, "ObjectiveMet", message),
            objectives::Verdict::Missed { message } => self.set(type_, Truth::False, "ObjectiveMissed", message),
            objectives::Verdict::Unknown { message } => self.set(type_, Truth::Unknown, "NotMeasured", message),
        }
    }

    /// What the archive check read on the host: `status.archiving` and `ContinuousArchiving`.
    pub fn archive_health(&mut self, archiver: &ArchiverStatus, health: &ArchiveHealth) {
        self.status.archiving = Some(ArchivingStatus {
            last_archived_wal: archiver.last_archived_wal.clone(),
            last_archived_time: archiver.last_archived_time.and_then(crate::archive::time),
            last_failed_wal: archiver.last_failed_wal.clone(),
            last_failed_time: archiver.last_failed_time.and_then(crate::archive::time),
            waiting_files: i64::try_from(archiver.waiting).ok(),
            oldest_waiting_seconds: archiver.oldest_waiting_seconds.and_then(|seconds| i64::try_from(seconds).ok()),
            holes: archiver.archive_holes.as_ref().map(archive_state::holes),
            streaming: archiver.stream.as_ref().map(|stream| archive_state::streaming(stream, self.now)),
        });
        let (truth, reason, message) = archive_state::completeness(archiver);
        self.set(condition::ARCHIVE_COMPLETE, truth, reason, message);
        let (truth, reason) = match health {
            ArchiveHealth::Healthy => (Truth::True, "Archiving"),
            ArchiveHealth::InRecovery => (Truth::True, "InRecovery"),
            ArchiveHealth::Failing { .. } => (Truth::False, "ArchiveFailing"),
            ArchiveHealth::Lagging { .. } => (Truth::False, "ArchiveLagging"),
        };
        self.set(condition::CONTINUOUS_ARCHIVING, truth, reason, health.describe(archiver));
    }

    /// The host archives nothing (no `spec.backup`).
    pub fn no_archive(&mut self) {
        let message = "spec.backup is not set: WAL is not archived and the host is not backed up";
        self.set(condition::CONTINUOUS_ARCHIVING, Truth::False, "NoBackupPolicy", message);
    }

    /// The setup failed: PostgresReady False with what failed.
    pub fn setup_failed(&mut self, message: &str) {
        self.set(condition::POSTGRES_READY, Truth::False, "SetupFailed", message.to_string());
        self.status.message = Some(message.to_string());
    }

    /// The final status: derived phase, Ready summary, observedGeneration.
    pub fn finish(mut self) -> PostgresHostStatus {
        let phase = self.phase.unwrap_or_else(|| self.derived_phase());
        if !matches!(self.phase, Some(HostPhase::Failed | HostPhase::Deleting)) && !self.is_paused() && !self.ready_set
        {
            self.summarize(phase);
        }
        self.status.phase = Some(phase);
        self.status.observed_generation = self.generation;
        self.status
    }

    fn is_paused(&self) -> bool {
        conditions::find(&self.status.conditions, condition::READY).is_some_and(|ready| ready.reason == "Paused")
    }

    fn derived_phase(&self) -> HostPhase {
        let conditions = &self.status.conditions;
        let setup_running = self
            .status
            .last_command
            .as_ref()
            .is_some_and(|command| command.purpose == CommandPurpose::Setup && !command.status.is_finished());
        let postgres = conditions::find(conditions, condition::POSTGRES_READY);
        let ever_ran = self.status.postgres.is_some();
        if self.status.instance_id.is_none() {
            HostPhase::Pending
        } else if setup_running {
            if self.recovery && !ever_ran { HostPhase::Restoring } else { HostPhase::Configuring }
        } else if postgres.is_some_and(|postgres| postgres.reason == "SetupFailed") {
            if ever_ran { HostPhase::Degraded } else { HostPhase::Failed }
        } else if conditions::is_true(conditions, condition::POSTGRES_READY) {
            if self.archiving_ok() { HostPhase::Ready } else { HostPhase::Degraded }
        } else {
            HostPhase::Provisioning
        }
    }

    fn archiving_ok(&self) -> bool {
        !self.archives || conditions::is_true(&self.status.conditions, condition::CONTINUOUS_ARCHIVING)
    }

    /// Sets Ready from the other conditions.
    fn summarize(&mut self, phase: HostPhase) {
        let serving = conditions::is_true(&self.status.conditions, condition::POSTGRES_READY);
        let ready = serving && self.archiving_ok();
        let message = if ready {
            match &self.status.endpoint {
                Some(endpoint) => format!("PostgreSQL serves on {}:{}", endpoint.host, endpoint.port),
                None => "PostgreSQL serves".to_string(),
            }
        } else {
            self.not_ready_message(phase)
        };
        self.set(condition::READY, Truth::from_bool(ready), phase.as_str(), message.clone());
        self.status.message = Some(message);
    }

    fn not_ready_message(&self, phase: HostPhase) -> String {
        let failing = [condition::POSTGRES_READY, condition::CONTINUOUS_ARCHIVING, condition::INSTANCE_RUNNING]
            .into_iter()
            .filter_map(|type_| conditions::find(&self.status.conditions, type_))
            .find(|condition| condition.status == "False" && condition.reason != "Configuring");
        match (phase, failing) {
            (HostPhase::Failed | HostPhase::Degraded, Some(condition)) => condition.message.clone(),
            (HostPhase::Pending, _) => "waiting to launch the host".to_string(),
            (HostPhase::Provisioning, _) => "the host is starting".to_string(),
            (HostPhase::Restoring, _) => "the agent restores the data directory from backups".to_string(),
            _ => "the agent sets up the host".to_string(),
        }
    }
}

/// How a finished command ended.
#[derive(Clone, Debug, PartialEq)]
pub enum CommandOutcome {
    Succeeded { report: Option<HostReport> },
    Failed { message: String },
}

/// The `host apply` report the bootstrap printed; `None` when stdout is not one (the script
/// failed before the agent ran, or the answer breaks the contract).
fn host_report(stdout: &str) -> Option<HostReport> {
    pgec2_contract::output::parse_json("host apply", stdout).ok()
}

/// What failed, from the host apply report (the failed step's detail) or the stderr tail.
fn failure_message(report: Option<&HostReport>, stderr_tail: &str) -> String {
    let message = match report.and_then(HostReport::failed_step) {
        Some(step) => format!("host setup failed at step {}: {}", step.step, step.detail.trim()),
        None => format!("host setup failed: {}", stderr_tail.trim()),
    };
    truncate(message)
}

fn truncate(mut text: String) -> String {
    if text.len() > MESSAGE_LIMIT {
        let mut end = MESSAGE_LIMIT;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

#[cfg(test)]
#[path = "status_tests.rs"]
mod tests;
