//! Sealing content as a series of independent zstd frames, compressed on several threads.
//!
//! A zstd stream fed piece by piece copies every piece into its window and, once the window has
//! wrapped, matches through the slower external-dictionary path for the rest of the file. A
//! frame compressed in one call from a contiguous [`FRAME_LEN`] buffer does neither, and frames
//! are independent, so `workers` threads compress them at once. Concatenated frames are one
//! valid zstd payload: every reader (whole-object and streaming) decodes them in order, and
//! readers from before this change read them unchanged.
//!
//! Content read at offsets (a file, [`ReadAt`]) is sealed with nothing shared between the
//! threads but a frame counter: each reads its own frame with `pread`, hashes it as the BLAKE3
//! subtree at that offset and compresses it; the subtree hashes are merged into the standard
//! BLAKE3 hash of the whole content at the end (the same hash one thread reading in order
//! computes, which the tests check).
//!
//! ```text
//! each of W workers:  i = next frame → pread FRAME_LEN at i × FRAME_LEN → BLAKE3 subtree at that
//!                     offset → compress in one call (its own context) → slot[i]
//! then: slots appended in order, subtree hashes merged into the root hash
//! ```
//! Memory: one input buffer of [`FRAME_LEN`] and one context per worker, and the stored bytes
//! (which the caller holds whole anyway, to upload them).

use std::io::Read;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use blake3::hazmat::{ChainingValue, HasherExt, Mode, left_subtree_len, merge_subtrees_non_root, merge_subtrees_root};

use super::EnvelopeError;
use crate::compression::{Compression, Compressor};

/// Content bytes per frame: the zstd window at the levels used (level 3: 2 MiB), so a frame
/// boundary loses only the matches that would have crossed it. A power of two of BLAKE3 chunks,
/// so that every frame is one subtree of the content's hash tree.
pub const FRAME_LEN: usize = 2 * 1024 * 1024;

/// What sealing learnt of the content: its length and BLAKE3 hash.
pub(super) struct Sealed {
    pub content_len: u64,
    pub content_hash: [u8; 32],
}

/// Content that several threads can read at any offset at once: a file, through `pread`.
pub trait ReadAt: Sync {
    /// Reads up to `buffer.len()` bytes at `offset`; 0 at or past the end.
    fn read_at(&self, buffer: &mut [u8], offset: u64) -> std::io::Result<usize>;
}

impl ReadAt for std::fs::File {
    fn read_at(&self, buffer: &mut [u8], offset: u64) -> std::io::Result<usize> {
        std::os::unix::fs::FileExt::read_at(self, buffer, offset)
    }
}

impl ReadAt for [u8] {
    fn read_at(&self, buffer: &mut [u8], offset: u64) -> std::io::Result<usize> {
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(self.len());
        let count = buffer.len().min(self.len() - start);
        buffer[..count].copy_from_slice(&self[start..start + count]);
        Ok(count)
    }
}

/// A [`ReadAt`] read in order from its start, for the one-thread path.
pub(super) struct InOrder<'a, S: ?Sized> {
    pub source: &'a S,
    pub offset: u64,
}

impl<S: ReadAt + ?Sized> Read for InOrder<'_, S> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let read = self.source.read_at(buffer, self.offset)?;
        self.offset += read as u64;
        Ok(read)
    }
}

/// Reads `reader` to its end in [`FRAME_LEN`] pieces, hashing each as it is read, and appends
/// one zstd frame per piece to `out`, on the calling thread. Returns the content length and hash.
pub(super) fn compress_frames(
    reader: &mut impl Read,
    compression: Compression,
    out: &mut Vec<u8>,
) -> Result<Sealed, EnvelopeError> {
    let sealed = compress_inline(reader, compression, out)?;
    finish_empty(sealed, compression, out)
}

