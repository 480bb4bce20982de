//! The archiving health check of a converged host: every `Config::archive_check_interval` the
//! operator runs `pgec2-agent archive-status --json` on the host (through the cloud's command
//! runner, like the setup) and turns the answer into `status.archiving` and the
//! `ContinuousArchiving` condition. A host whose archive_command fails becomes Degraded within
//! one interval, and Ready again within one interval after archiving recovers.
//!
//! Checks in flight are kept in memory: an operator that restarts simply starts a new one. The
//! first check runs one interval after the host converged, so a host that just became Ready is
//! not asked twice in a row.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use pgec2_contract::command::{AgentCommand, ArchiveStatus};
use pgec2_core::archiver::{self, ArchiverStatus};

use super::HostContext;
use super::status::Draft;
use crate::agent_command::{agent_script, read_answer};
use crate::cloud::{CommandStatus, HostCommand, HostInstance, HostLayout};

/// How often a running check is polled.
const POLL_INTERVAL: Duration = Duration::from_secs(2);
/// How long the check may run on the host.
const CHECK_TIMEOUT: Duration = Duration::from_secs(60);
/// Purpose of the command, as the cloud records it.
pub const PURPOSE: &str = "inspect";

/// Where the check of one host stands.
#[derive(Clone, Debug)]
enum CheckState {
    /// The command runs on the host.
    Running { command_id: String, instance: HostInstance },
    /// The last check finished (or the host converged) at this instant.
    Idle { since: Instant },
}

/// Checks of every host, by uid.
#[derive(Debug, Default)]
pub struct ArchiveChecks {
    states: Mutex<HashMap<String, CheckState>>,
}

impl ArchiveChecks {
    fn get(&self, uid: &str) -> Option<CheckState> {
        self.states.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(uid).cloned()
    }

    fn set(&self, uid: &str, state: CheckState) {
        self.states.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(uid.to_string(), state);
    }

    /// Forgets a host (deleted, or no longer converged).
    pub fn forget(&self, uid: &str) {
        self.states.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(uid);
    }
}

/// Advances the check of a converged, archiving host; returns when to look again.
pub async fn check(
    ctx: &HostContext,
    uid: &str,
    host_name: &str,
    instance: &HostInstance,
    layout: Option<&HostLayout>,
    draft: &mut Draft,
) -> Duration {
    let interval = ctx.config.archive_check_interval;
    match ctx.archive_checks.get(uid) {
        None => {
            ctx.archive_checks.set(uid, CheckState::Idle { since: Instant::now() });
            interval
        }
        Some(CheckState::Idle { since }) if since.elapsed() < interval => interval.saturating_sub(since.elapsed()),
        Some(CheckState::Idle { .. }) => start(ctx, uid, host_name, instance, layout).await,
        Some(CheckState::Running { command_id, instance }) => {
            match ctx.cloud.command_status(&instance, &command_id).await {
                Ok(CommandStatus::Pending | CommandStatus::InProgress) => POLL_INTERVAL,
                Ok(CommandStatus::Succeeded { stdout }) => {
                    match read_answer::<ArchiverStatus>(&archive_status_command(), &stdout) {
                        Ok(status) => {
                            let health = archiver::assess(&status, &ctx.config.archive_lag);
                            draft.archive_health(&status, &health);
                        }
                        Err(error) => tracing::warn!(host = host_name, %error, "unreadable archive-status answer"),
                    }
                    ctx.archive_checks.set(uid, CheckState::Idle { since: Instant::now() });
                    interval
                }
                Ok(CommandStatus::Failed { exit_code, stderr_tail, .. }) => {
                    tracing::warn!(host = host_name, ?exit_code, stderr = %stderr_tail.trim(), "archive check failed");
                    ctx.archive_checks.set(uid, CheckState::Idle { since: Instant::now() });
                    interval
                }
                Err(error) => {
                    tracing::warn!(host = host_name, %error, "failed to read the archive check");
                    ctx.archive_checks.set(uid, CheckState::Idle { since: Instant::now() });
                    interval
                }
            }
        }
    }
}

/// The agent command of the check.
fn archive_status_command() -> AgentCommand {
    AgentCommand::from(ArchiveStatus)
}

async fn start(
    ctx: &HostContext,
    uid: &str,
    host_name: &str,
    instance: &HostInstance,
    layout: Option<&HostLayout>,
) -> Duration {
    let Some(script) = layout.and_then(|layout| agent_script(layout, &archive_status_command())) else {
        tracing::warn!(host = host_name, "no usable host layout for the archive check");
        ctx.archive_checks.set(uid, CheckState::Idle { since: Instant::now() });
        return ctx.config.archive_check_interval;
    };
    let command = HostCommand { purpose: PURPOSE.to_string(), script, timeout: CHECK_TIMEOUT };
    match ctx.cloud.send_command(instance, &command).await {
        Ok(command_id) => {
            ctx.archive_checks.set(uid, CheckState::Running { command_id, instance: instance.clone() });
            POLL_INTERVAL
        }
        Err(error) => {
            tracing::warn!(host = host_name, %error, "failed to start the archive check");
            ctx.archive_checks.set(uid, CheckState::Idle { since: Instant::now() });
            ctx.config.archive_check_interval
        }
    }
}
