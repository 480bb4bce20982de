//! Commands on a host through SSM Run Command (`AWS-RunShellScript`), and whether the host's SSM
//! agent is online to receive them.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_ssm::operation::get_command_invocation::GetCommandInvocationOutput;
use aws_sdk_ssm::types::{
    CommandInvocationStatus, CommandStatus as SsmCommandStatus, InstanceInformationStringFilter, PingStatus,
};
use pgec2_contract::output::tail;

use super::AwsCloud;
use super::error::classify;
use super::secrets;
use crate::cloud::{CloudError, CommandStatus, HostCommand, HostInstance};

/// The SSM document every command runs with.
pub const DOCUMENT: &str = "AWS-RunShellScript";

/// How long SSM may take to deliver a command to the agent before it gives up on it.
const DELIVERY_TIMEOUT_SECONDS: i32 = 600;

/// SSM's limit on a command's comment.
const MAX_COMMENT: usize = 100;

/// Whether a host's SSM agent can receive commands.
#[async_trait]
pub trait AgentProbe: Send + Sync {
    /// True when the agent on `instance_id` is online. Any failure to tell is "not yet".
    async fn is_online(&self, instance_id: &str) -> bool;
}

/// The production probe: DescribeInstanceInformation reports the agent `Online`.
///
/// moto answers DescribeInstanceInformation with HTTP 500, so against moto this probe always
/// says "not online"; tests that need an online host plug in their own [`AgentProbe`].
#[derive(Clone, Debug)]
pub struct SsmAgentProbe {
    ssm: aws_sdk_ssm::Client,
}

impl SsmAgentProbe {
    pub fn new(ssm: aws_sdk_ssm::Client) -> Self {
        Self { ssm }
    }
}

#[async_trait]
impl AgentProbe for SsmAgentProbe {
    async fn is_online(&self, instance_id: &str) -> bool {
        let filter = match InstanceInformationStringFilter::builder().key("InstanceIds").values(instance_id).build() {
            Ok(filter) => filter,
            Err(error) => {
                tracing::warn!(%error, "failed to build the instance information filter");
                return false;
            }
        };
        match self.ssm.describe_instance_information().filters(filter).send().await {
            Ok(output) => output.instance_information_list().iter().any(|information| {
                information.instance_id() == Some(instance_id) && information.ping_status() == Some(&PingStatus::Online)
            }),
            Err(error) => {
                let error = classify("ssm", "describe instance information", &error);
                tracing::debug!(%error, instance_id, "cannot tell whether the ssm agent is online; taking it as not yet");
                false
            }
        }
    }
}

/// Commands this process sent, for telling "not visible yet" from "never existed".
#[derive(Debug, Default)]
pub(crate) struct SentCommands(Mutex<HashMap<String, Instant>>);

impl SentCommands {
    fn remember(&self, command_id: &str) {
        let mut sent = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        sent.retain(|_, at| at.elapsed() < Duration::from_secs(24 * 3600));
        sent.insert(command_id.to_string(), Instant::now());
    }

    fn sent_within(&self, command_id: &str, within: Duration) -> bool {
        let sent = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        sent.get(command_id).is_some_and(|at| at.elapsed() < within)
    }
}

impl AwsCloud {
    /// Sends the command's script to the host. The script must not carry secrets (parameters of
    /// SSM commands are visible to anyone who may list them); the host reads its secrets itself.
    pub(crate) async fn send(&self, host: &HostInstance, command: &HostCommand) -> Result<String, CloudError> {
        let action = "send command";
        if let Some(reason) = secrets::find_secret(&command.script) {
            return Err(CloudError::Permanent {
                action,
                message: format!(
                    "refused to send the {} command to {}: its script contains {reason}; secrets must be read on the \
                     host, from SSM Parameter Store",
                    command.purpose, host.instance_id
                ),
            });
        }
        let execution_timeout = command.timeout.as_secs().clamp(1, 172_800).to_string();
        let comment = command_comment(&command.purpose);
        let output = self
            .retry(|| {
                self.ssm
                    .send_command()
                    .instance_ids(&host.instance_id)
                    .document_name(DOCUMENT)
                    .parameters("commands", vec![command.script.clone()])
                    .parameters("executionTimeout", vec![execution_timeout.clone()])
                    .comment(&comment)
                    .timeout_seconds(DELIVERY_TIMEOUT_SECONDS)
                    .send()
            })
            .await
            .map_err(|error| classify("ssm", action, &error))?;
        let Some(command_id) = output.command().and_then(|sent| sent.command_id()) else {
            return Err(CloudError::Transient { action, message: "SendCommand returned no command id".into() });
        };
        self.commands.remember(command_id);
        tracing::info!(instance_id = %host.instance_id, command_id, purpose = %command.purpose, "command sent");
        Ok(command_id.to_string())
    }

