//! Multipart upload of large bodies: create, upload parts a few at a time, complete (with
//! `If-None-Match: *` for a conditional create), and abort on any failure.

use aws_sdk_s3::Client;
use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::operation::complete_multipart_upload::CompleteMultipartUploadError;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use super::errors::storage_error;
use super::{ObjectEncryption, S3Storage, ServerSideEncryption};
use pgec2_core::storage::{ObjectKey, PutMode, Storage, StorageError};

/// S3 accepts at most this many parts in one upload.
const MAX_PARTS: u64 = 10_000;
/// S3 refuses parts (but the last) smaller than this.
const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;

/// When and how bodies are split into a multipart upload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MultipartSettings {
    /// Bodies larger than this many bytes go up in parts.
    pub threshold: u64,
    /// Size of every part but the last (grown when a body would need more than 10,000 parts).
    pub part_size: u64,
    /// Parts uploaded at the same time.
    pub concurrency: usize,
}

impl Default for MultipartSettings {
    fn default() -> Self {
        Self { threshold: 16 * 1024 * 1024, part_size: 16 * 1024 * 1024, concurrency: 4 }
    }
}

impl MultipartSettings {
    pub(super) fn validate(&self) -> Result<(), String> {
        if self.part_size < MIN_PART_SIZE {
            return Err(format!("multipart parts must be at least {MIN_PART_SIZE} bytes"));
        }
        if self.concurrency == 0 {
            return Err("multipart concurrency must be at least 1".to_string());
        }
        Ok(())
    }

    /// The part size for a body of `size` bytes.
    fn part_size_for(&self, size: u64) -> u64 {
        self.part_size.max(size.div_ceil(MAX_PARTS))
    }
}

/// Aborts the upload when dropped armed: on failure, and when the caller gives up on the put
/// (a timeout drops the future), so that no invisible parts are left to pay for.
struct AbortOnDrop {
    client: Client,
    bucket: String,
    key: String,
    upload_id: String,
    armed: bool,
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let abort = self.client.abort_multipart_upload().bucket(&self.bucket).key(&self.key).upload_id(&self.upload_id);
        let key = self.key.clone();
        runtime.spawn(async move {
            if let Err(error) = abort.send().await {
                tracing::warn!(%key, error = %super::errors::describe(&error), "failed to abort a multipart upload");
            }
        });
    }
}

/// Uploads `body` to `key` in parts; see the module documentation.
pub(super) async fn upload(store: &S3Storage, key: &ObjectKey, body: Bytes, mode: PutMode) -> Result<(), StorageError> {
    let description = store.describe();
    let request = store.request(&description, "put", key.as_str());
    // A conditional create of an object that exists would upload everything only to be refused.
    if mode == PutMode::CreateNew && store.head(key).await?.is_some() {
        return Err(StorageError::already_exists(&description, key.as_str()));
    }
    let object = store.object_key(key.as_str());
    let create = store.client.create_multipart_upload().bucket(&store.settings.bucket).key(&object);
    let create = with_write_options!(create, store).checksum_algorithm(ChecksumAlgorithm::Crc32);
    let created = store.send(request, create.send()).await?;
    let Some(upload_id) = created.upload_id().map(str::to_string) else {
        return Err(request.permanent("CreateMultipartUpload answered without an upload id"));
    };
    let mut guard = AbortOnDrop {
        client: store.client.clone(),
        bucket: store.settings.bucket.clone(),
        key: object.clone(),
        upload_id: upload_id.clone(),
        armed: true,
    };
    let parts = upload_parts(store, key, &object, &upload_id, body.clone()).await?;
    let mut complete = store
        .client
        .complete_multipart_upload()
        .bucket(&store.settings.bucket)
        .key(&object)
        .upload_id(&upload_id)
        .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build());
    if mode == PutMode::CreateNew {
        complete = complete.if_none_match("*");
    }
    match store.watched(request, complete.send()).await? {
        Ok(_) => {}
        Err(error) if completed_with_another_root(&error) => verify_size(store, key, body.len() as u64).await?,
        Err(error) => return Err(storage_error(request, error)),
    }
    guard.armed = false;
    Ok(())
}

/// Some S3-compatible servers (moto among them) answer a successful CompleteMultipartUpload
/// with a `CompleteMultipartUploadResponse` root element instead of S3's
/// `CompleteMultipartUploadResult`, which the SDK refuses to parse. A 200 answer whose body is
/// that element (and not an `<Error>`, which S3 may also send with a 200) is a success.
fn completed_with_another_root(error: &SdkError<CompleteMultipartUploadError>) -> bool {
    let Some(response) = error.raw_response() else { return false };
    let Some(body) = response.body().bytes() else { return false };
    let text = String::from_utf8_lossy(body);
    response.status().as_u16() == 200 && text.contains("<CompleteMultipartUploadResponse") && !text.contains("<Error>")
}

/// Confirms that the completed object has the uploaded size before reporting success.
async fn verify_size(store: &S3Storage, key: &ObjectKey, size: u64) -> Result<(), StorageError> {
    match store.head(key).await? {
        Some(meta) if meta.size == size => Ok(()),
        found => Err(StorageError::transient(
            &store.describe(),
            "put",
            key.as_str(),
            format!(
                "the multipart upload completed but the object has size {:?}, expected {size}",
                found.map(|meta| meta.size)
            ),
        )),
    }
}

/// Uploads every part, at most `concurrency` at a time; returns them in part order.
async fn upload_parts(
    store: &S3Storage,
    key: &ObjectKey,
    object: &str,
    upload_id: &str,
    body: Bytes,
) -> Result<Vec<CompletedPart>, StorageError> {
    let size = body.len() as u64;
    let part_size = store.settings.multipart.part_size_for(size);
    let ranges = (0..size.div_ceil(part_size)).map(|index| {
        let start = index * part_size;
        (index as i32 + 1, body.slice(start as usize..(start + part_size).min(size) as usize))
    });
    let mut parts: Vec<CompletedPart> = futures::stream::iter(ranges)
        .map(|(number, chunk)| upload_part(store, key, object, upload_id, number, chunk))
        .buffer_unordered(store.settings.multipart.concurrency)
        .try_collect()
        .await?;
    parts.sort_by_key(|part| part.part_number());
    Ok(parts)
}

async fn upload_part(
    store: &S3Storage,
    key: &ObjectKey,
    object: &str,
    upload_id: &str,
    number: i32,
    chunk: Bytes,
) -> Result<CompletedPart, StorageError> {
    let description = store.describe();
    let request = store.request(&description, "put", key.as_str());
    let call = store
        .client
        .upload_part()
        .bucket(&store.settings.bucket)
        .key(object)
        .upload_id(upload_id)
        .part_number(number)
        .checksum_algorithm(ChecksumAlgorithm::Crc32);
    let size = chunk.len() as u64;
    let call = call.body(ByteStream::from(chunk));
    let uploaded =
        store.send(request, async { call.customize().interceptor(store.body_progress(size)).send().await }).await?;
    let Some(e_tag) = uploaded.e_tag() else {
        return Err(request.transient(format!("UploadPart {number} answered without an ETag")));
    };
    Ok(CompletedPart::builder()
        .part_number(number)
        .e_tag(e_tag)
        .set_checksum_crc32(uploaded.checksum_crc32().map(str::to_string))
        .build())
}