/// Like [`compress_frames`], reading `source` at offsets, the frames compressed by `workers`
/// threads (inline for one).
pub(super) fn compress_frames_at<S: ReadAt + ?Sized>(
    source: &S,
    compression: Compression,
    workers: usize,
    out: &mut Vec<u8>,
) -> Result<Sealed, EnvelopeError> {
    let sealed = match workers.max(1) {
        1 => compress_inline(&mut InOrder { source, offset: 0 }, compression, out)?,
        workers => compress_on_threads(source, compression, workers, out)?,
    };
    finish_empty(sealed, compression, out)
}

/// Empty content is one empty frame: a zstd payload is never zero bytes long.
fn finish_empty(sealed: Sealed, compression: Compression, out: &mut Vec<u8>) -> Result<Sealed, EnvelopeError> {
    if sealed.content_len == 0 {
        Compressor::new(compression)?.compress_appending(&[], out)?;
    }
    Ok(sealed)
}

/// The frames compressed one after the other on the calling thread.
fn compress_inline(
    reader: &mut impl Read,
    compression: Compression,
    out: &mut Vec<u8>,
) -> Result<Sealed, EnvelopeError> {
    let mut hasher = blake3::Hasher::new();
    let mut content_len = 0u64;
    let mut compressor = Compressor::new(compression)?;
    let mut piece = Vec::new();
    while read_piece(reader, &mut piece)? > 0 {
        hasher.update(&piece);
        content_len += piece.len() as u64;
        compressor.compress_appending(&piece, out)?;
    }
    Ok(Sealed { content_len, content_hash: *hasher.finalize().as_bytes() })
}

/// One frame sealed by a worker: its content length, the BLAKE3 chaining value of its subtree,
/// the root hash when it is the first frame (the whole hash if it is the only one), and where
/// its compressed bytes are: in which worker's output, at which range.
struct Frame {
    len: usize,
    subtree: ChainingValue,
    root: Option<blake3::Hash>,
    worker: usize,
    compressed: std::ops::Range<usize>,
}

/// What the workers share: the next frame to take, the first frame index known to be past the
/// end, whether one failed, and the sealed frames by index.
struct Shared {
    next: AtomicUsize,
    end: AtomicUsize,
    failed: AtomicBool,
    frames: Mutex<Vec<Option<Frame>>>,
}

/// The frames read, hashed and compressed by `workers` threads (the calling one and `workers -
/// 1` more), each taking the next frame index: no lock is held while reading, hashing or
/// compressing, which matters on busy cores, where every hand-off between threads waits for a
/// time slice.
fn compress_on_threads<S: ReadAt + ?Sized>(
    source: &S,
    compression: Compression,
    workers: usize,
    out: &mut Vec<u8>,
) -> Result<Sealed, EnvelopeError> {
    let shared = Shared {
        next: AtomicUsize::new(0),
        end: AtomicUsize::new(usize::MAX),
        failed: AtomicBool::new(false),
        frames: Mutex::new(Vec::new()),
    };
    let work = |worker| seal_frames(source, &shared, compression, worker);
    let results: Vec<Result<Vec<u8>, EnvelopeError>> = std::thread::scope(|scope| {
        let helpers: Vec<_> = (1..workers).map(|worker| scope.spawn(move || work(worker))).collect();
        let mut results = vec![work(0)];
        results.extend(helpers.into_iter().map(|helper| helper.join().unwrap_or_else(|_| Err(worker_gone()))));
        results
    });
    let outputs = results.into_iter().collect::<Result<Vec<Vec<u8>>, _>>()?;
    let end = shared.end.load(Ordering::Acquire);
    let frames = in_order(shared.frames.into_inner().map_err(|_| worker_gone())?, end)?;
    let content_len = frames.iter().map(|frame| frame.len as u64).sum();
    for frame in &frames {
        let output = outputs.get(frame.worker).ok_or_else(worker_gone)?;
        out.extend_from_slice(output.get(frame.compressed.clone()).ok_or_else(worker_gone)?);
    }
    Ok(Sealed { content_len, content_hash: *root_hash(&frames, content_len)?.as_bytes() })
}

