//! The server's TLS certificate: self-signed (P-256, ten years, CN = the host) and generated
//! with the openssl CLI when none exists, kept in `<config directory>/tls/` outside PGDATA so
//! base backups never carry the private key. Replace the two files with a CA-signed pair and
//! pgec2 keeps them.

use std::path::Path;
use std::time::Duration;

use pgec2_core::host_spec::HostSpec;

use super::command::{Cmd, OsUser};
use super::render_conf::TlsFiles;
use super::{Done, StepError, files};

const OPENSSL_TIMEOUT: Duration = Duration::from_secs(60);

/// Where the certificate and key live for a spec.
pub fn tls_files(spec: &HostSpec) -> TlsFiles {
    let directory = spec.config_directory().join("tls");
    TlsFiles { certificate: directory.join("server.crt"), key: directory.join("server.key") }
}

/// Makes sure a certificate and key exist, readable only by the OS user (PostgreSQL refuses a
/// key others can read).
pub async fn converge(spec: &HostSpec, user: &OsUser) -> Result<Done, StepError> {
    let tls = tls_files(spec);
    let directory = tls.key.parent().unwrap_or(Path::new("/"));
    let mut changed = files::ensure_directory(directory, 0o700, Some(user))?;
    if tls.certificate.exists() && tls.key.exists() {
        changed |= fix_attributes(&tls.key, 0o600, user)?;
        changed |= fix_attributes(&tls.certificate, 0o644, user)?;
        let detail = if changed { "fixed the certificate's owner and modes" } else { "certificate present" };
        return Ok(if changed { Done::changed(detail) } else { Done::unchanged(detail) });
    }
    let new_key = directory.join(".server.key.new");
    let new_certificate = directory.join(".server.crt.new");
    let subject = format!("/CN={}", common_name(&spec.host));
    Cmd::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "3650"])
        .args(["-subj", &subject, "-keyout"])
        .arg(&new_key)
        .arg("-out")
        .arg(&new_certificate)
        .timeout(OPENSSL_TIMEOUT)
        .run()
        .await?;
    fix_attributes(&new_key, 0o600, user)?;
    fix_attributes(&new_certificate, 0o644, user)?;
    for (from, to) in [(&new_key, &tls.key), (&new_certificate, &tls.certificate)] {
        std::fs::rename(from, to).map_err(|source| files::FileError {
            action: "move into place",
            path: to.clone(),
            source,
        })?;
    }
    files::sync_directory(directory)?;
    Ok(Done::changed(format!("generated a self-signed certificate for {subject}")))
}

fn fix_attributes(path: &Path, mode: u32, user: &OsUser) -> Result<bool, StepError> {
    let contents = files::read_optional(path)?.unwrap_or_default();
    Ok(files::write_file(path, &contents, mode, Some(user))?)
}

/// A certificate common name from `<namespace>/<name>`: `name.namespace`, at most 64 bytes.
fn common_name(host: &str) -> String {
    let name: String = match host.split_once('/') {
        Some((namespace, name)) => format!("{name}.{namespace}"),
        None => host.to_string(),
    };
    name.chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-')).take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_common_name_is_a_dns_like_name_of_the_host() {
        assert_eq!(common_name("default/orders-db"), "orders-db.default");
        assert_eq!(common_name("weird/na me/x"), "namex.weird");
        assert_eq!(common_name(&"a".repeat(100)).len(), 64);
    }
}
