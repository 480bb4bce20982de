//! A spec for the unit tests: the paths an EC2 host uses, in the local profile.

use pgec2_core::host_spec::HostSpec;

/// A valid spec: PostgreSQL 15 on `/var/lib/postgresql`, agent in `/opt/pgec2`, its
/// configuration in `/etc/pgec2`, archiving to `file:///srv/archive`.
pub fn spec() -> HostSpec {
    serde_json::from_value(serde_json::json!({
        "host": "default/db1",
        "profile": "local",
        "postgresVersion": 15,
        "volume": { "volumeId": "vol-0123456789abcdef0", "mountPath": "/var/lib/postgresql" },
        "dataDirectory": "/var/lib/postgresql/15/main",
        "port": 5432,
        "bootstrap": { "initdb": {} },
        "archive": { "storage": { "url": "file:///srv/archive" } },
        "agentConfigPath": "/etc/pgec2/agent.toml",
        "agentBinary": "/opt/pgec2/pgec2-agent"
    }))
    .expect("valid spec")
}
