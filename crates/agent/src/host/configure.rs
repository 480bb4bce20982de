//! The configuration steps: directories, the agent's configuration files, PostgreSQL's
//! configuration (conf.d/01-pgec2.conf and its include line) and pg_hba.conf. A configuration
//! PostgreSQL would reject is put back to what it was and the step fails, so a bad parameter
//! never reaches a running server or its next start.

use std::path::Path;

use pgec2_core::host_spec::{HostSpec, Profile};

use super::agent_config;
use super::command::OsUser;
use super::hba::render_hba;
use super::postgres::Server;
use super::promote;
use super::render_conf::{self, ArchiveCommands, ConfInputs};
use super::tls::tls_files;
use super::tuning::detect_resources;
use super::{Done, StepError, files};

/// Mode of PostgreSQL's configuration files (as initdb creates them).
const CONF_MODE: u32 = 0o600;

/// Step `directories`: the volume root (local profile), the data directory's parents, the
/// socket directory and the configuration directory.
pub fn directories(spec: &HostSpec, user: &OsUser) -> Result<Done, StepError> {
    let mut created = Vec::new();
    if spec.profile == Profile::Local && files::ensure_directory(&spec.volume.mount_path, 0o755, Some(user))? {
        created.push(spec.volume.mount_path.clone());
    }
    if let Some(parent) = spec.data_directory.parent()
        && files::ensure_directory(parent, 0o755, Some(user))?
    {
        created.push(parent.to_path_buf());
    }
    let socket = spec.socket_directory();
    if files::ensure_directory(&socket, 0o2775, Some(user))? {
        created.push(socket);
    }
    let config = spec.config_directory();
    if files::ensure_directory(&config, 0o755, None)? {
        created.push(config);
    }
    if created.is_empty() {
        return Ok(Done::unchanged("in place"));
    }
    let names: Vec<String> = created.iter().map(|path| path.display().to_string()).collect();
    Ok(Done::changed(format!("created or fixed {}", names.join(", "))))
}

/// Step `agent-config`: `agent.toml` for the own archive, `agent-source.toml` for a recovery.
pub fn agent_configs(spec: &HostSpec) -> Result<Done, StepError> {
    let mut written = Vec::new();
    let mut kept = Vec::new();
    if let Some(archive) = &spec.archive {
        let text = agent_config::render_own(spec, archive)?;
        sort(
            files::write_file(&spec.agent_config_path, text.as_bytes(), 0o644, None)?,
            &spec.agent_config_path,
            &mut written,
            &mut kept,
        );
    }
    if let Some(recovery) = spec.recovery() {
        let path = spec.source_config_path();
        let text = agent_config::render_source(spec, &recovery.source)?;
        sort(files::write_file(&path, text.as_bytes(), 0o644, None)?, &path, &mut written, &mut kept);
    }
    match (written.is_empty(), kept.is_empty()) {
        (true, true) => Ok(Done::skipped("no archive and no recovery source in the spec")),
        (true, false) => Ok(Done::unchanged(format!("{} up to date", kept.join(", ")))),
        (false, _) => Ok(Done::changed(format!("wrote {}", written.join(", ")))),
    }
}

fn sort(changed: bool, path: &Path, written: &mut Vec<String>, kept: &mut Vec<String>) {
    if changed { written } else { kept }.push(path.display().to_string());
}

/// Step `postgresql-conf`: writes the include line and pgec2's file, checked by `postgres -C`.
/// Returns whether anything changed.
pub async fn postgresql_conf(spec: &HostSpec, server: &Server) -> Result<(bool, Done), StepError> {
    let resources = match spec.resources.or_else(detect_resources) {
        Some(resources) => resources,
        None => {
            return Err(StepError::Prerequisite {
                problem: "cannot read memory and CPUs (/proc/meminfo)".into(),
                remedy: "set resources in the spec".into(),
            });
        }
    };
    let own_config = spec.archive.as_ref().map(|_| spec.agent_config_path.clone());
    let state = crate::wal::recovery_state(&spec.data_directory);
    let from_source = promote::reads_source_archive(spec, state);
    let restore_config = if from_source { Some(spec.source_config_path()) } else { own_config.clone() };
    let archive = ArchiveCommands { own_config, restore_config };
    let tls = spec.ssl_enabled().then(|| tls_files(spec));
    let inputs = ConfInputs { spec, resources, archive: &archive, tls: tls.as_ref() };

    let conf_d = spec.data_directory.join(render_conf::CONF_DIR);
    files::ensure_directory(&conf_d, 0o700, Some(&server.user))?;
    let main_path = spec.data_directory.join("postgresql.conf");
    let ours_path = conf_d.join(render_conf::CONF_FILE);
    let main_before = files::read_optional(&main_path)?;
    let ours_before = files::read_optional(&ours_path)?;
    let main_text = String::from_utf8_lossy(main_before.as_deref().unwrap_or_default()).into_owned();
    let mut changed = false;
    if let Some(updated) = render_conf::with_include_dir(&main_text) {
        changed |= files::write_file(&main_path, updated.as_bytes(), CONF_MODE, Some(&server.user))?;
    }
    let ours = render_conf::render_pgec2_conf(&inputs);
    changed |= files::write_file(&ours_path, ours.as_bytes(), CONF_MODE, Some(&server.user))?;
    if !changed {
        return Ok((false, Done::unchanged("configuration up to date")));
    }
    if let Err(error) = server.check_config().await {
        files::restore_file(&main_path, main_before.as_deref(), CONF_MODE, Some(&server.user))?;
        files::restore_file(&ours_path, ours_before.as_deref(), CONF_MODE, Some(&server.user))?;
        return Err(StepError::Postgres(format!(
            "postgresql rejects the new configuration, the previous files are back in place: {error}"
        )));
    }
    let memory_gib = resources.memory_bytes as f64 / (1024.0 * 1024.0 * 1024.0);
    let detail = format!("wrote {} (tuned for {memory_gib:.1} GiB, {} CPUs)", ours_path.display(), resources.cpus);
    Ok((true, Done::changed(detail)))
}

/// Step `pg-hba`: writes pg_hba.conf; a running server checks it before it is kept.
pub async fn pg_hba(spec: &HostSpec, server: &Server) -> Result<(bool, Done), StepError> {
    let path = spec.data_directory.join("pg_hba.conf");
    let before = files::read_optional(&path)?;
    if !files::write_file(&path, render_hba(spec).as_bytes(), CONF_MODE, Some(&server.user))? {
        return Ok((false, Done::unchanged("rules up to date")));
    }
    if server.accepting().await {
        let errors = server.hba_errors().await?;
        if !errors.is_empty() {
            files::restore_file(&path, before.as_deref(), CONF_MODE, Some(&server.user))?;
            return Err(StepError::Postgres(format!(
                "postgresql rejects pg_hba.conf, the previous file is back in place: line {}",
                errors.join("; line ")
            )));
        }
    }
    Ok((true, Done::changed(format!("wrote {} ({} rules from the spec)", path.display(), spec.pg_hba.len()))))
}
