//! Restore drills (`spec.verification`): on the drill schedule, each host of the policy gets a
//! throwaway PostgresHost restored from its backups; once PostgreSQL on it has finished
//! recovery the operator runs `pgec2-agent drill-check` there, records the result in
//! `status.verification` and deletes the drill host.
//!
//! ```text
//! tick ─▶ create drill host ─▶ (host controller restores it) ─▶ Ready ─▶ drill-check
//!      ─▶ result, RestoreVerified, event ─▶ delete drill host (unless keep)
//! ```
//!
//! Every step is driven from `status.verification.active`, so a restarted operator follows a
//! drill where it was. A drill host is created by server-side apply under a name derived from
//! the tick, so creating it again after a crash finds the same host. The drill host has no
//! `backup`: host apply renders `archive_mode = off`, and `drill-check` reports the setting so
//! a copy that archives fails the drill. The source host is never touched and its archive only
//! read (restores take a lease in it, as every restore does).

pub mod check;
pub mod plan;

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use pgec2_api::{
    ActiveDrill, BackupPolicy, DRILL_POLICY_LABEL, DrillOutcome, DrillResult, FIELD_MANAGER, HostPhase, PostgresHost,
    Verification, VerificationTarget,
};
use pgec2_core::drill_check::DrillCheckReport;

use super::status::Draft;
use crate::cloud::{CommandStatus, HostRef};
use crate::context::Context;
use crate::schedule::Schedule;

/// How often a policy with a running drill is looked at.
pub const POLL_RUNNING: Duration = Duration::from_secs(3);

