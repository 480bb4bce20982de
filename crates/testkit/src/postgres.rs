//! A real PostgreSQL cluster in a scratch directory, run as the postgres user.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::scratch::{as_postgres, free_port, run};
use crate::{HarnessError, Result, Scratch, io_error};

/// The newest `/usr/lib/postgresql/<N>/bin`, or `$PG_BIN_DIR`.
pub fn postgres_bin_dir() -> Result<PathBuf> {
    if let Ok(dir) = std::env::var("PG_BIN_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let mut versions: Vec<u32> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(io_error("list /usr/lib/postgresql (is postgresql installed?)"))?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    versions.sort_unstable();
    let newest =
        versions.last().ok_or_else(|| HarnessError::Setup("no PostgreSQL under /usr/lib/postgresql".into()))?;
    Ok(PathBuf::from(format!("/usr/lib/postgresql/{newest}/bin")))
}

/// How to create a cluster.
#[derive(Clone, Debug)]
pub struct PgOptions {
    pub data_checksums: bool,
    /// Extra postgresql.conf lines (e.g. `archive_mode = on`).
    pub config: Vec<String>,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self { data_checksums: true, config: Vec::new() }
    }
}

/// An initdb'd cluster: `<scratch>/<name>/data`, sockets in `<scratch>/<name>/socket`.
#[derive(Debug)]
pub struct PgCluster {
    pub data_dir: PathBuf,
    pub socket_dir: PathBuf,
    pub log_file: PathBuf,
    pub port: u16,
    pub bin_dir: PathBuf,
    /// Environment the server (and the commands it runs) gets besides the test's own.
    pub server_env: Vec<(String, String)>,
    running: bool,
}

impl PgCluster {
    /// Runs initdb (as postgres) and writes the base configuration plus `options.config`.
    pub fn init(scratch: &Scratch, name: &str, options: &PgOptions) -> Result<Self> {
        let root = scratch.subdir(name)?;
        let socket_dir = scratch.subdir(&format!("{name}/socket"))?;
        let data_dir = root.join("data");
        let bin_dir = postgres_bin_dir()?;
        let mut initdb = as_postgres(bin_dir.join("initdb"));
        initdb.arg("-D").arg(&data_dir).args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8"]);
        if options.data_checksums {
            initdb.arg("--data-checksums");
        }
        run(initdb)?;
        let cluster = Self {
            log_file: root.join("postgres.log"),
            data_dir,
            socket_dir,
            port: free_port()?,
            bin_dir,
            server_env: Vec::new(),
            running: false,
        };
        let mut conf = format!(
            "\n# pgec2 test harness\nport = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nfsync = off\nmax_wal_senders = 4\n",
            cluster.port,
            cluster.socket_dir.display()
        );
        for line in &options.config {
            let _ = writeln!(conf, "{line}");
        }
        cluster.append_config(&conf)?;
        Ok(cluster)
    }

    /// Wraps an existing data directory (e.g. one restored by backup-fetch) without initdb.
    pub fn existing(scratch: &Scratch, name: &str, data_dir: &Path) -> Result<Self> {
        let root = scratch.subdir(name)?;
        let socket_dir = scratch.subdir(&format!("{name}/socket"))?;
        Ok(Self {
            log_file: root.join("postgres.log"),
            data_dir: data_dir.to_path_buf(),
            socket_dir,
            port: free_port()?,
            bin_dir: postgres_bin_dir()?,
            server_env: Vec::new(),
            running: false,
        })
    }

    /// Appends text to postgresql.conf (as root; the file stays owned by postgres).
    pub fn append_config(&self, text: &str) -> Result<()> {
        use std::io::Write;
        let path = self.data_dir.join("postgresql.conf");
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(io_error(format!("open {}", path.display())))?;
        file.write_all(text.as_bytes()).map_err(io_error("append config"))
    }

