//! PostgreSQL's configuration as pgec2 writes it: `conf.d/01-pgec2.conf`, included from
//! postgresql.conf by one `include_dir = 'conf.d'` line. Pure functions, no I/O.
//!
//! The file has three sections, later ones winning: the automatic tuning, the spec's
//! `parameters`, and the settings pgec2 manages (archiving, connections, TLS), which the spec
//! cannot override (`HostSpec::validate` refuses them). ALTER SYSTEM (postgresql.auto.conf)
//! is read after this file and still wins: pgec2 leaves it alone.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use pgec2_core::host_spec::{HostSpec, Resources};

use super::tuning;

/// The directory, relative to the data directory, that holds pgec2's configuration.
pub const CONF_DIR: &str = "conf.d";
/// pgec2's configuration file inside [`CONF_DIR`].
pub const CONF_FILE: &str = "01-pgec2.conf";
/// The line postgresql.conf needs once.
pub const INCLUDE_LINE: &str = "include_dir = 'conf.d'";

/// Which agent configuration the archive and restore commands use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchiveCommands {
    /// Agent configuration for this host's own archive (archive_command), when archiving.
    pub own_config: Option<PathBuf>,
    /// Agent configuration restore_command reads from: the recovery source while the data
    /// directory is still recovering from it, else the own archive.
    pub restore_config: Option<PathBuf>,
}

/// The TLS files when ssl is on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub certificate: PathBuf,
    pub key: PathBuf,
}

/// Everything `01-pgec2.conf` depends on besides the spec.
#[derive(Clone, Debug)]
pub struct ConfInputs<'a> {
    pub spec: &'a HostSpec,
    pub resources: Resources,
    pub archive: &'a ArchiveCommands,
    pub tls: Option<&'a TlsFiles>,
}

/// Renders `conf.d/01-pgec2.conf`.
pub fn render_pgec2_conf(inputs: &ConfInputs<'_>) -> String {
    let spec = inputs.spec;
    let mut out = String::new();
    let _ = writeln!(out, "# Managed by pgec2-agent host apply for {}: edits are overwritten.", spec.host);
    out.push_str("# Change settings through the PostgresHost's parameters instead.\n");
    let memory_gib = inputs.resources.memory_bytes as f64 / (1024.0 * 1024.0 * 1024.0);
    let _ = writeln!(
        out,
        "\n# Tuning for {memory_gib:.1} GiB of memory and {} CPUs (PGTune, web application, SSD)",
        inputs.resources.cpus
    );
    for (name, value) in tuning::tune(inputs.resources, &spec.parameters) {
        if !spec.parameters.contains_key(name) {
            setting(&mut out, name, &value);
        }
    }
    if !spec.parameters.is_empty() {
        out.push_str("\n# Parameters from the spec\n");
        for (name, value) in &spec.parameters {
            if name != "wal_level" {
                setting(&mut out, name, value);
            }
        }
    }
    out.push_str("\n# Archiving (managed by pgec2)\n");
    let logical = spec.parameters.get("wal_level").is_some_and(|level| level.eq_ignore_ascii_case("logical"));
    let wal_level = if logical { "logical" } else { "replica" };
    setting(&mut out, "wal_level", wal_level);
    render_archiving(&mut out, spec, inputs.archive, &spec.agent_binary);
    out.push_str("\n# Connections (managed by pgec2)\n");
    setting(&mut out, "listen_addresses", &spec.listen_addresses);
    setting(&mut out, "port", &spec.port.to_string());
    setting(&mut out, "unix_socket_directories", &spec.socket_directory().display().to_string());
    setting(&mut out, "password_encryption", "scram-sha-256");
    match inputs.tls {
        Some(tls) => {
            setting(&mut out, "ssl", "on");
            setting(&mut out, "ssl_cert_file", &tls.certificate.display().to_string());
            setting(&mut out, "ssl_key_file", &tls.key.display().to_string());
        }
        None => setting(&mut out, "ssl", "off"),
    }
    out
}

