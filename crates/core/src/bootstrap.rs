//! The host bootstrap: the one small shell script the operator runs on a host (through SSM on
//! EC2, as a local process in the local cloud). It installs the agent from a URL after checking
//! its sha256, writes the [`HostSpec`](crate::host_spec::HostSpec) as JSON, and runs
//! `pgec2-agent host apply`, whose JSON report is the script's stdout and whose exit status is
//! the script's. The template is `assets/bootstrap.sh` (POSIX sh, shellcheck clean).
//!
//! ```text
//! <install_dir>/pgec2-agent       the agent (spec.agentBinary must be this path)
//! <install_dir>/host-spec.json    the spec host apply reads
//! ```

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use pgec2_contract::command::{AgentCommand, HostApply};
use pgec2_contract::shell;

use crate::host_spec::{HostSpec, SpecError};

/// The script template; `@NAME@` placeholders are replaced by shell-quoted values.
pub const TEMPLATE: &str = include_str!("../assets/bootstrap.sh");

/// File name of the agent inside the install directory.
pub const AGENT_FILE_NAME: &str = "pgec2-agent";

/// File name of the spec inside the install directory.
pub const SPEC_FILE_NAME: &str = "host-spec.json";

/// What the bootstrap installs and applies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootstrapParams {
    /// Where the agent comes from: `https://…` (or `http://…`), `file:///abs/path`, or `/abs/path`.
    pub agent_url: String,
    /// The agent binary's sha256, hex.
    pub agent_sha256: String,
    /// The HostSpec as JSON. Its `agentBinary` must be [`agent_path`]`(install_dir)`.
    pub spec_json: String,
    /// Directory for the agent and the spec, e.g. `/opt/pgec2`.
    pub install_dir: PathBuf,
}

/// Why a bootstrap cannot be rendered.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("agent sha256 {0:?} is not 64 hex digits")]
    Sha256(String),
    #[error("agent URL {0:?} is not https://, http://, file:///abs/path or an absolute path")]
    AgentUrl(String),
    #[error("install directory {0:?} must be an absolute path on one line")]
    InstallDir(PathBuf),
    #[error("the host spec is not valid JSON for a HostSpec: {0}")]
    SpecJson(#[from] serde_json::Error),
    #[error("the host spec is invalid: {0}")]
    Spec(#[from] SpecError),
    #[error("the host spec's agentBinary is {actual:?} but the bootstrap installs the agent at {expected:?}")]
    AgentBinary { actual: PathBuf, expected: PathBuf },
    #[error("bootstrap value {0:?} contains a NUL byte, which a shell script cannot carry")]
    Nul(String),
}

/// Where the bootstrap installs the agent: the value for the spec's `agentBinary`.
pub fn agent_path(install_dir: &Path) -> PathBuf {
    install_dir.join(AGENT_FILE_NAME)
}

/// Renders the bootstrap script for one host, after checking every value it embeds.
pub fn render(params: &BootstrapParams) -> Result<String, BootstrapError> {
    let sha256 = params.agent_sha256.to_ascii_lowercase();
    if sha256.len() != 64 || !sha256.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(BootstrapError::Sha256(params.agent_sha256.clone()));
    }
    if !valid_agent_url(&params.agent_url) {
        return Err(BootstrapError::AgentUrl(params.agent_url.clone()));
    }
    let install_dir = params.install_dir.to_str().filter(|dir| params.install_dir.is_absolute() && one_line(dir));
    let Some(install_dir) = install_dir else {
        return Err(BootstrapError::InstallDir(params.install_dir.clone()));
    };
    let spec: HostSpec = serde_json::from_str(&params.spec_json)?;
    spec.validate()?;
    let expected = agent_path(&params.install_dir);
    if spec.agent_binary != expected {
        return Err(BootstrapError::AgentBinary { actual: spec.agent_binary, expected });
    }
    let spec_path = params.install_dir.join(SPEC_FILE_NAME).to_string_lossy().into_owned();
    let host_apply = AgentCommand::from(HostApply { spec: spec_path }).argv();
    let host_apply = shell::words(&host_apply).ok_or_else(|| BootstrapError::Nul(host_apply.join(" ")))?;
    Ok(TEMPLATE
        .replace("@AGENT_URL@", &shell_quote(&params.agent_url)?)
        .replace("@AGENT_SHA256@", &shell_quote(&sha256)?)
        .replace("@INSTALL_DIR@", &shell_quote(install_dir)?)
        .replace("@SPEC_BASE64@", &shell_quote(&BASE64.encode(params.spec_json.as_bytes()))?)
        .replace("@HOST_APPLY@", &host_apply))
}

fn valid_agent_url(url: &str) -> bool {
    let local = url.starts_with('/') || url.strip_prefix("file://").is_some_and(|path| path.starts_with('/'));
    let remote =
        url.strip_prefix("https://").or_else(|| url.strip_prefix("http://")).is_some_and(|rest| !rest.is_empty());
    (local || remote) && one_line(url)
}

