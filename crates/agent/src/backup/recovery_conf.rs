//! The settings a restore writes, so that `pg_ctl start -D DEST` alone recovers:
//! `restore_command` calling this agent, the recovery target and action,
//! `recovery_target_timeline`, the archive settings `--archive-mode` asks for, and
//! `recovery.signal` (or `standby.signal`).
//!
//! Settings go to the end of `postgresql.auto.conf`, as `pg_basebackup -R` does. Recovery
//! settings already in that file (from an earlier restore of the cluster this backup was taken
//! from) are removed first, so an old target can never apply to this restore; so are archive
//! settings, unless `--archive-mode preserve` keeps them.
//!
//! `restore_command` and `archive_command` name the agent binary and a configuration file only
//! (see [`super::cluster_config`]): no credentials, no environment. The agent reads credentials
//! when it runs, so they never expire inside the data directory nor travel in its backups.

use std::path::Path;

use chrono::{DateTime, Utc};
use pgec2_contract::shell;
use pgec2_core::catalog::RecoveryTarget;
use pgec2_core::recovery_window::TimelineChoice;

use super::cluster_config::ArchiveSetting;

/// Recovery parameters this module owns in `postgresql.auto.conf`.
const RECOVERY: &[&str] = &[
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

/// Archive parameters this module writes unless `--archive-mode preserve`.
const ARCHIVE: &[&str] = &["archive_mode", "archive_command", "archive_library"];

/// The first major version with `archive_library`.
const ARCHIVE_LIBRARY_SINCE: u32 = 15;

/// What to write.
#[derive(Clone, Debug)]
pub struct RecoverySettings {
    pub backup: String,
    /// The agent binary PostgreSQL should run.
    pub agent: String,
    /// The configuration file restore_command names (see [`super::cluster_config`]).
    pub restore_config: String,
    pub archive: ArchiveSetting,
    /// The backup's PostgreSQL major version (13, 14, ...), when known.
    pub pg_version: Option<u32>,
    pub target: RecoveryTarget,
    pub action: Option<String>,
    pub timeline: TimelineChoice,
    pub standby: bool,
    pub written_at: DateTime<Utc>,
}

impl RecoverySettings {
    /// The shell command PostgreSQL runs to fetch a WAL file.
    pub fn restore_command(&self) -> String {
        self.agent_command(&self.restore_config, "wal-fetch %f %p")
    }

    fn agent_command(&self, config: &str, subcommand: &str) -> String {
        format!("{} --config {} {subcommand}", shell_quote(&self.agent), shell_quote(config))
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
        parameters.extend(self.archive_parameters());
        parameters
    }

    /// archive_mode and archive_command as `--archive-mode` asks (nothing for `preserve`).
    fn archive_parameters(&self) -> Vec<(&'static str, String)> {
        match &self.archive {
            ArchiveSetting::Preserve => Vec::new(),
            ArchiveSetting::Off => vec![("archive_mode", "off".to_string())],
            ArchiveSetting::Archive(config) => {
                let mut parameters = vec![
                    ("archive_mode", "on".to_string()),
                    ("archive_command", self.agent_command(&config.command_path(), "wal-push %p")),
                ];
                if self.pg_version.is_some_and(|version| version >= ARCHIVE_LIBRARY_SINCE) {
                    parameters.push(("archive_library", String::new()));
                }
                parameters
            }
        }
    }

    /// `existing` (the restored postgresql.auto.conf) without the parameters we write, plus ours.
    pub fn render_auto_conf(&self, existing: &str) -> String {
        let preserve = self.archive == ArchiveSetting::Preserve;
        let mut out: String = existing
            .lines()
            .filter(|line| !is_recovery(line) && (preserve || !is_archive(line)))
            .map(|line| format!("{line}\n"))
            .collect();
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

fn is_recovery(line: &str) -> bool {
    parameter_in(line, RECOVERY).is_some()
}

fn is_archive(line: &str) -> bool {
    parameter_in(line, ARCHIVE).is_some()
}

/// The parameter of `names` a `postgresql.auto.conf` line sets, if any.
fn parameter_in(line: &str, names: &[&'static str]) -> Option<&'static str> {
    let name = line.trim_start().split(['=', ' ', '\t']).next().unwrap_or_default();
    names.iter().copied().find(|known| known.eq_ignore_ascii_case(name))
}

/// The recovery and archive parameters a restore writes that `auto_conf` (the text of
/// `postgresql.auto.conf`) still sets, in file order, each once.
pub fn recovery_parameters_in(auto_conf: &str) -> Vec<&'static str> {
    let mut found: Vec<&'static str> = Vec::new();
    let written = |line: &str| parameter_in(line, RECOVERY).or_else(|| parameter_in(line, ARCHIVE));
    for name in auto_conf.lines().filter_map(written) {
        if !found.contains(&name) {
            found.push(name);
        }
    }
    found
}

/// `text` as one shell word. Paths cannot hold a NUL byte, the one thing no word can carry; one
/// that did would be dropped rather than end the command early.
fn shell_quote(text: &str) -> String {
    shell::word(text).unwrap_or_else(|| text.replace('\0', ""))
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
    use crate::backup::cluster_config::ConfigFile;

    #[test]
    fn the_recovery_parameters_left_in_auto_conf_are_found_once_each() {
        let text = "# Do not edit\nshared_buffers = '1GB'\nrestore_command = 'x'\n  Recovery_Target_Time = '2026'\n# restore_command = 'old'\nrestore_command = 'y'\narchive_mode = 'off'\n";
        assert_eq!(recovery_parameters_in(text), vec!["restore_command", "recovery_target_time", "archive_mode"]);
        assert!(recovery_parameters_in("shared_buffers = '1GB'\n").is_empty());
    }

    fn settings(target: RecoveryTarget) -> RecoverySettings {
        RecoverySettings {
            backup: "base_1".into(),
            agent: "/opt/pgec2/pgec2-agent".into(),
            restore_config: "/etc/pgec2/agent.toml".into(),
            archive: ArchiveSetting::Off,
            pg_version: Some(15),
            target,
            action: Some("promote".into()),
            timeline: TimelineChoice { timeline: 2, latest_works: true },
            standby: false,
            written_at: Utc.timestamp_opt(0, 0).single().expect("time"),
        }
    }

    #[test]
    fn restore_command_names_only_the_agent_and_its_configuration() {
        let command = settings(RecoveryTarget::EndOfArchive).restore_command();
        assert_eq!(command, "/opt/pgec2/pgec2-agent --config /etc/pgec2/agent.toml wal-fetch %f %p");
    }

    #[test]
    fn an_earlier_restore_s_target_and_archive_settings_are_replaced() {
        let old = "# Do not edit this file manually!\nmax_connections = '50'\nrecovery_target_time = '2020-01-01'\nrestore_command = 'x'\narchive_command = 'old'\n";
        let lsn = "0/3000060".parse().expect("lsn");
        let rendered = settings(RecoveryTarget::Lsn(lsn)).render_auto_conf(old);
        assert!(rendered.contains("max_connections = '50'\n"));
        assert!(!rendered.contains("2020-01-01") && !rendered.contains("'old'"), "{rendered}");
        assert!(rendered.contains("recovery_target_lsn = '0/3000060'\n"));
        assert!(rendered.contains("recovery_target_action = 'promote'\n"));
        assert!(rendered.contains("recovery_target_timeline = 'latest'\n"));
        assert!(rendered.ends_with("archive_mode = 'off'\n"), "{rendered}");
    }

    #[test]
    fn preserve_keeps_the_restored_archive_settings_and_a_new_archive_gets_its_own_command() {
        let old = "archive_mode = 'on'\narchive_command = 'pgec2-agent wal-push %p'\n";
        let mut settings = settings(RecoveryTarget::EndOfArchive);
        settings.archive = ArchiveSetting::Preserve;
        let rendered = settings.render_auto_conf(old);
        assert!(rendered.starts_with(old) && rendered.matches("archive_").count() == 2, "{rendered}");
        settings.archive = ArchiveSetting::Archive(ConfigFile::Written { name: "copy's.toml", text: String::new() });
        let rendered = settings.render_auto_conf(old);
        assert!(!rendered.contains("'pgec2-agent wal-push"), "{rendered}");
        assert!(rendered.contains("archive_mode = 'on'\n"));
        let expected = r"archive_command = '/opt/pgec2/pgec2-agent --config ''copy''\''''s.toml'' wal-push %p'";
        assert!(rendered.contains(expected), "{rendered}");
        assert!(rendered.contains("archive_library = ''\n"));
        settings.pg_version = Some(14);
        assert!(!settings.render_auto_conf("").contains("archive_library"));
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
