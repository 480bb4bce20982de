//! Test harness shared by every crate's integration tests: real parts, never mocks.
//!
//! - [`Scratch`]: a temporary directory the `postgres` OS user owns (tests run as root in CI, and
//!   PostgreSQL refuses to run as root), with [`Scratch::install_binary`] to copy the binaries a
//!   server will execute (archive_command) to where that user can run them.
//! - [`PgCluster`]: an `initdb`'d PostgreSQL started with `pg_ctl` on a free loopback port.
//! - [`MotoServer`]: a moto server (S3, EC2, SSM API) on a free loopback port.

mod moto;
mod postgres;
mod proxy;
mod scratch;

pub use moto::MotoServer;
pub use postgres::{PgCluster, PgOptions, postgres_bin_dir, psql_at, psql_command};
pub use proxy::{Chaos, ChaosCounts, FaultProxy, ProxyControl, ProxyMode};
pub use scratch::{Scratch, as_postgres, free_port, postgres_user};

/// Failures of the harness itself (not of the code under test).
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("{command} failed with {status}: {stderr}")]
    Command { command: String, status: String, stderr: String },
    #[error("{0}")]
    Setup(String),
}

pub type Result<T> = std::result::Result<T, HarnessError>;

pub(crate) fn io_error(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> HarnessError {
    let what = what.into();
    move |source| HarnessError::Io { what, source }
}
