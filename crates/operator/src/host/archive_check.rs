//! The archiving health check of a converged host: every `Config::archive_check_interval` (less
//! for a streaming host or an RPO objective, see [`interval`]) the operator runs `pgec2-agent archive-status --json` on the host (through the cloud's command
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

use pgec2_api::BackupPolicySpec;
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
/// The longest a streaming host goes unchecked: its recovery point is seconds, and the status
/// reports it only as freshly as the last check.
const STREAMING_CHECK_INTERVAL: Duration = Duration::from_secs(5);
/// The shortest interval an RPO objective can ask for.
const MIN_CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// How often to check a host archiving under `policy`: the `configured` interval, at most
/// [`STREAMING_CHECK_INTERVAL`] when the policy streams WAL, and at most a third of the policy's
/// RPO objective (never below [`MIN_CHECK_INTERVAL`]). Between checks the reported recovery
/// point grows with the time since the last one (nothing newer is known), so a check interval
/// near the objective would report a healthy host as missing it.
pub fn interval(configured: Duration, policy: &BackupPolicySpec) -> Duration {
    let streaming = policy.wal_archiving.streaming.then_some(STREAMING_CHECK_INTERVAL);
    let objective = policy.objectives.as_ref().and_then(|objectives| objectives.rpo.as_deref());
    let objective = objective
        .and_then(pgec2_api::validation::parse_duration_seconds)
        .map(|seconds| Duration::from_secs(seconds / 3).max(MIN_CHECK_INTERVAL));
    [Some(configured), streaming, objective].into_iter().flatten().min().unwrap_or(configured)
}

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

/// Where a check runs: the host, its instance and layout, and the interval between checks.
pub struct CheckedHost<'a> {
    pub uid: &'a str,
    pub name: &'a str,
    pub instance: &'a HostInstance,
    pub layout: Option<&'a HostLayout>,
    /// From [`interval`].
    pub interval: Duration,
}

/// Advances the check of a converged, archiving host; returns when to look again.
pub async fn check(ctx: &HostContext, host: &CheckedHost<'_>, draft: &mut Draft) -> Duration {
    let CheckedHost { uid, name: host_name, interval, .. } = *host;
    match ctx.archive_checks.get(uid) {
        None => {
            ctx.archive_checks.set(uid, CheckState::Idle { since: Instant::now() });
            interval
        }
        Some(CheckState::Idle { since }) if since.elapsed() < interval => interval.saturating_sub(since.elapsed()),
        Some(CheckState::Idle { .. }) => start(ctx, host).await,
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

async fn start(ctx: &HostContext, host: &CheckedHost<'_>) -> Duration {
    let CheckedHost { uid, name: host_name, instance, layout, interval } = *host;
    let Some(script) = layout.and_then(|layout| agent_script(layout, &archive_status_command())) else {
        tracing::warn!(host = host_name, "no usable host layout for the archive check");
        ctx.archive_checks.set(uid, CheckState::Idle { since: Instant::now() });
        return interval;
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
            interval
        }
    }
}

#[cfg(test)]
mod tests {
    use pgec2_api::RecoveryObjectives;
    use pgec2_api::fixtures::policy;

    use super::*;

    const CONFIGURED: Duration = Duration::from_secs(60);

    fn with(streaming: bool, rpo: Option<&str>) -> BackupPolicySpec {
        let mut spec = policy("p").build().spec;
        spec.wal_archiving.streaming = streaming;
        spec.objectives = rpo.map(|rpo| RecoveryObjectives { rpo: Some(rpo.into()), rto: None });
        spec
    }

    #[test]
    fn a_policy_without_streaming_or_objective_is_checked_at_the_configured_interval() {
        assert_eq!(interval(CONFIGURED, &with(false, None)), CONFIGURED);
        assert_eq!(interval(CONFIGURED, &with(false, Some("10m"))), CONFIGURED, "a loose objective changes nothing");
    }

    #[test]
    fn a_streaming_host_is_checked_every_few_seconds() {
        assert_eq!(interval(CONFIGURED, &with(true, None)), STREAMING_CHECK_INTERVAL);
        assert_eq!(interval(Duration::from_secs(1), &with(true, None)), Duration::from_secs(1), "never less often");
    }

    #[test]
    fn an_rpo_objective_is_checked_three_times_within_it() {
        assert_eq!(interval(CONFIGURED, &with(false, Some("1m"))), Duration::from_secs(20));
        assert_eq!(interval(CONFIGURED, &with(true, Some("10s"))), Duration::from_secs(3));
        assert_eq!(interval(CONFIGURED, &with(true, Some("3s"))), MIN_CHECK_INTERVAL, "bounded below");
        assert_eq!(interval(CONFIGURED, &with(false, Some("never"))), CONFIGURED, "an invalid objective is ignored");
    }
}
