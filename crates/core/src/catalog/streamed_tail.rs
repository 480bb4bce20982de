//! Where the streamed tail ends: `wal-receive` stores the segment being filled as
//! `<segment>.partial`, the segment's first bytes. The object's envelope header records how
//! many (the content length), so the streamed end LSN is the segment's start plus that length,
//! read with one ranged read of the header, never a download.
//!
//! The header is read before the content is verified (`wal-fetch` verifies it when it restores
//! the tail): a damaged or foreign header, or one longer than a segment, counts as no streamed
//! end, so an LSN target in it is refused rather than trusted.

use futures::{StreamExt, TryStreamExt};

use super::{CATALOG_CONCURRENCY, CatalogError, WalArchive, storage};
use crate::envelope;
use crate::layout::Archive;
use crate::storage::ObjectKey;
use crate::wal::{Lsn, SegmentSize, TimelineId, WalFileName};

/// Reads where each partial of [`WalArchive::tail_partials`] ends into
/// [`WalArchive::streamed_ends`].
pub async fn load_streamed_ends(archive: &Archive, wal: &mut WalArchive) -> Result<(), CatalogError> {
    let size = wal.segment_size;
    let partials: Vec<(TimelineId, u64, ObjectKey)> = wal
        .tail_partials()
        .into_iter()
        .map(|(timeline, segment, meta)| (timeline, segment, meta.key.clone()))
        .collect();
    let ends: Vec<_> = futures::stream::iter(partials)
        .map(|(timeline, segment, key)| async move {
            let end = read_end(archive, &key, size, segment).await?;
            Ok::<_, CatalogError>(end.map(|end| ((timeline, segment), end)))
        })
        .buffer_unordered(CATALOG_CONCURRENCY)
        .try_collect()
        .await?;
    wal.streamed_ends.extend(ends.into_iter().flatten());
    Ok(())
}

/// Where the stored `.partial` of segment `segment` on `timeline` ends; `None` when the archive
/// has none (or its header cannot be read as one).
pub async fn partial_end(
    archive: &Archive,
    size: SegmentSize,
    timeline: TimelineId,
    segment: u64,
) -> Result<Option<Lsn>, CatalogError> {
    let name = WalFileName::Partial { timeline, segment_name: size.segment_name(timeline, segment) }.file_name();
    let key = archive.layout.wal_file(&name).map_err(storage("name", &name))?;
    read_end(archive, &key, size, segment).await
}

async fn read_end(
    archive: &Archive,
    key: &ObjectKey,
    size: SegmentSize,
    segment: u64,
) -> Result<Option<Lsn>, CatalogError> {
    let start = match archive.storage.get_start(key, envelope::HEADER_LEN as u64).await {
        Ok(start) => start,
        Err(error) if error.is_not_found() => return Ok(None),
        Err(error) => return Err(storage("read", key.as_str())(error)),
    };
    Ok(streamed_end(&start, size, segment))
}