    /// The progress of a command on the host.
    pub(crate) async fn invocation(&self, host: &HostInstance, command_id: &str) -> Result<CommandStatus, CloudError> {
        let instance_id = host.instance_id.as_str();
        match self
            .retry(|| self.ssm.get_command_invocation().command_id(command_id).instance_id(instance_id).send())
            .await
        {
            Ok(output) => Ok(status_of(&output)),
            Err(error) if error.as_service_error().is_some_and(|error| error.is_invocation_does_not_exist()) => {
                if self.commands.sent_within(command_id, self.options.invocation_visibility) {
                    Ok(CommandStatus::Pending)
                } else {
                    Ok(CommandStatus::Failed {
                        exit_code: None,
                        stdout: String::new(),
                        stderr_tail: format!(
                            "ssm has no invocation of command {command_id} on {instance_id}: it expired or was never \
                             delivered; send it again"
                        ),
                    })
                }
            }
            Err(error) => Err(classify("ssm", "read command status", &error)),
        }
    }
}

impl AwsCloud {
    /// Commands of `purpose` (by their `pgec2 <purpose>` comment) pending or in progress on the
    /// host, from the newest page of ListCommands for the instance, oldest first.
    pub(crate) async fn running(&self, host: &HostInstance, purpose: &str) -> Result<Vec<String>, CloudError> {
        let comment = command_comment(purpose);
        let output = self
            .retry(|| self.ssm.list_commands().instance_id(&host.instance_id).max_results(50).send())
            .await
            .map_err(|error| classify("ssm", "list commands", &error))?;
        let mut running: Vec<(Option<f64>, String)> = output
            .commands()
            .iter()
            .filter(|command| command.comment() == Some(comment.as_str()))
            .filter(|command| {
                matches!(command.status(), Some(SsmCommandStatus::Pending | SsmCommandStatus::InProgress))
            })
            .filter_map(|command| {
                let requested = command.requested_date_time().map(|time| time.as_secs_f64());
                command.command_id().map(|id| (requested, id.to_string()))
            })
            .collect();
        running.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
        Ok(running.into_iter().map(|(_, id)| id).collect())
    }
}

/// The comment a command of `purpose` is sent with (SSM's limit applied).
fn command_comment(purpose: &str) -> String {
    format!("pgec2 {purpose}").chars().take(MAX_COMMENT).collect()
}

/// Our view of an invocation.
pub(crate) fn status_of(output: &GetCommandInvocationOutput) -> CommandStatus {
    let stdout = output.standard_output_content().unwrap_or_default().to_string();
    match output.status() {
        Some(CommandInvocationStatus::Success) => CommandStatus::Succeeded { stdout },
        Some(
            status @ (CommandInvocationStatus::Failed
            | CommandInvocationStatus::TimedOut
            | CommandInvocationStatus::Cancelled),
        ) => {
            let mut stderr_tail = tail(output.standard_error_content().unwrap_or_default());
            if stderr_tail.is_empty() {
                let details = output.status_details().unwrap_or(status.as_str());
                stderr_tail = format!("no output on stderr; ssm reports {details}");
            }
            let exit_code = Some(output.response_code()).filter(|code| *code >= 0);
            CommandStatus::Failed { exit_code, stdout, stderr_tail }
        }
        _ => CommandStatus::InProgress,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invocation(status: &str, stderr: &str, code: i32) -> GetCommandInvocationOutput {
        GetCommandInvocationOutput::builder()
            .status(CommandInvocationStatus::from(status))
            .status_details(status)
            .standard_output_content("{\"steps\":[]}")
            .standard_error_content(stderr)
            .response_code(code)
            .build()
    }

    #[test]
    fn running_states_are_in_progress_and_success_carries_stdout() {
        for status in ["Pending", "InProgress", "Delayed", "Cancelling"] {
            assert_eq!(status_of(&invocation(status, "", -1)), CommandStatus::InProgress, "{status}");
        }
        assert_eq!(
            status_of(&invocation("Success", "", 0)),
            CommandStatus::Succeeded { stdout: "{\"steps\":[]}".into() }
        );
    }

    #[test]
    fn a_failure_keeps_the_exit_code_and_the_end_of_stderr() {
        let stderr: String = (1..=30).map(|line| format!("line {line}\n")).collect();
        match status_of(&invocation("Failed", &stderr, 3)) {
            CommandStatus::Failed { exit_code, stderr_tail, .. } => {
                assert_eq!(exit_code, Some(3));
                assert!(stderr_tail.starts_with("line 11\n") && stderr_tail.ends_with("line 30"), "{stderr_tail}");
            }
            other => panic!("expected Failed, got {other:?}"),
        }
        match status_of(&invocation("TimedOut", "", -1)) {
            CommandStatus::Failed { exit_code, stderr_tail, .. } => {
                assert_eq!(exit_code, None);
                assert!(stderr_tail.contains("TimedOut"), "{stderr_tail}");
            }
            other => panic!("expected Failed, got {other:?}"),
        }
    }
}
