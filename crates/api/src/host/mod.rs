//! The `PostgresHost` resource.

pub mod bootstrap;
pub mod spec;
pub mod status;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::ResourceExt;

use self::bootstrap::{RecoveryBootstrap, RecoveryTarget};
use self::spec::{HbaConnectionType, HbaMethod, PgHbaEntry, PostgresHost};
use self::status::HostPhase;
use crate::constants::BACKUP_REQUEST_ANNOTATION;

impl PostgresHost {
    /// `<namespace>/<name>`: the value of the `pgec2.io/host` tag and the host's archive prefix
    /// inside its policy's storage.
    pub fn qualified_name(&self) -> String {
        format!("{}/{}", self.namespace().unwrap_or_default(), self.name_any())
    }

    /// Name of the BackupPolicy the host references, if any.
    pub fn policy_name(&self) -> Option<&str> {
        self.spec.backup.as_ref().map(|backup| backup.policy_ref.name.as_str())
    }

    /// The recovery bootstrap, when the host is restored from backups.
    pub fn recovery(&self) -> Option<&RecoveryBootstrap> {
        self.spec.bootstrap.recovery.as_ref()
    }

    /// The phase in status, if the operator has written one.
    pub fn phase(&self) -> Option<HostPhase> {
        self.status.as_ref().and_then(|status| status.phase)
    }

    /// The status condition of this type (see [`crate::constants::condition`]).
    pub fn condition(&self, condition_type: &str) -> Option<&Condition> {
        self.status.as_ref()?.conditions.iter().find(|condition| condition.type_ == condition_type)
    }

    /// The value of the `pgec2.io/backup-request` annotation when it asks for a backup that has
    /// not been handled yet (it differs from `status.handledBackupRequest`).
    pub fn pending_backup_request(&self) -> Option<&str> {
        let requested = self.metadata.annotations.as_ref()?.get(BACKUP_REQUEST_ANNOTATION)?;
        let handled = self.status.as_ref().and_then(|status| status.handled_backup_request.as_deref());
        (handled != Some(requested.as_str())).then_some(requested.as_str())
    }

    /// True when the status describes the current generation of the spec.
    pub fn status_is_current(&self) -> bool {
        let observed = self.status.as_ref().and_then(|status| status.observed_generation);
        observed.is_some() && observed == self.metadata.generation
    }
}

/// The one recovery target a [`RecoveryTarget`] selects, as the HostSpec carries it.
pub use pgec2_contract::recovery::RecoveryTarget as RecoveryPoint;

impl RecoveryTarget {
    /// The selected target, or None when the target does not have exactly one field set (a
    /// spec that [`crate::PostgresHostSpec::validate`] refuses).
    pub fn point(&self) -> Option<RecoveryPoint> {
        let candidates = [
            self.time.clone().map(RecoveryPoint::Time),
            self.lsn.clone().map(RecoveryPoint::Lsn),
            self.xid.clone().map(RecoveryPoint::Xid),
            self.name.clone().map(RecoveryPoint::Name),
            (self.immediate == Some(true)).then_some(RecoveryPoint::Immediate),
        ];
        let mut chosen = candidates.into_iter().flatten();
        let first = chosen.next()?;
        chosen.next().is_none().then_some(first)
    }
}

impl PgHbaEntry {
    /// The entry as a pg_hba.conf line, e.g. `hostssl app app 10.0.0.0/16 scram-sha-256`.
    pub fn to_line(&self) -> String {
        let mut words = vec![self.connection_type.as_str(), self.database.as_str(), self.user.as_str()];
        if let Some(address) = &self.address {
            words.push(address);
        }
        words.push(self.method.as_str());
        let mut line = words.join(" ");
        for (name, value) in &self.options {
            line.push_str(&format!(" {name}={value}"));
        }
        line
    }
}

impl HbaConnectionType {
    /// The keyword as pg_hba.conf spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Host => "host",
            Self::Hostssl => "hostssl",
            Self::Hostnossl => "hostnossl",
            Self::Hostgssenc => "hostgssenc",
            Self::Hostnogssenc => "hostnogssenc",
        }
    }
}

impl HbaMethod {
    /// The keyword as pg_hba.conf spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ScramSha256 => "scram-sha-256",
            Self::Md5 => "md5",
            Self::Password => "password",
            Self::Trust => "trust",
            Self::Reject => "reject",
            Self::Peer => "peer",
            Self::Ident => "ident",
            Self::Cert => "cert",
            Self::Gss => "gss",
            Self::Ldap => "ldap",
            Self::Radius => "radius",
            Self::Pam => "pam",
        }
    }
}
