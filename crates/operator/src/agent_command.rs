//! Shell scripts that run the agent on a host through the cloud's command runner: the agent
//! host apply installed, with the configuration it wrote, as the OS user that owns PostgreSQL.
//! The command is one of the typed [`AgentCommand`]s of `pgec2-contract`, and its answer is read
//! with [`read_answer`], so neither the command line nor the output format is restated here.

use pgec2_contract::command::AgentCommand;
use pgec2_contract::output::{self, OutputError};
use pgec2_contract::shell::{quote, words};
use serde::de::DeserializeOwned;

use crate::cloud::HostLayout;

/// The script that runs `pgec2-agent --config <config> <command>` on the host of `layout`.
/// Every path and argument is quoted for `sh`, so arguments may carry user input (an on-demand
/// backup request's value). `None` when one cannot be quoted (it contains a NUL byte).
pub fn agent_script(layout: &HostLayout, command: &AgentCommand) -> Option<String> {
    let agent = pgec2_core::bootstrap::agent_path(&layout.install_dir);
    let agent = quote(&agent.to_string_lossy())?;
    let config = quote(&layout.agent_config_path.to_string_lossy())?;
    let user = quote(&layout.os_user)?;
    let arguments = words(&command.argv())?;
    Some(format!(
        "set -eu\nif [ \"$(id -u)\" = 0 ]; then\n  exec runuser -u {user} -- {agent} --config {config} {arguments}\nfi\nexec {agent} --config {config} {arguments}\n"
    ))
}

/// The answer of `command` from its stdout: the one JSON document the agent prints.
pub fn read_answer<T: DeserializeOwned>(command: &AgentCommand, stdout: &str) -> Result<T, OutputError> {
    output::parse_json(command.name(), stdout)
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use pgec2_contract::annotation::Annotation;
    use pgec2_contract::command::BackupPush;

    use super::*;

    #[test]
    fn arguments_reach_the_agent_unchanged_whatever_they_contain() {
        let dir = tempfile::tempdir().expect("temp dir");
        let install_dir = dir.path().join("it's here");
        let agent = pgec2_core::bootstrap::agent_path(&install_dir);
        std::fs::create_dir_all(agent.parent().expect("parent")).expect("bin dir");
        std::fs::write(&agent, "#!/bin/sh\nfor argument in \"$@\"; do printf '%s\\n' \"$argument\"; done\n")
            .expect("fake agent");
        Command::new("chmod").arg("+x").arg(&agent).status().expect("chmod");
        let instance = crate::cloud::HostInstance {
            instance_id: "i-test".to_string(),
            volume_id: None,
            state: crate::cloud::InstanceState::Running,
            private_ip: None,
            availability_zone: None,
            agent_online: true,
        };
        let layout = HostLayout {
            install_dir,
            agent_config_path: dir.path().join("agent.toml"),
            os_user: nix::unistd::User::from_uid(nix::unistd::getuid())
                .ok()
                .flatten()
                .map_or_else(|| "root".to_string(), |user| user.name),
            ..HostLayout::ec2(&instance)
        };
        let hostile = "x'; touch /tmp/pwned; echo '$(id) `id` \"q\"";
        let annotations = vec![Annotation::new("request", hostile).expect("printable")];
        let command =
            AgentCommand::from(BackupPush { permanent: false, annotations, snapshot: false, incremental: false });
        let script = agent_script(&layout, &command).expect("script");
        let output = Command::new("/bin/sh").arg("-c").arg(&script).output().expect("run script");
        let printed = String::from_utf8_lossy(&output.stdout);
        let config = layout.agent_config_path.display().to_string();
        assert_eq!(
            printed.lines().collect::<Vec<_>>(),
            vec!["--config", &config, "backup-push", "--json", "--annotation", &format!("request={hostile}")]
        );
        let unquotable = HostLayout { os_user: "nul\0byte".into(), ..layout };
        assert!(agent_script(&unquotable, &command).is_none());
    }
}
