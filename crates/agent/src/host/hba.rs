//! pg_hba.conf as pgec2 writes it (pure). PostgreSQL takes the first matching line, so the
//! spec's lines come first, then the defaults:
//!
//! - the OS user (the superuser initdb created) over the Unix socket with `peer`, for the agent,
//!   backups and administration on the host;
//! - every other connection with a SCRAM password, over TLS (`hostssl`) when ssl is on, else
//!   `host`. Nothing is `trust`.

use std::fmt::Write as _;

use pgec2_core::host_spec::HostSpec;

/// Renders the whole pg_hba.conf.
pub fn render_hba(spec: &HostSpec) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Managed by pgec2-agent host apply for {}: edits are overwritten.", spec.host);
    out.push_str("# Add rules through the PostgresHost's pgHba; they come first.\n");
    out.push_str("# TYPE   DATABASE     USER        ADDRESS      METHOD\n");
    if !spec.pg_hba.is_empty() {
        out.push_str("\n# From the spec\n");
        for line in &spec.pg_hba {
            let _ = writeln!(out, "{}", line.trim());
        }
    }
    out.push_str("\n# The OS user administers the server over the Unix socket\n");
    let user = &spec.os_user;
    let _ = writeln!(out, "local    all          {user:<11} {:<12} peer", "");
    let _ = writeln!(out, "local    replication  {user:<11} {:<12} peer", "");
    let kind = if spec.ssl_enabled() { "hostssl" } else { "host" };
    out.push_str("\n# Everyone else: a SCRAM password");
    out.push_str(if spec.ssl_enabled() { ", over TLS\n" } else { "\n" });
    for address in ["0.0.0.0/0", "::/0"] {
        let _ = writeln!(out, "{kind:<8} all          all         {address:<12} scram-sha-256");
    }
    out
}

#[cfg(test)]
mod tests {
    use pgec2_core::host_spec::Profile;

    use super::*;
    use crate::host::test_support::spec;

    /// The rules without comments and with single spaces, in order.
    fn rules(text: &str) -> Vec<String> {
        text.lines()
            .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
            .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect()
    }

    #[test]
    fn ec2_hosts_accept_only_scram_over_tls_from_the_network() {
        let mut spec = spec();
        spec.profile = Profile::Ec2;
        assert_eq!(
            rules(&render_hba(&spec)),
            [
                "local all postgres peer",
                "local replication postgres peer",
                "hostssl all all 0.0.0.0/0 scram-sha-256",
                "hostssl all all ::/0 scram-sha-256",
            ]
        );
    }

    #[test]
    fn spec_lines_come_before_the_defaults() {
        let mut spec = spec();
        spec.pg_hba =
            vec!["hostssl app app 10.0.0.0/8 scram-sha-256".into(), "  host all all 127.0.0.1/32 trust ".into()];
        let rules = rules(&render_hba(&spec));
        assert_eq!(rules[0], "hostssl app app 10.0.0.0/8 scram-sha-256");
        assert_eq!(rules[1], "host all all 127.0.0.1/32 trust");
        assert_eq!(rules[2], "local all postgres peer");
    }

    #[test]
    fn without_tls_the_network_rule_still_requires_a_password() {
        let mut spec = spec();
        spec.ssl = Some(false);
        spec.os_user = "pgsql".into();
        let rules = rules(&render_hba(&spec));
        assert!(rules.contains(&"local all pgsql peer".to_string()));
        assert!(rules.contains(&"host all all 0.0.0.0/0 scram-sha-256".to_string()));
        assert!(!rules.iter().any(|rule| rule.ends_with("trust")), "no default rule trusts anyone");
    }
}
