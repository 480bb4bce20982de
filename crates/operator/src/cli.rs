//! The operator's command line. Every flag can also be set by an environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::telemetry::LogFormat;

/// pgec2-operator: self-managed PostgreSQL on EC2, declared as Kubernetes resources.
///
/// `run` reconciles PostgresHost and BackupPolicy resources of a Kubernetes cluster, on AWS
/// (`--cloud aws`) or on the operator's own machine (`--cloud local`).
#[derive(Debug, Parser)]
#[command(name = "pgec2-operator", version, about, long_about)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, env = "PGEC2_LOG_FORMAT", value_enum, default_value = "json")]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the controllers against the Kubernetes cluster (in-cluster or $KUBECONFIG).
    Run(RunArgs),
}

/// Where hosts run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CloudKind {
    /// EC2 instances with EBS data volumes, set up through SSM.
    Aws,
    /// Directories and PostgreSQL processes on the operator's machine.
    Local,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Address of the /healthz, /readyz and /metrics endpoints.
    #[arg(long, env = "PGEC2_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// Where hosts run.
    #[arg(long, env = "PGEC2_CLOUD", value_enum, default_value = "aws")]
    pub cloud: CloudKind,

    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "PGEC2_NAMESPACE")]
    pub namespace: Option<String>,

    /// URL hosts download the agent from (aws cloud): https://…, or file:///… on the host.
    #[arg(long, env = "PGEC2_AGENT_URL")]
    pub agent_url: Option<String>,

    /// sha256 (hex) of the agent at --agent-url; the bootstrap refuses any other binary.
    #[arg(long, env = "PGEC2_AGENT_SHA256", requires = "agent_url")]
    pub agent_sha256: Option<String>,

    /// AWS region (default: the SDK's: AWS_REGION, the profile, or the instance metadata).
    #[arg(long, env = "PGEC2_AWS_REGION")]
    pub aws_region: Option<String>,

    /// The agent binary the local cloud installs (default: pgec2-agent next to this program).
    #[arg(long, env = "PGEC2_AGENT_BINARY")]
    pub agent_binary: Option<PathBuf>,

    /// State directory of the local cloud (hosts, snapshots). The postgres user must be able
    /// to enter it.
    #[arg(long, env = "PGEC2_STATE_DIR", default_value = "/var/lib/pgec2")]
    pub state_dir: PathBuf,

    #[command(flatten)]
    pub leader: LeaderArgs,
}

#[derive(Debug, Args)]
pub struct LeaderArgs {
    /// Run without leader election (only with a single replica).
    #[arg(long, env = "PGEC2_DISABLE_LEADER_ELECTION")]
    pub disable_leader_election: bool,

    /// Name of the coordination.k8s.io Lease replicas compete for.
    #[arg(long, env = "PGEC2_LEASE_NAME", default_value = "pgec2-operator")]
    pub lease_name: String,

    /// Namespace of the Lease (default: the operator's own namespace).
    #[arg(long, env = "PGEC2_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,

    /// Seconds a Lease stays valid without renewal.
    #[arg(long, env = "PGEC2_LEASE_DURATION_SECONDS", default_value_t = 15)]
    pub lease_duration_seconds: u64,

    /// This replica's identity in the Lease and in events (default: the host name).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
}

/// `pgec2-agent` next to the running program.
pub fn default_agent_binary() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("pgec2-agent")))
        .unwrap_or_else(|| PathBuf::from("pgec2-agent"))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_run_flag_has_an_environment_variable() {
        let command = Cli::command();
        let run = command.find_subcommand("run").expect("run subcommand");
        for argument in run.get_arguments() {
            let name = argument.get_id().as_str();
            if name == "help" || name == "version" {
                continue;
            }
            assert!(argument.get_env().is_some(), "--{name} has no environment variable");
        }
    }
}
