//! The proxy's seeded chaos: each connection draws one fate from a generator seeded with a
//! fixed seed. The moto server answers one request per connection (`Connection: close`), so a
//! fate is a request's fate: passed through, reset, throttled (`503 SlowDown`, answered by the
//! proxy itself with S3's XML error body), answered after a short stall, never answered, or
//! forwarded and then its answer lost (the server did the work; the client sees a reset).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{CONNECT_TIMEOUT, drain, forward};

/// How often each fault strikes, in connections per thousand, and how long a stall lasts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chaos {
    /// Seed of the generator: the same seed draws the same fates in the same order.
    pub seed: u64,
    pub resets: u16,
    /// Forward the request, wait for the server's answer to start, then reset the client.
    pub lost_answers: u16,
    /// Answer `503 SlowDown` without forwarding.
    pub slow_downs: u16,
    /// Hold the request for `stall` before forwarding it.
    pub stalls: u16,
    pub stall: Duration,
    /// Read the request and never answer (the client's stall detector must cut it).
    pub hangs: u16,
}

/// One connection's fate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Fate {
    PassThrough,
    Reset,
    LostAnswer,
    SlowDown,
    Stall,
    Hang,
}

impl Chaos {
    /// The fate of a draw in 0..1000.
    pub(super) fn fate(&self, draw: u64) -> Fate {
        let mut bound = 0;
        for (share, fate) in [
            (self.resets, Fate::Reset),
            (self.lost_answers, Fate::LostAnswer),
            (self.slow_downs, Fate::SlowDown),
            (self.stalls, Fate::Stall),
            (self.hangs, Fate::Hang),
        ] {
            bound += u64::from(share);
            if draw < bound {
                return fate;
            }
        }
        Fate::PassThrough
    }
}

/// Counts of faults a chaotic proxy dealt, to report and to check that faults happened.
#[derive(Clone, Debug, Default)]
pub struct ChaosCounts {
    counts: Arc<[AtomicU64; 6]>,
}

impl ChaosCounts {
    pub(super) fn count(&self, fate: Fate) {
        self.counts[fate as usize].fetch_add(1, Ordering::Relaxed);
    }

    fn get(&self, fate: Fate) -> u64 {
        self.counts[fate as usize].load(Ordering::Relaxed)
    }

    pub fn passed(&self) -> u64 {
        self.get(Fate::PassThrough)
    }
    pub fn resets(&self) -> u64 {
        self.get(Fate::Reset)
    }
    pub fn lost_answers(&self) -> u64 {
        self.get(Fate::LostAnswer)
    }
    pub fn slow_downs(&self) -> u64 {
        self.get(Fate::SlowDown)
    }
    pub fn stalls(&self) -> u64 {
        self.get(Fate::Stall)
    }
    pub fn hangs(&self) -> u64 {
        self.get(Fate::Hang)
    }
}

/// A small deterministic generator (splitmix64): the testkit needs no more.
#[derive(Debug)]
pub(super) struct Draws(AtomicU64);

impl Draws {
    pub(super) fn new(seed: u64) -> Self {
        Self(AtomicU64::new(seed))
    }

    /// The next draw in 0..1000.
    pub(super) fn next(&self) -> u64 {
        let mut z = self.0.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed).wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % 1000
    }
}

/// Serves one connection with the fate drawn for it.
pub(super) async fn serve(client: TcpStream, target: SocketAddr, chaos: Chaos, fate: Fate) {
    match fate {
        Fate::PassThrough => forward(client, target, None).await,
        Fate::Reset => {
            let _ = client.set_zero_linger();
        }
        Fate::Stall => {
            tokio::time::sleep(chaos.stall).await;
            forward(client, target, None).await;
        }
        Fate::Hang => drain(client).await,
        Fate::SlowDown => slow_down(client).await,
        Fate::LostAnswer => lose_answer(client, target).await,
    }
}

/// S3's answer when it throttles.
const SLOW_DOWN_BODY: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code>\
    <Message>Please reduce your request rate.</Message><RequestId>PGEC2PROXY</RequestId>\
    <HostId>pgec2-fault-proxy</HostId></Error>";

/// Reads the request (head and `Content-Length` body) and answers `503 SlowDown`.
async fn slow_down(mut client: TcpStream) {
    let Some((head, body_read)) = read_head(&mut client).await else { return };
    let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let is_head = text.starts_with("head ");
    let expects_continue = text.contains("\r\nexpect: 100-continue");
    let length = header_value(&text, "content-length").and_then(|value| value.parse::<u64>().ok()).unwrap_or(0);
    if !expects_continue {
        let mut rest = (&mut client).take(length.saturating_sub(body_read));
        let mut sink = tokio::io::sink();
        let discard = tokio::io::copy(&mut rest, &mut sink);
        if tokio::time::timeout(CONNECT_TIMEOUT, discard).await.is_err() {
            return;
        }
    }
    let body = if is_head { "" } else { SLOW_DOWN_BODY };
    let answer = format!(
        "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\
         x-amz-request-id: PGEC2PROXY\r\nConnection: close\r\n\r\n{body}",
        SLOW_DOWN_BODY.len()
    );
    let _ = client.write_all(answer.as_bytes()).await;
    let _ = client.flush().await;
    let _ = client.shutdown().await;
}

