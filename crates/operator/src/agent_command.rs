//! Shell scripts that run the agent on a host through the cloud's command runner: the agent
//! host apply installed, with the configuration it wrote, as the OS user that owns PostgreSQL.

use crate::cloud::HostLayout;

/// The script that runs `pgec2-agent --config <config> <arguments>` on the host of `layout`.
/// Every path and argument is quoted for `sh`, so arguments may carry user input (an on-demand
/// backup request's value). `None` when one cannot be quoted (it contains a NUL byte).
pub fn agent_script(layout: &HostLayout, arguments: &[&str]) -> Option<String> {
    let agent = pgec2_core::bootstrap::agent_path(&layout.install_dir);
    let agent = quote(&agent.to_string_lossy())?;
    let config = quote(&layout.agent_config_path.to_string_lossy())?;
    let user = quote(&layout.os_user)?;
    let arguments = arguments.iter().map(|argument| quote(argument)).collect::<Option<Vec<_>>>()?.join(" ");
    Some(format!(
        "set -eu\nif [ \"$(id -u)\" = 0 ]; then\n  exec runuser -u {user} -- {agent} --config {config} {arguments}\nfi\nexec {agent} --config {config} {arguments}\n"
    ))
}

fn quote(text: &str) -> Option<String> {
    shlex::try_quote(text).ok().map(|quoted| quoted.into_owned())
}

#[cfg(test)]
mod tests {
    use std::process::Command;

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
        let script = agent_script(&layout, &["backup-push", "--annotation", hostile]).expect("script");
        let output = Command::new("/bin/sh").arg("-c").arg(&script).output().expect("run script");
        let printed = String::from_utf8_lossy(&output.stdout);
        let config = layout.agent_config_path.display().to_string();
        assert_eq!(
            printed.lines().collect::<Vec<_>>(),
            vec!["--config", &config, "backup-push", "--annotation", hostile]
        );
        assert!(agent_script(&layout, &["nul\0byte"]).is_none());
    }
}
