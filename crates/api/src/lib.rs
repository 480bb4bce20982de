//! pgec2's Kubernetes API: the `PostgresHost` and `BackupPolicy` custom resources
//! (`pgec2.io/v1alpha1`).
//!
//! The doc comments on the spec and status fields are the user documentation that
//! `kubectl explain postgreshost.spec` shows, and the CRDs in `crds/` are generated from these
//! types by the `crdgen` binary. Validation the API server can enforce lives in the schema
//! (ranges, enums, patterns and the CEL rules of [`rules`]); [`validation`] checks the same rules
//! in Rust, plus the cron schedule, for the operator and for local mode.
//!
//! ```
//! use pgec2_api::{PostgresHost, PostgresHostSpec};
//!
//! let host: PostgresHost = serde_yaml_ng::from_str(
//!     "apiVersion: pgec2.io/v1alpha1
//! kind: PostgresHost
//! metadata: {name: orders-db, namespace: shop}
//! spec:
//!   storage: {sizeGiB: 100}
//! ",
//! )
//! .expect("a valid manifest");
//! assert_eq!(host.spec.postgres_version, 15);
//! assert!(host.spec.bootstrap.is_initdb());
//! assert!(host.spec.validate().is_ok());
//! ```

pub mod constants;
pub mod crd;
#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures;
pub mod host;
pub mod policy;
pub mod rules;
mod schema;
pub mod status;
pub mod validation;

pub use constants::*;
pub use host::RecoveryPoint;
pub use host::bootstrap::{
    Bootstrap, InitdbBootstrap, LATEST_BACKUP, RecoveryBootstrap, RecoverySource, RecoveryTarget, TargetAction,
};
pub use host::spec::{
    BackupSpec, DEFAULT_POSTGRES_VERSION, DeletionPolicy, HbaConnectionType, HbaMethod, InstanceSpec, PgHbaEntry,
    PolicyReference, PostgresHost, PostgresHostSpec, PostgresSpec, RootVolumeSpec, VolumeSpec, VolumeType,
};
pub use host::status::{
    ArchiveHolesStatus, ArchivingStatus, CommandPurpose, CommandState, CommandStatus, Endpoint, HostPhase,
    PostgresHostStatus, PostgresStatus, RESTORE_OBJECT_STORE, RESTORE_SNAPSHOT, Recoverability, RestoreStatus,
    StreamingStatus,
};
pub use policy::spec::{
    BackupMethod, BackupPolicy, BackupPolicySpec, BackupStorage, Compression, Encryption, EncryptionKey,
    EncryptionMode, LocalStorage, RecoveryObjectives, Retention, S3Storage, S3StorageClass, ServerSideEncryption,
    WalArchiving, WalgCompatibility,
};
pub use policy::spec::{ObjectLockMode, ObjectLockPolicy};
pub use policy::status::{ActiveBackup, BackupPolicyStatus, BackupRun, HostBackupSummary, LockedBackup};
pub use policy::verification::{
    ActiveDrill, AmcheckCheck, DrillCheckResult, DrillOutcome, DrillPhases, DrillResult, Verification,
    VerificationCheck, VerificationStatus, VerificationTarget,
};
pub use status::{BackupInfo, RecoveryWindow};
pub use validation::{FieldError, InvalidSpec};
