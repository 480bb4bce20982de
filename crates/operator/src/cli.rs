//! The operator's command line. Every flag can also be set by an environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::local_mode::{Kind, UnknownKind};
use crate::telemetry::LogFormat;

/// What `pgec2-operator --help` explains after the usage.
const LONG_ABOUT: &str = "\
pgec2-operator: self-managed PostgreSQL on EC2, declared as Kubernetes resources
(PostgresHost and BackupPolicy, pgec2.io/v1alpha1).

Three ways to run pgec2:

1. In Kubernetes, against AWS: `pgec2-operator run` in the cluster (deploy/: CRDs, RBAC,
   Deployment, Helm chart, IAM policies). Each PostgresHost becomes an EC2 instance with an
   encrypted EBS data volume, set up through SSM; backups and WAL go to S3.

2. Locally, for a demo or development, with no cluster and no AWS account:
     pgec2-operator local run [--state-dir DIR] [--until-ready] [--timeout SECS] PATH...
     pgec2-operator local get [--state-dir DIR] [-o json|table] [KIND [NAME]]
     pgec2-operator local stop [--state-dir DIR]
   `local run` loads PostgresHost and BackupPolicy YAML (files or directories, re-read when
   they change) into an in-memory API kept in DIR and runs the same controllers; hosts are
   PostgreSQL processes on this machine, backups go to the policy's local directory.
   scripts/demo.sh shows a host, scheduled backups, WAL archiving and a point-in-time restore.

3. The agent alone on a hand-managed host, in place of wal-g: pgec2-agent's `wal-push` as
   archive_command, `wal-fetch` as restore_command, `backup-push` and `delete` from cron
   (see docs/agent.md and the README).";

#[derive(Debug, Parser)]
#[command(
    name = "pgec2-operator",
    version,
    about = "pgec2-operator: self-managed PostgreSQL on EC2, declared as Kubernetes resources",
    long_about = LONG_ABOUT
)]
pub struct Cli {
    /// Log format on stderr (default: json for `run`, text for `local`).
    #[arg(long, global = true, env = "PGEC2_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the controllers against the Kubernetes cluster (in-cluster or $KUBECONFIG).
    Run(RunArgs),
    /// Local mode: no cluster, no AWS account; resources from YAML files, hosts on this machine.
    #[command(subcommand)]
    Local(LocalCommand),
}

/// The commands of local mode.
#[derive(Debug, Subcommand)]
pub enum LocalCommand {
    /// Load PostgresHost/BackupPolicy YAML and reconcile it with hosts on this machine.
    ///
    /// Files and directories (their *.yaml and *.yml files) are re-read every second: a changed
    /// file is applied (server-side apply, so removed fields are removed); an object no file
    /// declares any more for 5 seconds is deleted (its data kept with deletionPolicy Retain).
    /// Progress goes to stdout. Runs until SIGINT or SIGTERM, then stops the hosts' PostgreSQL
    /// (data kept) and prints the resources; the next run on the same state directory starts
    /// them again.
    Run(LocalRunArgs),
    /// Print resources and their status from the state directory (no running operator needed).
    Get(LocalGetArgs),
    /// Stop the `local run` of the state directory and any host PostgreSQL still running.
    Stop(LocalStopArgs),
}

/// The state directory of local mode.
#[derive(Debug, Args)]
pub struct StateDirArgs {
    /// State directory: API objects, host data directories, pid file (default:
    /// /var/lib/pgec2/local as root, ~/.local/state/pgec2 otherwise). As root, the postgres
    /// user must be able to enter it.
    #[arg(long, env = "PGEC2_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct LocalRunArgs {
    #[command(flatten)]
    pub state: StateDirArgs,

    /// Exit 0 once every PostgresHost is Ready, non-zero when one fails or at --timeout; the
    /// hosts keep running (stop them with `local stop`).
    #[arg(long)]
    pub until_ready: bool,

    /// With --until-ready, how long to wait (default 600); without, stop after this long as if
    /// interrupted.
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<u64>,

    /// The agent binary the hosts install (default: pgec2-agent next to this program).
    #[arg(long, env = "PGEC2_AGENT_BINARY")]
    pub agent_binary: Option<PathBuf>,

    /// PostgresHost and BackupPolicy YAML files (several documents each), or directories of them.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
}

/// Output of `local get`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Columns like `kubectl get`.
    Table,
    /// The objects as stored, status included (a List without NAME).
    Json,
}

#[derive(Debug, Args)]
pub struct LocalGetArgs {
    #[command(flatten)]
    pub state: StateDirArgs,

    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: OutputFormat,

    /// Namespace of NAME.
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,

    /// postgreshost (postgreshosts, pgh) or backuppolicy (backuppolicies, bp); both when omitted.
    #[arg(value_parser = parse_kind)]
    pub kind: Option<Kind>,

    /// One object of KIND.
    pub name: Option<String>,
}

#[derive(Debug, Args)]
pub struct LocalStopArgs {
    #[command(flatten)]
    pub state: StateDirArgs,

    /// How long to wait for `local run` to stop its hosts and exit.
    #[arg(long, value_name = "SECS", default_value_t = 180)]
    pub timeout: u64,
}

fn parse_kind(text: &str) -> Result<Kind, UnknownKind> {
    text.parse()
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
    fn local_get_accepts_kind_aliases_and_a_name() {
        let cli =
            Cli::try_parse_from(["pgec2-operator", "local", "get", "--state-dir", "/s", "-o", "json", "pgh", "db"])
                .expect("valid command line");
        let Command::Local(LocalCommand::Get(args)) = cli.command else { panic!("not local get: {cli:?}") };
        assert_eq!(
            (args.kind, args.name.as_deref(), args.output),
            (Some(Kind::PostgresHost), Some("db"), OutputFormat::Json)
        );
        let error = Cli::try_parse_from(["pgec2-operator", "local", "get", "pods"]).expect_err("unknown kind");
        assert!(error.to_string().contains("backuppolicy"), "{error}");
    }

    #[test]
    fn local_run_needs_a_path() {
        assert!(Cli::try_parse_from(["pgec2-operator", "local", "run", "--until-ready"]).is_err());
        let cli =
            Cli::try_parse_from(["pgec2-operator", "local", "run", "--timeout", "30", "a.yaml", "dir"]).expect("valid");
        let Command::Local(LocalCommand::Run(args)) = cli.command else { panic!("not local run: {cli:?}") };
        assert_eq!((args.timeout, args.paths.len(), args.until_ready), (Some(30), 2, false));
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
