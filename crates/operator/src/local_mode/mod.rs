//! Local mode: pgec2 with no Kubernetes cluster and no AWS account. PostgresHost and
//! BackupPolicy YAML files are loaded into an in-memory Kubernetes API (kept in the state
//! directory), the same controllers reconcile them with the `local` cloud (a host is a
//! directory and a PostgreSQL process on this machine), and backups go wherever the policies'
//! `storage.local.path` says.
//!
//! ```text
//! PATH... ──sources (poll 1s, server-side apply)──▶ in-memory API ◀──watch── controllers ──▶ local cloud
//!                                                    │     │                                  │
//!                    progress lines on stdout ◀──watch┘     └─▶ <state>/api/api-state.json      └─▶ <state>/hosts/<ns>/<name>/
//! ```
//!
//! The state directory:
//!
//! ```text
//! <state>/operator.pid         the running `local run` (what `local stop` signals)
//! <state>/api/api-state.json   every object with its status (what `local get` reads)
//! <state>/bin/pgec2-agent      the agent the hosts run
//! <state>/hosts/<ns>/<name>/   one host: host.json, volume/data (PGDATA), volume/run (socket), commands/
//! ```
//!
//! Inside (private; nothing outside local mode reaches in):
//! - `sources`: files → API (with `manifests` parsing and `kinds` naming);
//! - `progress`: API → lines on stdout; `table`: the `kubectl get`-like tables;
//! - `hosts`: start and stop the hosts' PostgreSQL with local mode; `pidfile`: one run per
//!   state directory;
//! - `run`, `get`, `stop`: the three commands.
//!
//! The boundary: the rest of the operator crate (and its tests) use only the names below:
//! - [`run`], [`get`], [`stop`]: `pgec2-operator local run|get|stop`, with [`init_logging`],
//!   [`StateDir`] and [`LocalModeError`];
//! - [`Kind`], [`UnknownKind`]: the kinds local mode serves, as `local get KIND` names them;
//! - [`api_server`]: the in-memory API that serves them (the scenario tests run it too).
//!
//! Local mode itself uses the operator's public faces only: [`crate::operator::Operator`],
//! [`crate::cloud::local`], [`crate::context::Config`], [`crate::metrics::Metrics`], the
//! command-line arguments in [`crate::cli`] and [`crate::run::shutdown_signal`].

mod get;
mod hosts;
mod kinds;
mod manifests;
mod pidfile;
mod progress;
mod run;
mod sources;
mod stop;
mod table;

use std::path::{Path, PathBuf};

pub use get::get;
pub use hosts::HostProcessError;
pub use kinds::{Kind, UnknownKind, api_server};
pub use pidfile::PidFileError;
pub use run::run;
pub use sources::SourceError;
pub use stop::stop;

use crate::cloud::local::LocalError;
use crate::telemetry::LogFormat;

/// Why a local mode command failed.
#[derive(Debug, thiserror::Error)]
pub enum LocalModeError {
    #[error("failed to create the state directory {}: {source}", path.display())]
    StateDir { path: PathBuf, source: std::io::Error },
    #[error("no local mode state in {}; start hosts there with `pgec2-operator local run --state-dir {} PATH...`", path.display(), path.display())]
    NoState { path: PathBuf },
    #[error("failed to open the API state: {0}")]
    Api(Box<pgec2_kube_memory::Error>),
    #[error(transparent)]
    Sources(Box<sources::SourceError>),
    #[error("failed to set up the local cloud: {0}")]
    Cloud(#[from] LocalError),
    #[error(transparent)]
    PidFile(#[from] pidfile::PidFileError),
    #[error(transparent)]
    Host(#[from] hosts::HostProcessError),
    #[error("{kind} {namespace}/{name} not found in {}", state.display())]
    NotFound { kind: kinds::Kind, namespace: String, name: String, state: PathBuf },
    #[error("postgreshost/{name} failed: {message}")]
    HostFailed { name: String, message: String },
    #[error("not every PostgresHost was Ready within {seconds}s; waiting for: {waiting}")]
    Timeout { seconds: u64, waiting: String },
    #[error("failed to print JSON: {0}")]
    Json(#[from] serde_json::Error),
}

impl From<pgec2_kube_memory::Error> for LocalModeError {
    fn from(error: pgec2_kube_memory::Error) -> Self {
        Self::Api(Box::new(error))
    }
}

impl From<sources::SourceError> for LocalModeError {
    fn from(error: sources::SourceError) -> Self {
        Self::Sources(Box::new(error))
    }
}

/// The directories of a local mode state directory.
#[derive(Clone, Debug)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// The given directory, or the default: `/var/lib/pgec2/local` as root (the `postgres`
    /// user must be able to enter it), `$XDG_STATE_HOME/pgec2` or `~/.local/state/pgec2`
    /// otherwise.
    pub fn resolve(given: Option<PathBuf>) -> Self {
        let root = given.unwrap_or_else(|| {
            if nix::unistd::Uid::effective().is_root() {
                return PathBuf::from("/var/lib/pgec2/local");
            }
            let state_home = std::env::var_os("XDG_STATE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local/state")));
            state_home.map_or_else(|| PathBuf::from("pgec2-state"), |dir| dir.join("pgec2"))
        });
        Self { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the in-memory API keeps its objects.
    pub fn api_dir(&self) -> PathBuf {
        self.root.join("api")
    }

    /// True when a `local run` has written API state here.
    pub fn has_api_state(&self) -> bool {
        self.api_dir().join(pgec2_kube_memory::STATE_FILE).exists()
    }

    fn create(&self) -> Result<(), LocalModeError> {
        std::fs::create_dir_all(&self.root)
            .map_err(|source| LocalModeError::StateDir { path: self.root.clone(), source })
    }
}

/// Logging for local mode: text (or JSON) on stderr, warnings only unless `RUST_LOG` asks for
/// more, so the progress lines on stdout stay readable.
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