/// The end LSN a partial's stored start (at least its envelope header) records.
fn streamed_end(stored_start: &[u8], size: SegmentSize, segment: u64) -> Option<Lsn> {
    let header = envelope::read_header(stored_start).ok()?;
    (header.content_len <= size.bytes()).then(|| Lsn(size.start_of(segment).0 + header.content_len))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;
    use crate::compression::Compression;
    use crate::layout::ArchiveLayout;
    use crate::storage::PutMode;
    use crate::storage::memory::MemoryStorage;

    async fn store(archive: &Archive, file: &str, content: &[u8]) {
        let key = archive.layout.wal_file(file).expect("key");
        let (sealed, _) = envelope::seal(content, Compression::default()).expect("seal");
        archive.storage.put(&key, Bytes::from(sealed), PutMode::CreateNew).await.expect("store");
    }

    #[tokio::test]
    async fn loading_the_wal_archive_reads_where_the_tail_partials_end_and_only_those() {
        let archive = Archive::new(Arc::new(MemoryStorage::new()), ArchiveLayout::under("db").expect("layout"));
        let size = SegmentSize::default();
        for segment in [2, 3] {
            store(&archive, &size.segment_name(1, segment), b"complete").await;
        }
        store(&archive, &format!("{}.partial", size.segment_name(1, 3)), &[1; 10]).await;
        store(&archive, &format!("{}.partial", size.segment_name(1, 4)), &[1; 300]).await;
        store(&archive, &format!("{}.partial", size.segment_name(2, 9)), &[1; 20]).await;
        let wal = super::super::load_wal_archive(&archive, size).await.expect("load");
        let expected = [((1, 4), Lsn(4 * size.bytes() + 300)), ((2, 9), Lsn(9 * size.bytes() + 20))];
        assert_eq!(wal.streamed_ends, expected.into_iter().collect(), "the superseded partial of 3 is not read");
        assert_eq!(partial_end(&archive, size, 1, 4).await.expect("read"), Some(Lsn(4 * size.bytes() + 300)));
        assert_eq!(partial_end(&archive, size, 1, 5).await.expect("read"), None);
        assert!(wal.location.ends_with("db"), "{}", wal.location);
    }

    /// The partials of the archive's tail behind the fault injector and the agent's retries
    /// (short delays); the handle injects faults on the reads of `.partial` objects.
    async fn faulty_tail(policy_attempts: u32) -> (Archive, crate::storage::fault::FaultHandle, SegmentSize) {
        use crate::storage::Timeouts;
        use crate::storage::fault::FaultInjecting;
        use crate::storage::retry::{RetryPolicy, Retrying};
        use std::time::Duration;
        let memory = Archive::new(Arc::new(MemoryStorage::new()), ArchiveLayout::under("db").expect("layout"));
        let size = SegmentSize::default();
        store(&memory, &size.segment_name(1, 3), b"complete").await;
        store(&memory, &format!("{}.partial", size.segment_name(1, 4)), &[1; 300]).await;
        let injector = FaultInjecting::new(memory.storage.clone());
        let faults = injector.handle();
        let policy = RetryPolicy {
            max_attempts: policy_attempts,
            initial_backoff: Duration::from_millis(2),
            max_backoff: Duration::from_millis(20),
            ..RetryPolicy::default()
        };
        let timeouts = Timeouts { operation: Duration::from_millis(500), min_bytes_per_second: 1024 * 1024 };
        let retried = Retrying::new(injector, timeouts, policy);
        (Archive::new(Arc::new(retried), memory.layout.clone()), faults, size)
    }

    #[tokio::test]
    async fn lost_answers_and_throttling_on_a_partials_header_are_retried_and_its_end_is_read() {
        use crate::storage::fault::{Fault, Operation, Rule};
        use std::time::Duration;
        let (archive, faults, size) = faulty_tail(10).await;
        let partial = |key: &str| key.ends_with(".partial");
        faults.add(Rule::new(Fault::Stall(Duration::from_secs(2))).on(Operation::Get).matching(partial).times(1));
        faults.add(Rule::new(Fault::Throttle).on(Operation::Get).matching(partial).times(2));
        let wal = super::super::load_wal_archive(&archive, size).await.expect("retried");
        assert_eq!(faults.injected(), 3, "the faults were injected");
        assert_eq!(wal.streamed_ends.get(&(1, 4)), Some(&Lsn(4 * size.bytes() + 300)));
    }

    #[tokio::test]
    async fn a_partials_header_the_store_keeps_refusing_fails_the_load_naming_the_object() {
        use crate::storage::fault::{Fault, Operation, Rule};
        let (archive, faults, size) = faulty_tail(3).await;
        faults.add(Rule::new(Fault::Throttle).on(Operation::Get).matching(|key: &str| key.ends_with(".partial")));
        let error = super::super::load_wal_archive(&archive, size).await.expect_err("out of retries");
        let text = error.to_string();
        assert!(text.contains(&format!("{}.partial", size.segment_name(1, 4))), "{text}");
    }

    #[test]
    fn the_streamed_end_is_the_segment_start_plus_the_recorded_length() {
        let size = SegmentSize::default();
        let (sealed, _) = envelope::seal(&vec![7u8; 5000], Compression::default()).expect("seal");
        assert_eq!(streamed_end(&sealed[..envelope::HEADER_LEN], size, 3), Some(Lsn(3 * size.bytes() + 5000)));
        assert_eq!(streamed_end(b"not an envelope", size, 3), None, "a foreign object has no streamed end");
        let (too_long, _) =
            envelope::seal(&vec![0u8; size.bytes() as usize + 1], Compression::default()).expect("seal");
        assert_eq!(streamed_end(&too_long, size, 3), None, "longer than a segment: not a partial");
    }
}
