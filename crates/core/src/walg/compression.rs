//! wal-g's compression methods, named by the object's suffix.

use std::fmt;
use std::io::Read;

/// How a wal-g object is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Lz4,
    Zstd,
    Brotli,
    /// Recognised, not read yet.
    Lzma,
}

impl Method {
    /// The method of suffix `ext` (`lz4`, `zst`, `br`, `lzma`).
    pub fn from_suffix(ext: &str) -> Option<Self> {
        match ext {
            "lz4" => Some(Self::Lz4),
            "zst" => Some(Self::Zstd),
            "br" => Some(Self::Brotli),
            "lzma" => Some(Self::Lzma),
            _ => None,
        }
    }

    /// `file` split into its name and its compression (`None` for another suffix).
    pub fn split(file: &str) -> Option<(&str, Self)> {
        let (name, ext) = file.rsplit_once('.')?;
        Some((name, Self::from_suffix(ext)?))
    }

    /// A reader of `stored`'s decompressed content; `None` for a method not read yet.
    pub fn decoder<'a>(self, stored: impl Read + 'a) -> Option<Box<dyn Read + 'a>> {
        match self {
            Self::Lz4 => Some(Box::new(lz4_flex::frame::FrameDecoder::new(stored))),
            Self::Zstd => {
                zstd::stream::read::Decoder::new(stored).ok().map(|decoder| Box::new(decoder) as Box<dyn Read>)
            }
            Self::Brotli => Some(Box::new(brotli_decompressor::Decompressor::new(stored, 64 * 1024))),
            Self::Lzma => None,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Lz4 => "lz4",
            Self::Zstd => "zstd",
            Self::Brotli => "brotli",
            Self::Lzma => "lzma",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wal_names_split_into_the_file_and_its_compression() {
        assert_eq!(Method::split("000000010000000000000003.zst"), Some(("000000010000000000000003", Method::Zstd)));
        assert_eq!(
            Method::split("000000010000000000000003.00000028.backup.br"),
            Some(("000000010000000000000003.00000028.backup", Method::Brotli))
        );
        assert_eq!(Method::split("00000002.history.lz4"), Some(("00000002.history", Method::Lz4)));
        assert_eq!(Method::split("000000010000000000000003"), None);
    }
}
