//! The small Kubernetes layer both controllers write through, so that neither needs the other:
//!
//! - [`status`]: status written by server-side apply of `.status`, one field manager per
//!   controller ([`HOST_CONTROLLER`], [`POLICY_CONTROLLER`]). Each controller applies the whole
//!   of what it owns, so the API server merges their fields (and their conditions, a list merged
//!   by `type`) and neither overwrites the other's;
//! - [`conditions`]: Kubernetes-style conditions, set keeping `lastTransitionTime`;
//! - [`events`]: Normal and Warning events on any of our objects, best effort.
//!
//! Finalizers go through kube-rs' [`kube::runtime::finalizer()`] in the host controller.

pub mod conditions;
pub mod events;
pub mod status;

/// Field manager of the PostgresHost controller's status writes.
pub const HOST_CONTROLLER: &str = "pgec2-operator/postgreshost";

/// Field manager of the BackupPolicy controller's status writes (on BackupPolicies, and the
/// backup fields of PostgresHosts).
pub const POLICY_CONTROLLER: &str = "pgec2-operator/backuppolicy";
