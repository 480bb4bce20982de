//! Shell scripts that run the agent on a host through the cloud's command runner: the agent
//! host apply installed, with the configuration it wrote, as the OS user that owns PostgreSQL.

use crate::cloud::HostLayout;

/// The script that runs `pgec2-agent --config <config> <arguments>` on the host of `layout`.
/// `arguments` must be a fixed string of the operator's own (never user input). `None` when a
/// host path contains a quote (the script could not quote it safely).
pub fn agent_script(layout: &HostLayout, arguments: &str) -> Option<String> {
    let agent = pgec2_core::bootstrap::agent_path(&layout.install_dir);
    let quoted = |text: &str| (!text.contains('\'')).then(|| format!("'{text}'"));
    let agent = quoted(&agent.to_string_lossy())?;
    let config = quoted(&layout.agent_config_path.to_string_lossy())?;
    let user = quoted(&layout.os_user)?;
    Some(format!(
        "set -eu\nif [ \"$(id -u)\" = 0 ]; then\n  exec runuser -u {user} -- {agent} --config {config} {arguments}\nfi\nexec {agent} --config {config} {arguments}\n"
    ))
}
