//! pgec2-operator: reconciles PostgresHost and BackupPolicy resources on AWS or on this machine.
//!
//! - [`cloud`]: the `Cloud` trait and its `aws` and `local` implementations;
//! - [`host`]: the PostgresHost controller; [`policy`]: the BackupPolicy controller. Neither
//!   imports the other: both write through [`kube_layer`] (status by server-side apply, one
//!   field manager each; conditions; events) and share [`archive`] (where a host's archive is,
//!   and opening it) and [`agent_command`] (running the agent on a host);
//! - [`context`]: what every reconcile shares; [`operator`]: the [`Operator`] that runs the
//!   controllers on any `kube::Client` and any cloud;
//! - [`metrics`], [`server`], [`leader`], [`telemetry`]: what the binary adds around them;
//! - [`local_mode`]: `pgec2-operator local run|get|stop`, the controllers on an in-memory API
//!   loaded from YAML files, with hosts on this machine.

pub mod agent_command;
pub mod archive;
pub mod cli;
pub mod cloud;
pub mod context;
pub mod host;
pub mod kube_layer;
pub mod leader;
pub mod local_mode;
pub mod metrics;
pub mod operator;
pub mod policy;
pub mod run;
pub mod schedule;
pub mod server;
pub mod telemetry;

pub use context::{Config, Context};
pub use operator::{Operator, OperatorBuilder};