/// One worker (`worker` of the threads): takes the next frame until the content ends, seals each
/// into its slot, the compressed bytes appended to one output buffer of its own (no allocation
/// per frame), which it returns.
fn seal_frames<S: ReadAt + ?Sized>(
    source: &S,
    shared: &Shared,
    compression: Compression,
    worker: usize,
) -> Result<Vec<u8>, EnvelopeError> {
    let mut output = Vec::new();
    let result = (|| {
        let mut compressor = Compressor::new(compression)?;
        let mut piece = vec![0u8; FRAME_LEN];
        loop {
            let index = shared.next.fetch_add(1, Ordering::AcqRel);
            if shared.failed.load(Ordering::Acquire) || index >= shared.end.load(Ordering::Acquire) {
                return Ok(());
            }
            let offset = (index * FRAME_LEN) as u64;
            let len = read_frame_at(source, &mut piece, offset)?;
            if len < FRAME_LEN {
                // The content ends in this frame (or before it): nobody takes a later one.
                shared.end.fetch_min(if len == 0 { index } else { index + 1 }, Ordering::AcqRel);
            }
            if len == 0 {
                return Ok(());
            }
            let mut hasher = blake3::Hasher::new();
            hasher.set_input_offset(offset).update(&piece[..len]);
            let (subtree, root) = (hasher.finalize_non_root(), (index == 0).then(|| hasher.finalize()));
            let start = output.len();
            compressor.compress_appending(&piece[..len], &mut output)?;
            let compressed = start..output.len();
            let mut frames = shared.frames.lock().map_err(|_| worker_gone())?;
            if frames.len() <= index {
                frames.resize_with(index + 1, || None);
            }
            frames[index] = Some(Frame { len, subtree, root, worker, compressed });
        }
    })();
    if result.is_err() {
        shared.failed.store(true, Ordering::Release);
    }
    result.map(|()| output)
}

