//! The tables `local get` and the end of `local run` print, like `kubectl get pgh,bp`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use pgec2_api::{BackupPolicy, HostPhase, PostgresHost};

use super::kinds::Kind;
use super::manifests::DEFAULT_NAMESPACE;

/// Longest message shown in a row; the full text is in `-o json`.
const MESSAGE_WIDTH: usize = 60;

/// What a table shows.
pub struct Listing<'a> {
    pub hosts: &'a [PostgresHost],
    pub policies: &'a [BackupPolicy],
    /// The kinds asked for; names are prefixed with the kind when there are several.
    pub kinds: &'a [Kind],
    pub now: Timestamp,
}

/// Renders one table per kind asked for, separated by a blank line. A kind with no objects
/// gets a line saying so when it was the only one asked for.
pub fn render(listing: &Listing<'_>) -> String {
    let qualified = listing.kinds.len() > 1;
    let mut sections = Vec::new();
    for kind in listing.kinds {
        let table = match kind {
            Kind::PostgresHost => host_table(listing, qualified),
            Kind::BackupPolicy => policy_table(listing, qualified),
        };
        if !table.rows.is_empty() {
            sections.push(table.render());
        }
    }
    if sections.is_empty() {
        return "No resources found.\n".to_string();
    }
    sections.join("\n")
}

fn host_table(listing: &Listing<'_>, qualified: bool) -> Table {
    let mut table = Table::new(&["NAME", "PHASE", "ENDPOINT", "VERSION", "LAST BACKUP", "RPO", "AGE", "MESSAGE"]);
    for host in listing.hosts {
        let status = host.status.clone().unwrap_or_default();
        let endpoint = status.endpoint.as_ref().map(|endpoint| format!("{}:{}", endpoint.host, endpoint.port));
        let last_backup = status.last_backup.as_ref().map(|backup| backup.name.clone()).or_else(|| {
            policy_backup_of(listing.policies, host) // before the host's own status carries it
        });
        // The recovery point the archive check last reported (seconds of committed work at risk).
        let rpo = status.recoverability.as_ref().and_then(|recoverability| recoverability.rpo_seconds);
        let message = match status.phase {
            Some(HostPhase::Ready) => String::new(),
            _ => shorten(status.message.as_deref().unwrap_or_default()),
        };
        table.rows.push(vec![
            name(Kind::PostgresHost, host.namespace().as_deref(), &host.name_any(), qualified),
            status.phase.map(|phase| phase.to_string()).unwrap_or_else(|| "Pending".into()),
            or_none(endpoint),
            or_none(status.postgres.and_then(|postgres| postgres.version)),
            or_none(last_backup),
            or_none(rpo.map(|seconds| format!("{seconds}s"))),
            age(host.metadata.creation_timestamp.as_ref(), listing.now),
            message,
        ]);
    }
    table
}

fn policy_table(listing: &Listing<'_>, qualified: bool) -> Table {
    let mut table = Table::new(&["NAME", "SCHEDULE", "LAST BACKUP", "NEXT BACKUP", "HOSTS", "AGE"]);
    for policy in listing.policies {
        let status = policy.status.clone().unwrap_or_default();
        let schedule = if policy.spec.suspend {
            format!("{} (suspended)", policy.spec.schedule)
        } else {
            policy.spec.schedule.clone()
        };
        let last = status.last_successful_backup.as_ref().map(|run| match &run.backup {
            Some(backup) => format!("{}: {backup}", run.host),
            None => run.host.clone(),
        });
        let next = status.next_schedule_time.as_ref().map(|time| time.0.strftime("%Y-%m-%dT%H:%M:%SZ").to_string());
        table.rows.push(vec![
            name(Kind::BackupPolicy, policy.namespace().as_deref(), &policy.name_any(), qualified),
            schedule,
            or_none(last),
            or_none(next),
            status.hosts.len().to_string(),
            age(policy.metadata.creation_timestamp.as_ref(), listing.now),
        ]);
    }
    table
}

/// The newest backup of `host` in the status of the policy it archives to.
fn policy_backup_of(policies: &[BackupPolicy], host: &PostgresHost) -> Option<String> {
    let policy = policies.iter().find(|policy| {
        policy.namespace() == host.namespace() && Some(policy.name_any().as_str()) == host.policy_name()
    })?;
    let summary = policy.status.as_ref()?.hosts.iter().find(|summary| summary.host == host.qualified_name())?;
    summary.last_backup.as_ref().map(|backup| backup.name.clone())
}

/// `primary`, `shop/orders` outside the default namespace, prefixed with `kind/` if qualified.
fn name(kind: Kind, namespace: Option<&str>, name: &str, qualified: bool) -> String {
    let local = match namespace {
        Some(namespace) if namespace != DEFAULT_NAMESPACE => format!("{namespace}/{name}"),
        _ => name.to_string(),
    };
    if qualified { format!("{}/{local}", kind.lower()) } else { local }
}

fn or_none(value: Option<String>) -> String {
    value.filter(|value| !value.is_empty()).unwrap_or_else(|| "<none>".into())
}

fn shorten(message: &str) -> String {
    let line = message.lines().next().unwrap_or_default();
    if line.chars().count() <= MESSAGE_WIDTH {
        return line.to_string();
    }
    let mut short: String = line.chars().take(MESSAGE_WIDTH - 1).collect();
    short.push('…');
    short
}

