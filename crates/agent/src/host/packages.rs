//! PostgreSQL N from the PostgreSQL apt repository (ec2 profile), installed only when its
//! server binary is missing. Debian's packaging would create and start a default cluster on
//! install; pgec2 turns that off first (`create_main_cluster = false`), since the data
//! directory is the host spec's and the service is pgec2's own unit.

use std::path::Path;
use std::time::Duration;

use super::StepError;
use super::command::Cmd;
use super::files;

/// The repository's signing key (https, like the repository's own instructions).
const KEY_URL: &str = "https://www.postgresql.org/media/keys/ACCC4CF8.asc";
const KEY_PATH: &str = "/usr/share/postgresql-common/pgdg/apt.postgresql.org.asc";
const SOURCES_PATH: &str = "/etc/apt/sources.list.d/pgdg.list";
const CREATECLUSTER_PATH: &str = "/etc/postgresql-common/createcluster.conf";
/// How long one apt-get may run (it waits for the dpkg lock up to [`LOCK_WAIT_SECONDS`]).
const APT_TIMEOUT: Duration = Duration::from_secs(900);
const LOCK_WAIT_SECONDS: u32 = 300;

/// The distribution's code name (`VERSION_CODENAME` in /etc/os-release).
pub fn codename(os_release: &str) -> Option<String> {
    os_release.lines().find_map(|line| {
        let value = line.strip_prefix("VERSION_CODENAME=")?.trim().trim_matches('"');
        (!value.is_empty()).then(|| value.to_string())
    })
}

/// The apt source line of the PostgreSQL repository for a distribution.
pub fn sources_line(codename: &str) -> String {
    format!("deb [signed-by={KEY_PATH}] https://apt.postgresql.org/pub/repos/apt {codename}-pgdg main\n")
}

/// createcluster.conf with the default cluster turned off (other settings kept).
pub fn without_main_cluster(createcluster: &str) -> Option<String> {
    let active = |line: &str| line.split('#').next().unwrap_or_default().replace(' ', "");
    if createcluster.lines().any(|line| active(line) == "create_main_cluster=false") {
        return None;
    }
    let mut kept: String = createcluster
        .lines()
        .filter(|line| !active(line).starts_with("create_main_cluster="))
        .map(|line| format!("{line}\n"))
        .collect();
    kept.push_str(
        "# pgec2: the data directory and its service are managed by pgec2-agent\ncreate_main_cluster = false\n",
    );
    Some(kept)
}

/// Installs `postgresql-<version>` unless `postgres_binary` exists. Returns what it did.
pub async fn install(version: u32, postgres_binary: &Path) -> Result<Option<String>, StepError> {
    if postgres_binary.exists() {
        return Ok(None);
    }
    if !Path::new("/usr/bin/apt-get").exists() {
        return Err(StepError::Prerequisite {
            problem: format!("{} is missing and this host has no apt-get", postgres_binary.display()),
            remedy: format!("use a Debian or Ubuntu image, or one with PostgreSQL {version} installed"),
        });
    }
    let os_release = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    let Some(codename) = codename(&os_release) else {
        return Err(StepError::Prerequisite {
            problem: "/etc/os-release has no VERSION_CODENAME".into(),
            remedy: "cannot pick the apt repository; use a Debian or Ubuntu image".into(),
        });
    };
    files::ensure_directory(Path::new(KEY_PATH).parent().unwrap_or(Path::new("/")), 0o755, None)?;
    Cmd::new("curl")
        .args(["--fail", "--silent", "--show-error", "--location", "--retry", "5", "--retry-connrefused"])
        .args(["--connect-timeout", "10", "--max-time", "120", "--output", KEY_PATH, KEY_URL])
        .timeout(Duration::from_secs(600))
        .run()
        .await?;
    files::write_file(Path::new(SOURCES_PATH), sources_line(&codename).as_bytes(), 0o644, None)?;
    apt_get(&["update"]).await?;
    apt_get(&["install", "-y", "--no-install-recommends", "postgresql-common"]).await?;
    let createcluster =
        String::from_utf8_lossy(&files::read_optional(Path::new(CREATECLUSTER_PATH))?.unwrap_or_default()).into_owned();
    if let Some(updated) = without_main_cluster(&createcluster) {
        files::write_file(Path::new(CREATECLUSTER_PATH), updated.as_bytes(), 0o644, None)?;
    }
    let package = format!("postgresql-{version}");
    apt_get(&["install", "-y", "--no-install-recommends", &package]).await?;
    Ok(Some(format!("installed {package} from apt.postgresql.org ({codename}-pgdg)")))
}

async fn apt_get(args: &[&str]) -> Result<(), StepError> {
    Cmd::new("apt-get")
        .args(["-q", "-o", &format!("DPkg::Lock::Timeout={LOCK_WAIT_SECONDS}")])
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .timeout(APT_TIMEOUT)
        .run()
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_repository_follows_the_distribution() {
        let ubuntu = "NAME=\"Ubuntu\"\nVERSION_ID=\"24.04\"\nVERSION_CODENAME=noble\nID=ubuntu\n";
        assert_eq!(codename(ubuntu).as_deref(), Some("noble"));
        assert_eq!(codename("ID=debian\nVERSION_CODENAME=\"bookworm\"\n").as_deref(), Some("bookworm"));
        assert_eq!(codename("ID=amzn\n"), None);
        assert_eq!(
            sources_line("noble"),
            "deb [signed-by=/usr/share/postgresql-common/pgdg/apt.postgresql.org.asc] https://apt.postgresql.org/pub/repos/apt noble-pgdg main\n"
        );
    }

    #[test]
    fn the_default_cluster_is_turned_off_once() {
        let packaged = "# Default values for pg_createcluster(8)\n#create_main_cluster = true\nstart_conf = 'auto'\n";
        let updated = without_main_cluster(packaged).expect("changed");
        assert!(updated.contains("start_conf = 'auto'"));
        assert!(updated.ends_with("create_main_cluster = false\n"));
        assert_eq!(without_main_cluster(&updated), None);
        let enabled = "create_main_cluster = true\n";
        let updated = without_main_cluster(enabled).expect("changed");
        assert!(!updated.contains("= true"), "{updated}");
    }
}
