//! wal-g's compression methods, named by the object's suffix.

use std::fmt;
use std::io::Read;

/// The most memory the lzma decoder may use (wal-g's dictionaries are far smaller).
const LZMA_MEMORY_LIMIT: u64 = 256 * 1024 * 1024;

/// How a wal-g object is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Lz4,
    Zstd,
    Brotli,
    /// The "lzma alone" format wal-g writes.
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

    /// Whether `stored` plainly is not data of this method (its magic number differs), as an
    /// encrypted object is not; `false` when the method has no magic number (brotli, lzma).
    pub fn starts_unlike(self, stored: &[u8]) -> bool {
        let magic: &[u8] = match self {
            Self::Lz4 => &[0x04, 0x22, 0x4d, 0x18],
            Self::Zstd => &[0x28, 0xb5, 0x2f, 0xfd],
            Self::Brotli | Self::Lzma => return false,
        };
        !stored.starts_with(magic)
    }

    /// A reader of `stored`'s decompressed content; `None` when the decoder cannot be set up.
    pub fn decoder<'a>(self, stored: impl Read + 'a) -> Option<Box<dyn Read + 'a>> {
        match self {
            Self::Lz4 => Some(Box::new(lz4_flex::frame::FrameDecoder::new(stored))),
            Self::Zstd => {
                zstd::stream::read::Decoder::new(stored).ok().map(|decoder| Box::new(decoder) as Box<dyn Read>)
            }
            Self::Brotli => Some(Box::new(brotli_decompressor::Decompressor::new(stored, 64 * 1024))),
            Self::Lzma => liblzma::stream::Stream::new_lzma_decoder(LZMA_MEMORY_LIMIT)
                .ok()
                .map(|stream| Box::new(liblzma::read::XzDecoder::new_stream(stored, stream)) as Box<dyn Read>),
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

    #[test]
    fn an_lzma_alone_stream_as_wal_g_writes_it_decompresses() {
        let content: Vec<u8> = (0..100_000u32).flat_map(|n| (n % 251).to_le_bytes()).collect();
        let options = liblzma::stream::LzmaOptions::new_preset(6).expect("preset");
        let encoder = liblzma::stream::Stream::new_lzma_encoder(&options).expect("encoder");
        let mut stored = Vec::new();
        liblzma::read::XzEncoder::new_stream(&content[..], encoder).read_to_end(&mut stored).expect("compress");
        assert_eq!(stored[0], 0x5d, "the lzma-alone header");
        let mut restored = Vec::new();
        Method::Lzma.decoder(&stored[..]).expect("decoder").read_to_end(&mut restored).expect("decompress");
        assert_eq!(restored, content);
    }
}