/// Fills `piece` from `offset` until it is full or the content ends; the bytes read.
fn read_frame_at<S: ReadAt + ?Sized>(source: &S, piece: &mut [u8], offset: u64) -> Result<usize, EnvelopeError> {
    let mut filled = 0;
    while filled < piece.len() {
        match source.read_at(&mut piece[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(read) => filled += read,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(EnvelopeError::Read(error)),
        }
    }
    Ok(filled)
}

/// The frames before `end`, in order, refusing a gap, a short frame before the last, or a frame
/// read past the end another worker found: the content changed length while it was being read.
fn in_order(slots: Vec<Option<Frame>>, end: usize) -> Result<Vec<Frame>, EnvelopeError> {
    let read_past_end = slots.iter().skip(end).any(Option::is_some);
    let frames: Vec<Frame> = slots.into_iter().take(end).flatten().collect();
    let short_before_last = frames.iter().rev().skip(1).any(|frame| frame.len != FRAME_LEN);
    if read_past_end || short_before_last || (end != usize::MAX && frames.len() != end) {
        return Err(changed_length());
    }
    Ok(frames)
}

/// The error for content whose length changed while it was read.
fn changed_length() -> EnvelopeError {
    EnvelopeError::Read(std::io::Error::other(
        "the file changed length while it was being read; it must not change while it is archived",
    ))
}

/// The BLAKE3 hash of the whole content from its frames' subtrees: the standard tree, in which
/// every split of a range longer than a frame falls on a frame boundary (the left side is the
/// largest power of two of chunks, and a frame is one).
fn root_hash(frames: &[Frame], content_len: u64) -> Result<blake3::Hash, EnvelopeError> {
    match frames {
        [] => Ok(blake3::Hasher::new().finalize()),
        // The first frame's worker computed its root hash too.
        [only] => only.root.ok_or_else(worker_gone),
        _ => {
            let left = left_subtree_len(content_len);
            let left_frames = usize::try_from(left).unwrap_or(usize::MAX) / FRAME_LEN;
            let (left_cv, right_cv) =
                (subtree(&frames[..left_frames], left), subtree(&frames[left_frames..], content_len - left));
            Ok(merge_subtrees_root(&left_cv, &right_cv, Mode::Hash))
        }
    }
}

/// The chaining value of the subtree over `frames`, `len` content bytes (not the root).
fn subtree(frames: &[Frame], len: u64) -> ChainingValue {
    if len <= FRAME_LEN as u64 {
        return frames[0].subtree;
    }
    let left = left_subtree_len(len);
    let left_frames = usize::try_from(left).unwrap_or(usize::MAX) / FRAME_LEN;
    merge_subtrees_non_root(
        &subtree(&frames[..left_frames], left),
        &subtree(&frames[left_frames..], len - left),
        Mode::Hash,
    )
}

fn worker_gone() -> EnvelopeError {
    EnvelopeError::Read(std::io::Error::other("a compression thread stopped before the content was sealed"))
}

/// Replaces `piece` with the next up to [`FRAME_LEN`] bytes of `reader`; their count (0 at the
/// end).
fn read_piece(reader: &mut impl Read, piece: &mut Vec<u8>) -> Result<usize, EnvelopeError> {
    piece.clear();
    piece.reserve(FRAME_LEN);
    let read = reader.take(FRAME_LEN as u64).read_to_end(piece).map_err(EnvelopeError::Read)?;
    Ok(read)
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::sync::Arc;

    use super::{FRAME_LEN, Frame, ReadAt, in_order};
    use crate::compression::{Algorithm, Compression};
    use crate::encryption::{KeyProvider, Keyring, StaticKey};
    use crate::envelope::{self, EnvelopeError};

    const ZSTD: Compression = Compression { algorithm: Algorithm::Zstd, level: 3 };

    /// Five and a half frames of mixed, partly compressible bytes.
    fn content() -> Vec<u8> {
        (0..(FRAME_LEN * 11 / 2) as u32 / 4)
            .flat_map(|n| (n.wrapping_mul(2_654_435_761) >> (n % 29)).to_le_bytes())
            .collect()
    }

    fn read_all(mut reader: impl Read) -> Vec<u8> {
        let mut content = Vec::new();
        reader.read_to_end(&mut content).expect("read the opened content");
        content
    }

    #[test]
    fn content_sealed_in_frames_on_any_number_of_threads_opens_whole_and_streamed() {
        let content = content();
        let (_, expected) = envelope::seal(&content, ZSTD).expect("seal");
        let mut first_stored = None;
        for workers in [1, 2, 3] {
            let (stored, header) = envelope::seal_at(&content[..], content.len(), ZSTD, &Keyring::none(), workers)
                .expect("seal in frames");
            assert_eq!(header, expected, "{workers} workers: same length and hash as sealing at once");
            assert_eq!(envelope::open(&stored).expect("open").0, content, "{workers} workers");
            let streamed = read_all(envelope::open_reader(&stored).expect("open reader"));
            assert_eq!(streamed, content, "{workers} workers, streamed");
            let first = first_stored.get_or_insert_with(|| stored.clone());
            assert!(*first == stored, "the stored bytes do not depend on the number of threads");
        }
    }

    #[test]
    fn an_empty_file_and_a_file_of_exactly_one_frame_seal_in_frames() {
        for content in [Vec::new(), vec![7u8; FRAME_LEN]] {
            let (stored, header) =
                envelope::seal_at(&content[..], content.len(), ZSTD, &Keyring::none(), 2).expect("seal");
            assert_eq!(header.content_len, content.len() as u64);
            assert_eq!(envelope::open(&stored).expect("open").0, content);
        }
    }

    #[test]
    fn encrypted_content_sealed_in_frames_opens_with_the_key() {
        let key: Arc<dyn KeyProvider> = Arc::new(StaticKey::from_bytes([5; 32], "test key".to_string()));
        let keyring = Keyring::new(Some(key), Vec::new());
        let content = content();
        let (stored, header) = envelope::seal_at(&content[..], content.len(), ZSTD, &keyring, 2).expect("seal");
        assert!(header.encrypted);
        assert_eq!(envelope::open_with(&stored, &keyring).expect("open").0, content);
    }

    /// Fails at and after `from`, like a file whose disk fails mid-read.
    struct FailingFrom<'a> {
        content: &'a [u8],
        from: u64,
    }

    impl ReadAt for FailingFrom<'_> {
        fn read_at(&self, buffer: &mut [u8], offset: u64) -> std::io::Result<usize> {
            if offset >= self.from {
                return Err(std::io::Error::other("disk failed"));
            }
            let before_failure = usize::try_from(self.from - offset).unwrap_or(usize::MAX);
            let count = buffer.len().min(before_failure);
            self.content.read_at(&mut buffer[..count], offset)
        }
    }

    #[test]
    fn a_read_that_fails_mid_file_fails_the_seal_and_stops_every_thread() {
        let content = content();
        for workers in [1, 2, 3] {
            let source = FailingFrom { content: &content, from: (FRAME_LEN * 3 + 100) as u64 };
            let sealed = envelope::seal_at(&source, content.len(), ZSTD, &Keyring::none(), workers);
            assert!(matches!(sealed, Err(EnvelopeError::Read(_))), "{workers} workers: {sealed:?}");
        }
    }

    fn frame(len: usize) -> Option<Frame> {
        Some(Frame { len, subtree: [0; 32], root: None, worker: 0, compressed: 0..0 })
    }

    #[test]
    fn frames_with_a_gap_or_read_past_the_end_are_refused_as_content_that_changed_length() {
        let full = FRAME_LEN;
        assert_eq!(in_order(vec![frame(full), frame(full / 2)], 2).expect("in order").len(), 2);
        assert_eq!(in_order(vec![frame(full), frame(full)], 2).expect("exactly two frames").len(), 2);
        let refused = [
            (vec![frame(full), frame(full / 2), frame(full)], 2, "a frame read past the end another worker found"),
            (vec![frame(full / 2), frame(full)], 2, "a short frame before the last"),
            (vec![frame(full), None, frame(100)], 3, "a missing frame"),
        ];
        for (slots, end, case) in refused {
            let Err(EnvelopeError::Read(error)) = in_order(slots, end) else { panic!("{case}: accepted") };
            assert!(error.to_string().contains("changed length"), "{case}: {error}");
        }
    }

    #[test]
    fn the_hash_merged_from_frames_is_blake3_of_the_whole_content_at_every_length() {
        let content = content();
        let frame = FRAME_LEN;
        let lengths = [
            0,
            1,
            1024,
            1025,
            frame - 1,
            frame,
            frame + 1,
            2 * frame,
            2 * frame + 1024,
            3 * frame - 7,
            3 * frame,
            4 * frame,
            4 * frame + 1,
            5 * frame + 12_345,
            content.len(),
        ];
        for len in lengths {
            let content = &content[..len];
            for workers in [2, 3, 4] {
                let (stored, header) =
                    envelope::seal_at(content, len, ZSTD, &Keyring::none(), workers).expect("seal in frames");
                assert_eq!(header.content_hash, *blake3::hash(content).as_bytes(), "{len} bytes, {workers} workers");
                assert_eq!(header.content_len, len as u64, "{len} bytes, {workers} workers");
                assert_eq!(envelope::open(&stored).expect("open").0, content, "{len} bytes, {workers} workers");
            }
        }
    }

    #[test]
    fn a_file_is_sealed_from_its_offsets_like_from_memory() {
        let content = content();
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("000000010000000000000001");
        std::fs::write(&path, &content).expect("write");
        let file = std::fs::File::open(&path).expect("open");
        let (from_file, _) = envelope::seal_at(&file, content.len(), ZSTD, &Keyring::none(), 2).expect("seal file");
        let (from_memory, _) = envelope::seal_at(&content[..], content.len(), ZSTD, &Keyring::none(), 1).expect("seal");
        assert!(from_file == from_memory, "the same stored bytes");
    }
}
