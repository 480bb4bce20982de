//! PostgreSQL WAL vocabulary: LSNs, timelines and the names of files in `pg_wal`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Default WAL segment size (16 MiB); clusters may be initialised with another power of two.
pub const DEFAULT_SEGMENT_SIZE: u64 = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WalError {
    #[error("invalid LSN {0:?}: expected two hexadecimal numbers like 0/16B3748")]
    InvalidLsn(String),
    #[error("{0:?} is not a WAL file name (segment, .history, .partial or .backup)")]
    InvalidFileName(String),
    #[error("invalid WAL segment size {0}: must be a power of two between 1 MiB and 1 GiB")]
    InvalidSegmentSize(u64),
    #[error("not a WAL segment: {0}")]
    InvalidSegmentHeader(String),
    #[error("not a pg_control file: {0}")]
    InvalidControlFile(String),
}

/// A position in the WAL (`pg_lsn`), printed like PostgreSQL does: `16/B374D848`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl FromStr for Lsn {
    type Err = WalError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || WalError::InvalidLsn(text.to_string());
        let (high, low) = text.trim().split_once('/').ok_or_else(invalid)?;
        let high = u32::from_str_radix(high, 16).map_err(|_| invalid())?;
        let low = u32::from_str_radix(low, 16).map_err(|_| invalid())?;
        Ok(Lsn((u64::from(high) << 32) | u64::from(low)))
    }
}

impl Serialize for Lsn {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Lsn {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A timeline id (1 for a fresh cluster, incremented at every promotion or PITR).
pub type TimelineId = u32;

/// The geometry of a cluster's WAL: how LSNs map to segment numbers and names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentSize(u64);

impl Default for SegmentSize {
    fn default() -> Self {
        Self(DEFAULT_SEGMENT_SIZE)
    }
}

impl SegmentSize {
    pub fn new(bytes: u64) -> Result<Self, WalError> {
        if bytes.is_power_of_two() && (1 << 20..=1 << 30).contains(&bytes) {
            Ok(Self(bytes))
        } else {
            Err(WalError::InvalidSegmentSize(bytes))
        }
    }

    pub fn bytes(self) -> u64 {
        self.0
    }

    fn segments_per_xlog_id(self) -> u64 {
        0x1_0000_0000 / self.0
    }

    /// The number of the segment that holds `lsn`.
    pub fn segment_of(self, lsn: Lsn) -> u64 {
        lsn.0 / self.0
    }

    /// The first LSN of segment `segment`.
    pub fn start_of(self, segment: u64) -> Lsn {
        Lsn(segment * self.0)
    }

    /// The file name of segment `segment` on `timeline`, e.g. `000000010000000000000003`.
    pub fn segment_name(self, timeline: TimelineId, segment: u64) -> String {
        let per_id = self.segments_per_xlog_id();
        format!("{timeline:08X}{:08X}{:08X}", segment / per_id, segment % per_id)
    }

    /// Parses the segment number out of a 24-hex-digit segment name.
    pub fn parse_segment(self, name: &str) -> Result<(TimelineId, u64), WalError> {
        let invalid = || WalError::InvalidFileName(name.to_string());
        if name.len() != 24 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid());
        }
        let field = |range: std::ops::Range<usize>| u64::from_str_radix(&name[range], 16).map_err(|_| invalid());
        let timeline = u32::try_from(field(0..8)?).map_err(|_| invalid())?;
        let (high, low) = (field(8..16)?, field(16..24)?);
        if low >= self.segments_per_xlog_id() {
            return Err(invalid());
        }
        Ok((timeline, high * self.segments_per_xlog_id() + low))
    }
}

/// The kinds of files PostgreSQL hands to `archive_command` / asks of `restore_command`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WalFileName {
    /// `TTTTTTTTXXXXXXXXYYYYYYYY`: a complete segment.
    Segment { timeline: TimelineId, name: String },
    /// `TTTTTTTT.history`: the timeline's history file.
    History { timeline: TimelineId },
    /// `<segment>.partial`: the last, incomplete segment of a timeline left at promotion.
    Partial { timeline: TimelineId, segment_name: String },
    /// `<segment>.XXXXXXXX.backup`: a backup history file.
    BackupHistory { timeline: TimelineId, file_name: String },
}

impl WalFileName {
    /// The file name as it appears in `pg_wal`.
    pub fn file_name(&self) -> String {
        match self {
            WalFileName::Segment { name, .. } => name.clone(),
            WalFileName::History { timeline } => format!("{timeline:08X}.history"),
            WalFileName::Partial { segment_name, .. } => format!("{segment_name}.partial"),
            WalFileName::BackupHistory { file_name, .. } => file_name.clone(),
        }
    }

