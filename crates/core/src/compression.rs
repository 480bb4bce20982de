//! Compression algorithms for stored objects.

use std::fmt;
use std::io::{Read, Write};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The algorithm that compressed an object's content, recorded in its envelope.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    None,
    #[default]
    Zstd,
    Lz4,
}

impl Algorithm {
    pub(crate) fn code(self) -> u8 {
        match self {
            Algorithm::None => 0,
            Algorithm::Zstd => 1,
            Algorithm::Lz4 => 2,
        }
    }

    pub(crate) fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(Algorithm::None),
            1 => Some(Algorithm::Zstd),
            2 => Some(Algorithm::Lz4),
            _ => None,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Algorithm::None => "none",
            Algorithm::Zstd => "zstd",
            Algorithm::Lz4 => "lz4",
        })
    }
}

impl FromStr for Algorithm {
    type Err = CompressionError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.to_ascii_lowercase().as_str() {
            "none" => Ok(Algorithm::None),
            "zstd" => Ok(Algorithm::Zstd),
            "lz4" => Ok(Algorithm::Lz4),
            _ => Err(CompressionError::UnknownAlgorithm(text.to_string())),
        }
    }
}

/// An algorithm and its level (the level matters only for zstd: 1..=19, default 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compression {
    pub algorithm: Algorithm,
    pub level: i32,
}