/// Reads until the end of the request head; returns it and how many body bytes came with it.
async fn read_head(client: &mut TcpStream) -> Option<(Vec<u8>, u64)> {
    let mut received = Vec::new();
    let mut buffer = [0_u8; 8192];
    loop {
        let read = tokio::time::timeout(CONNECT_TIMEOUT, client.read(&mut buffer)).await.ok()?.ok()?;
        if read == 0 {
            return None;
        }
        received.extend_from_slice(&buffer[..read]);
        if let Some(end) = received.windows(4).position(|window| window == b"\r\n\r\n") {
            let body_read = (received.len() - end - 4) as u64;
            received.truncate(end + 4);
            return Some((received, body_read));
        }
        if received.len() > 64 * 1024 {
            return None;
        }
    }
}

fn header_value<'t>(head: &'t str, name: &str) -> Option<&'t str> {
    head.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key.trim() == name).then(|| value.trim())
    })
}

/// Forwards the request and, once the server starts answering (it has done the work), resets
/// the client instead of passing the answer on.
async fn lose_answer(mut client: TcpStream, target: SocketAddr) {
    let Ok(Ok(mut upstream)) = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target)).await else {
        let _ = client.set_zero_linger();
        return;
    };
    let (mut client_read, _client_write) = client.split();
    let (mut upstream_read, mut upstream_write) = upstream.split();
    let requests = tokio::io::copy(&mut client_read, &mut upstream_write);
    let mut first = [0_u8; 1];
    let answered = upstream_read.read(&mut first);
    tokio::select! {
        _ = requests => {
            // The client closed its side before an answer: nothing to lose.
        }
        _ = answered => {}
    }
    let _ = client.set_zero_linger();
}

#[cfg(test)]
mod tests {
    use tokio::net::TcpListener;

    use super::*;
    use crate::{FaultProxy, ProxyMode};

    fn only(fault: impl FnOnce(&mut Chaos)) -> Chaos {
        let mut chaos =
            Chaos { seed: 1, resets: 0, lost_answers: 0, slow_downs: 0, stalls: 0, stall: Duration::ZERO, hangs: 0 };
        fault(&mut chaos);
        chaos
    }

    /// A server that answers each request with "ok" after reading it, reporting what it read.
    async fn recording_server() -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut request = vec![0_u8; 1024];
                let read = stream.read(&mut request).await.unwrap_or(0);
                let _ = sender.send(request[..read].to_vec());
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok").await;
            }
        });
        (address, receiver)
    }

    async fn exchange(port: u16) -> std::io::Result<Vec<u8>> {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
        stream.write_all(b"PUT /bucket/key HTTP/1.1\r\nHost: s3\r\nContent-Length: 4\r\n\r\nbody").await?;
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await??;
        Ok(answer)
    }

    #[tokio::test]
    async fn a_throttled_request_gets_s3s_slow_down_error_without_reaching_the_server() {
        let (server, mut requests) = recording_server().await;
        let proxy = FaultProxy::start(server).await.expect("proxy");
        proxy.set(ProxyMode::Chaos(only(|chaos| chaos.slow_downs = 1000)));
        let answer = String::from_utf8(exchange(proxy.port).await.expect("an answer")).expect("text");
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(answer.contains("<Code>SlowDown</Code>"), "{answer}");
        assert!(requests.try_recv().is_err(), "the server saw nothing");
        assert_eq!(proxy.control().chaos_counts().slow_downs(), 1);
    }

    #[tokio::test]
    async fn a_lost_answer_reaches_the_server_but_never_the_client() {
        let (server, mut requests) = recording_server().await;
        let proxy = FaultProxy::start(server).await.expect("proxy");
        proxy.set(ProxyMode::Chaos(only(|chaos| chaos.lost_answers = 1000)));
        let answer = exchange(proxy.port).await;
        assert!(answer.as_ref().is_err() || answer.as_ref().is_ok_and(Vec::is_empty), "no answer: {answer:?}");
        let seen = tokio::time::timeout(Duration::from_secs(5), requests.recv()).await.expect("in time");
        assert!(seen.expect("the server read the request").ends_with(b"body"));
    }

    #[test]
    fn the_same_seed_deals_the_same_fates() {
        let chaos = Chaos {
            seed: 9,
            resets: 100,
            lost_answers: 100,
            slow_downs: 100,
            stalls: 0,
            stall: Duration::ZERO,
            hangs: 0,
        };
        let deal = || {
            let draws = Draws::new(chaos.seed);
            (0..500).map(|_| chaos.fate(draws.next())).collect::<Vec<_>>()
        };
        let fates = deal();
        assert_eq!(fates, deal());
        let faulty = fates.iter().filter(|fate| **fate != Fate::PassThrough).count();
        assert!((100..=200).contains(&faulty), "about 30%: {faulty}");
    }
}
