//! Plan (pure): from what is observed (instance, status, wanted configuration) decide the one
//! next step. Each reconcile takes one step and records it in status; the status change or a
//! requeue brings the next reconcile.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use pgec2_api::{CommandPurpose, PostgresHostStatus, condition};

use crate::cloud::{HostInstance, InstanceState};
use crate::kube_layer::conditions;

/// Delay before the first retry of a failed setup; doubled per further failure.
pub const SETUP_RETRY_BASE: Duration = Duration::from_secs(15);
/// Longest delay between setup retries.
pub const SETUP_RETRY_MAX: Duration = Duration::from_secs(10 * 60);

/// What the host controller observed, for [`plan`].
#[derive(Clone, Copy, Debug)]
pub struct Observed<'a> {
    /// The status as last written.
    pub status: &'a PostgresHostStatus,
    /// The host's instance, when the cloud has one.
    pub instance: Option<&'a HostInstance>,
    /// Digest of the setup the host should run (known once the instance exists).
    pub wanted_digest: Option<&'a str>,
    /// Failed setups of the wanted configuration in a row (kept in operator memory).
    pub setup_failures: u32,
    pub now: Timestamp,
}

/// The next step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// No instance: launch it with its data volume.
    Launch,
    /// The instance is starting or its agent is not online yet: look again soon.
    WaitForInstance,
    /// A command runs on the host: read its progress (never send another meanwhile).
    PollCommand { id: String, purpose: CommandPurpose },
    /// The host does not run the wanted configuration: send the setup command.
    SendSetup,
    /// The last setup of the wanted configuration failed: try again after this delay.
    RetrySetup { after: Duration },
    /// The host runs the wanted configuration.
    Converged,
}

/// Decides the next step.
pub fn plan(observed: &Observed<'_>) -> Step {
    let Some(instance) = observed.instance else {
        return Step::Launch;
    };
    if instance.state != InstanceState::Running || !instance.agent_online {
        return Step::WaitForInstance;
    }
    if let Some(command) = observed.status.last_command.as_ref().filter(|command| !command.status.is_finished()) {
        return Step::PollCommand { id: command.id.clone(), purpose: command.purpose };
    }
    let Some(wanted) = observed.wanted_digest else {
        return Step::WaitForInstance;
    };
    if observed.status.setup_digest.as_deref() != Some(wanted) {
        return Step::SendSetup;
    }
    if conditions::is_true(&observed.status.conditions, condition::POSTGRES_READY) {
        return Step::Converged;
    }
    let delay = retry_delay(observed.setup_failures);
    match elapsed_since_last_setup(observed.status, observed.now) {
        Some(elapsed) if elapsed < delay => Step::RetrySetup { after: delay - elapsed },
        _ => Step::SendSetup,
    }
}

/// Delay before retrying after `failures` failed setups in a row.
pub fn retry_delay(failures: u32) -> Duration {
    pgec2_core::backoff::Backoff::new(SETUP_RETRY_BASE, SETUP_RETRY_MAX).ceiling(failures)
}

/// Time since the newest setup command finished, when status records it.
fn elapsed_since_last_setup(status: &PostgresHostStatus, now: Timestamp) -> Option<Duration> {
    let command = status.last_command.as_ref().filter(|command| command.purpose == CommandPurpose::Setup)?;
    let finished = command.finish_time.as_ref()?.0;
    let elapsed = now.duration_since(finished);
    Some(Duration::try_from(elapsed).unwrap_or_default())
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
