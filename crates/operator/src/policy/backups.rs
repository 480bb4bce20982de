//! Running base backups on hosts: `pgec2-agent backup-push --json` sent through the cloud's
//! command runner, one at a time per host, and their outcome recorded. Running backups are kept
//! in the policy's `status.activeBackups`, so an operator that restarts follows them to the end
//! rather than starting them again.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::events::EventType;
use pgec2_api::{ActiveBackup, BACKUP_REQUEST_ANNOTATION, BackupMethod, BackupPolicy, PostgresHost};

use pgec2_contract::annotation::Annotation;
use pgec2_contract::command::{AgentCommand, BackupPush};
use pgec2_core::catalog::BackupInfo;

use super::status::Draft;
use crate::cloud::{CommandStatus, HostCommand, HostLayout, HostRef};
use crate::context::Context;
use crate::kube_layer::events;

/// The purpose of backup commands (their SSM comment is `pgec2 backup`).
const BACKUP_PURPOSE: &str = "backup";

/// How long one base backup may run.
pub const BACKUP_TIMEOUT: Duration = Duration::from_secs(6 * 60 * 60);

/// Annotation of a backup (in its commit record) naming the schedule tick it was taken for.
pub const SCHEDULE_TICK_ANNOTATION: &str = "pgec2.io/schedule-tick";

/// Why a backup is taken: a schedule tick, an on-demand request, or both at once.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Trigger {
    pub tick: Option<Timestamp>,
    pub request: Option<String>,
    /// The tick is one of `incrementalSchedule`: `backup-push --incremental`.
    pub incremental: bool,
}

impl Trigger {
    /// The annotations that record the trigger in the backup's commit record (a request's value
    /// made printable and cut to the length `backup-push` accepts).
    fn annotations(&self) -> Vec<Annotation> {
        let tick = self.tick.and_then(|tick| Annotation::new(SCHEDULE_TICK_ANNOTATION, &tick.to_string()).ok());
        let request = self.request.as_ref().and_then(|value| Annotation::lossy(BACKUP_REQUEST_ANNOTATION, value).ok());
        tick.into_iter().chain(request).collect()
    }
}

/// `ActiveBackup.method` of a snapshot backup.
pub const SNAPSHOT_METHOD: &str = "snapshot";

/// `ActiveBackup.method` of an incremental backup.
pub const INCREMENTAL_METHOD: &str = "incremental";

/// The agent command that takes a backup for `trigger` (a snapshot backup when `snapshot`).
pub fn backup_command(trigger: &Trigger, snapshot: bool) -> AgentCommand {
    let incremental = trigger.incremental && !snapshot;
    AgentCommand::from(BackupPush { permanent: false, annotations: trigger.annotations(), snapshot, incremental })
}

/// The shell command that takes a backup on a host: the agent with the configuration host apply
/// wrote, run as the OS user that owns PostgreSQL, with the trigger recorded in the backup.
pub fn backup_script(layout: &HostLayout, trigger: &Trigger, snapshot: bool) -> Option<String> {
    crate::agent_command::agent_script(layout, &backup_command(trigger, snapshot))
}

fn host_ref(host: &PostgresHost) -> HostRef {
    HostRef {
        namespace: host.namespace().unwrap_or_default(),
        name: host.name_any(),
        uid: host.uid().unwrap_or_default(),
    }
}

