//! The JSON record of a local host (`<state>/hosts/<namespace>/<name>/host.json`): what the
//! local cloud knows about an "instance" and its "volume", kept across operator restarts.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::LocalError;

/// File name of the record inside a host directory.
pub const RECORD_FILE: &str = "host.json";

/// Whether the host is up (PostgreSQL may run) or was terminated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RecordState {
    Running,
    Terminated,
}

/// Whether the data directory belongs to a host or was released by a terminated one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum VolumeState {
    Attached,
    Released,
}

/// One local host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostRecord {
    pub namespace: String,
    pub name: String,
    /// `metadata.uid` of the PostgresHost that owns the host.
    pub uid: String,
    /// `local-<first 8 characters of the uid>`.
    pub instance_id: String,
    /// `vol-local-<first 8 characters of the uid that created the volume>`.
    pub volume_id: String,
    /// Loopback port chosen at the first launch and kept.
    pub port: u16,
    pub state: RecordState,
    pub volume: VolumeState,
}

/// The instance id of a host with this uid.
pub fn instance_id(uid: &str) -> String {
    format!("local-{}", uid_prefix(uid))
}

/// The volume id of a volume first created for this uid.
pub fn volume_id(uid: &str) -> String {
    format!("vol-local-{}", uid_prefix(uid))
}

fn uid_prefix(uid: &str) -> String {
    uid.chars().filter(char::is_ascii_alphanumeric).take(8).collect::<String>().to_ascii_lowercase()
}

/// Reads the record of a host directory; `None` when the directory has none.
pub fn load(host_dir: &Path) -> Result<Option<HostRecord>, LocalError> {
    let path = host_dir.join(RECORD_FILE);
    let text = match std::fs::read(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(LocalError::Io { what: format!("read {}", path.display()), source }),
    };
    serde_json::from_slice(&text).map(Some).map_err(|source| LocalError::Corrupt { path, source })
}

/// Writes the record atomically (temporary file, fsync, rename).
pub fn save(host_dir: &Path, record: &HostRecord) -> Result<(), LocalError> {
    let path = host_dir.join(RECORD_FILE);
    let text =
        serde_json::to_vec_pretty(record).map_err(|source| LocalError::Corrupt { path: path.clone(), source })?;
    super::files::write_atomic(&path, &text)
}

/// Every host directory under `<state>/hosts` that holds a record.
pub fn scan(hosts_root: &Path) -> Result<Vec<(PathBuf, HostRecord)>, LocalError> {
    let mut found = Vec::new();
    for namespace in super::files::subdirectories(hosts_root)? {
        for host_dir in super::files::subdirectories(&namespace)? {
            if let Some(record) = load(&host_dir)? {
                found.push((host_dir, record));
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_derived_from_the_uid_prefix() {
        let uid = "9F3C2A1B-7d6e-4c1f-8a2b-0123456789ab";
        assert_eq!(instance_id(uid), "local-9f3c2a1b");
        assert_eq!(volume_id(uid), "vol-local-9f3c2a1b");
    }

    #[test]
    fn a_saved_record_loads_back_and_a_missing_one_is_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(load(dir.path()).expect("load"), None);
        let record = HostRecord {
            namespace: "default".into(),
            name: "db".into(),
            uid: "u1".into(),
            instance_id: instance_id("u1"),
            volume_id: volume_id("u1"),
            port: 5433,
            state: RecordState::Running,
            volume: VolumeState::Attached,
        };
        save(dir.path(), &record).expect("save");
        assert_eq!(load(dir.path()).expect("load"), Some(record));
    }
}
