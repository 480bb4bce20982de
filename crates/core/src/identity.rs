//! The owner of an archive: `cluster.json` records the system identifier of the one cluster
//! that archives into a prefix. It is written once, by the first push, with a conditional
//! create, and never changed; every later push compares its cluster against it, so a restored
//! copy or a second cluster pointed at the same prefix cannot mix its WAL into another's archive.
//!
//! Before claiming, the store is probed once ([`crate::storage::probe`]): a store that lets a
//! second create replace an object is refused, and nothing is claimed. A claimed archive has
//! passed the probe, so later pushes pay nothing for it.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::compression::{Algorithm, Compression};
use crate::envelope::{self, EnvelopeError};
use crate::layout::Archive;
use crate::storage::StorageError;
use crate::storage::probe::{self, ProbeError};

/// The contents of `cluster.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterIdentity {
    /// `pg_control`'s system identifier; a string in JSON because it does not fit a double.
    #[serde(with = "u64_text")]
    pub system_identifier: u64,
    /// PostgreSQL major version, when known.
    #[serde(default)]
    pub pg_version: Option<u32>,
    /// WAL segment size in bytes, when known.
    #[serde(default)]
    pub wal_segment_size: Option<u64>,
    /// When the archive was claimed.
    pub created_at: DateTime<Utc>,
}

impl ClusterIdentity {
    /// An identity for a cluster claiming an archive now.
    pub fn new(system_identifier: u64, pg_version: Option<u32>, wal_segment_size: Option<u64>) -> Self {
        Self { system_identifier, pg_version, wal_segment_size, created_at: Utc::now() }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(
        "the archive {archive} belongs to the cluster with system identifier {owner}, not to this cluster \
         ({pushing}): point this cluster at its own storage prefix"
    )]
    ForeignCluster { archive: String, owner: u64, pushing: u64 },
    #[error("failed to read or claim the archive's owner {key}: {error}")]
    Storage { key: String, error: StorageError },
    #[error("the archive's owner record {key} is unreadable: {reason}; restore it from another copy or remove it")]
    Corrupt { key: String, reason: String },
    #[error(transparent)]
    Probe(#[from] ProbeError),
}

/// Reads the archive's owner, `None` when no cluster has claimed it yet.
pub async fn read_owner(archive: &Archive) -> Result<Option<ClusterIdentity>, IdentityError> {
    let key = archive.layout.cluster_identity().map_err(|source| storage_error("cluster.json", source))?;
    match archive.storage.get(&key).await {
        Ok(stored) => decode(key.as_str(), &stored).map(Some),
        Err(error) if error.is_not_found() => Ok(None),
        Err(source) => Err(storage_error(key.as_str(), source)),
    }
}

/// Makes sure the archive belongs to `claimant`'s cluster: claims it (conditional create) when
/// nobody has, and fails with [`IdentityError::ForeignCluster`] when another cluster owns it.
/// Returns the recorded owner.
pub async fn claim_or_verify(archive: &Archive, claimant: &ClusterIdentity) -> Result<ClusterIdentity, IdentityError> {
    let owner = match read_owner(archive).await? {
        Some(owner) => owner,
        None => create_or_read(archive, claimant).await?,
    };
    if owner.system_identifier != claimant.system_identifier {
        return Err(IdentityError::ForeignCluster {
            archive: archive.describe(),
            owner: owner.system_identifier,
            pushing: claimant.system_identifier,
        });
    }
    Ok(owner)
}

/// Writes `claimant` with a conditional create; when another writer won the race, reads theirs.
async fn create_or_read(archive: &Archive, claimant: &ClusterIdentity) -> Result<ClusterIdentity, IdentityError> {
    let key = archive.layout.cluster_identity().map_err(|source| storage_error("cluster.json", source))?;
    let probe_key = archive.layout.probe(&probe::probe_name()).map_err(|source| storage_error("probes/", source))?;
    probe::conditional_creates(&*archive.storage, &probe_key).await?;
    let json = serde_json::to_vec_pretty(claimant).map_err(|error| corrupt(key.as_str(), &error))?;
    let none = Compression { algorithm: Algorithm::None, level: 0 };
    let (stored, _) = envelope::seal(&json, none).map_err(|error| corrupt(key.as_str(), &error))?;
    match archive.storage.put_new_or_identical(&key, Bytes::from(stored)).await {
        Ok(_) => Ok(claimant.clone()),
        Err(error) if error.is_already_exists() => {
            let stored = archive.storage.get(&key).await.map_err(|source| storage_error(key.as_str(), source))?;
            decode(key.as_str(), &stored)
        }
        Err(source) => Err(storage_error(key.as_str(), source)),
    }
}

fn decode(key: &str, stored: &[u8]) -> Result<ClusterIdentity, IdentityError> {
    let (json, _) = envelope::open(stored).map_err(|error: EnvelopeError| corrupt(key, &error))?;
    serde_json::from_slice(&json).map_err(|error| corrupt(key, &error))
}

fn storage_error(key: &str, error: StorageError) -> IdentityError {
    IdentityError::Storage { key: key.to_string(), error }
}

fn corrupt(key: &str, reason: &dyn std::fmt::Display) -> IdentityError {
    IdentityError::Corrupt { key: key.to_string(), reason: reason.to_string() }
}

/// Serde for a u64 written as a decimal string.
pub(crate) mod u64_text {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &u64, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(value)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
        String::deserialize(deserializer)?.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::layout::ArchiveLayout;
    use crate::storage::memory::MemoryStorage;
    use crate::storage::{ObjectKey, ObjectMeta, PutMode, Storage};