/// Starts a backup on `host` unless one is running there; records it in `draft` (the caller
/// writes the status right away) and marks a handled on-demand request. Returns true when a
/// backup was started.
pub async fn start(
    ctx: &Context,
    policy: &BackupPolicy,
    host: &PostgresHost,
    trigger: Trigger,
    draft: &mut Draft,
) -> bool {
    let reference = host_ref(host);
    let key = reference.key();
    if draft.is_active(&key) {
        if let Some(tick) = trigger.tick {
            let note = format!("a backup still runs on {key}; the tick of {tick} is skipped for this host");
            publish(ctx, policy, EventType::Warning, "BackupSkipped", note).await;
        }
        return false;
    }
    let now = Timestamp::now();
    let cloud = &ctx.cloud;
    let instance = match cloud.find_host(&reference).await {
        Ok(Some(instance)) => instance,
        Ok(None) => return refused(ctx, policy, draft, &key, now, "the host has no instance".to_string()).await,
        Err(error) => return refused(ctx, policy, draft, &key, now, format!("failed to find the host: {error}")).await,
    };
    let snapshot = takes_snapshot(policy, host);
    let script =
        match cloud.host_layout(&reference, &instance).await.map(|layout| backup_script(&layout, &trigger, snapshot)) {
            Ok(Some(script)) => script,
            Ok(None) => {
                let message = "a host path or the request value contains a NUL byte".to_string();
                return refused(ctx, policy, draft, &key, now, message).await;
            }
            Err(error) => {
                return refused(ctx, policy, draft, &key, now, format!("failed to read the host layout: {error}"))
                    .await;
            }
        };
    // A backup command the status does not know of (sent just before an operator restart, whose
    // status write was lost) is followed, not doubled.
    match cloud.running_commands(&instance, BACKUP_PURPOSE).await {
        Ok(running) if !running.is_empty() => {
            let command_id = running[0].clone();
            draft.add_active(active_backup(&key, command_id.clone(), now, &trigger, snapshot));
            let note =
                format!("backup command {command_id} already runs on {key}; following it instead of starting another");
            publish(ctx, policy, EventType::Normal, "BackupFollowed", note).await;
            return true;
        }
        Ok(_) => {}
        Err(error) => tracing::warn!(host = %key, %error, "cannot list running commands; starting the backup"),
    }
    let command = HostCommand { purpose: BACKUP_PURPOSE.to_string(), script, timeout: BACKUP_TIMEOUT };
    match cloud.send_command(&instance, &command).await {
        Ok(command_id) => {
            draft.add_active(active_backup(&key, command_id, now, &trigger, snapshot));
            let why = match (&trigger.tick, &trigger.request) {
                (_, Some(value)) => format!("on request {value:?}"),
                (Some(tick), None) => format!("for the tick of {tick}"),
                (None, None) => String::new(),
            };
            let kind = if snapshot { "snapshot" } else { "base" };
            publish(ctx, policy, EventType::Normal, "BackupStarted", format!("{kind} backup started on {key} {why}"))
                .await;
            if let Some(value) = &trigger.request {
                super::host_status::mark_request_handled(&ctx.client, host, value).await;
            }
            true
        }
        Err(error) => refused(ctx, policy, draft, &key, now, format!("failed to start the backup: {error}")).await,
    }
}

fn active_backup(host: &str, command_id: String, now: Timestamp, trigger: &Trigger, snapshot: bool) -> ActiveBackup {
    ActiveBackup {
        host: host.to_string(),
        command_id,
        start_time: Time(now),
        schedule_tick: trigger.tick.map(Time),
        request: trigger.request.clone(),
        method: snapshot
            .then(|| SNAPSHOT_METHOD.to_string())
            .or(trigger.incremental.then(|| INCREMENTAL_METHOD.into())),
    }
}

/// Whether the next backup of `host` is a snapshot: always with `method: snapshot`, never with
/// `objectStore`, and with `both` unless the newest backup of the host is a snapshot.
fn takes_snapshot(policy: &BackupPolicy, host: &PostgresHost) -> bool {
    match policy.spec.method {
        BackupMethod::ObjectStore => false,
        BackupMethod::Snapshot => true,
        BackupMethod::Both => {
            let summaries = policy.status.as_ref().map(|status| status.hosts.as_slice()).unwrap_or_default();
            let last = summaries.iter().find(|summary| summary.host == host.qualified_name());
            let last_kind =
                last.and_then(|summary| summary.last_backup.as_ref()).and_then(|backup| backup.kind.as_deref());
            last_kind != Some("snapshot")
        }
    }
}

/// Records a backup that could not be started; returns false (nothing started).
async fn refused(
    ctx: &Context,
    policy: &BackupPolicy,
    draft: &mut Draft,
    host: &str,
    now: Timestamp,
    message: String,
) -> bool {
    publish(ctx, policy, EventType::Warning, "BackupFailed", format!("{host}: {message}")).await;
    draft.failed(host, None, now, message);
    false
}

