//! Scratch directories owned by the postgres user, and running commands as that user.

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::unistd::{Gid, Uid, User, chown};

use crate::{HarnessError, Result, io_error};

/// The OS user PostgreSQL runs as when the tests run as root; `None` when not root (the
/// current user then runs everything).
pub fn postgres_user() -> Option<User> {
    if !Uid::effective().is_root() {
        return None;
    }
    User::from_name("postgres").ok().flatten()
}

/// A command that runs as the postgres user when we are root, as ourselves otherwise.
pub fn as_postgres(program: impl AsRef<std::ffi::OsStr>) -> Command {
    use std::os::unix::process::CommandExt;
    let mut command = Command::new(program);
    if let Some(user) = postgres_user() {
        command.uid(user.uid.as_raw()).gid(user.gid.as_raw());
        command.env("HOME", &user.dir).env("USER", &user.name);
    }
    command
}

/// Where [`free_port`] looks: below Linux's ephemeral range (32768–60999 by default), which the
/// kernel hands to outgoing connections: a port taken from that range and released can be taken
/// by any client socket before the server that was meant to listen on it binds it. (The local
/// cloud's hosts listen on 26000–31999.)
const TEST_PORTS: std::ops::Range<u16> = 20_000..26_000;

/// A free TCP port on 127.0.0.1 for a server a test starts: bound then released, chosen at
/// random below the ephemeral range and never handed out twice by this process.
pub fn free_port() -> Result<u16> {
    use std::collections::HashSet;
    use std::hash::{BuildHasher, Hasher};
    use std::sync::{Mutex, PoisonError};
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut given = GIVEN.lock().unwrap_or_else(PoisonError::into_inner);
    let given = given.get_or_insert_with(HashSet::new);
    let span = u64::from(TEST_PORTS.end - TEST_PORTS.start);
    for _ in 0..200 {
        let mut random = std::collections::hash_map::RandomState::new().build_hasher();
        random.write_u32(std::process::id());
        let offset = u16::try_from(random.finish() % span).unwrap_or(0);
        let port = TEST_PORTS.start + offset;
        if !given.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.insert(port);
            return Ok(port);
        }
    }
    let listener = TcpListener::bind("127.0.0.1:0").map_err(io_error("bind a free port"))?;
    let port = listener.local_addr().map_err(io_error("read the bound port"))?.port();
    Ok(port)
}

/// A temporary directory under /tmp owned by the postgres user, removed on drop.
#[derive(Debug)]
pub struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("pgec2-test-")
            .tempdir_in("/tmp")
            .map_err(io_error("create scratch dir"))?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .map_err(io_error("chmod scratch dir"))?;
        give_to_postgres(dir.path())?;
        Ok(Self { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Creates `relative` (and parents) inside the scratch dir, owned by the postgres user.
    pub fn subdir(&self, relative: &str) -> Result<PathBuf> {
        let path = self.path().join(relative);
        std::fs::create_dir_all(&path).map_err(io_error(format!("create {}", path.display())))?;
        let mut current = path.as_path();
        while current != self.path() {
            give_to_postgres(current)?;
            current = match current.parent() {
                Some(parent) => parent,
                None => break,
            };
        }
        Ok(path)
    }

    /// Copies an executable into `<scratch>/bin/` where the postgres user can run it.
    pub fn install_binary(&self, source: &Path) -> Result<PathBuf> {
        let bin = self.subdir("bin")?;
        let name =
            source.file_name().ok_or_else(|| HarnessError::Setup(format!("{} has no file name", source.display())))?;
        let target = bin.join(name);
        std::fs::copy(source, &target).map_err(io_error(format!(
            "copy {} to {}",
            source.display(),
            target.display()
        )))?;
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755)).map_err(io_error("chmod binary"))?;
        Ok(target)
    }

    /// Keeps the directory after the test (for debugging a failure).
    pub fn keep(self) -> PathBuf {
        self.dir.keep()
    }
}

/// Gives `path` to the postgres user (no-op when not root).
pub fn give_to_postgres(path: &Path) -> Result<()> {
    if let Some(user) = postgres_user() {
        chown(path, Some(user.uid), Some(user.gid))
            .map_err(|error| HarnessError::Setup(format!("chown {} to postgres: {error}", path.display())))?;
    }
    Ok(())
}

/// Runs `command`, failing with its stderr when it exits non-zero; returns stdout.
pub(crate) fn run(mut command: Command) -> Result<String> {
    let rendered = format!("{command:?}");
    let output = command.output().map_err(io_error(format!("spawn {rendered}")))?;
    if !output.status.success() {
        return Err(HarnessError::Command {
            command: rendered,
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[allow(dead_code)]
pub(crate) fn postgres_ids() -> Option<(Uid, Gid)> {
    postgres_user().map(|user| (user.uid, user.gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_below_the_ephemeral_range_distinct_and_bindable() {
        let ports: Vec<u16> = (0..50).map(|_| free_port().expect("a free port")).collect();
        let distinct: std::collections::HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len(), "never handed out twice: {ports:?}");
        for port in ports {
            assert!(TEST_PORTS.contains(&port), "{port} is outside {TEST_PORTS:?}");
            TcpListener::bind(("127.0.0.1", port)).unwrap_or_else(|error| panic!("bind {port}: {error}"));
        }
    }
}