    pub fn timeline(&self) -> TimelineId {
        match self {
            WalFileName::Segment { timeline, .. }
            | WalFileName::History { timeline }
            | WalFileName::Partial { timeline, .. }
            | WalFileName::BackupHistory { timeline, .. } => *timeline,
        }
    }

    pub fn is_segment(&self) -> bool {
        matches!(self, WalFileName::Segment { .. })
    }
}

fn is_hex(text: &str, len: usize) -> bool {
    text.len() == len && text.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_lowercase())
}

fn timeline_of(name: &str) -> Result<TimelineId, WalError> {
    u32::from_str_radix(&name[..8], 16).map_err(|_| WalError::InvalidFileName(name.to_string()))
}

impl FromStr for WalFileName {
    type Err = WalError;
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        let invalid = || WalError::InvalidFileName(name.to_string());
        if is_hex(name, 24) {
            return Ok(WalFileName::Segment { timeline: timeline_of(name)?, name: name.to_string() });
        }
        if let Some(timeline) = name.strip_suffix(".history")
            && is_hex(timeline, 8)
        {
            return Ok(WalFileName::History { timeline: timeline_of(name)? });
        }
        if let Some(segment) = name.strip_suffix(".partial")
            && is_hex(segment, 24)
        {
            return Ok(WalFileName::Partial { timeline: timeline_of(name)?, segment_name: segment.to_string() });
        }
        if let Some((segment, offset)) = name.strip_suffix(".backup").and_then(|stem| stem.split_once('.'))
            && is_hex(segment, 24)
            && is_hex(offset, 8)
        {
            return Ok(WalFileName::BackupHistory { timeline: timeline_of(name)?, file_name: name.to_string() });
        }
        Err(invalid())
    }
}

/// `XLP_LONG_HEADER`: the page starts with the long header (the first page of every segment).
const XLP_LONG_HEADER: u16 = 0x0002;
/// Size of `XLogLongPageHeaderData`.
pub const LONG_PAGE_HEADER_LEN: usize = 40;

/// The long page header at the start of every WAL segment (`XLogLongPageHeaderData`).
///
/// PostgreSQL writes it in the server's byte order; every platform pgec2 supports (x86-64,
/// arm64) is little-endian.
///
/// ```text
/// offset size field
/// 0      2    xlp_magic        WAL format, one value per major version
/// 2      2    xlp_info         flags; XLP_LONG_HEADER (0x0002) on a segment's first page
/// 4      4    xlp_tli          timeline of the page (the old one in a segment copied at a switch)
/// 8      8    xlp_pageaddr     LSN of the page: the segment's first LSN
/// 16     4    xlp_rem_len
/// 20     4    padding
/// 24     8    xlp_sysid        system identifier of the cluster (as in pg_control)
/// 32     4    xlp_seg_size     WAL segment size
/// 36     4    xlp_xlog_blcksz  WAL page size
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    pub magic: u16,
    pub timeline: TimelineId,
    pub page_address: Lsn,
    pub system_identifier: u64,
    pub segment_size: SegmentSize,
    pub block_size: u32,
}

impl SegmentHeader {
    /// Parses the long page header at the start of `segment` (bounds-checked).
    pub fn parse(segment: &[u8]) -> Result<Self, WalError> {
        let invalid = |reason: String| WalError::InvalidSegmentHeader(reason);
        let header = segment
            .get(..LONG_PAGE_HEADER_LEN)
            .ok_or_else(|| invalid(format!("{} bytes is shorter than a page header", segment.len())))?;
        let u16_at = |at: usize| u16::from_le_bytes([header[at], header[at + 1]]);
        let u32_at = |at: usize| u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]]);
        let u64_at = |at: usize| u64::from(u32_at(at)) | (u64::from(u32_at(at + 4)) << 32);
        if u16_at(2) & XLP_LONG_HEADER == 0 {
            return Err(invalid("the first page has no long header (XLP_LONG_HEADER unset)".to_string()));
        }
        let segment_size = SegmentSize::new(u64::from(u32_at(32)))
            .map_err(|_| invalid(format!("the header's segment size {} is not a valid one", u32_at(32))))?;
        let block_size = u32_at(36);
        if !block_size.is_power_of_two() || !(1024..=65536).contains(&block_size) {
            return Err(invalid(format!("the header's WAL block size {block_size} is not a valid one")));
        }
        Ok(Self {
            magic: u16_at(0),
            timeline: u32_at(4),
            page_address: Lsn(u64_at(8)),
            system_identifier: u64_at(24),
            segment_size,
            block_size,
        })
    }

    /// The segment number the header says this file is.
    pub fn segment_number(&self) -> u64 {
        self.segment_size.segment_of(self.page_address)
    }

    /// The PostgreSQL major version that writes this WAL format, when known.
    pub fn pg_version(&self) -> Option<u32> {
        match self.magic {
            0xD106 => Some(13),
            0xD10D => Some(14),
            0xD110 => Some(15),
            0xD113 => Some(16),
            0xD116 => Some(17),
            _ => None,
        }
    }
}

