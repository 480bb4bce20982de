//! The recovery settings a restore writes, so that `pg_ctl start -D DEST` alone recovers:
//! `restore_command` calling this agent with the same storage, the recovery target and action,
//! `recovery_target_timeline`, and `recovery.signal` (or `standby.signal`).
//!
//! Settings go to the end of `postgresql.auto.conf`, as `pg_basebackup -R` does. Recovery
//! settings already in that file (from an earlier restore of the cluster this backup was taken
//! from) are removed first, so an old target can never apply to this restore.
//!
//! `restore_command` repeats the `PGEC2_*` and `AWS_*` environment variables set when
//! backup-fetch ran (PostgreSQL starts it with its own environment); the file is readable only
//! by the cluster's owner, like `primary_conninfo` passwords that `pg_basebackup -R` writes.

use std::path::Path;

use chrono::{DateTime, Utc};
use pgec2_core::catalog::RecoveryTarget;
use pgec2_core::recovery_window::TimelineChoice;

/// Parameters this module owns in `postgresql.auto.conf`.
const MANAGED: &[&str] = &[
    "restore_command",
    "recovery_target",
    "recovery_target_name",
    "recovery_target_time",
    "recovery_target_xid",
    "recovery_target_lsn",
    "recovery_target_inclusive",
    "recovery_target_timeline",
    "recovery_target_action",
];

/// What to write.
#[derive(Clone, Debug)]
pub struct RecoverySettings {
    pub backup: String,
    /// The agent binary PostgreSQL should run.
    pub agent: String,
    /// The configuration file the agent was given, if any.
    pub config_file: Option<String>,
    /// Environment to repeat in restore_command.
    pub environment: Vec<(String, String)>,
    pub target: RecoveryTarget,
    pub action: Option<String>,
    pub timeline: TimelineChoice,
    pub standby: bool,
    pub written_at: DateTime<Utc>,
}

impl RecoverySettings {
    /// The `PGEC2_*` and `AWS_*` variables of this process, sorted.
    pub fn inherited_environment() -> Vec<(String, String)> {
        let mut environment: Vec<(String, String)> =
            std::env::vars().filter(|(name, _)| name.starts_with("PGEC2_") || name.starts_with("AWS_")).collect();
        environment.sort();
        environment
    }

    /// The shell command PostgreSQL runs to fetch a WAL file.
    pub fn restore_command(&self) -> String {
        let mut command = String::new();
        if !self.environment.is_empty() {
            command.push_str("env ");
            for (name, value) in &self.environment {
                command.push_str(&format!("{name}={} ", shell_quote(value)));
            }
        }
        command.push_str(&shell_quote(&self.agent));
        if let Some(config) = &self.config_file {
            command.push_str(&format!(" --config {}", shell_quote(config)));
        }
        command.push_str(" wal-fetch %f %p");
        command
    }

    /// The `name = 'value'` lines to append.
    pub fn parameters(&self) -> Vec<(&'static str, String)> {
        let mut parameters = vec![("restore_command", self.restore_command())];
        match &self.target {
            RecoveryTarget::EndOfArchive => {}
            RecoveryTarget::Immediate => parameters.push(("recovery_target", "immediate".to_string())),
            RecoveryTarget::Time(time) => parameters.push(("recovery_target_time", time.to_rfc3339())),
            RecoveryTarget::Lsn(lsn) => parameters.push(("recovery_target_lsn", lsn.to_string())),
            RecoveryTarget::Xid(xid) => parameters.push(("recovery_target_xid", xid.to_string())),
            RecoveryTarget::Name(name) => parameters.push(("recovery_target_name", name.clone())),
        }
        if let Some(action) = &self.action {
            parameters.push(("recovery_target_action", action.clone()));
        }
        let timeline =
            if self.timeline.latest_works { "latest".to_string() } else { self.timeline.timeline.to_string() };
        parameters.push(("recovery_target_timeline", timeline));
        parameters
    }

    /// `existing` (the restored postgresql.auto.conf) without managed parameters, plus ours.
    pub fn render_auto_conf(&self, existing: &str) -> String {
        let mut out: String =
            existing.lines().filter(|line| !is_managed(line)).map(|line| format!("{line}\n")).collect();
        out.push_str(&format!(
            "# Recovery settings written by pgec2-agent backup-fetch {} at {}\n",
            self.backup,
            self.written_at.to_rfc3339()
        ));
        for (name, value) in self.parameters() {
            out.push_str(&format!("{name} = '{}'\n", value.replace('\'', "''")));
        }
        out
    }

