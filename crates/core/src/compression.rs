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
        let wrap = |source| CompressionError::Compress { algorithm: self.algorithm, source };
        match self.algorithm {
            Algorithm::None => Ok(content.to_vec()),
            Algorithm::Zstd => zstd::bulk::compress(content, self.level).map_err(wrap),
            Algorithm::Lz4 => {
                let mut encoder = lz4_flex::frame::FrameEncoder::new(Vec::with_capacity(content.len() / 2));
                encoder.write_all(content).map_err(wrap)?;
                encoder.finish().map_err(|error| wrap(std::io::Error::other(error)))
            }
        }
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
