//! A fault-injecting TCP proxy: put it between a client and a server (the moto server, which
//! keeps its data only in memory and must not be restarted) and make the network misbehave.
//!
//! The proxy listens on a free loopback port and forwards every connection to its target while
//! in [`ProxyMode::PassThrough`]. A test switches modes through the shared [`ProxyControl`]
//! while the code under test runs. Changing the mode also cuts the connections opened under
//! the previous mode, so pooled keep-alive connections cannot dodge the new fault.
//! [`ProxyMode::Chaos`] deals faults at random from a fixed seed ([`Chaos`]).

mod chaos;

pub use self::chaos::{Chaos, ChaosCounts};

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::{MotoServer, Result, io_error};

/// How long the proxy waits to connect to its target.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What the proxy does with connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyMode {
    /// Forward bytes both ways.
    PassThrough,
    /// Accept, then reset at once (the client sees "connection reset by peer").
    Reset,
    /// Accept and read, but never answer nor close: the client must time out.
    Stall,
    /// Forward the request, and close the connection after this many bytes of the answer.
    CloseMidResponse { after_bytes: u64 },
    /// Each connection draws its fate from a seeded generator (see [`Chaos`]).
    Chaos(Chaos),
    /// Forward both ways, passing the client's bytes on at most this fast (a slow uplink).
    Throttle { bytes_per_second: u64 },
}

/// The shared switch of a [`FaultProxy`]. Cloning gives another handle to the same proxy.
#[derive(Clone, Debug)]
pub struct ProxyControl {
    mode: Arc<watch::Sender<ProxyMode>>,
    accepted: Arc<AtomicU64>,
    /// The generator of the current chaos, reseeded when a chaos mode is set.
    draws: Arc<std::sync::Mutex<chaos::Draws>>,
    counts: ChaosCounts,
}

impl ProxyControl {
    /// Switches the mode for new connections and closes the connections opened under the old one.
    pub fn set(&self, mode: ProxyMode) {
        if let ProxyMode::Chaos(chaos) = mode {
            *self.draws.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = chaos::Draws::new(chaos.seed);
        }
        self.mode.send_replace(mode);
    }

    /// The faults chaos modes dealt so far.
    pub fn chaos_counts(&self) -> ChaosCounts {
        self.counts.clone()
    }

    pub fn mode(&self) -> ProxyMode {
        *self.mode.borrow()
    }

    /// Connections accepted so far, whatever their fate.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
}

/// A proxy on `127.0.0.1:<port>` forwarding to a target; stops when dropped.
#[derive(Debug)]
pub struct FaultProxy {
    pub port: u16,
    control: ProxyControl,
    listener: JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy to `target` on the current tokio runtime, in pass-through mode.
    pub async fn start(target: SocketAddr) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await.map_err(io_error("bind the proxy's port"))?;
        let port = listener.local_addr().map_err(io_error("read the proxy's port"))?.port();
        let control = ProxyControl {
            mode: Arc::new(watch::Sender::new(ProxyMode::PassThrough)),
            accepted: Arc::new(AtomicU64::new(0)),
            draws: Arc::new(std::sync::Mutex::new(chaos::Draws::new(0))),
            counts: ChaosCounts::default(),
        };
        let listener = tokio::spawn(accept_loop(listener, target, control.clone()));
        Ok(Self { port, control, listener })
    }

    /// Starts a proxy in front of a moto server.
    pub async fn in_front_of(moto: &MotoServer) -> Result<Self> {
        Self::start(SocketAddr::from(([127, 0, 0, 1], moto.port))).await
    }

    /// `http://127.0.0.1:<port>`: use it as the S3 endpoint instead of the server's.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The shared switch, to flip faults from anywhere in a test.
    pub fn control(&self) -> ProxyControl {
        self.control.clone()
    }

    /// Shorthand for `control().set(mode)`.
    pub fn set(&self, mode: ProxyMode) {
        self.control.set(mode);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.listener.abort();
        // Connection tasks end when the mode changes away from theirs: this ends them all.
        self.control.mode.send_replace(ProxyMode::Reset);
    }
}

async fn accept_loop(listener: TcpListener, target: SocketAddr, control: ProxyControl) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            // Out of file descriptors or similar: wait instead of spinning.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        control.accepted.fetch_add(1, Ordering::Relaxed);
        let mode = control.mode.subscribe();
        tokio::spawn(serve(client, target, mode, control.clone()));
    }
}

/// Serves one connection under the mode current at accept time, until that mode changes.
async fn serve(client: TcpStream, target: SocketAddr, mut mode: watch::Receiver<ProxyMode>, control: ProxyControl) {
    let accepted_under = *mode.borrow_and_update();
    let work = async move {
        match accepted_under {
            ProxyMode::PassThrough => forward(client, target, None).await,
            ProxyMode::CloseMidResponse { after_bytes } => forward(client, target, Some(after_bytes)).await,
            ProxyMode::Reset => {
                let _ = client.set_zero_linger();
            }
            ProxyMode::Stall => drain(client).await,
            ProxyMode::Throttle { bytes_per_second } => throttled(client, target, bytes_per_second).await,
            ProxyMode::Chaos(settings) => {
                let draw = control.draws.lock().unwrap_or_else(std::sync::PoisonError::into_inner).next();
                let fate = settings.fate(draw);
                control.counts.count(fate);
                chaos::serve(client, target, settings, fate).await;
            }
        }
    };
    tokio::select! {
        () = work => {}
        _ = mode.wait_for(|current| *current != accepted_under) => {}
    }
}

