//! Sealing a file read piece by piece as a series of independent zstd frames, compressed on
//! several threads.
//!
//! A zstd stream fed piece by piece copies every piece into its window and, once the window has
//! wrapped, matches through the slower external-dictionary path for the rest of the file. A
//! frame compressed in one call from a contiguous [`FRAME_LEN`] buffer does neither, and frames
//! are independent, so `workers` threads compress them at once. Concatenated frames are one
//! valid zstd payload: every reader (whole-object and streaming) decodes them in order, and
//! readers from before this change read them unchanged.
//!
//! ```text
//! each of W workers, in turn:  lock → read FRAME_LEN → BLAKE3 (fused with the read) → unlock
//!                              compress in one call (its own context) → slot[frame]
//! then: slots appended in order
//! ```
//! Memory: one input buffer of [`FRAME_LEN`] and one context per worker, and the stored bytes
//! (which the caller holds whole anyway, to upload them).

use std::io::Read;
use std::sync::Mutex;

use super::EnvelopeError;
use crate::compression::{Compression, Compressor};

/// Content bytes per frame: the zstd window at the levels used (level 3: 2 MiB), so a frame
/// boundary loses only the matches that would have crossed it.
pub const FRAME_LEN: usize = 2 * 1024 * 1024;

/// What sealing learnt of the content: its length and BLAKE3 hash.
pub(super) struct Sealed {
    pub content_len: u64,
    pub content_hash: [u8; 32],
}

/// Reads `reader` to its end in [`FRAME_LEN`] pieces, hashing each as it is read, and appends
/// one zstd frame per piece to `out`, compressed by `workers` threads (inline for one). Returns
/// the content length and hash.
pub(super) fn compress_frames(
    reader: &mut (impl Read + Send),
    compression: Compression,
    workers: usize,
    out: &mut Vec<u8>,
) -> Result<Sealed, EnvelopeError> {
    let sealed = match workers.max(1) {
        1 => compress_inline(reader, compression, out)?,
        workers => compress_on_threads(reader, compression, workers, out)?,
    };
    if sealed.content_len == 0 {
        // Empty content is one empty frame: a zstd payload is never zero bytes long.
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

/// The frames compressed by `workers` threads (the calling one and `workers - 1` more), each
/// taking the next frame in turn: read and hashed under one lock (so the hash sees the content
/// in order), compressed outside it. No thread waits on another except for that lock, which
/// matters on busy cores, where every hand-off between threads waits for a time slice.
fn compress_on_threads<R: Read + Send>(
    reader: &mut R,
    compression: Compression,
    workers: usize,
    out: &mut Vec<u8>,
) -> Result<Sealed, EnvelopeError> {
    let source = Mutex::new(Source { reader, hasher: blake3::Hasher::new(), content_len: 0, frames: 0, failed: false });
    let compressed = Mutex::new(Vec::<Option<Vec<u8>>>::new());
    let work = || compress_taking_turns(&source, &compressed, compression);
    let results: Vec<Result<(), EnvelopeError>> = std::thread::scope(|scope| {
        let helpers: Vec<_> = (1..workers).map(|_| scope.spawn(work)).collect();
        let mut results = vec![work()];
        results.extend(helpers.into_iter().map(|helper| helper.join().unwrap_or_else(|_| Err(worker_gone()))));
        results
    });
    results.into_iter().collect::<Result<Vec<()>, _>>()?;
    for frame in compressed.into_inner().map_err(|_| worker_gone())? {
        out.extend_from_slice(&frame.ok_or_else(worker_gone)?);
    }
    let source = source.into_inner().map_err(|_| worker_gone())?;
    Ok(Sealed { content_len: source.content_len, content_hash: *source.hasher.finalize().as_bytes() })
}

/// The content being sealed, read by whichever worker holds the lock.
struct Source<'a, R> {
    reader: &'a mut R,
    hasher: blake3::Hasher,
    content_len: u64,
    frames: usize,
    /// Set when a worker failed: the others stop at their next turn.
    failed: bool,
}

/// One worker: takes the next frame until the content ends, compresses each into its slot.
fn compress_taking_turns<R: Read>(
    source: &Mutex<Source<'_, R>>,
    compressed: &Mutex<Vec<Option<Vec<u8>>>>,
    compression: Compression,
) -> Result<(), EnvelopeError> {
    let result = (|| {
        let mut compressor = Compressor::new(compression)?;
        let mut piece = Vec::new();
        loop {
            let index = {
                let mut source = source.lock().map_err(|_| worker_gone())?;
                if source.failed || read_piece(source.reader, &mut piece)? == 0 {
                    return Ok(());
                }
                source.hasher.update(&piece);
                source.content_len += piece.len() as u64;
                source.frames += 1;
                source.frames - 1
            };
            let mut frame = Vec::new();
            compressor.compress_appending(&piece, &mut frame)?;
            let mut slots = compressed.lock().map_err(|_| worker_gone())?;
            if slots.len() <= index {
                slots.resize(index + 1, None);
            }
            slots[index] = Some(frame);
        }
    })();
    if result.is_err()
        && let Ok(mut source) = source.lock()
    {
        source.failed = true;
    }
    result
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

    use super::FRAME_LEN;
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
            let (stored, header) =
                envelope::seal_reader_parallel(&mut &content[..], content.len(), ZSTD, &Keyring::none(), workers)
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
                envelope::seal_reader_parallel(&mut &content[..], 0, ZSTD, &Keyring::none(), 2).expect("seal");
            assert_eq!(header.content_len, content.len() as u64);
            assert_eq!(envelope::open(&stored).expect("open").0, content);
        }
    }

    #[test]
    fn encrypted_content_sealed_in_frames_opens_with_the_key() {
        let key: Arc<dyn KeyProvider> = Arc::new(StaticKey::from_bytes([5; 32], "test key".to_string()));
        let keyring = Keyring::new(Some(key), Vec::new());
        let content = content();
        let (stored, header) =
            envelope::seal_reader_parallel(&mut &content[..], content.len(), ZSTD, &keyring, 2).expect("seal");
        assert!(header.encrypted);
        assert_eq!(envelope::open_with(&stored, &keyring).expect("open").0, content);
    }

    /// Fails after `left` bytes, like a file whose disk fails mid-read.
    struct FailingAfter<'a> {
        content: &'a [u8],
        left: usize,
    }

    impl Read for FailingAfter<'_> {
        fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
            if self.left == 0 {
                return Err(std::io::Error::other("disk failed"));
            }
            let count = buffer.len().min(self.left).min(self.content.len());
            buffer[..count].copy_from_slice(&self.content[..count]);
            (self.content, self.left) = (&self.content[count..], self.left - count);
            Ok(count)
        }
    }

    #[test]
    fn a_read_that_fails_mid_file_fails_the_seal_and_stops_every_thread() {
        let content = content();
        for workers in [1, 2] {
            let mut reader = FailingAfter { content: &content, left: FRAME_LEN * 3 + 100 };
            let sealed = envelope::seal_reader_parallel(&mut reader, content.len(), ZSTD, &Keyring::none(), workers);
            assert!(matches!(sealed, Err(EnvelopeError::Read(_))), "{workers} workers: {sealed:?}");
        }
    }
}