/// kubectl's AGE: the largest unit, `45s`, `12m`, `5h`, `3d`.
fn age(created: Option<&Time>, now: Timestamp) -> String {
    let Some(created) = created else { return "<unknown>".into() };
    let seconds = now.as_second().saturating_sub(created.0.as_second()).max(0);
    match seconds {
        0..120 => format!("{seconds}s"),
        120..7_200 => format!("{}m", seconds / 60),
        7_200..172_800 => format!("{}h", seconds / 3_600),
        _ => format!("{}d", seconds / 86_400),
    }
}

/// Left-aligned columns separated by three spaces; trailing spaces trimmed.
struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(headers: &[&str]) -> Self {
        Self { headers: headers.iter().map(ToString::to_string).collect(), rows: Vec::new() }
    }

    fn render(&self) -> String {
        let widths: Vec<usize> = (0..self.headers.len())
            .map(|column| {
                std::iter::once(&self.headers)
                    .chain(&self.rows)
                    .map(|row| row.get(column).map_or(0, |cell| cell.chars().count()))
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for row in std::iter::once(&self.headers).chain(&self.rows) {
            let mut line = String::new();
            for (cell, width) in row.iter().zip(&widths) {
                line.push_str(&format!("{cell:<width$}   "));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use pgec2_api::fixtures::{host, policy};
    use pgec2_api::{BackupPolicyStatus, BackupRun, Endpoint, PostgresHostStatus, PostgresStatus};

    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().expect("timestamp")
    }

    fn ready_host() -> PostgresHost {
        let mut primary = host("primary")
            .policy("demo")
            .status(PostgresHostStatus {
                phase: Some(HostPhase::Ready),
                endpoint: Some(Endpoint { host: "127.0.0.1".into(), port: 40123 }),
                postgres: Some(PostgresStatus { version: Some("15.8".into()), ..PostgresStatus::default() }),
                last_backup: serde_json::from_value(serde_json::json!({"name": "base_000000010000000000000004"})).ok(),
                message: Some("PostgreSQL 15.8 is ready".into()),
                recoverability: Some(pgec2_api::Recoverability { rpo_seconds: Some(3), ..Default::default() }),
                ..PostgresHostStatus::default()
            })
            .build();
        primary.metadata.creation_timestamp = Some(Time(at("2025-01-01T12:00:00Z")));
        primary
    }

    fn pending_host() -> PostgresHost {
        let mut restored = host("restored")
            .namespace("shop")
            .status(PostgresHostStatus {
                phase: Some(HostPhase::Restoring),
                message: Some(format!("restoring from backups {}", "x".repeat(80))),
                ..PostgresHostStatus::default()
            })
            .build();
        restored.metadata.creation_timestamp = Some(Time(at("2025-01-01T12:09:15Z")));
        restored
    }

    fn demo_policy() -> BackupPolicy {
        let mut demo = policy("demo").local("/var/backups").schedule("*/5 * * * *").build();
        demo.status = Some(BackupPolicyStatus {
            last_successful_backup: Some(BackupRun {
                host: "primary".into(),
                backup: Some("base_000000010000000000000004".into()),
                start_time: None,
                finish_time: None,
                message: None,
            }),
            next_schedule_time: Some(Time(at("2025-01-01T12:15:00Z"))),
            ..BackupPolicyStatus::default()
        });
        demo.metadata.creation_timestamp = Some(Time(at("2024-12-30T08:00:00Z")));
        demo
    }

    #[test]
    fn hosts_and_policies_render_like_kubectl_get() {
        let hosts = [ready_host(), pending_host()];
        let policies = [demo_policy()];
        let listing =
            Listing { hosts: &hosts, policies: &policies, kinds: &Kind::ALL, now: at("2025-01-01T12:10:00Z") };
        let expected = "\
NAME                         PHASE       ENDPOINT          VERSION   LAST BACKUP                     RPO      AGE   MESSAGE
postgreshost/primary         Ready       127.0.0.1:40123   15.8      base_000000010000000000000004   3s       10m
postgreshost/shop/restored   Restoring   <none>            <none>    <none>                          <none>   45s   restoring from backups xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx…

NAME                SCHEDULE      LAST BACKUP                              NEXT BACKUP            HOSTS   AGE
backuppolicy/demo   */5 * * * *   primary: base_000000010000000000000004   2025-01-01T12:15:00Z   0       2d
";
        assert_eq!(render(&listing), expected);
    }

    #[test]
    fn one_kind_shows_plain_names_and_takes_the_last_backup_from_the_policy() {
        let mut primary = ready_host();
        if let Some(status) = primary.status.as_mut() {
            status.last_backup = None;
        }
        let mut demo = demo_policy();
        if let Some(status) = demo.status.as_mut() {
            status.hosts = vec![pgec2_api::HostBackupSummary {
                host: "default/primary".into(),
                backups_kept: 1,
                last_backup: ready_host().status.and_then(|status| status.last_backup),
                recovery_window: None,
            }];
        }
        let hosts = [primary];
        let policies = [demo];
        let listing = Listing {
            hosts: &hosts,
            policies: &policies,
            kinds: &[Kind::PostgresHost],
            now: at("2025-01-01T12:00:30Z"),
        };
        let table = render(&listing);
        let row = table.lines().nth(1).expect("a row");
        assert!(row.starts_with("primary "), "{table}");
        assert!(row.contains("base_000000010000000000000004") && row.contains("30s"), "{table}");
    }

    #[test]
    fn nothing_to_show_says_so() {
        let listing = Listing { hosts: &[], policies: &[], kinds: &Kind::ALL, now: Timestamp::now() };
        assert_eq!(render(&listing), "No resources found.\n");
    }
}
