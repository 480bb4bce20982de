//! Validate (pure): refuse a spec the operator cannot act on, with a reason and a message that
//! says what to fix. An invalid host is parked (condition, phase Failed) until its spec or its
//! policy changes: no retry loop.

use pgec2_api::PostgresHost;

use super::render::Policies;

/// Why a host cannot be acted on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    /// Condition reason: `InvalidSpec`, `PolicyNotFound` or `InvalidPolicy`.
    pub reason: &'static str,
    pub message: String,
}

/// Checks the host's spec and the policies it refers to.
pub fn validate(host: &PostgresHost, policies: &Policies) -> Result<(), Invalid> {
    host.spec.validate().map_err(|invalid| Invalid { reason: "InvalidSpec", message: invalid.to_string() })?;
    let namespace = host.metadata.namespace.as_deref().unwrap_or("default");
    if let Some(name) = host.policy_name() {
        check_policy(policies.archive.as_ref(), name, namespace, "spec.backup.policyRef.name")?;
    }
    if let Some(recovery) = host.recovery() {
        check_policy(
            policies.recovery_source.as_ref(),
            &recovery.source.policy,
            namespace,
            "spec.bootstrap.recovery.source.policy",
        )?;
    }
    Ok(())
}

fn check_policy(
    policy: Option<&pgec2_api::BackupPolicy>,
    name: &str,
    namespace: &str,
    field: &str,
) -> Result<(), Invalid> {
    let Some(policy) = policy else {
        return Err(Invalid {
            reason: "PolicyNotFound",
            message: format!(
                "{field}: BackupPolicy {name} does not exist in namespace {namespace}; create it or fix the name"
            ),
        });
    };
    policy.spec.validate().map_err(|invalid| Invalid {
        reason: "InvalidPolicy",
        message: format!("BackupPolicy {namespace}/{name} cannot be used: {invalid}"),
    })
}

#[cfg(test)]
mod tests {
    use pgec2_api::fixtures::{host, policy};

    use super::*;

    #[test]
    fn a_valid_host_without_policy_passes() {
        assert_eq!(validate(&host("db").build(), &Policies::default()), Ok(()));
    }

    #[test]
    fn a_spec_error_names_the_field() {
        let db = host("db").parameter("archive_command", "/bin/true").build();
        let invalid = validate(&db, &Policies::default()).expect_err("managed parameter");
        assert_eq!(invalid.reason, "InvalidSpec");
        assert!(invalid.message.contains("spec.postgres.parameters"), "{}", invalid.message);
    }

    #[test]
    fn a_missing_policy_says_which_and_where() {
        let db = host("db").namespace("shop").policy("nightly").build();
        let invalid = validate(&db, &Policies::default()).expect_err("missing policy");
        assert_eq!(invalid.reason, "PolicyNotFound");
        assert!(
            invalid.message.contains("BackupPolicy nightly does not exist in namespace shop"),
            "{}",
            invalid.message
        );
    }

    #[test]
    fn an_invalid_policy_is_refused() {
        let db = host("db").policy("nightly").build();
        let broken = policy("nightly").schedule("every day").build();
        let invalid =
            validate(&db, &Policies { archive: Some(broken), recovery_source: None }).expect_err("bad policy");
        assert_eq!(invalid.reason, "InvalidPolicy");
    }

    #[test]
    fn a_recovery_needs_its_source_policy() {
        let copy = host("copy").recovery_from("db", "nightly").build();
        let invalid = validate(&copy, &Policies::default()).expect_err("missing source policy");
        assert!(invalid.message.starts_with("spec.bootstrap.recovery.source.policy"), "{}", invalid.message);
    }
}