/// Failures of one step of a drill. None is fatal to the policy's reconcile: a transient one
/// is retried on the next poll, a permanent one ends the drill as failed.
#[derive(Debug, thiserror::Error)]
pub enum DrillError {
    #[error("failed to {action} drill host {host}: {source}")]
    Kube { action: &'static str, host: String, source: kube::Error },
    #[error("failed to reach drill host {host} through the cloud: {source}")]
    Cloud { host: String, source: crate::cloud::CloudError },
    #[error("drill host {0} has no instance although it is Ready")]
    NoInstance(String),
    #[error("the drill-check command for {0} cannot be quoted (a NUL byte in a path or a check)")]
    Unquotable(String),
    #[error("drill host {host}: {source}")]
    Answer { host: String, source: pgec2_contract::output::OutputError },
}

impl DrillError {
    /// True when the same step may succeed on a later poll.
    fn is_transient(&self) -> bool {
        match self {
            DrillError::Kube { source, .. } => !matches!(source, kube::Error::Api(response) if response.code == 422),
            DrillError::Cloud { source, .. } => source.is_transient(),
            DrillError::NoInstance(_) | DrillError::Unquotable(_) | DrillError::Answer { .. } => false,
        }
    }
}

/// What the drills ask of the policy's requeue.
#[derive(Clone, Copy, Debug, Default)]
pub struct Pass {
    /// A drill runs: poll soon.
    pub busy: bool,
    /// The next drill tick.
    pub next_tick: Option<Timestamp>,
}

/// One pass over the drills of `policy`: follow the running ones, start the due ones, and set
/// `RestoreVerified`. `sources` are the policy's hosts.
pub async fn reconcile(
    ctx: &Context,
    policy: &BackupPolicy,
    sources: &[PostgresHost],
    draft: &mut Draft,
    now: Timestamp,
) -> Pass {
    let Some(verification) = policy.spec.verification.as_ref() else {
        draft.remove_condition(pgec2_api::condition::RESTORE_VERIFIED);
        abandon(ctx, policy, draft).await;
        return Pass::default();
    };
    let schedule = match Schedule::parse(&verification.schedule, policy.spec.time_zone.as_deref()) {
        Ok(schedule) => schedule,
        Err(invalid) => {
            let message = format!("spec.verification.schedule: {invalid}");
            draft.set_condition(&crate::kube_layer::conditions::ConditionUpdate::new(
                pgec2_api::condition::RESTORE_VERIFIED,
                crate::kube_layer::conditions::Truth::False,
                "InvalidSchedule",
                message,
            ));
            return Pass::default();
        }
    };
    for active in draft.verification().active.clone() {
        follow(ctx, policy, verification, &active, draft, now).await;
    }
    let status = draft.verification();
    let created = policy.metadata.creation_timestamp.as_ref().map_or(now, |time| time.0);
    let last = status.last_schedule_time.as_ref().map(|time| time.0);
    let due = if policy.spec.suspend { None } else { schedule.due_tick(last, created, now) };
    if let Some(tick) = due {
        for source in sources {
            start(ctx, policy, verification, source, tick, draft, now).await;
        }
        draft.verification().last_schedule_time = Some(Time(tick));
    }
    let next_tick = if policy.spec.suspend { None } else { schedule.next_after(now) };
    let status = draft.verification();
    status.next_schedule_time = next_tick.map(Time);
    let busy = !status.active.is_empty();
    let condition = plan::verified_condition(&status.results);
    draft.set_condition(&condition);
    Pass { busy, next_tick }
}

/// Drills still running when `verification` was removed: their hosts are deleted, nothing is
/// recorded.
async fn abandon(ctx: &Context, policy: &BackupPolicy, draft: &mut Draft) {
    let Some(status) = draft.verification_if_any() else { return };
    let running = std::mem::take(&mut status.active);
    for active in running {
        let note = format!("spec.verification was removed: drill of {} abandoned", active.host);
        super::backups::publish(ctx, policy, EventType::Normal, "DrillAbandoned", note).await;
        delete_drill_host(ctx, policy, &active.drill_host).await;
    }
}

/// Starts a drill of `source` for `tick` unless one runs for it or it has nothing to restore.
async fn start(
    ctx: &Context,
    policy: &BackupPolicy,
    verification: &Verification,
    source: &PostgresHost,
    tick: Timestamp,
    draft: &mut Draft,
    now: Timestamp,
) {
    let key = source.qualified_name();
    if draft.verification().active.iter().any(|active| active.host == key) {
        let note = format!("a drill of {key} still runs; the drill tick of {tick} is skipped for this host");
        super::backups::publish(ctx, policy, EventType::Warning, "DrillSkipped", note).await;
        return;
    }
    let summary = policy.status.as_ref().and_then(|status| status.hosts.iter().find(|summary| summary.host == key));
    if summary.and_then(|summary| summary.last_backup.as_ref()).is_none() {
        let note = format!("{key} has no complete backup yet; no drill for the tick of {tick}");
        super::backups::publish(ctx, policy, EventType::Warning, "DrillSkipped", note).await;
        return;
    }
    let target_time = match verification.target {
        VerificationTarget::Latest => None,
        VerificationTarget::RandomInWindow => {
            let seed = format!("{}/{key}/{tick}", policy.uid().unwrap_or_default());
            match summary
                .and_then(|summary| summary.recovery_window.as_ref())
                .and_then(|w| plan::random_target(w, &seed))
            {
                Some(time) => Some(time),
                None => {
                    let note = format!("{key} has no recovery window yet; no drill for the tick of {tick}");
                    super::backups::publish(ctx, policy, EventType::Warning, "DrillSkipped", note).await;
                    return;
                }
            }
        }
    };
    let name = plan::drill_host_name(&source.name_any(), tick);
    let host = plan::drill_host(policy, source, &name, target_time);
    let api: Api<PostgresHost> = Api::namespaced(ctx.client.clone(), &source.namespace().unwrap_or_default());
    if let Err(source) = api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&host)).await {
        let error = DrillError::Kube { action: "create", host: name, source };
        let note = format!("drill of {key} not started: {error}");
        return super::backups::publish(ctx, policy, EventType::Warning, "DrillFailed", note).await;
    }
    let status = draft.verification();
    status.active.push(ActiveDrill {
        host: key.clone(),
        drill_host: name.clone(),
        start_time: Time(now),
        target_time: target_time.map(Time),
        check_command_id: None,
    });
    status.active.sort_by(|a, b| a.host.cmp(&b.host));
    let point = target_time.map_or_else(|| "the end of the archive".to_string(), |time| time.to_string());
    let note = format!("restore drill of {key} started: drill host {name} recovers to {point}");
    super::backups::publish(ctx, policy, EventType::Normal, "DrillStarted", note).await;
}

