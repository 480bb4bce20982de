//! One replication session: connect, check the slot, stream into the spool and the archive
//! until a fault ends it. The caller reconnects.

use std::time::{Duration, Instant};

use pgec2_core::wal::{Lsn, SegmentSize};

use super::archive::{self, StoredPartial, Target};
use super::error::ReceiveError;
use super::message::{self, ServerMessage};
use super::source::{Received, Source};
use super::spool::Spool;
use super::status::{self, StatusFile};
use crate::cli::WalReceiveArgs;
use crate::config::AgentConfig;

/// How often a status update goes to the server (each asks for a keepalive back) at the least;
/// a caught-up receiver sends one every partial interval.
const REPORT_INTERVAL: Duration = Duration::from_secs(5);
/// How often the slot's health is read over SQL.
const HEALTH_INTERVAL: Duration = Duration::from_secs(30);

/// Streams until a fault; `progressed` is set once WAL reached the archive in this session.
pub async fn run(
    config: &AgentConfig,
    args: &WalReceiveArgs,
    target: &Target,
    status: &mut StatusFile,
    progressed: &mut bool,
) -> Result<(), ReceiveError> {
    let mut source = Source::connect(&config.postgres).await?;
    let server = source.identify()?;
    status.status.system_identifier = Some(server.system_identifier.to_string());
    status.status.timeline = Some(server.timeline);
    let health = status::slot_health(&config.postgres, &args.slot).await?;
    let size = SegmentSize::new(health.segment_size)
        .map_err(|error| ReceiveError::SlotQuery(format!("the server's wal_segment_size: {error}")))?;
    if health.wal_status.as_deref() == Some("lost") {
        source.drop_slot(&args.slot)?;
        let since = status.status.archived_lsn.map(|lsn| lsn.to_string()).unwrap_or_else(|| "an earlier run".into());
        let message = format!(
            "the server gave up slot {} (it held more WAL than max_slot_wal_keep_size): the slot was recreated and \
             streaming restarts at the server's current position; WAL after {since} reaches the archive only \
             through archive_command",
            args.slot
        );
        tracing::error!("{message}");
        status.warn("SlotLost", message);
    }
    status::apply_slot_health(status, &health);
    let (restart, created) = source.ensure_slot(&args.slot)?;
    if created {
        tracing::info!(slot = args.slot, %restart, "created the physical replication slot");
    }
    let mut stream = Stream::start(args, &mut source, size, server.timeline, restart)?;
    status.status.state = "streaming".into();
    status.status.last_error = None;
    status.positions(server.flush, stream.spool.written());
    status.write();
    tracing::info!(slot = args.slot, from = %stream.spool.written(), timeline = server.timeline, "streaming WAL");
    stream.pump(config, args, target, &mut source, status, progressed).await
}

/// The receiving side of one session.
struct Stream {
    spool: Spool,
    /// The end of WAL the archive holds, as far as this session knows (never below the slot's
    /// restart position, which was acknowledged as archived before).
    archived: Lsn,
    /// What is stored of the current segment's partial (`None`: not looked at yet).
    partial: Option<StoredPartial>,
    server_end: Lsn,
}

impl Stream {
    /// Starts streaming at the beginning of the segment holding the slot's restart position.
    fn start(
        args: &WalReceiveArgs,
        source: &mut Source,
        size: SegmentSize,
        timeline: u32,
        restart: Lsn,
    ) -> Result<Self, ReceiveError> {
        let spool = Spool::begin(&args.spool, size, timeline, restart)?;
        source.start(&args.slot, spool.written(), timeline)?;
        Ok(Self { archived: restart, partial: None, server_end: restart, spool })
    }

