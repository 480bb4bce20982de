//! The data volume (ec2 profile): find the EBS volume by its id, and decide — from `blkid` —
//! whether it may be formatted. A volume is formatted only when blkid finds no signature at
//! all on it; a filesystem is kept whatever its type, anything else (a partition table, LVM,
//! LUKS, RAID, swap) is refused. Data is never reformatted.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::StepError;
use super::command::Cmd;

/// Where udev links NVMe devices by id.
pub const BY_ID_DIRECTORY: &str = "/dev/disk/by-id";
/// Where NVMe controllers expose their serial number.
pub const NVME_CLASS_DIRECTORY: &str = "/sys/class/nvme";
/// How long to wait for an attached volume to appear.
pub const DEVICE_WAIT: Duration = Duration::from_secs(300);
/// How long mkfs may take.
const MKFS_TIMEOUT: Duration = Duration::from_secs(600);
/// Filesystems a data volume may carry.
const MOUNTABLE: &[&str] = &["ext4", "xfs", "ext3", "ext2", "btrfs"];

/// The `/dev/disk/by-id` name of an EBS volume: its NVMe serial is the id without the dash.
pub fn by_id_name(volume_id: &str) -> String {
    format!("nvme-Amazon_Elastic_Block_Store_{}", volume_id.replace('-', ""))
}

/// True when an NVMe serial (space padded) is the volume's.
pub fn serial_matches(serial: &str, volume_id: &str) -> bool {
    serial.trim() == volume_id.replace('-', "")
}

/// Finds the volume's block device, waiting up to `wait` for it to appear (the attachment can
/// lag the instance start). Looks for udev's by-id link, then for the NVMe serial in sysfs.
pub async fn find_device(
    volume_id: &str,
    by_id: &Path,
    nvme_class: &Path,
    wait: Duration,
) -> Result<PathBuf, StepError> {
    let deadline = Instant::now() + wait;
    loop {
        let link = by_id.join(by_id_name(volume_id));
        if let Ok(device) = std::fs::canonicalize(&link) {
            return Ok(device);
        }
        if let Some(device) = find_by_serial(volume_id, nvme_class) {
            return Ok(device);
        }
        if Instant::now() >= deadline {
            return Err(StepError::Volume {
                volume: format!("EBS volume {volume_id}"),
                problem: format!(
                    "did not appear within {} s (no {} and no NVMe controller with its serial)",
                    wait.as_secs(),
                    link.display()
                ),
                remedy: "check that it is attached to this instance".into(),
            });
        }
        tokio::time::sleep(Duration::from_millis(500).min(wait)).await;
    }
}

/// `/sys/class/nvme/nvmeN/serial` == volume id → `/dev/nvmeNn1`.
fn find_by_serial(volume_id: &str, nvme_class: &Path) -> Option<PathBuf> {
    let entries = std::fs::read_dir(nvme_class).ok()?;
    for entry in entries.flatten() {
        let serial = std::fs::read_to_string(entry.path().join("serial")).unwrap_or_default();
        if serial_matches(&serial, volume_id) {
            let device = PathBuf::from(format!("/dev/{}n1", entry.file_name().to_string_lossy()));
            if device.exists() {
                return Some(device);
            }
        }
    }
    None
}

/// What to do with the volume's contents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FilesystemDecision {
    /// No signature at all: create the spec's filesystem.
    Format,
    /// A filesystem is there: keep it and use it.
    Use { filesystem: String, uuid: String },
    /// Something that is not a mountable filesystem: touch nothing.
    Refuse(String),
}

/// Decides from `blkid -p -o export DEVICE`: exit status 2 means no signature was found.
pub fn decide_filesystem(exit_code: Option<i32>, stdout: &str) -> FilesystemDecision {
    match exit_code {
        Some(2) => return FilesystemDecision::Format,
        Some(0) => {}
        other => return FilesystemDecision::Refuse(format!("blkid could not probe the device (exit {other:?})")),
    }
    let value = |key: &str| {
        stdout
            .lines()
            .find_map(|line| line.strip_prefix(key).and_then(|rest| rest.strip_prefix('=')))
            .map(str::to_string)
    };
    if let Some(table) = value("PTTYPE") {
        return FilesystemDecision::Refuse(format!("the volume has a {table} partition table: refusing to format it"));
    }
    match (value("TYPE"), value("UUID")) {
        (Some(filesystem), Some(uuid)) if MOUNTABLE.contains(&filesystem.as_str()) => {
            FilesystemDecision::Use { filesystem, uuid }
        }
        (Some(kind), _) => FilesystemDecision::Refuse(format!(
            "the volume holds {kind}, not a filesystem pgec2 mounts: refusing to touch it"
        )),
        (None, _) => {
            FilesystemDecision::Refuse(format!("blkid found a signature it could not name: {}", stdout.trim()))
        }
    }
}

