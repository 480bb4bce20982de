//! Injected failures, so tests can prove that callers retry conflicts and survive server errors.

use crate::{
    error::ApiError,
    request::{ApiRequest, Verb},
};

/// What an injected fault answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FaultKind {
    /// 409 Conflict, as for a write based on a stale resourceVersion.
    Conflict,
    /// 500 InternalError.
    InternalError,
}

/// A rule that makes the next `times` matching requests fail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    kind: FaultKind,
    plural: Option<String>,
    status_only: bool,
    writes_only: bool,
    remaining: u32,
}

impl Fault {
    /// The next `times` writes (PUT or PATCH) to the `/status` subresource of `plural` answer
    /// 409 Conflict, without changing anything.
    pub fn status_conflicts(plural: &str, times: u32) -> Self {
        Self {
            kind: FaultKind::Conflict,
            plural: Some(plural.to_owned()),
            status_only: true,
            writes_only: true,
            remaining: times,
        }
    }

    /// The next `times` writes (create, replace, patch, delete) answer 409 Conflict, as if
    /// another writer got there first; restrict it with [`Fault::on`].
    pub fn conflicts(times: u32) -> Self {
        Self { kind: FaultKind::Conflict, plural: None, status_only: false, writes_only: true, remaining: times }
    }

    /// The next `times` requests of any kind answer 500 InternalError.
    pub fn internal_errors(times: u32) -> Self {
        Self { kind: FaultKind::InternalError, plural: None, status_only: false, writes_only: false, remaining: times }
    }

    /// Restricts the fault to requests for one resource type (by plural).
    pub fn on(mut self, plural: &str) -> Self {
        self.plural = Some(plural.to_owned());
        self
    }

    /// Restricts the fault to writes (create, replace, patch, delete).
    pub fn writes_only(mut self) -> Self {
        self.writes_only = true;
        self
    }

    /// How many more requests this fault will fail.
    pub fn remaining(&self) -> u32 {
        self.remaining
    }

    fn applies_to(&self, request: &ApiRequest) -> bool {
        let is_write = !matches!(request.verb, Verb::Get | Verb::List | Verb::Watch);
        self.remaining > 0
            && self.plural.as_ref().is_none_or(|plural| *plural == request.target.resource.plural)
            && (!self.status_only || request.target.is_status())
            && (!self.writes_only || is_write)
    }

    fn error(&self, request: &ApiRequest) -> ApiError {
        let target = &request.target;
        match self.kind {
            FaultKind::Conflict => ApiError::stale(&target.resource, target.object_name()),
            FaultKind::InternalError => ApiError::internal(format!(
                "injected fault: failed to serve {} {}",
                target.resource.qualified_plural(),
                target.object_name()
            )),
        }
    }
}

/// The active fault rules, consulted in order before every request.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    rules: Vec<Fault>,
}

impl Faults {
    /// Adds a rule.
    pub fn inject(&mut self, fault: Fault) {
        self.rules.push(fault);
    }

    /// The error the first matching rule answers (consuming one of its uses), if any.
    pub fn take(&mut self, request: &ApiRequest) -> Option<ApiError> {
        let rule = self.rules.iter_mut().find(|rule| rule.applies_to(request))?;
        rule.remaining -= 1;
        let error = rule.error(request);
        self.rules.retain(|rule| rule.remaining > 0);
        Some(error)
    }

    /// How many injected failures are still to happen.
    pub fn pending(&self) -> u32 {
        self.rules.iter().map(Fault::remaining).sum()
    }
}
