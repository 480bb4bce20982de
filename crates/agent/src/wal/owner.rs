//! The cluster-identity guard on the push path, with a small local cache.
//!
//! The archive's owner (`cluster.json`, see [`pgec2_core::identity`]) never changes once
//! written, so after one successful check the agent remembers "this archive belongs to this
//! cluster" in `pg_wal/.pgec2-archive-owner` (pg_wal is never part of a base backup, so a
//! restored copy does not inherit the memory) and re-reads the archive only every few minutes.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use pgec2_core::identity::{self, ClusterIdentity};
use pgec2_core::layout::Archive;
use serde::{Deserialize, Serialize};

use super::durable;
use super::error::WalError;

/// The cache file, inside `pg_wal`.
pub const OWNER_CACHE_FILE: &str = ".pgec2-archive-owner";

/// How long a check is trusted before the archive is read again.
const CACHE_LIFETIME: chrono::TimeDelta = chrono::TimeDelta::minutes(10);

#[derive(Debug, Serialize, Deserialize)]
struct CachedOwner {
    archive: String,
    system_identifier: String,
    verified_at: DateTime<Utc>,
}

/// Fails with [`WalError::Identity`] unless the archive belongs (or now belongs) to `claimant`.
pub async fn ensure(
    archive: &Archive,
    claimant: &ClusterIdentity,
    data_dir: Option<&Path>,
    file: &str,
) -> Result<(), WalError> {
    let cache = data_dir.map(cache_path);
    let described = archive.describe();
    if let Some(path) = &cache
        && cache_confirms(path, &described, claimant.system_identifier)
    {
        return Ok(());
    }
    identity::claim_or_verify(archive, claimant)
        .await
        .map_err(|error| WalError::Identity { file: file.to_string(), error: Box::new(error) })?;
    if let Some(path) = &cache {
        remember(path, &described, claimant.system_identifier);
    }
    Ok(())
}

fn cache_path(data_dir: &Path) -> PathBuf {
    data_dir.join("pg_wal").join(OWNER_CACHE_FILE)
}

fn cache_confirms(path: &Path, archive: &str, system_identifier: u64) -> bool {
    let Ok(text) = std::fs::read(path) else { return false };
    let Ok(cached) = serde_json::from_slice::<CachedOwner>(&text) else { return false };
    let age = Utc::now().signed_duration_since(cached.verified_at);
    cached.archive == archive
        && cached.system_identifier == system_identifier.to_string()
        && age >= chrono::TimeDelta::zero()
        && age < CACHE_LIFETIME
}

/// Best effort: a cache that cannot be written only costs one read per push.
fn remember(path: &Path, archive: &str, system_identifier: u64) {
    let cached = CachedOwner {
        archive: archive.to_string(),
        system_identifier: system_identifier.to_string(),
        verified_at: Utc::now(),
    };
    let written = serde_json::to_vec(&cached)
        .map_err(std::io::Error::other)
        .and_then(|json| durable::write_atomically(path, &json));
    if let Err(error) = written {
        tracing::debug!(path = %path.display(), %error, "could not cache the archive's owner");
    }
}
