//! What pgec2's three parts agree on and must not restate: the Kubernetes API (`pgec2-api`),
//! the operator and the agent. It has no domain code and no heavy dependency (no kube, no AWS
//! SDK, no async runtime), so the API crate can depend on it as cheaply as the agent does.
//!
//! - [`parameters`]: the PostgreSQL parameters pgec2 sets itself, refused in a spec's
//!   `parameters` by the CRD's CEL rule, the API's Rust validation and the agent's HostSpec
//!   validation, all from the one list;
//! - [`command`]: the agent commands the operator sends, as values that render their argv, with
//!   [`annotation`] (the notes `backup-push` records) and [`shell`] (quoting them for the host);
//! - [`output`]: how a `--json` answer is read: the whole stdout is one JSON document;
//! - [`storage`] (server-side encryption) and [`recovery`] (the recovery target and what
//!   PostgreSQL does there): the spellings the CRDs, the HostSpec and the agent's configuration
//!   share; the `schema` feature derives their JSON schema for the CRDs.

pub mod annotation;
pub mod command;
pub mod output;
pub mod parameters;
pub mod recovery;
pub mod shell;
pub mod storage;
