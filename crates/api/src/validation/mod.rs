//! Rust-side validation of pgec2 specs.
//!
//! The API server enforces the schema and the CEL rules of [`crate::rules`]. Where there is no
//! API server (local mode) and before the operator acts on a spec, the same checks run here,
//! with the same messages, plus what CEL cannot express (the cron schedule, RFC 3339 times).
//! `validate()` checks a spec on its own; `validate_update()` also checks the transition rules
//! against the previous spec.

mod host;
mod policy;
mod text;

pub use policy::{ScheduleError, parse_schedule};
pub use text::parse_duration_seconds;

use crate::rules::CelRule;

/// One invalid field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// Path of the field, e.g. `spec.storage.sizeGiB`.
    pub field: String,
    /// What is wrong and what to do.
    pub message: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// A spec the operator refuses to act on, with every invalid field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidSpec {
    /// The invalid fields, in the order they were checked; never empty.
    pub errors: Vec<FieldError>,
}

impl InvalidSpec {
    /// True when `field` is among the invalid fields.
    pub fn has_field(&self, field: &str) -> bool {
        self.errors.iter().any(|error| error.field == field)
    }

    /// True when some error carries this rule's message.
    pub fn violates(&self, rule: CelRule) -> bool {
        self.errors.iter().any(|error| error.message == rule.message)
    }
}

impl std::fmt::Display for InvalidSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("invalid spec: ")?;
        for (index, error) in self.errors.iter().enumerate() {
            if index > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for InvalidSpec {}

/// Collects field errors while a spec is checked.
#[derive(Default)]
struct Checker {
    errors: Vec<FieldError>,
}

impl Checker {
    fn fail(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.errors.push(FieldError { field: field.into(), message: message.into() });
    }

    /// Records `rule`'s message unless `holds`.
    fn rule(&mut self, field: &str, holds: bool, rule: CelRule) {
        if !holds {
            self.fail(field, rule.message);
        }
    }

    /// Records an error unless `min <= value <= max`.
    fn range(&mut self, field: &str, value: i64, min: i64, max: i64) {
        if value < min || value > max {
            self.fail(field, format!("must be between {min} and {max}, got {value}"));
        }
    }

    fn finish(self) -> Result<(), InvalidSpec> {
        if self.errors.is_empty() { Ok(()) } else { Err(InvalidSpec { errors: self.errors }) }
    }
}
