//! Running base backups on hosts: `pgec2-agent backup-push --json` sent through the cloud's
//! command runner, one at a time per host, and their outcome recorded.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};
use pgec2_api::{BackupPolicy, FIELD_MANAGER, PostgresHost};

use super::PolicyContext;
use super::status::Draft;
use crate::cloud::{CommandStatus, HostCommand, HostInstance, HostLayout, HostRef};

/// How long one base backup may run.
pub const BACKUP_TIMEOUT: Duration = Duration::from_secs(6 * 60 * 60);

/// A backup command in flight on a host.
#[derive(Clone, Debug)]
pub struct RunningBackup {
    pub host: String,
    pub command_id: String,
    pub instance: HostInstance,
    pub started: Timestamp,
}

/// The shell command that takes a backup on a host: the agent with the configuration host apply
/// wrote, run as the OS user that owns PostgreSQL.
pub fn backup_script(layout: &HostLayout) -> Option<String> {
    crate::host::agent_command::agent_script(layout, &["backup-push", "--json"])
}

fn host_ref(host: &PostgresHost) -> HostRef {
    HostRef {
        namespace: host.namespace().unwrap_or_default(),
        name: host.name_any(),
        uid: host.uid().unwrap_or_default(),
    }
}

/// True while any of `hosts` runs a backup.
pub fn any_running(pctx: &PolicyContext, hosts: &[PostgresHost]) -> bool {
    let running = pctx.running();
    hosts.iter().any(|host| running.contains_key(&host.uid().unwrap_or_default()))
}

/// Starts a backup on `host` unless one is running; records a handled on-demand request.
pub async fn start(
    pctx: &PolicyContext,
    policy: &BackupPolicy,
    host: &PostgresHost,
    request: Option<String>,
    draft: &mut Draft,
) {
    let reference = host_ref(host);
    if pctx.running().contains_key(&reference.uid) {
        return;
    }
    let now = Timestamp::now();
    let cloud = &pctx.ctx.cloud;
    let instance = match cloud.find_host(&reference).await {
        Ok(Some(instance)) => instance,
        Ok(None) => return draft.failed(&reference.key(), now, "the host has no instance".to_string()),
        Err(error) => return draft.failed(&reference.key(), now, format!("failed to find the host: {error}")),
    };
    let script = match cloud.host_layout(&reference, &instance).await.map(|layout| backup_script(&layout)) {
        Ok(Some(script)) => script,
        Ok(None) => return draft.failed(&reference.key(), now, "host paths contain a quote".to_string()),
        Err(error) => return draft.failed(&reference.key(), now, format!("failed to read the host layout: {error}")),
    };
    let command = HostCommand { purpose: "backup".to_string(), script, timeout: BACKUP_TIMEOUT };
    match cloud.send_command(&instance, &command).await {
        Ok(command_id) => {
            let running = RunningBackup { host: reference.key(), command_id, instance, started: now };
            pctx.running().insert(reference.uid.clone(), running);
            publish(
                pctx,
                policy,
                EventType::Normal,
                "BackupStarted",
                format!("base backup started on {}", reference.key()),
            )
            .await;
            if let Some(value) = request {
                mark_request_handled(pctx, host, &value).await;
            }
        }
        Err(error) => {
            draft.failed(&reference.key(), now, format!("failed to start the backup: {error}"));
            publish(pctx, policy, EventType::Warning, "BackupFailed", format!("{}: {error}", reference.key())).await;
        }
    }
}

/// Collects finished backups of `hosts`; after a success, applies the policy's retention.
pub async fn finish_running(pctx: &PolicyContext, policy: &BackupPolicy, hosts: &[PostgresHost], draft: &mut Draft) {
    for host in hosts {
        let uid = host.uid().unwrap_or_default();
        let Some(run) = pctx.running().get(&uid).cloned() else { continue };
        let status = match pctx.ctx.cloud.command_status(&run.instance, &run.command_id).await {
            Ok(status) => status,
            Err(error) => {
                tracing::warn!(host = %run.host, %error, "failed to read the backup command's status");
                continue;
            }
        };
        let now = Timestamp::now();
        match status {
            CommandStatus::Pending | CommandStatus::InProgress => continue,
            CommandStatus::Succeeded { stdout } => {
                let name = backup_name(&stdout);
                draft.succeeded(&run.host, name.clone(), run.started, now);
                let note = format!("base backup {} of {} committed", name.as_deref().unwrap_or("?"), run.host);
                publish(pctx, policy, EventType::Normal, "BackupSucceeded", note).await;
                if let Err(error) = super::archive::apply_retention(policy, host).await {
                    draft.retention_failed(&run.host, &error.to_string());
                    publish(pctx, policy, EventType::Warning, "RetentionFailed", format!("{}: {error}", run.host))
                        .await;
                }
            }
            CommandStatus::Failed { exit_code, stderr_tail, .. } => {
                let message = format!("backup-push exited with {exit_code:?}: {}", stderr_tail.trim());
                draft.failed(&run.host, now, message.clone());
                publish(pctx, policy, EventType::Warning, "BackupFailed", format!("{}: {message}", run.host)).await;
            }
        }
        pctx.running().remove(&uid);
    }
}

/// The backup name from `backup-push --json` output (its `name` field). The summary is the last
/// JSON object printed, pretty or on one line; log lines before it are skipped.
pub fn backup_name(stdout: &str) -> Option<String> {
    let object_starts = stdout.match_indices('\n').map(|(at, _)| at + 1).chain([0]);
    let mut starts: Vec<usize> = object_starts.filter(|&at| stdout[at..].starts_with('{')).collect();
    starts.sort_unstable();
    starts.into_iter().rev().find_map(|at| {
        let value: serde_json::Value = serde_json::from_str(stdout[at..].trim()).ok()?;
        value.get("name")?.as_str().map(str::to_string)
    })
}

/// Records in the host's status that the on-demand request `value` was handled.
async fn mark_request_handled(pctx: &PolicyContext, host: &PostgresHost, value: &str) {
    let api: Api<PostgresHost> = Api::namespaced(pctx.ctx.client.clone(), &host.namespace().unwrap_or_default());
    let patch = serde_json::json!({ "status": { "handledBackupRequest": value } });
    if let Err(error) =
        api.patch_status(&host.name_any(), &PatchParams::apply(FIELD_MANAGER), &Patch::Merge(&patch)).await
    {
        tracing::warn!(host = %host.qualified_name(), %error, "failed to record the handled backup request");
    }
}

async fn publish(pctx: &PolicyContext, policy: &BackupPolicy, type_: EventType, reason: &str, note: String) {
    let event =
        Event { type_, reason: reason.to_string(), note: Some(note), action: reason.to_string(), secondary: None };
    if let Err(error) = pctx.ctx.recorder.publish(&event, &policy.object_ref(&())).await {
        tracing::warn!(policy = %policy.name_any(), reason, %error, "failed to publish an event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backup_name_is_read_from_the_json_summary() {
        let stdout = "some log line\n{\"name\":\"base_20260101T030000Z_000000010000000000000002\",\"data_bytes\":1}\n";
        assert_eq!(backup_name(stdout).as_deref(), Some("base_20260101T030000Z_000000010000000000000002"));
        assert_eq!(backup_name("not json"), None);
        let pretty = "log\n{\n  \"name\": \"base_a\",\n  \"data_bytes\": 1\n}\n";
        assert_eq!(backup_name(pretty).as_deref(), Some("base_a"));
    }
}