    fn archive() -> Archive {
        Archive::new(Arc::new(MemoryStorage::new()), ArchiveLayout::under("default/db").expect("layout"))
    }

    #[tokio::test]
    async fn the_first_cluster_claims_the_archive_and_a_different_one_is_refused() {
        let archive = archive();
        assert_eq!(read_owner(&archive).await.expect("read"), None);
        let first = ClusterIdentity::new(7_000_000_000_000_000_001, Some(15), Some(16 << 20));
        assert_eq!(claim_or_verify(&archive, &first).await.expect("claim"), first);
        let again = ClusterIdentity::new(first.system_identifier, Some(15), None);
        assert_eq!(claim_or_verify(&archive, &again).await.expect("same cluster"), first, "recorded once");

        let other = ClusterIdentity::new(7_000_000_000_000_000_002, Some(15), Some(16 << 20));
        let error = claim_or_verify(&archive, &other).await.expect_err("foreign cluster");

        let message = error.to_string();
        assert!(matches!(error, IdentityError::ForeignCluster { owner: 7_000_000_000_000_000_001, .. }), "{message}");
        assert!(message.contains("memory") && message.contains("default/db"), "names the archive: {message}");
        assert_eq!(read_owner(&archive).await.expect("read"), Some(first));
    }

    #[tokio::test]
    async fn of_two_clusters_racing_to_claim_an_archive_exactly_one_wins() {
        for _ in 0..20 {
            let archive = archive();
            let (a, b) = (ClusterIdentity::new(1, None, None), ClusterIdentity::new(2, None, None));
            let (result_a, result_b) = tokio::join!(claim_or_verify(&archive, &a), claim_or_verify(&archive, &b));
            assert!(result_a.is_ok() != result_b.is_ok(), "exactly one wins: {result_a:?} {result_b:?}");
            let owner = read_owner(&archive).await.expect("read").expect("claimed");
            let winner = if result_a.is_ok() { &a } else { &b };
            assert_eq!(&owner, winner);
        }
    }

    /// A store that ignores conditional creates: every create overwrites.
    #[derive(Debug, Default)]
    struct Overwriting(MemoryStorage);

    #[async_trait::async_trait]
    impl Storage for Overwriting {
        async fn put(&self, key: &ObjectKey, body: bytes::Bytes, _mode: PutMode) -> Result<(), StorageError> {
            self.0.put(key, body, PutMode::Overwrite).await
        }
        async fn get(&self, key: &ObjectKey) -> Result<bytes::Bytes, StorageError> {
            self.0.get(key).await
        }
        async fn head(&self, key: &ObjectKey) -> Result<Option<ObjectMeta>, StorageError> {
            self.0.head(key).await
        }
        async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError> {
            self.0.list(prefix).await
        }
        async fn delete(&self, key: &ObjectKey) -> Result<(), StorageError> {
            self.0.delete(key).await
        }
        fn describe(&self) -> String {
            "s3://careless-store/archive".to_string()
        }
    }

    #[tokio::test]
    async fn a_store_that_overwrites_on_create_is_refused_and_nothing_is_claimed() {
        let store = Arc::new(Overwriting::default());
        let archive = Archive::new(store.clone(), ArchiveLayout::under("default/db").expect("layout"));
        let claimant = ClusterIdentity::new(7_000_000_000_000_000_001, Some(15), None);

        let error = claim_or_verify(&archive, &claimant).await.expect_err("an overwriting store");

        let message = error.to_string();
        assert!(matches!(error, IdentityError::Probe(ProbeError::Overwrites { .. })), "{message}");
        assert!(message.starts_with("the store s3://careless-store/archive overwrote default/db/probes/"), "{message}");
        assert!(message.contains("If-None-Match") && message.contains("refuses"), "{message}");
        assert_eq!(read_owner(&archive).await.expect("read"), None, "nothing claimed");
    }

    #[tokio::test]
    async fn claiming_probes_the_store_once_with_a_key_of_its_own() {
        let store = Arc::new(MemoryStorage::new());
        let archive = Archive::new(store.clone(), ArchiveLayout::under("default/db").expect("layout"));
        let claimant = ClusterIdentity::new(7_000_000_000_000_000_001, Some(15), None);
        claim_or_verify(&archive, &claimant).await.expect("claim");
        claim_or_verify(&archive, &claimant).await.expect("verify");
        let probes = store.list("default/db/probes/").await.expect("list");
        assert_eq!(probes.len(), 1, "one probe, at the claim only: {probes:?}");
    }

    #[test]
    fn the_system_identifier_is_a_string_in_json() {
        let identity = ClusterIdentity::new(u64::MAX, Some(15), None);
        let json = serde_json::to_string(&identity).expect("json");
        assert!(json.contains("\"system_identifier\":\"18446744073709551615\""), "{json}");
        assert_eq!(serde_json::from_str::<ClusterIdentity>(&json).expect("parse"), identity);
    }
}