fn render_archiving(out: &mut String, spec: &HostSpec, commands: &ArchiveCommands, agent: &Path) {
    match (&spec.archive, &commands.own_config) {
        (Some(archive), Some(own_config)) => {
            setting(out, "archive_mode", "on");
            setting(out, "archive_command", &agent_command(agent, own_config, "wal-push %p"));
            setting(out, "archive_timeout", &archive.archive_timeout_seconds.to_string());
        }
        _ => setting(out, "archive_mode", "off"),
    }
    if let Some(restore_config) = &commands.restore_config {
        setting(out, "restore_command", &agent_command(agent, restore_config, "wal-fetch %f %p"));
    }
}

/// `<agent> --config <file> <subcommand>`, each path quoted for the shell when it needs it.
pub fn agent_command(agent: &Path, config: &Path, subcommand: &str) -> String {
    format!("{} --config {} {subcommand}", shell_word(&agent.to_string_lossy()), shell_word(&config.to_string_lossy()))
}

/// A word for `sh -c` (PostgreSQL runs archive_command through the shell).
fn shell_word(text: &str) -> String {
    let plain = !text.is_empty() && text.chars().all(|c| c.is_ascii_alphanumeric() || "/._-+:,=@".contains(c));
    if plain { text.to_string() } else { format!("'{}'", text.replace('\'', r"'\''")) }
}

/// Appends `name = 'value'`, quoted as postgresql.conf strings are.
fn setting(out: &mut String, name: &str, value: &str) {
    let _ = writeln!(out, "{name} = '{}'", value.replace('\'', "''"));
}