/// Moves one running drill on: wait for its host, send the checks, read their report, finish.
async fn follow(
    ctx: &Context,
    policy: &BackupPolicy,
    verification: &Verification,
    active: &ActiveDrill,
    draft: &mut Draft,
    now: Timestamp,
) {
    let namespace = policy.namespace().unwrap_or_default();
    let api: Api<PostgresHost> = Api::namespaced(ctx.client.clone(), &namespace);
    let host = match api.get_opt(&active.drill_host).await {
        Ok(host) => host,
        Err(error) => return tracing::warn!(drill = %active.drill_host, %error, "cannot read the drill host"),
    };
    let Some(host) = host else {
        let failure = format!("drill host {} disappeared before the drill finished", active.drill_host);
        return finish(ctx, policy, verification, active, None, None, Some(failure), draft, now).await;
    };
    let timeout = Duration::from_secs(verification.timeout_seconds().unwrap_or(7200));
    let elapsed = Duration::try_from(now.duration_since(active.start_time.0)).unwrap_or_default();
    if elapsed > timeout {
        let failure = format!(
            "the drill did not finish within {}: drill host {} is {}: {}",
            verification.timeout,
            active.drill_host,
            host.phase().map_or("new", HostPhase::as_str),
            host_message(&host)
        );
        return finish(ctx, policy, verification, active, Some(&host), None, Some(failure), draft, now).await;
    }
    match step(ctx, verification, active, &host, timeout.saturating_sub(elapsed)).await {
        Ok(Progress::Waiting) => {}
        Ok(Progress::CheckSent(command_id)) => {
            if let Some(running) = draft.verification().active.iter_mut().find(|run| run.host == active.host) {
                running.check_command_id = Some(command_id);
            }
        }
        Ok(Progress::Finished(report)) => {
            finish(ctx, policy, verification, active, Some(&host), Some(&report), None, draft, now).await;
        }
        Ok(Progress::Failed(failure)) => {
            finish(ctx, policy, verification, active, Some(&host), None, Some(failure), draft, now).await;
        }
        Err(error) if error.is_transient() => {
            tracing::warn!(drill = %active.drill_host, %error, "drill step failed; retried on the next poll");
        }
        Err(error) => {
            finish(ctx, policy, verification, active, Some(&host), None, Some(error.to_string()), draft, now).await;
        }
    }
}

/// Where a running drill stands after one step.
enum Progress {
    Waiting,
    CheckSent(String),
    Finished(DrillCheckReport),
    Failed(String),
}

/// The next step of a drill whose host exists.
async fn step(
    ctx: &Context,
    verification: &Verification,
    active: &ActiveDrill,
    host: &PostgresHost,
    remaining: Duration,
) -> Result<Progress, DrillError> {
    match host.phase() {
        Some(HostPhase::Failed) => {
            return Ok(Progress::Failed(format!(
                "the restore into drill host {} failed: {}",
                active.drill_host,
                host_message(host)
            )));
        }
        Some(HostPhase::Ready) if host.status.as_ref().is_some_and(|status| status.restore.is_some()) => {}
        _ if held(host) => {
            let message = host_message(host);
            return Ok(Progress::Failed(format!("drill host {} cannot be restored: {message}", active.drill_host)));
        }
        _ => return Ok(Progress::Waiting),
    }
    let name = host.qualified_name();
    let reference = HostRef {
        namespace: host.namespace().unwrap_or_default(),
        name: host.name_any(),
        uid: host.uid().unwrap_or_default(),
    };
    let cloud_error = |source| DrillError::Cloud { host: name.clone(), source };
    let instance = ctx.cloud.find_host(&reference).await.map_err(cloud_error)?;
    let instance = instance.ok_or_else(|| DrillError::NoInstance(name.clone()))?;
    let command = check::command(verification, remaining);
    let Some(command_id) = &active.check_command_id else {
        let layout = ctx.cloud.host_layout(&reference, &instance).await.map_err(cloud_error)?;
        let host_command =
            check::host_command(&layout, &command, remaining).ok_or_else(|| DrillError::Unquotable(name.clone()))?;
        let command_id = ctx.cloud.send_command(&instance, &host_command).await.map_err(cloud_error)?;
        return Ok(Progress::CheckSent(command_id));
    };
    match ctx.cloud.command_status(&instance, command_id).await.map_err(cloud_error)? {
        CommandStatus::Pending | CommandStatus::InProgress => Ok(Progress::Waiting),
        CommandStatus::Succeeded { stdout } => check::report(&command, &stdout)
            .map(Progress::Finished)
            .map_err(|source| DrillError::Answer { host: name, source }),
        CommandStatus::Failed { exit_code, stderr_tail, .. } => {
            let exit = exit_code.map_or_else(|| "did not finish".to_string(), |code| format!("exited with {code}"));
            Ok(Progress::Failed(format!("drill-check on {name} {exit}: {}", stderr_tail.trim())))
        }
    }
}

