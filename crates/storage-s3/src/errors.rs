//! Turning S3 SDK errors into [`StorageError`]s that say whether a retry can help, and any AWS
//! SDK error (S3, KMS, EC2, SSM) into text a user can act on ([`describe`]).

use std::error::Error;

use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

use pgec2_core::storage::StorageError;

/// What one S3 request was about, for error messages.
#[derive(Clone, Copy, Debug)]
pub(super) struct Request<'a> {
    pub store: &'a str,
    pub operation: &'static str,
    pub key: &'a str,
}

impl Request<'_> {
    pub fn transient(&self, message: impl Into<String>) -> StorageError {
        StorageError::transient(self.store, self.operation, self.key, message)
    }

    pub fn permanent(&self, message: impl Into<String>) -> StorageError {
        StorageError::permanent(self.store, self.operation, self.key, message)
    }
}

/// Which [`StorageError`] a failure becomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Class {
    NotFound,
    AlreadyExists,
    Transient,
    Permanent,
}

/// How the SDK failed, without the payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Failure {
    /// The request could not be built: a bug or bad configuration.
    Construction,
    /// The SDK's own timeout (connect) fired.
    Timeout,
    /// The request never got an answer: connection refused, reset, DNS, TLS.
    Dispatch,
    /// An answer arrived but could not be read (closed mid-response, malformed).
    Response,
    /// The service answered with an error status.
    Service,
}

/// Error codes that mean "try again later", whatever their HTTP status.
const TRANSIENT_CODES: &[&str] = &[
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "TooManyRequests",
    "RequestTimeout",
    "RequestTimeoutException",
    "InternalError",
    "ServiceUnavailable",
    "ExpiredToken",
    "TokenRefreshRequired",
    "IncompleteBody",
    "BadDigest",
    "ConditionalRequestConflict",
    "OperationAborted",
];

/// The classification rules, kept pure so they can be tested without a server.
pub(super) fn classify(failure: Failure, status: Option<u16>, code: Option<&str>) -> Class {
    match failure {
        Failure::Construction => return Class::Permanent,
        Failure::Timeout | Failure::Dispatch | Failure::Response => return Class::Transient,
        Failure::Service => {}
    }
    if let Some(code) = code {
        match code {
            "NoSuchKey" => return Class::NotFound,
            "PreconditionFailed" => return Class::AlreadyExists,
            _ if TRANSIENT_CODES.contains(&code) => return Class::Transient,
            _ => {}
        }
    }
    match (status, code) {
        // HEAD answers carry no body, hence no code: a bare 404 is a missing object.
        (Some(404), None | Some("NotFound")) => Class::NotFound,
        (Some(412), _) => Class::AlreadyExists,
        (Some(409 | 429), _) => Class::Transient,
        (Some(status), _) if status >= 500 => Class::Transient,
        _ => Class::Permanent,
    }
}

/// Converts an SDK error for `request`.
pub(super) fn storage_error<E>(request: Request<'_>, error: SdkError<E>) -> StorageError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let failure = match &error {
        SdkError::ConstructionFailure(_) => Failure::Construction,
        SdkError::TimeoutError(_) => Failure::Timeout,
        SdkError::DispatchFailure(_) => Failure::Dispatch,
        SdkError::ResponseError(_) => Failure::Response,
        _ => Failure::Service,
    };
    let status = error.raw_response().map(|response| response.status().as_u16());
    let class = classify(failure, status, error.code());
    let message = match status {
        Some(status) => format!("HTTP {status}: {}", describe(&error)),
        None => describe(&error),
    };
    match class {
        Class::NotFound => StorageError::not_found(request.store, request.key),
        Class::AlreadyExists => StorageError::already_exists(request.store, request.key),
        Class::Transient => request.transient(message),
        Class::Permanent => request.permanent(message),
    }
}

