//! The data volume's fstab entry (by UUID, `nofail` so a missing volume never blocks boot) and
//! its mount state. Pure planning functions, tested against fstab and /proc/self/mounts text.

use std::path::{Path, PathBuf};

/// The fstab line pgec2 adds.
pub fn fstab_line(uuid: &str, mount_path: &Path, filesystem: &str) -> String {
    format!("UUID={uuid} {} {filesystem} defaults,nofail,noatime 0 2", escape(&mount_path.to_string_lossy()))
}

/// What to do with /etc/fstab.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FstabPlan {
    /// An entry mounts this UUID at the mount path already (its options are the admin's).
    Present,
    /// Append this line.
    Append(String),
    /// Another entry claims the mount path or the UUID: a person must decide.
    Conflict(String),
}

/// Plans the fstab change for the volume `uuid` at `mount_path`.
pub fn plan_fstab(fstab: &str, uuid: &str, mount_path: &Path, filesystem: &str) -> FstabPlan {
    let ours = format!("UUID={uuid}");
    let mount = mount_path.to_string_lossy();
    for line in fstab.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(source), Some(target)) = (fields.first(), fields.get(1)) else { continue };
        if source.starts_with('#') {
            continue;
        }
        let same_source = *source == ours || source.trim_matches('"') == ours;
        let same_target = unescape(target) == mount;
        match (same_source, same_target) {
            (true, true) => return FstabPlan::Present,
            (false, true) => {
                return FstabPlan::Conflict(format!(
                    "/etc/fstab already mounts {source} at {mount}: remove that line or choose another mount path"
                ));
            }
            (true, false) => {
                return FstabPlan::Conflict(format!("/etc/fstab already mounts {ours} at {target}: remove that line"));
            }
            (false, false) => {}
        }
    }
    FstabPlan::Append(fstab_line(uuid, mount_path, filesystem))
}

/// fstab with `line` appended.
pub fn append_line(fstab: &str, line: &str) -> String {
    super::files::appended(fstab, "pgec2 data volume", line)
}

/// What is mounted at the mount path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MountState {
    NotMounted,
    /// The volume's device is mounted there.
    Mounted,
    /// Something else is mounted there.
    Other(String),
}

/// Reads /proc/self/mounts text: is `device` mounted at `mount_path`? The last mount on a path
/// is the visible one.
pub fn mount_state(mounts: &str, mount_path: &Path, device: &Path) -> MountState {
    let mount = mount_path.to_string_lossy();
    let mut visible = mounts.lines().filter_map(|line| {
        let mut fields = line.split_whitespace();
        let source = unescape(fields.next()?);
        let target = unescape(fields.next()?);
        (target == mount).then_some(source)
    });
    match visible.next_back() {
        None => MountState::NotMounted,
        Some(source) if same_device(Path::new(&source), device) => MountState::Mounted,
        Some(source) => MountState::Other(source),
    }
}

fn same_device(source: &Path, device: &Path) -> bool {
    let canonical = |path: &Path| std::fs::canonicalize(path).unwrap_or_else(|_| PathBuf::from(path));
    source == device || canonical(source) == canonical(device)
}

/// fstab and /proc/mounts write a space as `\040` (and tab, newline, backslash likewise).
fn escape(text: &str) -> String {
    text.replace('\\', "\\134").replace(' ', "\\040").replace('\t', "\\011").replace('\n', "\\012")
}

fn unescape(text: &str) -> String {
    text.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")
}

#[cfg(test)]
mod tests {
    use super::*;

    const UUID: &str = "2f3c7a1e-8b1f-4b4e-9a36-5d0f0e1c2b3a";
    const UBUNTU_FSTAB: &str = "LABEL=cloudimg-rootfs\t/\t ext4\tdiscard,errors=remount-ro\t0 1\nLABEL=UEFI\t/boot/efi\tvfat\tumask=0077\t0 1\n";

    #[test]
    fn the_fstab_line_mounts_by_uuid_with_nofail() {
        assert_eq!(
            fstab_line(UUID, Path::new("/var/lib/postgresql"), "ext4"),
            format!("UUID={UUID} /var/lib/postgresql ext4 defaults,nofail,noatime 0 2")
        );
    }

    #[test]
    fn the_entry_is_added_once() {
        let mount = Path::new("/var/lib/postgresql");
        let FstabPlan::Append(line) = plan_fstab(UBUNTU_FSTAB, UUID, mount, "ext4") else { panic!("expected append") };
        let updated = append_line(UBUNTU_FSTAB, &line);
        assert!(updated.starts_with(UBUNTU_FSTAB), "existing lines are kept");
        assert_eq!(plan_fstab(&updated, UUID, mount, "ext4"), FstabPlan::Present);
    }

    #[test]
    fn an_entry_edited_by_an_admin_is_respected() {
        let fstab = format!("{UBUNTU_FSTAB}UUID={UUID} /var/lib/postgresql xfs defaults,nofail 0 0\n");
        assert_eq!(plan_fstab(&fstab, UUID, Path::new("/var/lib/postgresql"), "ext4"), FstabPlan::Present);
    }

    #[test]
    fn another_device_on_the_mount_path_is_a_conflict() {
        let fstab = format!("{UBUNTU_FSTAB}/dev/xvdf /var/lib/postgresql ext4 defaults 0 2\n");
        assert!(matches!(plan_fstab(&fstab, UUID, Path::new("/var/lib/postgresql"), "ext4"), FstabPlan::Conflict(_)));
        let fstab = format!("UUID={UUID} /srv/old ext4 defaults 0 2\n");
        assert!(matches!(plan_fstab(&fstab, UUID, Path::new("/var/lib/postgresql"), "ext4"), FstabPlan::Conflict(_)));
        let commented = "#/dev/xvdf /var/lib/postgresql ext4 defaults 0 2\n";
        assert!(matches!(plan_fstab(commented, UUID, Path::new("/var/lib/postgresql"), "ext4"), FstabPlan::Append(_)));
    }

    #[test]
    fn a_mount_path_with_a_space_is_escaped_and_recognised() {
        let mount = Path::new("/srv/pg data");
        let line = fstab_line(UUID, mount, "ext4");
        assert!(line.contains("/srv/pg\\040data"));
        assert_eq!(plan_fstab(&line, UUID, mount, "ext4"), FstabPlan::Present);
    }

    #[test]
    fn the_mount_state_comes_from_proc_mounts() {
        let mounts = "/dev/root / ext4 rw,relatime 0 0\n/dev/nvme1n1 /var/lib/postgresql ext4 rw,noatime 0 0\n";
        let mount = Path::new("/var/lib/postgresql");
        assert_eq!(mount_state(mounts, mount, Path::new("/dev/nvme1n1")), MountState::Mounted);
        assert_eq!(mount_state(mounts, mount, Path::new("/dev/nvme2n1")), MountState::Other("/dev/nvme1n1".into()));
        assert_eq!(mount_state("/dev/root / ext4 rw 0 0\n", mount, Path::new("/dev/nvme1n1")), MountState::NotMounted);
    }
}