/// The system identifier at the start of `global/pg_control` (the first field of
/// `ControlFileData` in every PostgreSQL version).
pub fn control_file_system_identifier(pg_control: &[u8]) -> Result<u64, WalError> {
    let bytes: [u8; 8] = pg_control
        .get(..8)
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| WalError::InvalidControlFile(format!("{} bytes is too short", pg_control.len())))?;
    Ok(u64::from_le_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_round_trips_through_postgres_text_form() {
        let lsn: Lsn = "16/B374D848".parse().expect("parse");
        assert_eq!(lsn, Lsn(0x16_B374_D848));
        assert_eq!(lsn.to_string(), "16/B374D848");
        assert!("16B374D848".parse::<Lsn>().is_err());
    }

    #[test]
    fn segment_names_match_postgres_for_default_segment_size() {
        let size = SegmentSize::default();
        let lsn: Lsn = "1/2000028".parse().expect("lsn");
        let segment = size.segment_of(lsn);
        assert_eq!(size.segment_name(1, segment), "000000010000000100000002");
        assert_eq!(size.parse_segment("000000010000000100000002"), Ok((1, segment)));
        assert_eq!(size.segment_name(3, 0xFF), "0000000300000000000000FF");
        assert_eq!(size.segment_name(3, 0x100), "000000030000000100000000");
    }

    #[test]
    fn every_archived_file_kind_is_recognised() {
        let parse = |name: &str| name.parse::<WalFileName>();
        assert!(parse("000000010000000000000001").expect("segment").is_segment());
        assert_eq!(parse("00000002.history"), Ok(WalFileName::History { timeline: 2 }));
        assert_eq!(parse("000000010000000000000005.partial").expect("partial").timeline(), 1);
        assert!(matches!(parse("000000010000000000000002.00000028.backup"), Ok(WalFileName::BackupHistory { .. })));
        for bad in ["", "00000001", "000000010000000000000001.gz", "../etc/passwd", "0000000100000000000000zz"] {
            assert!(parse(bad).is_err(), "{bad} accepted");
        }
    }

    /// A segment's first page as PostgreSQL 15 writes it.
    fn long_header(system_identifier: u64, segment_size: u32, page_address: u64) -> Vec<u8> {
        let mut page = vec![0u8; 8192];
        page[0..2].copy_from_slice(&0xD110u16.to_le_bytes());
        page[2..4].copy_from_slice(&0x0002u16.to_le_bytes());
        page[4..8].copy_from_slice(&2u32.to_le_bytes());
        page[8..16].copy_from_slice(&page_address.to_le_bytes());
        page[24..32].copy_from_slice(&system_identifier.to_le_bytes());
        page[32..36].copy_from_slice(&segment_size.to_le_bytes());
        page[36..40].copy_from_slice(&8192u32.to_le_bytes());
        page
    }

    #[test]
    fn segment_header_gives_system_identifier_and_position() {
        let page = long_header(7_312_345_678_901_234_567, 16 << 20, 0x3_0000_0000 + (5 << 24));
        let header = SegmentHeader::parse(&page).expect("header");
        assert_eq!(header.system_identifier, 7_312_345_678_901_234_567);
        assert_eq!(header.segment_size, SegmentSize::default());
        assert_eq!(header.pg_version(), Some(15));
        assert_eq!(header.timeline, 2);
        assert_eq!(header.segment_size.segment_name(1, header.segment_number()), "000000010000000300000005");
    }

    #[test]
    fn segment_header_refuses_short_or_foreign_bytes() {
        assert!(SegmentHeader::parse(&[0u8; 39]).is_err());
        assert!(SegmentHeader::parse(&[0u8; 8192]).is_err(), "no long-header flag");
        let mut bad_size = long_header(1, 16 << 20, 0);
        bad_size[32..36].copy_from_slice(&12345u32.to_le_bytes());
        assert!(SegmentHeader::parse(&bad_size).is_err());
        assert!(control_file_system_identifier(&[1, 2, 3]).is_err());
        assert_eq!(control_file_system_identifier(&42u64.to_le_bytes()), Ok(42));
    }
}