impl Default for Compression {
    fn default() -> Self {
        Self { algorithm: Algorithm::Zstd, level: 3 }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CompressionError {
    #[error("unknown compression {0:?}: use zstd, lz4 or none")]
    UnknownAlgorithm(String),
    #[error("compression level {0} is out of range: zstd accepts 1 to 19")]
    LevelOutOfRange(i32),
    #[error("{algorithm} compression failed: {source}")]
    Compress { algorithm: Algorithm, source: std::io::Error },
    #[error("{algorithm} decompression failed (corrupt object?): {source}")]
    Decompress { algorithm: Algorithm, source: std::io::Error },
}

impl Compression {
    /// Validates the level for the algorithm.
    pub fn new(algorithm: Algorithm, level: i32) -> Result<Self, CompressionError> {
        if algorithm == Algorithm::Zstd && !(1..=19).contains(&level) {
            return Err(CompressionError::LevelOutOfRange(level));
        }
        Ok(Self { algorithm, level })
    }

    /// Compresses `content` into a new buffer.
    pub fn compress(&self, content: &[u8]) -> Result<Vec<u8>, CompressionError> {
        self.compress_appending(content, Vec::new())
    }

    /// Compresses `content` to the end of `out` (which may already hold a header), so that the
    /// stored object is built in one buffer without copying the compressed bytes again.
    pub fn compress_appending(&self, content: &[u8], mut out: Vec<u8>) -> Result<Vec<u8>, CompressionError> {
        let wrap = |source| CompressionError::Compress { algorithm: self.algorithm, source };
        match self.algorithm {
            Algorithm::None => {
                out.extend_from_slice(content);
                Ok(out)
            }
            Algorithm::Zstd => {
                let start = out.len();
                out.reserve(zstd::zstd_safe::compress_bound(content.len()));
                let mut cursor = std::io::Cursor::new(out);
                cursor.set_position(start as u64);
                zstd::bulk::Compressor::new(self.level)
                    .and_then(|mut compressor| compressor.compress_to_buffer(content, &mut cursor))
                    .map_err(wrap)?;
                Ok(cursor.into_inner())
            }
            Algorithm::Lz4 => {
                out.reserve(content.len() / 2);
                let mut encoder = lz4_flex::frame::FrameEncoder::new(out);
                encoder.write_all(content).map_err(wrap)?;
                encoder.finish().map_err(|error| wrap(std::io::Error::other(error)))
            }
        }
    }
}

/// A compressor kept across many objects (one per worker): the zstd context is allocated once
/// instead of once per object, and output goes into a buffer the caller reuses.
pub struct Compressor {
    compression: Compression,
    zstd: Option<zstd::bulk::Compressor<'static>>,
}

impl Compressor {
    /// A compressor for `compression`.
    pub fn new(compression: Compression) -> Result<Self, CompressionError> {
        let zstd = match compression.algorithm {
            Algorithm::Zstd => Some(
                zstd::bulk::Compressor::new(compression.level)
                    .map_err(|source| CompressionError::Compress { algorithm: Algorithm::Zstd, source })?,
            ),
            Algorithm::None | Algorithm::Lz4 => None,
        };
        Ok(Self { compression, zstd })
    }

    /// The algorithm and level this compressor applies.
    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// Compresses `content` to the end of `out`, growing `out` only when its capacity is short.
    pub fn compress_appending(&mut self, content: &[u8], out: &mut Vec<u8>) -> Result<(), CompressionError> {
        let algorithm = self.compression.algorithm;
        let wrap = |source| CompressionError::Compress { algorithm, source };
        match (algorithm, self.zstd.as_mut()) {
            (Algorithm::Zstd, Some(compressor)) => {
                let start = out.len();
                out.reserve(zstd::zstd_safe::compress_bound(content.len()));
                let mut cursor = std::io::Cursor::new(std::mem::take(out));
                cursor.set_position(start as u64);
                let compressed = compressor.compress_to_buffer(content, &mut cursor).map_err(wrap);
                *out = cursor.into_inner();
                compressed.map(|_| ())
            }
            _ => {
                let taken = std::mem::take(out);
                *out = self.compression.compress_appending(content, taken)?;
                Ok(())
            }
        }
    }
}

/// A compressor fed piece by piece that appends to a buffer: what [`Compression::compress_appending`]
/// does, without ever holding the whole content.
pub struct StreamCompressor {
    algorithm: Algorithm,
    sink: StreamSink,
}

enum StreamSink {
    None(Vec<u8>),
    Zstd(Box<zstd::stream::write::Encoder<'static, Vec<u8>>>),
    Lz4(Box<lz4_flex::frame::FrameEncoder<Vec<u8>>>),
}

impl Compression {
    /// A streaming compressor appending to `out`.
    pub fn stream_appending(&self, out: Vec<u8>) -> Result<StreamCompressor, CompressionError> {
        let sink = match self.algorithm {
            Algorithm::None => StreamSink::None(out),
            Algorithm::Zstd => StreamSink::Zstd(Box::new(
                zstd::stream::write::Encoder::new(out, self.level)
                    .map_err(|source| CompressionError::Compress { algorithm: self.algorithm, source })?,
            )),
            Algorithm::Lz4 => StreamSink::Lz4(Box::new(lz4_flex::frame::FrameEncoder::new(out))),
        };
        Ok(StreamCompressor { algorithm: self.algorithm, sink })
    }
}

impl StreamCompressor {
    /// Compresses the next piece of content.
    pub fn write(&mut self, piece: &[u8]) -> Result<(), CompressionError> {
        let written = match &mut self.sink {
            StreamSink::None(out) => {
                out.extend_from_slice(piece);
                Ok(())
            }
            StreamSink::Zstd(encoder) => encoder.write_all(piece),
            StreamSink::Lz4(encoder) => encoder.write_all(piece),
        };
        written.map_err(|source| CompressionError::Compress { algorithm: self.algorithm, source })
    }

    /// Ends the compressed stream; returns the buffer.
    pub fn finish(self) -> Result<Vec<u8>, CompressionError> {
        let wrap = |source| CompressionError::Compress { algorithm: self.algorithm, source };
        match self.sink {
            StreamSink::None(out) => Ok(out),
            StreamSink::Zstd(encoder) => encoder.finish().map_err(wrap),
            StreamSink::Lz4(encoder) => encoder.finish().map_err(|error| wrap(std::io::Error::other(error))),
        }
    }
}

/// A decompressing reader over a payload, for content read a piece at a time instead of held
/// whole (restores stream parts into files through one small buffer).
pub struct DecompressReader<'a> {
    algorithm: Algorithm,
    source: DecompressSource<'a>,
}

enum DecompressSource<'a> {
    None(&'a [u8]),
    Zstd(Box<zstd::stream::read::Decoder<'a, &'a [u8]>>),
    Lz4(Box<lz4_flex::frame::FrameDecoder<&'a [u8]>>),
    /// A decoder over another reader (a decrypting one), already built.
    Chained(Box<dyn Read + 'a>),
}

impl<'a> DecompressReader<'a> {
    /// A reader of the content `algorithm` compressed into `payload`.
    pub fn new(algorithm: Algorithm, payload: &'a [u8]) -> Result<Self, CompressionError> {
        let source = match algorithm {
            Algorithm::None => DecompressSource::None(payload),
            Algorithm::Zstd => DecompressSource::Zstd(Box::new(
                zstd::stream::read::Decoder::with_buffer(payload)
                    .map_err(|source| CompressionError::Decompress { algorithm, source })?,
            )),
            Algorithm::Lz4 => DecompressSource::Lz4(Box::new(lz4_flex::frame::FrameDecoder::new(payload))),
        };
        Ok(Self { algorithm, source })
    }

    /// A reader of the content `algorithm` compressed into what `source` yields (the payload of
    /// an encrypted object, decrypted as it is read).
    pub fn over_reader(algorithm: Algorithm, source: Box<dyn Read + 'a>) -> Result<Self, CompressionError> {
        let chained: Box<dyn Read + 'a> = match algorithm {
            Algorithm::None => source,
            Algorithm::Zstd => Box::new(
                zstd::stream::read::Decoder::new(source)
                    .map_err(|source| CompressionError::Decompress { algorithm, source })?,
            ),
            Algorithm::Lz4 => Box::new(lz4_flex::frame::FrameDecoder::new(source)),
        };
        Ok(Self { algorithm, source: DecompressSource::Chained(chained) })
    }

    /// Reads the next decompressed bytes (0 at the end of the content).
    pub fn read_content(&mut self, buffer: &mut [u8]) -> Result<usize, CompressionError> {
        let read = match &mut self.source {
            DecompressSource::None(payload) => payload.read(buffer),
            DecompressSource::Zstd(decoder) => decoder.read(buffer),
            DecompressSource::Lz4(decoder) => decoder.read(buffer),
            DecompressSource::Chained(decoder) => decoder.read(buffer),
        };
        read.map_err(|source| CompressionError::Decompress { algorithm: self.algorithm, source })
    }
}

/// Output buffers are preallocated up to this size; beyond it they grow with the actual output,
/// so a corrupt length in a header cannot make a reader allocate absurd amounts.
const MAX_PREALLOCATION: usize = 64 * 1024 * 1024;

/// Decompresses `payload` that `algorithm` produced. At most `expected_len + 1` bytes are
/// produced (one more than expected proves a length mismatch without inflating a bomb).
pub fn decompress(algorithm: Algorithm, payload: &[u8], expected_len: usize) -> Result<Vec<u8>, CompressionError> {
    let wrap = |source| CompressionError::Decompress { algorithm, source };
    let limit = u64::try_from(expected_len).unwrap_or(u64::MAX).saturating_add(1);
    if algorithm == Algorithm::Zstd && expected_len < MAX_PREALLOCATION {
        return decompress_zstd_at_once(payload, expected_len).map_err(wrap);
    }
    let mut out = Vec::with_capacity(expected_len.min(MAX_PREALLOCATION));
    match algorithm {
        Algorithm::None => out.extend_from_slice(payload),
        Algorithm::Zstd => {
            let decoder = zstd::stream::read::Decoder::with_buffer(payload).map_err(wrap)?;
            decoder.take(limit).read_to_end(&mut out).map_err(wrap)?;
        }
        Algorithm::Lz4 => {
            lz4_flex::frame::FrameDecoder::new(payload).take(limit).read_to_end(&mut out).map_err(wrap)?;
        }
    }
    Ok(out)
}

/// Single-shot zstd decompression into a buffer of `expected_len + 1` bytes: no intermediate
/// window copy and no zero-filling, which makes it markedly cheaper than the streaming decoder
/// for whole parts and WAL segments. Content longer than the buffer is an error.
fn decompress_zstd_at_once(payload: &[u8], expected_len: usize) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(expected_len.saturating_add(1));
    // The method (not the free function, which takes a slice) fills the Vec's spare capacity.
    zstd::bulk::Decompressor::new()?.decompress_to_buffer(payload, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zstd() -> Compression {
        Compression::new(Algorithm::Zstd, 3).expect("level")
    }

    #[test]
    fn zstd_content_decompresses_to_exactly_the_recorded_length() {
        let content: Vec<u8> = (0..300_000u32).map(|n| (n % 7) as u8).collect();
        let payload = zstd().compress(&content).expect("compress");
        assert_eq!(decompress(Algorithm::Zstd, &payload, content.len()).expect("decompress"), content);
    }

    #[test]
    fn compressing_after_a_header_keeps_the_header_and_decompresses_alone() {
        let content = b"after the header ".repeat(1000);
        for compression in [zstd(), Compression { algorithm: Algorithm::Lz4, level: 0 }, Compression::default()] {
            let out = compression.compress_appending(&content, b"HEAD".to_vec()).expect("compress");
            assert_eq!(&out[..4], b"HEAD");
            assert_eq!(out[4..], compression.compress(&content).expect("compress alone")[..]);
            assert_eq!(decompress(compression.algorithm, &out[4..], content.len()).expect("decompress"), content);
        }
    }

    #[test]
    fn zstd_content_longer_than_recorded_is_never_returned_as_valid() {
        let content = vec![42u8; 10_000];
        let payload = zstd().compress(&content).expect("compress");
        for recorded in [0, 1, 5_000, 9_999] {
            let result = decompress(Algorithm::Zstd, &payload, recorded);
            assert!(result.is_err() || result.is_ok_and(|out| out.len() != recorded), "recorded {recorded}");
        }
    }
}