    /// `pg_ctl start -w` with this cluster's port and socket directory.
    pub fn start(&mut self) -> Result<()> {
        let options = format!("-p {} -k {} -c listen_addresses=127.0.0.1", self.port, self.socket_dir.display());
        let mut command = as_postgres(self.bin_dir.join("pg_ctl"));
        command
            .arg("start")
            .arg("-w")
            .args(["-t", "120"])
            .arg("-D")
            .arg(&self.data_dir)
            .arg("-l")
            .arg(&self.log_file)
            .args(["-o", &options])
            .envs(self.server_env.iter().map(|(name, value)| (name, value)));
        run(command)
            .map_err(|error| HarnessError::Setup(format!("{error}\n--- server log ---\n{}", self.log_tail())))?;
        self.running = true;
        Ok(())
    }

    /// `pg_ctl stop -m fast`.
    pub fn stop(&mut self) -> Result<()> {
        self.stop_with("fast")
    }

    /// `pg_ctl stop -m immediate`: the server stops as if its host lost power (no checkpoint,
    /// no final WAL switch); recovery is needed to start it again.
    pub fn stop_immediately(&mut self) -> Result<()> {
        self.stop_with("immediate")
    }

    fn stop_with(&mut self, mode: &str) -> Result<()> {
        if self.running {
            let mut command = as_postgres(self.bin_dir.join("pg_ctl"));
            command.arg("stop").arg("-w").args(["-m", mode, "-t", "120"]).arg("-D").arg(&self.data_dir);
            run(command)?;
            self.running = false;
        }
        Ok(())
    }

    /// Runs SQL through psql and returns its unaligned, tuples-only output, trimmed.
    pub fn psql(&self, sql: &str) -> Result<String> {
        Ok(run(psql_command(&self.bin_dir, &self.socket_dir, self.port, sql))?.trim().to_string())
    }

    /// A libpq connection string for this cluster (over its socket directory).
    pub fn connection_string(&self) -> String {
        format!("host={} port={} user=postgres dbname=postgres", self.socket_dir.display(), self.port)
    }

    /// Connects with tokio-postgres; the connection task is spawned on the current runtime.
    pub async fn connect(&self) -> Result<tokio_postgres::Client> {
        let (client, connection) = tokio::time::timeout(
            Duration::from_secs(30),
            tokio_postgres::connect(&self.connection_string(), tokio_postgres::NoTls),
        )
        .await
        .map_err(|_| HarnessError::Setup("connecting to PostgreSQL timed out".into()))?
        .map_err(|error| HarnessError::Setup(format!("connect to PostgreSQL: {error}")))?;
        tokio::spawn(connection);
        Ok(client)
    }

    /// Runs a binary from PostgreSQL's bin dir as postgres (e.g. pgbench, pg_amcheck) against this cluster.
    pub fn run_tool(&self, tool: &str, args: &[&str]) -> Result<String> {
        let mut command = as_postgres(self.bin_dir.join(tool));
        command
            .env("PGHOST", &self.socket_dir)
            .env("PGPORT", self.port.to_string())
            .env("PGUSER", "postgres")
            .env("PGDATABASE", "postgres");
        command.args(args);
        run(command)
    }

    /// The last 40 lines of the server log.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log_file).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    pub fn is_running(&self) -> bool {
        self.running
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.running {
            let mut command = as_postgres(self.bin_dir.join("pg_ctl"));
            command.arg("stop").args(["-m", "immediate", "-t", "30"]).arg("-D").arg(&self.data_dir);
            let _ = command.output();
        }
    }
}

/// `psql` as the postgres user against the server listening on `socket_dir` and `port`
/// (unaligned, tuples only, stopping at the first error).
pub fn psql_command(bin_dir: &Path, socket_dir: &Path, port: u16, sql: &str) -> std::process::Command {
    let mut command = as_postgres(bin_dir.join("psql"));
    command
        .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-U", "postgres", "-d", "postgres"])
        .arg("-h")
        .arg(socket_dir)
        .args(["-p", &port.to_string(), "-c", sql]);
    command
}

/// Runs SQL on the server at `socket_dir` and `port`: its trimmed output, or psql's stderr.
pub fn psql_at(socket_dir: &Path, port: u16, sql: &str) -> std::result::Result<String, String> {
    let bin_dir = postgres_bin_dir().map_err(|error| error.to_string())?;
    let output = psql_command(&bin_dir, socket_dir, port, sql).output().map_err(|error| error.to_string())?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}
