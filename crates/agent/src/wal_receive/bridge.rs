//! A one-connection bridge from loopback TCP to the server's Unix socket.
//!
//! The replication library connects over TCP only, while a pgec2 host lets its OS user replicate
//! over the Unix socket alone (`local replication <user> peer`; no password exists for it). So
//! when `PGHOST` is a socket directory the receiver listens on an ephemeral 127.0.0.1 port,
//! accepts the one connection its own library opens (checked: the connecting socket must be one
//! of this process's file descriptors, so no other local process can borrow the peer-
//! authenticated connection), and copies bytes between it and the Unix socket.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::net::{TcpListener, UnixStream};
use tokio::task::JoinHandle;

/// How long the bridge waits for the library to connect.
const ACCEPT_TIMEOUT: Duration = Duration::from_secs(30);

/// A listening bridge; dropping it ends the bridged connection.
pub struct Bridge {
    pub port: u16,
    task: JoinHandle<()>,
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Opens a bridge to `<socket_dir>/.s.PGSQL.<port>`.
pub async fn open(socket_dir: &Path, port: u16) -> io::Result<Bridge> {
    let socket = socket_dir.join(format!(".s.PGSQL.{port}"));
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let bridge_port = listener.local_addr()?.port();
    let task = tokio::spawn(serve_one(listener, socket));
    Ok(Bridge { port: bridge_port, task })
}

/// Accepts connections until one comes from this process, then bridges it to `socket`.
async fn serve_one(listener: TcpListener, socket: PathBuf) {
    let deadline = tokio::time::Instant::now() + ACCEPT_TIMEOUT;
    let (mut tcp, peer) = loop {
        let Ok(Ok((tcp, peer))) = tokio::time::timeout_at(deadline, listener.accept()).await else { return };
        if is_own_socket(peer) {
            break (tcp, peer);
        }
        tracing::warn!(%peer, "refused a connection to the replication bridge from another process");
    };
    drop(listener);
    let mut unix = match UnixStream::connect(&socket).await {
        Ok(unix) => unix,
        Err(error) => {
            tracing::warn!(socket = %socket.display(), %error, "the replication bridge cannot reach the server's socket");
            return;
        }
    };
    if let Err(error) = tokio::io::copy_bidirectional(&mut tcp, &mut unix).await {
        tracing::debug!(%peer, %error, "the replication bridge closed");
    }
}

/// Whether the TCP socket at `peer` (the connecting side, on loopback) is open in this process.
fn is_own_socket(peer: SocketAddr) -> bool {
    let Some(inode) = loopback_socket_inode(peer.port()) else { return false };
    let wanted = format!("socket:[{inode}]");
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else { return false };
    entries
        .flatten()
        .any(|entry| std::fs::read_link(entry.path()).is_ok_and(|link| link.as_os_str() == wanted.as_str()))
}

/// The inode of the IPv4 loopback socket bound to `port`, from `/proc/net/tcp`.
fn loopback_socket_inode(port: u16) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    inode_in_table(&table, port)
}

fn inode_in_table(table: &str, port: u16) -> Option<u64> {
    let local = format!("0100007F:{port:04X}");
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(1) == Some(&local.as_str())).then(|| fields.get(9)?.parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_inode_of_a_loopback_socket_is_found_by_its_port() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   \
                     0: 0100007F:1538 00000000:0000 0A 00000000:00000000 00:00000000 00000000   108        0 31337 1 0\n   \
                     1: 0100007F:C350 0100007F:1538 01 00000000:00000000 00:00000000 00000000     0        0 4242 1 0\n";
        assert_eq!(inode_in_table(table, 0xC350), Some(4242));
        assert_eq!(inode_in_table(table, 5432), Some(31337));
        assert_eq!(inode_in_table(table, 1), None);
    }

    #[test]
    fn a_connection_from_this_process_is_recognised_as_its_own() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
        let client = std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (_server, peer) = listener.accept().expect("accept");
        assert!(is_own_socket(peer));
        drop(client);
    }
}