fn one_line(text: &str) -> bool {
    !text.contains(['\n', '\r', '\0'])
}

/// Quotes a value for POSIX sh.
fn shell_quote(value: &str) -> Result<String, BootstrapError> {
    shell::quote(value).ok_or_else(|| BootstrapError::Nul(value.to_string()))
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;
    use crate::host_spec::tests::local_spec;

    fn params(install_dir: &str) -> BootstrapParams {
        let mut spec = local_spec();
        spec.agent_binary = agent_path(Path::new(install_dir));
        BootstrapParams {
            agent_url: "https://releases.example.com/pgec2-agent-0.1.0-x86_64".into(),
            agent_sha256: "A".repeat(64),
            spec_json: serde_json::to_string(&spec).expect("spec json"),
            install_dir: PathBuf::from(install_dir),
        }
    }

    #[test]
    fn the_rendered_bootstrap_passes_shellcheck() {
        let script = render(&params("/opt/pgec2")).expect("render");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bootstrap.sh");
        std::fs::write(&path, &script).expect("write script");
        let output = match Command::new("shellcheck").args(["--shell=sh", "--severity=style"]).arg(&path).output() {
            Ok(output) => output,
            Err(error) => panic!("shellcheck is required for this test (apt-get install shellcheck): {error}"),
        };
        assert!(
            output.status.success(),
            "shellcheck found problems:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    #[test]
    fn every_placeholder_is_filled_with_a_quoted_value() {
        let params = params("/opt/pgec2");
        let script = render(&params).expect("render");
        assert!(!script.contains("@AGENT_") && !script.contains("@INSTALL_DIR@") && !script.contains("@SPEC_BASE64@"));
        assert!(script.contains("AGENT_URL='https://releases.example.com/pgec2-agent-0.1.0-x86_64'"));
        assert!(
            script.contains(&format!("AGENT_SHA256='{}'", "a".repeat(64))),
            "the sha256 is normalised to lowercase"
        );
        assert!(script.contains("INSTALL_DIR='/opt/pgec2'"));
        let encoded = BASE64.encode(params.spec_json.as_bytes());
        assert!(script.contains(&format!("SPEC_BASE64='{encoded}'")));
    }

    #[test]
    fn a_quote_in_a_path_cannot_break_out_of_the_shell_string() {
        let script = render(&params("/opt/it's here")).expect("render");
        assert!(script.contains(r"INSTALL_DIR='/opt/it'\''s here'"));
        assert!(script.contains(r#"exec "$AGENT" 'host' 'apply' '/opt/it'\''s here/host-spec.json'"#), "{script}");
    }

    #[test]
    fn the_bootstrap_carries_no_secret_beyond_the_spec() {
        let script = render(&params("/opt/pgec2")).expect("render");
        for word in ["AWS_SECRET", "AWS_ACCESS_KEY", "PASSWORD", "TOKEN"] {
            assert!(!script.to_ascii_uppercase().contains(word), "script mentions {word}");
        }
    }

    #[test]
    fn bad_checksums_urls_and_directories_are_refused() {
        let mut bad = params("/opt/pgec2");
        bad.agent_sha256 = "abc".into();
        assert!(matches!(render(&bad), Err(BootstrapError::Sha256(_))));
        let mut bad = params("/opt/pgec2");
        bad.agent_url = "ftp://example.com/agent".into();
        assert!(matches!(render(&bad), Err(BootstrapError::AgentUrl(_))));
        let mut bad = params("/opt/pgec2");
        bad.agent_url = "https://example.com/agent\nrm -rf /".into();
        assert!(matches!(render(&bad), Err(BootstrapError::AgentUrl(_))));
        let mut bad = params("/opt/pgec2");
        bad.install_dir = PathBuf::from("opt/pgec2");
        assert!(matches!(render(&bad), Err(BootstrapError::InstallDir(_))));
        for url in ["file:///srv/agent", "/srv/agent", "http://10.0.0.1:8080/agent"] {
            let mut good = params("/opt/pgec2");
            good.agent_url = url.into();
            assert!(render(&good).is_ok(), "{url} refused");
        }
    }

    #[test]
    fn the_spec_must_point_archive_commands_at_the_installed_agent() {
        let mut bad = params("/opt/pgec2");
        bad.install_dir = PathBuf::from("/usr/local/pgec2");
        assert!(matches!(render(&bad), Err(BootstrapError::AgentBinary { .. })));
    }

    #[test]
    fn an_invalid_spec_is_refused_before_it_reaches_a_host() {
        let mut bad = params("/opt/pgec2");
        bad.spec_json = bad.spec_json.replace("\"postgresVersion\":15", "\"postgresVersion\":9");
        assert!(matches!(render(&bad), Err(BootstrapError::Spec(SpecError::UnsupportedVersion(9)))));
        bad.spec_json = "{}".into();
        assert!(matches!(render(&bad), Err(BootstrapError::SpecJson(_))));
    }
}