    /// `recovery.signal` or `standby.signal`.
    pub fn signal_file(&self) -> &'static str {
        if self.standby { "standby.signal" } else { "recovery.signal" }
    }
}

/// True for a `postgresql.auto.conf` line setting a parameter this module manages.
fn is_managed(line: &str) -> bool {
    managed_name(line).is_some()
}

/// The managed parameter a `postgresql.auto.conf` line sets, if any.
fn managed_name(line: &str) -> Option<&'static str> {
    let name = line.trim_start().split(['=', ' ', '\t']).next().unwrap_or_default();
    MANAGED.iter().copied().find(|managed| managed.eq_ignore_ascii_case(name))
}

/// The recovery parameters a restore wrote that `auto_conf` (the text of
/// `postgresql.auto.conf`) still sets, in file order, each once.
pub fn recovery_parameters_in(auto_conf: &str) -> Vec<&'static str> {
    let mut found: Vec<&'static str> = Vec::new();
    for name in auto_conf.lines().filter_map(managed_name) {
        if !found.contains(&name) {
            found.push(name);
        }
    }
    found
}

/// Quotes a word for /bin/sh.
fn shell_quote(word: &str) -> String {
    if !word.is_empty() && word.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._-:=,+@".contains(&b)) {
        return word.to_string();
    }
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// Reads the restored `postgresql.auto.conf` (absent → empty).
pub fn read_auto_conf(data_dir: &Path) -> std::io::Result<String> {
    match std::fs::read_to_string(data_dir.join("postgresql.auto.conf")) {
        Ok(text) => Ok(text),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn the_recovery_parameters_left_in_auto_conf_are_found_once_each() {
        let text = "# Do not edit\nshared_buffers = '1GB'\nrestore_command = 'x'\n  Recovery_Target_Time = '2026'\n# restore_command = 'old'\nrestore_command = 'y'\n";
        assert_eq!(recovery_parameters_in(text), vec!["restore_command", "recovery_target_time"]);
        assert!(recovery_parameters_in("shared_buffers = '1GB'\n").is_empty());
    }

    fn settings(target: RecoveryTarget) -> RecoverySettings {
        RecoverySettings {
            backup: "base_1".into(),
            agent: "/opt/pgec2/pgec2-agent".into(),
            config_file: Some("/etc/pgec2/agent.toml".into()),
            environment: vec![("AWS_SECRET_ACCESS_KEY".into(), "it's secret".into())],
            target,
            action: Some("promote".into()),
            timeline: TimelineChoice { timeline: 2, latest_works: true },
            standby: false,
            written_at: Utc.timestamp_opt(0, 0).single().expect("time"),
        }
    }

    #[test]
    fn restore_command_calls_this_agent_with_the_same_storage() {
        let command = settings(RecoveryTarget::EndOfArchive).restore_command();
        assert_eq!(
            command,
            r"env AWS_SECRET_ACCESS_KEY='it'\''s secret' /opt/pgec2/pgec2-agent --config /etc/pgec2/agent.toml wal-fetch %f %p"
        );
    }

    #[test]
    fn an_earlier_restore_s_target_is_replaced() {
        let old = "# Do not edit this file manually!\nmax_connections = '50'\nrecovery_target_time = '2020-01-01'\nrestore_command = 'x'\n";
        let lsn = "0/3000060".parse().expect("lsn");
        let rendered = settings(RecoveryTarget::Lsn(lsn)).render_auto_conf(old);
        assert!(rendered.contains("max_connections = '50'\n"));
        assert!(!rendered.contains("2020-01-01"));
        assert!(rendered.contains("recovery_target_lsn = '0/3000060'\n"));
        assert!(rendered.contains("recovery_target_action = 'promote'\n"));
        assert!(rendered.contains("recovery_target_timeline = 'latest'\n"));
        assert!(rendered.contains(r"restore_command = 'env AWS_SECRET_ACCESS_KEY=''it''\''''s secret''"));
    }

    #[test]
    fn a_timeline_latest_cannot_reach_is_named() {
        let mut settings = settings(RecoveryTarget::Immediate);
        settings.timeline = TimelineChoice { timeline: 1, latest_works: false };
        let parameters = settings.parameters();
        assert!(parameters.contains(&("recovery_target", "immediate".to_string())));
        assert!(parameters.contains(&("recovery_target_timeline", "1".to_string())));
    }
}