/// True when the host controller holds the drill host's restore: the archive cannot reach the
/// point the drill asks for now (a drill checks what can be restored now, it does not wait).
fn held(host: &PostgresHost) -> bool {
    host.condition(pgec2_api::condition::READY).is_some_and(|ready| {
        ready.status == "False" && matches!(ready.reason.as_str(), "NoBackupToRestore" | "RecoveryTargetUnreachable")
    })
}

/// What the drill host's status says of it: its message, else its Ready condition's.
fn host_message(host: &PostgresHost) -> String {
    let status = host.status.as_ref();
    status
        .and_then(|status| status.message.clone())
        .or_else(|| host.condition(pgec2_api::condition::READY).map(|ready| ready.message.clone()))
        .unwrap_or_else(|| "no status yet".to_string())
}

/// Records a finished drill, publishes its event and deletes its host (unless `keep`).
#[allow(clippy::too_many_arguments)]
async fn finish(
    ctx: &Context,
    policy: &BackupPolicy,
    verification: &Verification,
    active: &ActiveDrill,
    host: Option<&PostgresHost>,
    report: Option<&DrillCheckReport>,
    failure: Option<String>,
    draft: &mut Draft,
    now: Timestamp,
) {
    let result = plan::result(active, host, report, failure, now);
    publish_result(ctx, policy, &result).await;
    let status = draft.verification();
    status.active.retain(|running| running.host != active.host);
    plan::record(&mut status.results, result);
    if !verification.keep && host.is_some() {
        delete_drill_host(ctx, policy, &active.drill_host).await;
    }
}

/// Deletes a drill host (the host controller then terminates it with its volume).
async fn delete_drill_host(ctx: &Context, policy: &BackupPolicy, name: &str) {
    let api: Api<PostgresHost> = Api::namespaced(ctx.client.clone(), &policy.namespace().unwrap_or_default());
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(response)) if response.code == 404 => {}
        Err(source) => {
            let error = DrillError::Kube { action: "delete", host: name.to_string(), source };
            tracing::warn!(%error, "the drill host stays; delete it by hand");
            let note = format!("{error}: delete it by hand");
            super::backups::publish(ctx, policy, EventType::Warning, "DrillHostKept", note).await;
        }
    }
}

async fn publish_result(ctx: &Context, policy: &BackupPolicy, result: &DrillResult) {
    let (type_, reason) = match result.outcome {
        DrillOutcome::Passed => (EventType::Normal, "DrillPassed"),
        DrillOutcome::Failed => (EventType::Warning, "DrillFailed"),
    };
    let backup = result.backup.as_deref().map(|backup| format!(" of backup {backup}")).unwrap_or_default();
    let note =
        format!("restore drill of {}{backup} (drill host {}): {}", result.host, result.drill_host, result.message);
    super::backups::publish(ctx, policy, type_, reason, note).await;
}

/// The policy a drill host belongs to (its label), for the policy controller's watch.
pub fn policy_of(host: &PostgresHost) -> Option<&str> {
    host.metadata.labels.as_ref()?.get(DRILL_POLICY_LABEL).map(String::as_str)
}
