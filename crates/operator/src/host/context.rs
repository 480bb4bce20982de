//! What the PostgresHost controller keeps between reconciles, next to the operator's shared
//! [`Context`]: failed setups per host (for the retry delay) and archive checks in flight. It
//! lives in memory only; a restarted operator starts afresh and reads the rest from status.

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::{Arc, Mutex};

use super::archive_check::ArchiveChecks;
use crate::context::Context;

/// The host controller's context.
pub struct HostContext {
    pub shared: Arc<Context>,
    /// Consecutive failed setups per host uid, with the digest of the configuration they tried.
    setup_failures: Mutex<HashMap<String, (String, u32)>>,
    /// Archive health checks in flight or done, per host uid.
    pub archive_checks: ArchiveChecks,
}

impl HostContext {
    pub fn new(shared: Arc<Context>) -> Self {
        Self { shared, setup_failures: Mutex::default(), archive_checks: ArchiveChecks::default() }
    }

    /// Failed setups in a row of the configuration `digest` on host `uid`.
    pub fn setup_failures(&self, uid: &str, digest: &str) -> u32 {
        let failures = self.setup_failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        failures.get(uid).filter(|(tried, _)| tried == digest).map_or(0, |(_, count)| *count)
    }

    /// Records the outcome of a setup of `digest` on host `uid`.
    pub fn record_setup(&self, uid: &str, digest: &str, succeeded: bool) {
        let mut failures = self.setup_failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if succeeded {
            failures.remove(uid);
            return;
        }
        let entry = failures.entry(uid.to_string()).or_insert_with(|| (digest.to_string(), 0));
        if entry.0 != digest {
            *entry = (digest.to_string(), 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }
}

impl Deref for HostContext {
    type Target = Context;

    fn deref(&self) -> &Context {
        &self.shared
    }
}
