//! pgec2-operator: reconciles PostgresHost and BackupPolicy resources on AWS or on this machine.
//!
//! - [`cloud`]: the `Cloud` trait and its `aws` and `local` implementations;
//! - [`host`]: the PostgresHost controller;
//! - [`context`]: the shared context and the [`Operator`] that runs the controllers on any
//!   `kube::Client` and any cloud;
//! - [`metrics`], [`server`], [`leader`], [`telemetry`]: what the binary adds around them.

pub mod cli;
pub mod cloud;
pub mod context;
pub mod host;
pub mod leader;
pub mod metrics;
pub mod policy;
pub mod run;
pub mod server;
pub mod telemetry;

pub use context::{Config, Context, Operator, OperatorBuilder};
