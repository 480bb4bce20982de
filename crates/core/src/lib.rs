//! pgec2-core: the domain shared by the agent and the operator.
//!
//! No Kubernetes and no runtime choice here: storage backends ([`storage`]), the archive's
//! object layout ([`layout`]), the object envelope with compression and checksums
//! ([`envelope`], [`compression`]), WAL vocabulary ([`wal`]), the
//! archive's owner ([`identity`]), and the host contract ([`host_spec`]).

pub mod archiver;
pub mod backoff;
pub mod bootstrap;
pub mod catalog;
pub mod compression;
pub mod drill_check;
pub mod encryption;
pub mod envelope;
pub mod fs_sync;
pub mod host_spec;
pub mod identity;
pub mod increment;
pub mod layout;
pub mod leases;
pub mod manifest;
pub mod recovery_window;
pub mod retention;
pub mod storage;
pub mod stream_status;
pub mod target_time;
pub mod wal;
pub mod walg;
