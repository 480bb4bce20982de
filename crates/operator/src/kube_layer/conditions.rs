//! Kubernetes-style conditions: set one, keeping `lastTransitionTime` unless its status changes.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// `status` of a condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Truth {
    True,
    False,
    Unknown,
}

impl Truth {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::True => "True",
            Self::False => "False",
            Self::Unknown => "Unknown",
        }
    }

    /// `True` when `holds`, `False` otherwise.
    pub fn from_bool(holds: bool) -> Self {
        if holds { Self::True } else { Self::False }
    }
}

/// The wanted state of one condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConditionUpdate {
    pub type_: &'static str,
    pub status: Truth,
    pub reason: String,
    pub message: String,
}

impl ConditionUpdate {
    pub fn new(type_: &'static str, status: Truth, reason: &str, message: impl Into<String>) -> Self {
        Self { type_, status, reason: reason.to_string(), message: message.into() }
    }
}

/// Sets a condition in `conditions`: its reason, message and observedGeneration follow the
/// update; `lastTransitionTime` changes only when the status does (or the condition is new).
pub fn set(conditions: &mut Vec<Condition>, update: &ConditionUpdate, generation: Option<i64>, now: Timestamp) {
    let wanted = |last_transition_time| Condition {
        type_: update.type_.to_string(),
        status: update.status.as_str().to_string(),
        reason: update.reason.clone(),
        message: update.message.clone(),
        observed_generation: generation,
        last_transition_time,
    };
    match conditions.iter_mut().find(|condition| condition.type_ == update.type_) {
        Some(existing) if existing.status == update.status.as_str() => {
            *existing = wanted(existing.last_transition_time.clone());
        }
        Some(existing) => *existing = wanted(Time(now)),
        None => conditions.push(wanted(Time(now))),
    }
}

/// The condition of this type, if present.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|condition| condition.type_ == type_)
}

/// True when the condition of this type is present with status `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|condition| condition.status == Truth::True.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).expect("timestamp")
    }

    #[test]
    fn last_transition_time_changes_only_when_the_status_changes() {
        let mut conditions = Vec::new();
        set(&mut conditions, &ConditionUpdate::new("Ready", Truth::False, "Launching", "a"), Some(1), at(100));
        set(&mut conditions, &ConditionUpdate::new("Ready", Truth::False, "Configuring", "b"), Some(2), at(200));
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].last_transition_time, Time(at(100)));
        assert_eq!((conditions[0].reason.as_str(), conditions[0].message.as_str()), ("Configuring", "b"));
        assert_eq!(conditions[0].observed_generation, Some(2));
        set(&mut conditions, &ConditionUpdate::new("Ready", Truth::True, "Ready", "c"), Some(2), at(300));
        assert_eq!(conditions[0].last_transition_time, Time(at(300)));
        assert!(is_true(&conditions, "Ready"));
    }

    #[test]
    fn conditions_of_other_types_are_left_alone() {
        let mut conditions = Vec::new();
        set(&mut conditions, &ConditionUpdate::new("LastBackupSucceeded", Truth::True, "Done", ""), None, at(1));
        set(&mut conditions, &ConditionUpdate::new("Ready", Truth::True, "Ready", ""), None, at(2));
        assert_eq!(conditions.len(), 2);
        assert_eq!(
            find(&conditions, "LastBackupSucceeded").map(|condition| condition.last_transition_time.clone()),
            Some(Time(at(1)))
        );
    }
}
