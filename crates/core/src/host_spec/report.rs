//! [`HostReport`]: what `pgec2-agent host apply` prints on stdout (JSON), read by the operator.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::Profile;

/// The outcome of one `host apply` run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostReport {
    /// `<namespace>/<name>` from the spec (empty when the spec could not be read).
    pub host: String,
    /// The profile that ran (absent when the spec could not be read).
    pub profile: Option<Profile>,
    /// True when every step ended `changed`, `unchanged` or `skipped`.
    pub succeeded: bool,
    /// The steps in the order they ran; a failed step is the last one.
    pub steps: Vec<StepReport>,
    /// Facts about the running server, when it accepts connections.
    pub postgres: Option<PostgresFacts>,
}

impl HostReport {
    /// The failed step, if any.
    pub fn failed_step(&self) -> Option<&StepReport> {
        self.steps.iter().find(|step| step.outcome == StepOutcome::Failed)
    }

    /// True when no step changed anything.
    pub fn changed_nothing(&self) -> bool {
        self.steps.iter().all(|step| matches!(step.outcome, StepOutcome::Unchanged | StepOutcome::Skipped))
    }
}

/// One step of `host apply`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepReport {
    /// Step name: `spec`, `data-device`, `filesystem`, `fstab`, `mount`, `packages`, `os-user`,
    /// `directories`, `agent-config`, `data-directory`, `tls-certificate`, `postgresql-conf`,
    /// `pg-hba`, `service`, `promote`, `facts`.
    pub step: String,
    pub outcome: StepOutcome,
    /// What was done or found; for a failed step, what failed and the command's stderr tail.
    pub detail: String,
    /// How long the step took, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub milliseconds: Option<u64>,
}

/// What a step did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepOutcome {
    /// The host was changed to match the spec.
    Changed,
    /// The host already matched the spec.
    Unchanged,
    /// The step does not apply to this profile or spec.
    Skipped,
    /// The step failed; later steps did not run.
    Failed,
}

/// Facts about the running server for the PostgresHost's status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PostgresFacts {
    /// `server_version`, e.g. `15.8 (Debian 15.8-0+deb12u1)`.
    pub version: String,
    /// `server_version_num`, e.g. 150008.
    pub version_num: u32,
    /// The cluster's system identifier (a decimal string: it does not fit a JSON number).
    pub system_identifier: String,
    /// The timeline the server is on.
    pub timeline: u32,
    pub port: u16,
    pub data_directory: PathBuf,
    pub socket_directory: PathBuf,
    /// True while the server is in archive recovery (a standby, or a restore still replaying).
    pub in_recovery: bool,
}
