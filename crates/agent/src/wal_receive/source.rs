//! The replication connection: connect, identify the server, make sure the slot exists, start
//! streaming, read the next message, send status updates. `pg_walstream` carries the protocol
//! (startup, authentication, TLS, CopyBoth); [`super::message`] parses what it hands over.

use std::time::Duration;

use bytes::Bytes;
use pg_walstream::{CancellationToken, PgReplicationConnection, ReplicationSlotOptions, SlotType};
use pgec2_core::wal::{Lsn, TimelineId};

use super::error::ReceiveError;
use crate::config::PostgresSettings;

/// What IDENTIFY_SYSTEM says about the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerIdentity {
    pub system_identifier: u64,
    pub timeline: TimelineId,
    /// The server's current WAL flush position.
    pub flush: Lsn,
}

/// An open replication connection to one server.
pub struct Source {
    connection: PgReplicationConnection,
    target: String,
    /// The bridge to the Unix socket, when `PGHOST` is a socket directory.
    _bridge: Option<super::bridge::Bridge>,
}

/// What [`Source::next`] got within the wait.
pub enum Received {
    Message(Bytes),
    /// Nothing arrived within the wait.
    Nothing,
}

impl Source {
    /// Connects with `replication=true` (a physical replication connection). The library is
    /// TCP-only: a socket directory as host goes through a [`super::bridge`] to the socket, so
    /// the server sees a Unix-socket connection (peer authentication, as for the agent's other
    /// commands).
    pub async fn connect(settings: &PostgresSettings) -> Result<Self, ReceiveError> {
        let (bridge, host, port) = if settings.host.starts_with('/') {
            let socket_dir = std::path::Path::new(&settings.host);
            let bridge =
                super::bridge::open(socket_dir, settings.port).await.map_err(|error| ReceiveError::Connect {
                    target: format!("{}/.s.PGSQL.{}", settings.host, settings.port),
                    reason: format!("cannot open the loopback bridge to the socket: {error}"),
                })?;
            let port = bridge.port;
            (Some(bridge), "127.0.0.1", port)
        } else {
            (None, settings.host.as_str(), settings.port)
        };
        let target = match &bridge {
            Some(_) => format!("{}/.s.PGSQL.{}", settings.host, settings.port),
            None => format!("{host}:{port}"),
        };
        let mut conninfo = format!(
            "host={host} port={port} user={} dbname={} replication=true application_name=pgec2-wal-receive \
             connect_timeout={} keepalives_idle=15 keepalives_interval=5 keepalives_count=3 tcp_user_timeout=60000",
            conninfo_value(&settings.user),
            conninfo_value(&settings.database),
            settings.connect_timeout.as_secs().max(1)
        );
        if bridge.is_some() {
            conninfo.push_str(" sslmode=disable");
        }
        if let Some(password) = &settings.password {
            conninfo.push_str(&format!(" password={}", conninfo_value(password)));
        }
        // The handshake runs on the runtime's worker via block_in_place; connect_timeout bounds
        // all of it. The few commands before streaming have no deadline of their own: TCP
        // keepalives and tcp_user_timeout end them when the peer is gone; once streaming,
        // --receive-timeout does.
        let connection = PgReplicationConnection::connect(&conninfo)
            .map_err(|error| ReceiveError::Connect { target: target.clone(), reason: error.to_string() })?;
        Ok(Self { connection, target, _bridge: bridge })
    }

    /// Where this connection goes, for messages.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// IDENTIFY_SYSTEM.
    pub fn identify(&mut self) -> Result<ServerIdentity, ReceiveError> {
        let result = self.command("IDENTIFY_SYSTEM")?;
        let field = |column| result.get_value(0, column).unwrap_or_default();
        let bad = |what: &str| self.command_error("IDENTIFY_SYSTEM", format!("unexpected {what} in its answer"));
        Ok(ServerIdentity {
            system_identifier: field(0).parse().map_err(|_| bad("system identifier"))?,
            timeline: field(1).parse().map_err(|_| bad("timeline"))?,
            flush: field(2).parse().map_err(|_| bad("position"))?,
        })
    }