/// Probes the device with blkid (low-level probe, no cache).
pub async fn probe(device: &Path) -> Result<FilesystemDecision, StepError> {
    let command = Cmd::new("blkid").args(["-p", "-o", "export"]).arg(device);
    let finished = command.output().await?;
    Ok(decide_filesystem(finished.status.code(), &finished.stdout))
}

/// Creates the filesystem on a blank device (mkfs refuses an existing one without -F, and we
/// never pass -F).
pub async fn format(device: &Path, filesystem: &str) -> Result<(), StepError> {
    let program = format!("mkfs.{filesystem}");
    Cmd::new(program).args(["-L", "pgec2-data"]).arg(device).timeout(MKFS_TIMEOUT).run().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_by_id_name_drops_the_dash_of_the_volume_id() {
        assert_eq!(by_id_name("vol-0123456789abcdef0"), "nvme-Amazon_Elastic_Block_Store_vol0123456789abcdef0");
        assert!(serial_matches("vol0123456789abcdef0      \n", "vol-0123456789abcdef0"));
        assert!(!serial_matches("vol0123456789abcdef1", "vol-0123456789abcdef0"));
    }

    #[test]
    fn a_blank_volume_is_formatted() {
        assert_eq!(decide_filesystem(Some(2), ""), FilesystemDecision::Format);
    }

    #[test]
    fn a_volume_with_a_filesystem_is_never_formatted() {
        let ext4 = "DEVNAME=/dev/nvme1n1\nUUID=2f3c7a1e-8b1f-4b4e-9a36-5d0f0e1c2b3a\nVERSION=1.0\nTYPE=ext4\nUSAGE=filesystem\n";
        assert_eq!(
            decide_filesystem(Some(0), ext4),
            FilesystemDecision::Use { filesystem: "ext4".into(), uuid: "2f3c7a1e-8b1f-4b4e-9a36-5d0f0e1c2b3a".into() }
        );
        let xfs = "DEVNAME=/dev/nvme1n1\nUUID=7d1e\nTYPE=xfs\n";
        assert!(
            matches!(decide_filesystem(Some(0), xfs), FilesystemDecision::Use { filesystem, .. } if filesystem == "xfs"),
            "a filesystem other than the spec's is kept, not replaced"
        );
    }

    #[test]
    fn partition_tables_and_other_signatures_are_refused() {
        let gpt = "DEVNAME=/dev/nvme1n1\nPTUUID=abc\nPTTYPE=gpt\n";
        assert!(
            matches!(decide_filesystem(Some(0), gpt), FilesystemDecision::Refuse(reason) if reason.contains("gpt"))
        );
        for kind in ["LVM2_member", "crypto_LUKS", "swap", "linux_raid_member"] {
            let stdout = format!("DEVNAME=/dev/nvme1n1\nUUID=1\nTYPE={kind}\n");
            assert!(matches!(decide_filesystem(Some(0), &stdout), FilesystemDecision::Refuse(_)), "{kind} accepted");
        }
        assert!(
            matches!(decide_filesystem(Some(4), ""), FilesystemDecision::Refuse(_)),
            "a probe error is no licence to format"
        );
        assert!(matches!(decide_filesystem(None, ""), FilesystemDecision::Refuse(_)));
    }

    #[tokio::test]
    async fn the_device_is_found_when_its_link_appears_while_waiting() {
        let dir = tempfile::tempdir().expect("tempdir");
        let by_id = dir.path().join("by-id");
        std::fs::create_dir(&by_id).expect("by-id");
        let device = dir.path().join("nvme1n1");
        std::fs::write(&device, b"").expect("device");
        let link = by_id.join(by_id_name("vol-0123456789abcdef0"));
        let linker = tokio::spawn({
            let device = device.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                std::os::unix::fs::symlink(&device, &link).expect("symlink");
            }
        });
        let found = find_device("vol-0123456789abcdef0", &by_id, &dir.path().join("nvme"), Duration::from_secs(10))
            .await
            .expect("found");
        linker.await.expect("linker");
        assert_eq!(found, device.canonicalize().expect("canonical"));
    }

    #[tokio::test]
    async fn a_volume_that_never_appears_fails_with_its_id_after_the_wait() {
        let dir = tempfile::tempdir().expect("tempdir");
        let error = find_device("vol-0123456789abcdef0", dir.path(), dir.path(), Duration::from_millis(200))
            .await
            .expect_err("not attached");
        assert!(error.to_string().contains("vol-0123456789abcdef0"), "{error}");
    }
}
