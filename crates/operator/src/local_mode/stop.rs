//! `pgec2-operator local stop`: stop the `local run` of a state directory (it stops its hosts'
//! PostgreSQL on the way out), then any host PostgreSQL still running (after `--until-ready`).

use std::time::Duration;

use super::progress::print_line;
use super::{LocalModeError, StateDir, hosts, pidfile};
use crate::cli::LocalStopArgs;

/// Stops what runs in the state directory; nothing running is not an error.
pub async fn stop(args: LocalStopArgs) -> Result<(), LocalModeError> {
    let state = StateDir::resolve(args.state.state_dir.clone());
    let mut stopped_something = false;
    if let Some(pid) = pidfile::running(state.root())? {
        print_line("local", &format!("stopping `local run` (pid {pid})"));
        pidfile::terminate(pid, Duration::from_secs(args.timeout)).await?;
        print_line("local", &format!("`local run` (pid {pid}) stopped"));
        stopped_something = true;
    }
    for host in hosts::scan(state.root())? {
        if hosts::stop(&host).await? {
            print_line(&format!("postgreshost/{}", host.name), "stopped PostgreSQL (data kept)");
            stopped_something = true;
        }
    }
    if !stopped_something {
        print_line("local", &format!("nothing runs in {}", state.root().display()));
    }
    Ok(())
}