    /// The slot's restart position, creating the slot (reserving WAL now) when it is missing.
    /// Returns the position and whether the slot was created.
    pub fn ensure_slot(&mut self, slot: &str) -> Result<(Lsn, bool), ReceiveError> {
        if let Some(restart) = self.read_slot(slot)? {
            return Ok((restart, false));
        }
        let options = ReplicationSlotOptions { reserve_wal: true, ..Default::default() };
        let result = self
            .connection
            .create_replication_slot_with_options(slot, SlotType::Physical, None, &options)
            .map_err(|error| self.command_error("CREATE_REPLICATION_SLOT", error.to_string()))?;
        if !result.is_ok() {
            let reason = result.error_message().unwrap_or_default();
            return Err(self.command_error("CREATE_REPLICATION_SLOT", reason));
        }
        let restart = self.read_slot(slot)?.ok_or_else(|| {
            self.command_error("READ_REPLICATION_SLOT", format!("slot {slot} has no restart position after creation"))
        })?;
        Ok((restart, true))
    }

    /// DROP_REPLICATION_SLOT, for a slot the server gave up (`wal_status = lost`).
    pub fn drop_slot(&mut self, slot: &str) -> Result<(), ReceiveError> {
        self.connection
            .drop_replication_slot(slot, false)
            .map_err(|error| self.command_error("DROP_REPLICATION_SLOT", error.to_string()))
    }

    /// READ_REPLICATION_SLOT (PostgreSQL 15 and later): the restart position, `None` when the
    /// slot does not exist or holds no WAL.
    fn read_slot(&mut self, slot: &str) -> Result<Option<Lsn>, ReceiveError> {
        let info = self
            .connection
            .read_replication_slot(slot)
            .map_err(|error| self.command_error("READ_REPLICATION_SLOT", error.to_string()))?;
        if info.slot_type.as_deref().is_some_and(|kind| kind != "physical") {
            let reason = format!(
                "slot {slot} is a {} slot; wal-receive needs a physical one",
                info.slot_type.unwrap_or_default()
            );
            return Err(self.command_error("READ_REPLICATION_SLOT", reason));
        }
        Ok(info.restart_lsn.map(|lsn| Lsn(lsn.0)))
    }

    /// START_REPLICATION SLOT slot PHYSICAL start TIMELINE timeline.
    pub fn start(&mut self, slot: &str, start: Lsn, timeline: TimelineId) -> Result<(), ReceiveError> {
        self.connection
            .start_physical_replication(Some(slot), start.0, Some(timeline))
            .map_err(|error| self.command_error("START_REPLICATION", error.to_string()))
    }

    /// The next CopyData payload, waiting at most `wait`.
    pub async fn next(&mut self, wait: Duration) -> Result<Received, ReceiveError> {
        let token = CancellationToken::new();
        let timer = tokio::spawn({
            let token = token.clone();
            async move {
                tokio::time::sleep(wait).await;
                token.cancel();
            }
        });
        let result = self.connection.get_copy_data_async(&token).await;
        timer.abort();
        match result {
            Ok(payload) => Ok(Received::Message(payload)),
            Err(error) if error.is_cancelled() => Ok(Received::Nothing),
            Err(error) => Err(ReceiveError::Stream { target: self.target.clone(), reason: error.to_string() }),
        }
    }

    /// A standby status update: `written` received, `flushed` durable in the archive; asks the
    /// server to answer with a keepalive, which proves the connection alive.
    pub async fn report(&mut self, written: Lsn, flushed: Lsn) -> Result<(), ReceiveError> {
        self.connection
            .send_standby_status_update(written.0, flushed.0, flushed.0, true)
            .await
            .map_err(|error| ReceiveError::Stream { target: self.target.clone(), reason: error.to_string() })
    }

    fn command(&mut self, command: &str) -> Result<pg_walstream::PgResult, ReceiveError> {
        let result = self.connection.exec(command).map_err(|error| self.command_error(command, error.to_string()))?;
        if !result.is_ok() {
            return Err(self.command_error(command, result.error_message().unwrap_or_default()));
        }
        Ok(result)
    }

    fn command_error(&self, command: &str, reason: String) -> ReceiveError {
        ReceiveError::Command { command: command.to_string(), target: self.target.clone(), reason }
    }
}

/// A conninfo value, single-quoted with `\` and `'` escaped when it needs quoting.
fn conninfo_value(value: &str) -> String {
    if !value.is_empty() && value.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
        value.to_string()
    } else {
        format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
    }
}

#[cfg(test)]
mod tests {
    use super::conninfo_value;

    #[test]
    fn conninfo_values_are_quoted_only_when_they_need_it() {
        assert_eq!(conninfo_value("postgres"), "postgres");
        assert_eq!(conninfo_value("it's a\\b"), r"'it\'s a\\b'");
        assert_eq!(conninfo_value(""), "''");
    }
}
