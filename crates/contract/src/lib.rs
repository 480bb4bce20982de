//! What pgec2's three parts agree on and must not restate: the Kubernetes API (`pgec2-api`),
//! the operator and the agent. It has no domain code and no heavy dependency (no kube, no AWS
//! SDK, no async runtime), so the API crate can depend on it as cheaply as the agent does.
//!
//! - [`parameters`]: the PostgreSQL parameters pgec2 sets itself, refused in a spec's
//!   `parameters` by the CRD's CEL rule, the API's Rust validation and the agent's HostSpec
//!   validation, all from the one list.

pub mod parameters;