/// Follows the backups recorded as running: records the finished ones and, after a success,
/// applies the policy's retention. Entries of hosts that no longer reference the policy are
/// dropped.
pub async fn finish_running(ctx: &Context, policy: &BackupPolicy, hosts: &[PostgresHost], draft: &mut Draft) {
    for run in draft.active().to_vec() {
        let Some(host) = hosts.iter().find(|host| host.qualified_name() == run.host) else {
            tracing::info!(host = %run.host, "host left the policy while its backup ran; no longer followed");
            draft.remove_active(&run.host);
            continue;
        };
        let started = run.start_time.0;
        let instance = match ctx.cloud.find_host(&host_ref(host)).await {
            Ok(Some(instance)) => instance,
            Ok(None) => {
                let message = "the host's instance is gone; the backup did not finish".to_string();
                publish(ctx, policy, EventType::Warning, "BackupFailed", format!("{}: {message}", run.host)).await;
                draft.failed(&run.host, Some(started), Timestamp::now(), message);
                continue;
            }
            Err(error) => {
                tracing::warn!(host = %run.host, %error, "failed to find the host of a running backup");
                continue;
            }
        };
        let status = match ctx.cloud.command_status(&instance, &run.command_id).await {
            Ok(status) => status,
            Err(error) if error.is_transient() => {
                tracing::warn!(host = %run.host, %error, "failed to read the backup command's status");
                continue;
            }
            Err(error) => CommandStatus::Failed {
                exit_code: None,
                stdout: String::new(),
                stderr_tail: format!("the command's status cannot be read: {error}"),
            },
        };
        let now = Timestamp::now();
        let snapshot = run.method.as_deref() == Some(SNAPSHOT_METHOD);
        let reference = host_ref(host);
        match status {
            CommandStatus::Pending | CommandStatus::InProgress => {
                if snapshot {
                    super::snapshots::serve(ctx, policy, host, &reference, &instance).await;
                }
                continue;
            }
            CommandStatus::Succeeded { stdout } => {
                let name = backup_name(&stdout);
                draft.succeeded(&run.host, name.clone(), started, now);
                let note = format!("base backup {} of {} committed", name.as_deref().unwrap_or("?"), run.host);
                publish(ctx, policy, EventType::Normal, "BackupSucceeded", note).await;
                match super::archive::apply_retention(policy, host, ctx.cloud.as_ref()).await {
                    Ok(held) => super::snapshot_lock::report_held(ctx, policy, draft, &run.host, &held).await,
                    Err(error) => {
                        draft.retention_failed(&run.host, &error.to_string());
                        let note = format!("{}: {error}", run.host);
                        publish(ctx, policy, EventType::Warning, "RetentionFailed", note).await;
                    }
                }
            }
            CommandStatus::Failed { exit_code, stderr_tail, .. } => {
                let exit = exit_code.map_or_else(|| "did not finish".to_string(), |code| format!("exited with {code}"));
                let message = format!("backup-push {exit}: {}", stderr_tail.trim());
                publish(ctx, policy, EventType::Warning, "BackupFailed", format!("{}: {message}", run.host)).await;
                draft.failed(&run.host, Some(started), now, message);
            }
        }
        if (snapshot || policy.spec.method != BackupMethod::ObjectStore)
            && let Err(message) = super::snapshots::collect(ctx, policy, host, &reference).await
        {
            tracing::warn!(host = %run.host, %message, "snapshots not cleaned up yet; retried after the next backup");
        }
        if let Some(value) = &run.request
            && host.status.as_ref().and_then(|status| status.handled_backup_request.as_deref()) != Some(value)
        {
            super::host_status::mark_request_handled(&ctx.client, host, value).await;
        }
    }
}

/// The backup name from `backup-push --json` output: the whole stdout is the new backup's
/// `BackupInfo`. An answer that breaks the contract loses only the name in the status (the
/// backup itself committed) and is logged.
pub fn backup_name(stdout: &str) -> Option<String> {
    let command = backup_command(&Trigger::default(), false);
    match crate::agent_command::read_answer::<BackupInfo>(&command, stdout) {
        Ok(info) => Some(info.name),
        Err(error) => {
            tracing::warn!(%error, "unreadable backup-push answer");
            None
        }
    }
}

pub(super) async fn publish(ctx: &Context, policy: &BackupPolicy, type_: EventType, reason: &str, note: String) {
    match type_ {
        EventType::Normal => events::normal(&ctx.recorder, policy, reason, note).await,
        EventType::Warning => events::warning(&ctx.recorder, policy, reason, note).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_trigger_is_recorded_as_annotations() {
        let tick: Timestamp = "2026-01-01T03:00:00Z".parse().expect("time");
        let both = Trigger { tick: Some(tick), request: Some("x y".to_string()), incremental: false };
        let rendered: Vec<String> = both.annotations().iter().map(ToString::to_string).collect();
        assert_eq!(
            rendered,
            vec!["pgec2.io/schedule-tick=2026-01-01T03:00:00Z".to_string(), "pgec2.io/backup-request=x y".to_string()]
        );
        assert!(Trigger::default().annotations().is_empty());
        let odd = Trigger { tick: None, request: Some(format!("a\nb{}", "c".repeat(2000))), incremental: false };
        let annotation = odd.annotations()[0].to_string();
        assert!(annotation.starts_with("pgec2.io/backup-request=a bccc"), "{annotation}");
        assert_eq!(annotation.len(), "pgec2.io/backup-request=".len() + 1024);
    }
}
