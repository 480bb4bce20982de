//! Does a store honour conditional creates? Everything pgec2 archives relies on a create never
//! replacing an object (`If-None-Match: *` on S3); some S3-compatible stores ignore the header
//! and silently overwrite. [`conditional_creates`] finds out before an archive is first used:
//! it creates one probe object twice, and the second create must be refused.
//!
//! Probe keys are new random names under the archive's `probes/`, so the probe never touches
//! another object and needs no delete (hosts may not delete). It runs once per archive, when
//! the first push claims it ([`crate::identity`]); `cluster.json` existing means it passed.

use bytes::Bytes;

use super::{ObjectKey, PutMode, Storage, StorageError};

/// Why a store failed the probe.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(
        "the store {store} overwrote {key} on a create-only write (it ignores If-None-Match: *), so archived \
         WAL and backups could be silently replaced: pgec2 refuses to use it; use AWS S3, a filesystem, or an \
         S3-compatible store that answers 412 to a conditional create of an existing key"
    )]
    Overwrites { store: String, key: String },
    #[error("failed to probe conditional creates on {key}: {error}")]
    Storage { key: String, error: StorageError },
}

/// Creates `key` (a fresh, unused key) twice with different bodies; the second create must fail
/// with [`StorageError::AlreadyExists`].
pub async fn conditional_creates(storage: &dyn Storage, key: &ObjectKey) -> Result<(), ProbeError> {
    let failed = |error| ProbeError::Storage { key: key.to_string(), error };
    storage
        .put(key, Bytes::from_static(b"pgec2 conditional create probe: first"), PutMode::CreateNew)
        .await
        .map_err(failed)?;
    match storage.put(key, Bytes::from_static(b"pgec2 conditional create probe: second"), PutMode::CreateNew).await {
        Err(error) if error.is_already_exists() => Ok(()),
        Err(error) => Err(failed(error)),
        Ok(()) => Err(ProbeError::Overwrites { store: storage.describe(), key: key.to_string() }),
    }
}

/// A probe key name: random, so that probes never collide and never need cleaning up.
pub fn probe_name() -> String {
    format!("conditional-create-{:016x}", rand::random::<u64>())
}