/// Forwards both ways; with `limit`, closes after that many bytes from the target.
async fn forward(mut client: TcpStream, target: SocketAddr, limit: Option<u64>) {
    let Ok(Ok(mut upstream)) = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target)).await else {
        let _ = client.set_zero_linger();
        return;
    };
    let Some(limit) = limit else {
        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        return;
    };
    let (mut client_read, mut client_write) = client.split();
    let (upstream_read, mut upstream_write) = upstream.split();
    let requests = tokio::io::copy(&mut client_read, &mut upstream_write);
    let mut answer = upstream_read.take(limit);
    let answers = async {
        let _ = tokio::io::copy(&mut answer, &mut client_write).await;
        let _ = client_write.flush().await;
    };
    tokio::select! {
        _ = requests => {}
        () = answers => {}
    }
}

/// Forwards both ways, the client's bytes at most `bytes_per_second`.
async fn throttled(mut client: TcpStream, target: SocketAddr, bytes_per_second: u64) {
    let Ok(Ok(mut upstream)) = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target)).await else {
        let _ = client.set_zero_linger();
        return;
    };
    let (mut client_read, mut client_write) = client.split();
    let (mut upstream_read, mut upstream_write) = upstream.split();
    let requests = async {
        let mut buffer = vec![0_u8; 16 * 1024];
        while let Ok(read) = client_read.read(&mut buffer).await {
            if read == 0 || upstream_write.write_all(&buffer[..read]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs_f64(read as f64 / bytes_per_second.max(1) as f64)).await;
        }
    };
    let answers = tokio::io::copy(&mut upstream_read, &mut client_write);
    tokio::select! {
        () = requests => {}
        _ = answers => {}
    }
}

/// Reads and discards everything the client sends, never answering.
async fn drain(mut client: TcpStream) {
    let mut buffer = vec![0_u8; 64 * 1024];
    while let Ok(read) = client.read(&mut buffer).await {
        if read == 0 {
            // The client closed its side; keep ours open (a stalled server does not close).
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server that answers every read with the same bytes.
    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind echo");
        let address = listener.local_addr().expect("echo address");
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut read, mut write) = stream.split();
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                });
            }
        });
        address
    }

    async fn round_trip(port: u16, message: &[u8]) -> std::io::Result<Vec<u8>> {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
        stream.write_all(message).await?;
        let mut answer = vec![0_u8; message.len()];
        stream.read_exact(&mut answer).await?;
        Ok(answer)
    }

    const PATIENCE: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn pass_through_forwards_both_ways() {
        let proxy = FaultProxy::start(echo_server().await).await.expect("proxy");
        let answer = tokio::time::timeout(PATIENCE, round_trip(proxy.port, b"hello")).await.expect("in time");
        assert_eq!(answer.expect("echo"), b"hello");
        assert_eq!(proxy.control().accepted(), 1);
    }

    #[tokio::test]
    async fn reset_mode_fails_new_connections_and_pass_through_heals_them() {
        let proxy = FaultProxy::start(echo_server().await).await.expect("proxy");
        proxy.set(ProxyMode::Reset);
        let failed = tokio::time::timeout(PATIENCE, round_trip(proxy.port, b"hello")).await.expect("in time");
        assert!(failed.is_err(), "a reset connection must not answer: {failed:?}");
        proxy.set(ProxyMode::PassThrough);
        let answer = tokio::time::timeout(PATIENCE, round_trip(proxy.port, b"again")).await.expect("in time");
        assert_eq!(answer.expect("echo"), b"again");
    }

    #[tokio::test]
    async fn stall_mode_never_answers() {
        let proxy = FaultProxy::start(echo_server().await).await.expect("proxy");
        proxy.set(ProxyMode::Stall);
        let stalled = tokio::time::timeout(Duration::from_millis(300), round_trip(proxy.port, b"hello")).await;
        assert!(stalled.is_err(), "a stalled connection must not answer");
    }

    #[tokio::test]
    async fn close_mid_response_cuts_the_answer_short() {
        let proxy = FaultProxy::start(echo_server().await).await.expect("proxy");
        proxy.set(ProxyMode::CloseMidResponse { after_bytes: 3 });
        let mut stream = TcpStream::connect(("127.0.0.1", proxy.port)).await.expect("connect");
        stream.write_all(b"hello").await.expect("write");
        let mut answer = Vec::new();
        let read = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut answer)).await.expect("closed in time");
        read.expect("a clean close after the cut");
        assert_eq!(answer, b"hel");
    }

    #[tokio::test]
    async fn changing_the_mode_cuts_connections_opened_before() {
        let proxy = FaultProxy::start(echo_server().await).await.expect("proxy");
        let mut stream = TcpStream::connect(("127.0.0.1", proxy.port)).await.expect("connect");
        stream.write_all(b"ping").await.expect("write");
        let mut answer = [0_u8; 4];
        stream.read_exact(&mut answer).await.expect("echo before the switch");
        proxy.set(ProxyMode::Stall);
        let mut rest = Vec::new();
        let _closed = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut rest)).await.expect("closed in time");
        assert!(rest.is_empty(), "the connection opened before the switch must be closed, got {rest:?}");
    }
}