/// An AWS SDK error as text: each level of its sources once, outermost first, and, when no
/// credentials could be loaded, what to do about it. The SDK's outer levels say only "dispatch
/// failure" or "service error"; the cause is further down (`DisplayErrorContext` finds it too,
/// but appends a debug dump of the whole error, headers and nested structures, to every log line).
pub fn describe(error: &(dyn Error + 'static)) -> String {
    let mut text = String::new();
    let mut credentials = false;
    for level in std::iter::successors(Some(error), |&level| level.source()) {
        credentials |= level.is::<CredentialsError>();
        let part = level.to_string();
        if part.is_empty() || text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    if credentials {
        text.push_str(CREDENTIALS_HINT);
    }
    text
}

/// What to do when the SDK found no usable credentials.
const CREDENTIALS_HINT: &str = " (no AWS credentials could be loaded: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, \
     or AWS_PROFILE, or run on an instance whose instance profile allows this call)";

#[cfg(test)]
mod tests {
    use super::*;

    /// A level of an error chain, as the SDK nests them.
    #[derive(Debug)]
    struct Level(&'static str, Option<Box<dyn Error + Send + Sync>>);

    impl std::fmt::Display for Level {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl Error for Level {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.1.as_deref().map(|source| source as &(dyn Error + 'static))
        }
    }

    #[test]
    fn an_error_is_described_by_every_level_once_without_a_debug_dump() {
        let root = Level("connection refused", None);
        let middle = Level("io error: connection refused", Some(Box::new(root)));
        let outer = Level("dispatch failure", Some(Box::new(middle)));
        assert_eq!(describe(&outer), "dispatch failure: io error: connection refused");
    }

    #[test]
    fn missing_credentials_say_what_to_do() {
        let credentials = CredentialsError::not_loaded("no providers in chain provided credentials");
        let outer = Level("dispatch failure", Some(Box::new(credentials)));
        let text = describe(&outer);
        assert!(text.starts_with("dispatch failure: "), "{text}");
        assert!(text.contains("AWS_ACCESS_KEY_ID") && text.contains("instance profile"), "{text}");
        let other = describe(&Level("dispatch failure", Some(Box::new(Level("timed out", None)))));
        assert!(!other.contains("AWS_ACCESS_KEY_ID"), "{other}");
    }

    #[test]
    fn missing_objects_are_not_found_but_missing_buckets_are_permanent() {
        assert_eq!(classify(Failure::Service, Some(404), Some("NoSuchKey")), Class::NotFound);
        assert_eq!(classify(Failure::Service, Some(404), None), Class::NotFound);
        assert_eq!(classify(Failure::Service, Some(404), Some("NoSuchBucket")), Class::Permanent);
    }

    #[test]
    fn a_failed_create_condition_means_the_object_exists() {
        assert_eq!(classify(Failure::Service, Some(412), Some("PreconditionFailed")), Class::AlreadyExists);
        assert_eq!(classify(Failure::Service, Some(412), None), Class::AlreadyExists);
    }

    #[test]
    fn throttling_server_errors_and_conflicting_conditions_are_transient() {
        assert_eq!(classify(Failure::Service, Some(503), Some("SlowDown")), Class::Transient);
        assert_eq!(classify(Failure::Service, Some(500), Some("InternalError")), Class::Transient);
        assert_eq!(classify(Failure::Service, Some(502), None), Class::Transient);
        assert_eq!(classify(Failure::Service, Some(429), None), Class::Transient);
        assert_eq!(classify(Failure::Service, Some(409), Some("ConditionalRequestConflict")), Class::Transient);
        assert_eq!(classify(Failure::Service, Some(400), Some("RequestTimeout")), Class::Transient);
    }

    #[test]
    fn connection_failures_and_timeouts_are_transient() {
        assert_eq!(classify(Failure::Dispatch, None, None), Class::Transient);
        assert_eq!(classify(Failure::Timeout, None, None), Class::Transient);
        assert_eq!(classify(Failure::Response, Some(200), None), Class::Transient);
    }

    #[test]
    fn denied_and_malformed_requests_are_permanent() {
        assert_eq!(classify(Failure::Service, Some(403), Some("AccessDenied")), Class::Permanent);
        assert_eq!(classify(Failure::Service, Some(400), Some("InvalidArgument")), Class::Permanent);
        assert_eq!(classify(Failure::Service, Some(403), Some("InvalidAccessKeyId")), Class::Permanent);
        assert_eq!(classify(Failure::Construction, None, None), Class::Permanent);
    }
}
