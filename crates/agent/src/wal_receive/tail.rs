//! The streamed tail during recovery: when archive recovery asks for a segment the archive does
//! not hold and the hole check ([`crate::wal::hole`]) found it to be the end of the archive,
//! `wal-fetch` restores `<segment>.partial` instead, padded with zeros to the segment size (as
//! `pg_receivewal` leaves its partial files). PostgreSQL replays up to the last complete record
//! in it, finds zeros after it and ends recovery there: the recovery point is the streamed
//! position, not the last complete segment. Never used over a hole: a segment with later WAL
//! after it is a hole, and recovery stops as before. With a `recovery_target_lsn` in the
//! segment, the hole check takes the miss for the end only when the partial reaches the target
//! (its envelope's content length is the streamed end, [`pgec2_core::catalog::partial_end`]).

use std::path::Path;

use pgec2_core::wal::{SegmentHeader, WalFileName};

use crate::config::AgentConfig;
use crate::wal::{WalError, durable, fetch};

/// Restores the stored partial of the segment `name` to `dest`; `false` when there is none (or
/// `name` is not a segment).
pub async fn restore(config_path: Option<&Path>, name: &str, dest: &Path) -> Result<bool, WalError> {
    let Ok(WalFileName::Segment { timeline, name: segment_name }) = name.parse::<WalFileName>() else {
        return Ok(false);
    };
    let config = AgentConfig::load(config_path)?;
    let partial = WalFileName::Partial { timeline, segment_name: segment_name.clone() };
    let downloaded = tokio::time::timeout(config.transfer.command_timeout, async {
        let archive = config.storage().await?;
        fetch::download(&archive, &partial).await
    })
    .await
    .map_err(|_| WalError::Timeout {
        action: "fetch",
        file: partial.file_name(),
        after: config.transfer.command_timeout,
    })??;
    let Some(mut content) = downloaded else { return Ok(false) };
    let not_a_tail = |reason: String| WalError::NotASegment { path: dest.to_path_buf(), reason };
    let header = SegmentHeader::parse(&content)
        .map_err(|error| not_a_tail(format!("the archived {} is not WAL: {error}", partial.file_name())))?;
    let (_, number) =
        header.segment_size.parse_segment(&segment_name).map_err(|error| not_a_tail(error.to_string()))?;
    let size = header.segment_size.bytes();
    if header.segment_number() != number || content.len() as u64 > size {
        return Err(not_a_tail(format!(
            "the archived {} does not belong to segment {segment_name}",
            partial.file_name()
        )));
    }
    let streamed = content.len();
    content.resize(size as usize, 0);
    durable::write_atomically(dest, &content).map_err(|error| WalError::Write { path: dest.to_path_buf(), error })?;
    tracing::info!(segment = segment_name, streamed_bytes = streamed, "restored the streamed tail of the archive");
    Ok(true)
}
