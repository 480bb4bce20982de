//! The framing of physical streaming replication that `pg_walstream` leaves to its caller: the
//! two messages a walsender sends inside CopyData during `START_REPLICATION ... PHYSICAL`.
//!
//! ```text
//! XLogData          'w' start:u64 end:u64 send_time:i64 data...   (WAL bytes from `start`)
//! Primary keepalive 'k' end:u64 send_time:i64 reply_requested:u8
//! ```
//! Integers are big-endian (PostgreSQL's "Streaming Replication Protocol" page). The standby
//! status update the client sends back ('r') is built by `pg_walstream`.

use pgec2_core::wal::Lsn;

/// One message of the replication stream.
#[derive(Debug, PartialEq, Eq)]
pub enum ServerMessage<'a> {
    /// WAL bytes starting at `start`; `server_end` is the end of WAL on the server.
    XLogData { start: Lsn, server_end: Lsn, data: &'a [u8] },
    /// The server's position, and whether it wants a status update now.
    Keepalive { server_end: Lsn, reply_requested: bool },
}

/// A CopyData payload that is not a well-formed 'w' or 'k' message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed replication message ({kind}, {len} bytes): {reason}")]
pub struct MalformedMessage {
    kind: String,
    len: usize,
    reason: &'static str,
}

const XLOG_DATA_HEADER: usize = 1 + 8 + 8 + 8;
const KEEPALIVE_LEN: usize = 1 + 8 + 8 + 1;

/// Parses one CopyData payload of a physical replication stream.
pub fn parse(payload: &[u8]) -> Result<ServerMessage<'_>, MalformedMessage> {
    let malformed = |reason| MalformedMessage {
        kind: payload.first().map(|tag| format!("{:?}", char::from(*tag))).unwrap_or_else(|| "empty".into()),
        len: payload.len(),
        reason,
    };
    match payload.first() {
        Some(b'w') if payload.len() >= XLOG_DATA_HEADER => Ok(ServerMessage::XLogData {
            start: Lsn(read_u64(payload, 1)),
            server_end: Lsn(read_u64(payload, 9)),
            data: &payload[XLOG_DATA_HEADER..],
        }),
        Some(b'w') => Err(malformed("shorter than the XLogData header")),
        Some(b'k') if payload.len() >= KEEPALIVE_LEN => {
            Ok(ServerMessage::Keepalive { server_end: Lsn(read_u64(payload, 1)), reply_requested: payload[17] != 0 })
        }
        Some(b'k') => Err(malformed("shorter than a keepalive")),
        _ => Err(malformed("not an XLogData or keepalive message")),
    }
}

fn read_u64(payload: &[u8], at: usize) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&payload[at..at + 8]);
    u64::from_be_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xlog_data(start: u64, end: u64, data: &[u8]) -> Vec<u8> {
        let mut message = vec![b'w'];
        message.extend_from_slice(&start.to_be_bytes());
        message.extend_from_slice(&end.to_be_bytes());
        message.extend_from_slice(&7i64.to_be_bytes());
        message.extend_from_slice(data);
        message
    }

    #[test]
    fn xlog_data_gives_its_start_the_servers_end_and_the_wal_bytes() {
        let message = xlog_data(0x1_0000_0028, 0x1_0000_0100, b"wal");
        assert_eq!(
            parse(&message),
            Ok(ServerMessage::XLogData { start: Lsn(0x1_0000_0028), server_end: Lsn(0x1_0000_0100), data: b"wal" })
        );
        assert_eq!(
            parse(&xlog_data(1, 2, b"")),
            Ok(ServerMessage::XLogData { start: Lsn(1), server_end: Lsn(2), data: b"" })
        );
    }

    #[test]
    fn a_keepalive_gives_the_servers_end_and_whether_it_wants_a_reply() {
        let mut message = vec![b'k'];
        message.extend_from_slice(&0x3000060u64.to_be_bytes());
        message.extend_from_slice(&0i64.to_be_bytes());
        message.push(1);
        assert_eq!(parse(&message), Ok(ServerMessage::Keepalive { server_end: Lsn(0x3000060), reply_requested: true }));
        message[17] = 0;
        assert_eq!(
            parse(&message),
            Ok(ServerMessage::Keepalive { server_end: Lsn(0x3000060), reply_requested: false })
        );
    }

    #[test]
    fn truncated_or_unknown_messages_are_refused_naming_their_kind() {
        let error = parse(&xlog_data(1, 2, b"")[..20]).expect_err("truncated");
        assert!(error.to_string().contains("'w'"), "{error}");
        assert!(parse(b"k\0\0").is_err());
        assert!(parse(b"").is_err());
        assert!(parse(b"d123").expect_err("unknown").to_string().contains("not an XLogData"));
    }
}
