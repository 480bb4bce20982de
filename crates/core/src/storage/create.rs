//! Create-only writes that are safe to repeat: when a key is already taken, is it by our content?
//!
//! A create retried after a lost answer finds its own object. Every object pgec2 stores is
//! sealed in an envelope ([`crate::envelope`]) whose header records the length and BLAKE3 hash of
//! the content, so the comparison reads only the stored header ([`Storage::get_start`], a ranged
//! read on S3) and never downloads a large part again. Bodies that are not envelopes are compared
//! byte for byte.

use bytes::Bytes;

use super::{ObjectKey, Storage, StorageError};
use crate::envelope::{self, HEADER_LEN, Header};

/// What the stored object is, compared with the body we meant to store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Comparison {
    Same,
    /// Different content, with a short description of how.
    Different(String),
}

/// Compares the object stored at `key` with `body`.
pub(crate) async fn compare_stored<S: Storage + ?Sized>(
    storage: &S,
    key: &ObjectKey,
    body: &Bytes,
) -> Result<Comparison, StorageError> {
    match envelope::read_header(body) {
        Ok(ours) => {
            let start = storage.get_start(key, HEADER_LEN as u64).await?;
            Ok(match envelope::read_header(&start) {
                Ok(theirs) => compare_headers(&ours, &theirs),
                Err(error) => Comparison::Different(format!("the stored object is not a pgec2 object: {error}")),
            })
        }
        Err(_) => compare_whole(storage, key, body).await,
    }
}

/// Compares the object stored at `key` with `body` byte for byte, whatever it is: for objects
/// whose durability was deferred, a header alone proves nothing (a crash may have torn the body).
pub(crate) async fn compare_whole<S: Storage + ?Sized>(
    storage: &S,
    key: &ObjectKey,
    body: &Bytes,
) -> Result<Comparison, StorageError> {
    let stored = storage.get(key).await?;
    Ok(if stored == *body {
        Comparison::Same
    } else if stored.len() != body.len() {
        Comparison::Different(format!("{} bytes stored, {} bytes to store", stored.len(), body.len()))
    } else {
        let at = stored.iter().zip(body.iter()).position(|(left, right)| left != right).unwrap_or_default();
        Comparison::Different(format!("{} bytes stored and to store, differing from byte {at}", stored.len()))
    })
}

fn compare_headers(ours: &Header, theirs: &Header) -> Comparison {
    if ours.content_hash == theirs.content_hash && ours.content_len == theirs.content_len {
        Comparison::Same
    } else {
        Comparison::Different(format!(
            "stored content has {} bytes with BLAKE3 {}, ours has {} bytes with BLAKE3 {}",
            theirs.content_len,
            theirs.content_hash_hex(),
            ours.content_len,
            ours.content_hash_hex()
        ))
    }
}

/// Turns a comparison into the outcome of a create that found `key` taken.
pub(crate) fn settle(store: &str, key: &ObjectKey, comparison: Comparison) -> Result<(), StorageError> {
    match comparison {
        Comparison::Same => Ok(()),
        Comparison::Different(detail) => {
            Err(StorageError::DifferentContent { store: store.to_string(), key: key.as_str().to_string(), detail })
        }
    }
}