    async fn pump(
        &mut self,
        config: &AgentConfig,
        args: &WalReceiveArgs,
        target: &Target,
        source: &mut Source,
        status: &mut StatusFile,
        progressed: &mut bool,
    ) -> Result<(), ReceiveError> {
        let partial_interval = Duration::from_secs(args.partial_interval.max(1));
        let silence = Duration::from_secs(args.receive_timeout.max(5));
        let (mut next_report, mut next_partial) = (Instant::now(), Instant::now() + partial_interval);
        let mut next_health = Instant::now() + HEALTH_INTERVAL;
        let mut last_message = Instant::now();
        loop {
            let now = Instant::now();
            if now >= next_partial {
                if self.push_partial(target, status).await? {
                    *progressed = true;
                    next_report = now;
                } else if self.archived >= self.server_end {
                    // Caught up: the keepalive this report asks for confirms the archive
                    // current, so an idle server's recovery point trails by this interval too.
                    next_report = now;
                }
                next_partial = now + partial_interval;
            }
            if now >= next_report {
                source.report(self.spool.written(), self.archived).await?;
                status.write();
                next_report = now + REPORT_INTERVAL;
            }
            if now >= next_health {
                match status::slot_health(&config.postgres, &args.slot).await {
                    Ok(health) => status::apply_slot_health(status, &health),
                    Err(error) => tracing::warn!(%error, "cannot read the slot's health"),
                }
                next_health = now + HEALTH_INTERVAL;
            }
            if last_message.elapsed() > silence {
                return Err(ReceiveError::Silent { target: source.target().to_string(), seconds: silence.as_secs() });
            }
            let wait = next_partial.min(next_report).saturating_duration_since(Instant::now());
            let Received::Message(payload) = source.next(wait.max(Duration::from_millis(10))).await? else { continue };
            last_message = Instant::now();
            let keepalive = match message::parse(&payload)? {
                ServerMessage::XLogData { start, server_end, data } => {
                    self.server_end = self.server_end.max(server_end);
                    if self.receive(target, start, data, status).await? {
                        *progressed = true;
                        next_report = Instant::now();
                    }
                    false
                }
                ServerMessage::Keepalive { server_end, reply_requested } => {
                    self.server_end = self.server_end.max(server_end);
                    if reply_requested {
                        next_report = Instant::now();
                    }
                    true
                }
            };
            // A keepalive that confirms the archive current is written at once: held until the
            // next report, the confirmation would reach the status file a report interval old.
            if status.positions(self.server_end, self.spool.written()) && keepalive {
                status.write();
            }
        }
    }

    /// Writes received WAL to the spool and archives each segment it completes; true when the
    /// archived position advanced.
    async fn receive(
        &mut self,
        target: &Target,
        start: Lsn,
        data: &[u8],
        status: &mut StatusFile,
    ) -> Result<bool, ReceiveError> {
        let completed = self.spool.append(start, data)?;
        let advanced = !completed.is_empty();
        for path in completed {
            let outcome = archive::push_segment(target, &path).await?;
            let _ = std::fs::remove_file(&path);
            let name = path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
            tracing::info!(segment = name, ?outcome, "archived a streamed segment");
            self.partial = None;
            let size = self.spool.size();
            let end = size.parse_segment(&name).map(|(_, number)| size.start_of(number + 1)).unwrap_or(self.archived);
            self.archived = self.archived.max(end);
            status.archived(self.archived);
            status.write();
        }
        Ok(advanced)
    }

    /// Stores the segment being filled as `<segment>.partial` when it grew since; true when the
    /// archived position advanced.
    async fn push_partial(&mut self, target: &Target, status: &mut StatusFile) -> Result<bool, ReceiveError> {
        let written = self.spool.written();
        if written <= self.archived || self.spool.filled() == 0 {
            return Ok(false);
        }
        let content = self.spool.read_filled()?;
        let stored = archive::push_partial(
            target,
            &self.spool.segment_name(),
            &self.spool.partial_path(),
            content,
            self.partial,
        )
        .await?;
        self.partial = Some(stored);
        let held = Lsn(self.spool.segment_start().0 + stored.len.min(self.spool.filled()));
        if held <= self.archived {
            return Ok(false);
        }
        self.archived = held;
        status.archived(held);
        status.write();
        tracing::debug!(segment = self.spool.segment_name(), archived = %held, "stored the partial segment");
        Ok(true)
    }
}
