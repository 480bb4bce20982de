//! The PostgreSQL parameters pgec2 sets itself: archiving, recovery, connections, TLS and file
//! locations. A PostgresHost's `spec.postgres.parameters` (and so a HostSpec's `parameters`)
//! may not set them: the CRD's CEL rule refuses them at `kubectl apply`, the API crate's
//! validation refuses them in local mode and in the operator, and the agent refuses them before
//! it touches a host.
//!
//! `wal_level` is not in the list: a spec may set it, to `replica` or `logical` only (archiving
//! needs at least `replica`); that is a rule of its own.
//!
//! The names are written once, in [`with_managed_parameters!`], which hands them to a macro of
//! the caller's as literals: that is how the API crate builds the CEL rule's list at compile
//! time from the same names as [`MANAGED_PARAMETERS`].

/// Calls the macro `$callback` with the managed parameter names as string literals, sorted,
/// separated by commas: `$callback!("archive_command", "archive_library", …)`.
///
/// ```
/// macro_rules! count {
///     ($($name:literal),*) => { [$($name),*].len() };
/// }
/// assert_eq!(pgec2_contract::with_managed_parameters!(count), pgec2_contract::parameters::MANAGED_PARAMETERS.len());
/// ```
#[macro_export]
macro_rules! with_managed_parameters {
    ($callback:ident) => {
        $callback!(
            "archive_command",
            "archive_library",
            "archive_mode",
            "archive_timeout",
            "config_file",
            "data_directory",
            "hba_file",
            "hot_standby",
            "ident_file",
            "include",
            "include_dir",
            "include_if_exists",
            "listen_addresses",
            "password_encryption",
            "port",
            "recovery_target",
            "recovery_target_action",
            "recovery_target_inclusive",
            "recovery_target_lsn",
            "recovery_target_name",
            "recovery_target_time",
            "recovery_target_xid",
            "restore_command",
            "ssl",
            "ssl_cert_file",
            "ssl_key_file",
            "unix_socket_directories"
        )
    };
}

macro_rules! name_slice {
    ($($name:literal),*) => {
        &[$($name),*]
    };
}

/// Parameters pgec2 sets itself, sorted; a spec's `parameters` may not set them.
pub const MANAGED_PARAMETERS: &[&str] = with_managed_parameters!(name_slice);

/// Whether `name` is one of [`MANAGED_PARAMETERS`].
pub fn is_managed(name: &str) -> bool {
    MANAGED_PARAMETERS.binary_search(&name).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_is_sorted_without_duplicates_so_lookups_can_bisect() {
        assert!(MANAGED_PARAMETERS.windows(2).all(|pair| pair[0] < pair[1]), "{MANAGED_PARAMETERS:?}");
    }

    #[test]
    fn archiving_recovery_connections_and_tls_are_managed_and_tuning_is_not() {
        for name in ["archive_command", "restore_command", "recovery_target_time", "port", "ssl", "hba_file"] {
            assert!(is_managed(name), "{name}");
        }
        for name in ["work_mem", "shared_buffers", "wal_level", "max_connections"] {
            assert!(!is_managed(name), "{name}");
        }
    }
}
