//! Classifies AWS API failures into [`CloudError`] variants, so the reconciler's error policy can
//! tell a bad spec from a capacity shortage, throttling or a passing fault.

use aws_sdk_ec2::config::http::HttpResponse;
use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use pgec2_storage_s3::describe_error;

use crate::cloud::CloudError;

/// Error codes that mean "slow down": retried with backoff.
const THROTTLING: &[&str] = &[
    "RequestLimitExceeded",
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "PriorRequestNotComplete",
    "EC2ThrottledException",
    "BandwidthLimitExceeded",
    "SlowDown",
];

/// Error codes that mean "no room for this now": a condition, retried later.
const CAPACITY: &[&str] = &[
    "InsufficientInstanceCapacity",
    "InsufficientHostCapacity",
    "InsufficientReservedInstanceCapacity",
    "InsufficientCapacity",
    "InsufficientVolumeCapacity",
    "InsufficientFreeAddressesInSubnet",
    "InstanceLimitExceeded",
    "VcpuLimitExceeded",
    "VolumeLimitExceeded",
    "MaxIOPSLimitExceeded",
    "Unsupported",
];

/// Error codes that mean the spec cannot work as written: the host is parked.
const INVALID_SPEC: &[&str] = &[
    "InvalidParameter",
    "InvalidParameterValue",
    "InvalidParameterCombination",
    "InvalidSubnetID.NotFound",
    "InvalidSubnetID.Malformed",
    "InvalidGroup.NotFound",
    "InvalidGroupId.Malformed",
    "InvalidSecurityGroupID.NotFound",
    "InvalidAMIID.NotFound",
    "InvalidAMIID.Malformed",
    "InvalidAMIID.Unavailable",
    "InvalidBlockDeviceMapping",
    "InvalidInstanceType",
    "InvalidKMSKey.NotFound",
    "InvalidKMSKey.InvalidState",
    "KMS.NotFoundException",
    "KMS.DisabledException",
    "ParameterNotFound",
    "UnsupportedOperation",
];

/// Error codes of passing states (a resource in transition, a server-side fault).
const TRANSIENT: &[&str] = &[
    "InternalError",
    "InternalFailure",
    "InternalServerError",
    "ServiceUnavailable",
    "Unavailable",
    "RequestTimeout",
    "RequestTimeoutException",
    "IncorrectState",
    "IncorrectInstanceState",
    "IncorrectModificationState",
    "VolumeInUse",
    "DependencyViolation",
    "InvalidInstanceID.NotFound",
    "InvalidVolume.NotFound",
];

/// Error codes of a missing permission: the operator's IAM policy needs fixing.
const UNAUTHORIZED: &[&str] = &["UnauthorizedOperation", "AccessDenied", "AccessDeniedException", "AuthFailure"];

/// The code of an AWS error, e.g. `InvalidInstanceID.NotFound`.
pub(crate) fn error_code<E: ProvideErrorMetadata>(error: &SdkError<E, HttpResponse>) -> Option<&str> {
    error.code()
}

/// True when the error carries exactly this code.
pub(crate) fn has_code<E: ProvideErrorMetadata>(error: &SdkError<E, HttpResponse>, code: &str) -> bool {
    error_code(error) == Some(code)
}

/// True when AWS asked us to slow down (retry the same call after a pause).
pub(crate) fn is_throttling<E: ProvideErrorMetadata>(error: &SdkError<E, HttpResponse>) -> bool {
    let status = error.raw_response().map(|response| response.status().as_u16());
    error_code(error).is_some_and(|code| THROTTLING.contains(&code)) || status == Some(429)
}

/// Turns an SDK error of `service` (`ec2`, `ssm`) into a [`CloudError`] for `action`.
pub(crate) fn classify<E>(service: &'static str, action: &'static str, error: &SdkError<E, HttpResponse>) -> CloudError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match error {
        SdkError::ServiceError(context) => {
            let code = context.err().code().unwrap_or("");
            let message = match context.err().message() {
                Some(message) if !code.is_empty() => format!("{code}: {message}"),
                Some(message) => message.to_string(),
                None if !code.is_empty() => code.to_string(),
                None => format!("http status {}", context.raw().status().as_u16()),
            };
            classify_code(service, action, code, context.raw().status().as_u16(), message)
        }
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            CloudError::Transient { action, message: format!("{service}: {}", describe_error(error)) }
        }
        _ => CloudError::Permanent { action, message: format!("{service}: {}", describe_error(error)) },
    }
}

/// The classification itself, on the error's code and HTTP status.
pub(crate) fn classify_code(
    service: &'static str,
    action: &'static str,
    code: &str,
    status: u16,
    message: String,
) -> CloudError {
    if THROTTLING.contains(&code) || status == 429 {
        CloudError::Throttled { service, message }
    } else if CAPACITY.contains(&code) {
        CloudError::Capacity(format!("{action}: {message}"))
    } else if INVALID_SPEC.contains(&code) {
        CloudError::InvalidSpec(format!("{action} was refused by {service}: {message}"))
    } else if TRANSIENT.contains(&code) || status >= 500 {
        CloudError::Transient { action, message: format!("{service}: {message}") }
    } else if UNAUTHORIZED.contains(&code) {
        CloudError::Permanent {
            action,
            message: format!(
                "{service}: {message} (the operator's IAM role lacks a permission: compare it with \
                 deploy/iam/operator-policy.json)"
            ),
        }
    } else {
        CloudError::Permanent { action, message: format!("{service}: {message}") }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classified(code: &str, status: u16) -> CloudError {
        classify_code("ec2", "run instances", code, status, format!("{code}: details"))
    }

    #[test]
    fn throttling_codes_and_http_429_are_throttled() {
        for code in ["RequestLimitExceeded", "ThrottlingException", "Throttling"] {
            assert!(matches!(classified(code, 400), CloudError::Throttled { service: "ec2", .. }), "{code}");
        }
        assert!(matches!(classified("", 429), CloudError::Throttled { .. }));
    }

    #[test]
    fn capacity_shortages_are_capacity_errors() {
        for code in ["InsufficientInstanceCapacity", "InstanceLimitExceeded", "Unsupported"] {
            assert!(matches!(classified(code, 400), CloudError::Capacity(_)), "{code}");
        }
    }

    #[test]
    fn refused_parameters_park_the_host_as_an_invalid_spec() {
        for code in ["InvalidSubnetID.NotFound", "InvalidParameterValue", "ParameterNotFound"] {
            assert!(matches!(classified(code, 400), CloudError::InvalidSpec(_)), "{code}");
        }
    }

    #[test]
    fn server_faults_and_eventual_consistency_are_transient() {
        assert!(matches!(classified("", 500), CloudError::Transient { .. }));
        assert!(matches!(classified("InvalidInstanceID.NotFound", 400), CloudError::Transient { .. }));
        assert!(classified("IncorrectState", 400).is_transient());
    }

    #[test]
    fn a_missing_permission_is_permanent_and_points_at_the_policy() {
        let error = classified("UnauthorizedOperation", 403);
        assert!(matches!(&error, CloudError::Permanent { .. }));
        assert!(error.to_string().contains("deploy/iam/operator-policy.json"), "{error}");
    }
}
