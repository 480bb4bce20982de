//! pgec2-operator: reconciles PostgresHost and BackupPolicy resources on AWS or on this machine.
//!
//! - [`cloud`]: the `Cloud` trait and its `aws` and `local` implementations;
//! - [`host`]: the PostgresHost controller;
//! - [`context`]: the shared context and the [`Operator`] that runs the controllers on any
//!   `kube::Client` and any cloud;
//! - [`metrics`], [`server`], [`leader`], [`telemetry`]: what the binary adds around them;
//! - [`local_mode`]: `pgec2-operator local run|get|stop`, the controllers on an in-memory API
//!   loaded from YAML files, with hosts on this machine.

pub mod cli;
pub mod cloud;
pub mod context;
pub mod host;
pub mod leader;
pub mod local_mode;
pub mod metrics;
pub mod policy;
pub mod run;
pub mod server;
pub mod telemetry;

pub use context::{Config, Context, Operator, OperatorBuilder};
