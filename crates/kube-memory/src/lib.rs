//! An in-memory Kubernetes API server behind [`kube::Client`].
//!
//! [`MemoryApiServer`] is a [`tower::Service`] that answers the Kubernetes REST API for a
//! registry of resource types, with the semantics controllers rely on: a global, increasing
//! `resourceVersion`; 409 Conflict on a stale one; `metadata.generation` counting spec changes;
//! the `/status` subresource; finalizers and `deletionTimestamp`; watches from a resourceVersion
//! with bookmarks and 410 Gone once it is too old; merge, JSON and server-side apply patches;
//! errors as `metav1.Status`. The real kube-rs `Controller`, `watcher`, `finalizer` and event
//! `Recorder` run on it unchanged.
//!
//! It serves Events (`v1` and `events.k8s.io/v1`) and Leases (`coordination.k8s.io/v1`) out of the
//! box; callers register their own kinds with [`ResourceType`]. With
//! [`MemoryApiServer::with_state_dir`] the objects survive restarts.
//!
//! The crate's README lists what is kept and where it differs from a real API server.

mod apply;
mod defaults;
mod discovery;
mod error;
mod faults;
mod handlers;
mod loader;
mod meta;
mod persistence;
mod registry;
mod request;
mod schema;
mod selector;
mod server;
mod state;
mod store;
mod watch;

pub use error::{ApiError, Error};
pub use faults::Fault;
pub use persistence::STATE_FILE;
pub use registry::{ListMap, ResourceType, builtin_types};
pub use server::{MemoryApiServer, ResponseBody};
pub use state::Validator;