/// The new postgresql.conf when it lacks the active include line, `None` when it has it.
pub fn with_include_dir(postgresql_conf: &str) -> Option<String> {
    let present = postgresql_conf.lines().any(|line| {
        let line = line.split('#').next().unwrap_or_default().trim();
        let Some((name, value)) = line.split_once('=') else { return false };
        name.trim() == "include_dir" && value.trim().trim_matches('\'') == CONF_DIR
    });
    if present {
        return None;
    }
    Some(super::files::appended(
        postgresql_conf,
        "Added by pgec2: the settings pgec2 manages live in conf.d/.",
        INCLUDE_LINE,
    ))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use pgec2_core::host_spec::{BootstrapSpec, InitdbSpec, Profile};

    use super::*;
    use crate::host::test_support::spec;

    const GIB: u64 = 1024 * 1024 * 1024;

    fn commands() -> ArchiveCommands {
        ArchiveCommands {
            own_config: Some(PathBuf::from("/etc/pgec2/agent.toml")),
            restore_config: Some(PathBuf::from("/etc/pgec2/agent.toml")),
        }
    }

    fn render(spec: &HostSpec, memory_gib: u64, cpus: u32) -> BTreeMap<String, String> {
        let archive = commands();
        let tls = TlsFiles { certificate: "/etc/pgec2/tls/server.crt".into(), key: "/etc/pgec2/tls/server.key".into() };
        let inputs = ConfInputs {
            spec,
            resources: Resources { memory_bytes: memory_gib * GIB, cpus },
            archive: &archive,
            tls: spec.ssl_enabled().then_some(&tls),
        };
        parse(&render_pgec2_conf(&inputs))
    }

    /// Reads the rendered file back like PostgreSQL: the last assignment wins.
    fn parse(text: &str) -> BTreeMap<String, String> {
        let mut settings = BTreeMap::new();
        for line in text.lines().filter(|line| !line.starts_with('#') && !line.trim().is_empty()) {
            let (name, value) = line.split_once(" = ").expect("name = value");
            let value = value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')).expect("quoted");
            settings.insert(name.to_string(), value.replace("''", "'"));
        }
        settings
    }

    #[test]
    fn the_archive_settings_call_the_agent_with_its_config_file() {
        let settings = render(&spec(), 1, 2);
        assert_eq!(settings["wal_level"], "replica");
        assert_eq!(settings["archive_mode"], "on");
        assert_eq!(settings["archive_command"], "/opt/pgec2/pgec2-agent --config /etc/pgec2/agent.toml wal-push %p");
        assert_eq!(
            settings["restore_command"],
            "/opt/pgec2/pgec2-agent --config /etc/pgec2/agent.toml wal-fetch %f %p"
        );
        assert_eq!(settings["archive_timeout"], "60");
    }

    #[test]
    fn parameters_override_the_tuning_but_not_the_archive_settings() {
        let mut spec = spec();
        spec.parameters.insert("shared_buffers".into(), "2GB".into());
        spec.parameters.insert("work_mem".into(), "8MB".into());
        spec.parameters.insert("wal_level".into(), "logical".into());
        let text = {
            let archive = commands();
            let inputs = ConfInputs {
                spec: &spec,
                resources: Resources { memory_bytes: 32 * GIB, cpus: 4 },
                archive: &archive,
                tls: None,
            };
            render_pgec2_conf(&inputs)
        };
        assert_eq!(text.matches("shared_buffers").count(), 1, "the tuned value is left out:\n{text}");
        let settings = parse(&text);
        assert_eq!(settings["shared_buffers"], "2GB");
        assert_eq!(settings["work_mem"], "8MB");
        assert_eq!(settings["wal_level"], "logical");
        assert_eq!(settings["effective_cache_size"], "24GB", "the rest of the tuning stays");
        assert_eq!(settings["archive_mode"], "on");
    }

    #[test]
    fn the_connection_settings_come_from_the_spec_with_tls_in_ec2() {
        let mut spec = spec();
        spec.profile = Profile::Ec2;
        let settings = render(&spec, 64, 16);
        assert_eq!(settings["port"], "5432");
        assert_eq!(settings["listen_addresses"], "*");
        assert_eq!(settings["unix_socket_directories"], "/var/run/postgresql");
        assert_eq!(settings["password_encryption"], "scram-sha-256");
        assert_eq!(settings["ssl"], "on");
        assert_eq!(settings["ssl_cert_file"], "/etc/pgec2/tls/server.crt");
        assert_eq!(settings["ssl_key_file"], "/etc/pgec2/tls/server.key");
        assert_eq!(settings["shared_buffers"], "16GB");
    }

    #[test]
    fn without_an_archive_archiving_is_off() {
        let mut spec = spec();
        spec.archive = None;
        spec.bootstrap = BootstrapSpec::Initdb(InitdbSpec { data_checksums: true, encoding: None, locale: None });
        let archive = ArchiveCommands { own_config: None, restore_config: None };
        let inputs = ConfInputs {
            spec: &spec,
            resources: Resources { memory_bytes: GIB, cpus: 2 },
            archive: &archive,
            tls: None,
        };
        let settings = parse(&render_pgec2_conf(&inputs));
        assert_eq!(settings["archive_mode"], "off");
        assert!(!settings.contains_key("archive_command") && !settings.contains_key("restore_command"));
        assert_eq!(settings["wal_level"], "replica");
    }

    #[test]
    fn paths_with_spaces_and_quotes_stay_one_shell_word() {
        let command = agent_command(Path::new("/opt/my agent/pgec2-agent"), Path::new("/etc/it's.toml"), "wal-push %p");
        assert_eq!(command, r"'/opt/my agent/pgec2-agent' --config '/etc/it'\''s.toml' wal-push %p");
        let mut out = String::new();
        setting(&mut out, "archive_command", &command);
        assert_eq!(
            out,
            "archive_command = '''/opt/my agent/pgec2-agent'' --config ''/etc/it''\\''''s.toml'' wal-push %p'\n"
        );
    }

    #[test]
    fn the_include_line_is_added_once() {
        let initdb_conf = "max_connections = 100\n#include_dir = '...'\n";
        let updated = with_include_dir(initdb_conf).expect("added");
        assert!(updated.starts_with(initdb_conf) && updated.ends_with("include_dir = 'conf.d'\n"));
        assert_eq!(with_include_dir(&updated), None);
        assert_eq!(with_include_dir("include_dir = conf.d   # ours\n"), None, "an unquoted equivalent counts");
        assert!(with_include_dir("# include_dir = 'conf.d'\n").is_some(), "a comment does not count");
    }
}
