//! The data volume steps of the ec2 profile: find the device, make sure it carries a
//! filesystem (formatting only a blank volume), record it in /etc/fstab, mount it.

use std::path::{Path, PathBuf};

use pgec2_core::host_spec::HostSpec;

use super::command::Cmd;
use super::device::{self, FilesystemDecision};
use super::fstab::{self, FstabPlan, MountState};
use super::{Done, StepError, files};

const FSTAB: &str = "/etc/fstab";
const MOUNTS: &str = "/proc/self/mounts";

/// The volume as found on this host.
#[derive(Clone, Debug)]
pub struct Volume {
    pub device: PathBuf,
    pub filesystem: String,
    pub uuid: String,
}

/// Step `data-device`: the block device of the spec's EBS volume.
pub async fn find(spec: &HostSpec) -> Result<(PathBuf, Done), StepError> {
    let Some(volume_id) = spec.volume.volume_id.as_deref() else {
        return Err(StepError::Volume {
            volume: "the data volume".into(),
            problem: "the spec has no volume.volumeId".into(),
            remedy: "set volume.volumeId (the operator does for the hosts it launches)".into(),
        });
    };
    let device = device::find_device(
        volume_id,
        Path::new(device::BY_ID_DIRECTORY),
        Path::new(device::NVME_CLASS_DIRECTORY),
        device::DEVICE_WAIT,
    )
    .await?;
    let detail = format!("EBS volume {volume_id} is {}", device.display());
    Ok((device, Done::unchanged(detail)))
}

/// Step `filesystem`: keeps an existing filesystem, formats a blank volume, refuses the rest.
pub async fn filesystem(spec: &HostSpec, device: &Path) -> Result<(Volume, Done), StepError> {
    let (decision, formatted) = match device::probe(device).await? {
        FilesystemDecision::Format => {
            device::format(device, &spec.volume.filesystem).await?;
            (device::probe(device).await?, true)
        }
        decision => (decision, false),
    };
    match decision {
        FilesystemDecision::Use { filesystem, uuid } => {
            let volume = Volume { device: device.to_path_buf(), filesystem, uuid };
            let detail = format!("{} UUID={} on {}", volume.filesystem, volume.uuid, device.display());
            let done = if formatted {
                Done::changed(format!("created {detail}"))
            } else {
                Done::unchanged(format!("kept {detail}"))
            };
            Ok((volume, done))
        }
        FilesystemDecision::Format => Err(StepError::Volume {
            volume: device.display().to_string(),
            problem: "still shows no filesystem after mkfs".into(),
            remedy: "check the device and the kernel log (dmesg), then run host apply again".into(),
        }),
        FilesystemDecision::Refuse(reason) => Err(StepError::Volume {
            volume: device.display().to_string(),
            problem: reason,
            remedy: "pgec2 formats only an empty volume; attach an empty one or clear this one by hand".into(),
        }),
    }
}

/// Step `fstab`: one entry by UUID with nofail.
pub fn fstab_entry(spec: &HostSpec, volume: &Volume) -> Result<Done, StepError> {
    let current = String::from_utf8_lossy(&files::read_optional(Path::new(FSTAB))?.unwrap_or_default()).into_owned();
    match fstab::plan_fstab(&current, &volume.uuid, &spec.volume.mount_path, &volume.filesystem) {
        FstabPlan::Present => Ok(Done::unchanged("entry present")),
        FstabPlan::Append(line) => {
            files::write_file(Path::new(FSTAB), fstab::append_line(&current, &line).as_bytes(), 0o644, None)?;
            Ok(Done::changed(format!("added {line:?}")))
        }
        FstabPlan::Conflict(reason) => Err(StepError::Volume {
            volume: FSTAB.into(),
            problem: reason,
            remedy: "remove or fix the conflicting entry".into(),
        }),
    }
}

/// Step `mount`: mounts the volume at the mount path (through its fstab entry).
pub async fn mount(spec: &HostSpec, volume: &Volume) -> Result<Done, StepError> {
    let mount_path = &spec.volume.mount_path;
    let state = || -> Result<MountState, StepError> {
        let mounts =
            String::from_utf8_lossy(&files::read_optional(Path::new(MOUNTS))?.unwrap_or_default()).into_owned();
        Ok(fstab::mount_state(&mounts, mount_path, &volume.device))
    };
    match state()? {
        MountState::Mounted => return Ok(Done::unchanged(format!("mounted at {}", mount_path.display()))),
        MountState::Other(source) => {
            return Err(StepError::Volume {
                volume: mount_path.display().to_string(),
                problem: format!("{source} is mounted here instead of the data volume"),
                remedy: "unmount it first".into(),
            });
        }
        MountState::NotMounted => {}
    }
    files::ensure_directory(mount_path, 0o755, None)?;
    Cmd::new("mount").arg(mount_path).run().await?;
    match state()? {
        MountState::Mounted => {
            Ok(Done::changed(format!("mounted {} at {}", volume.device.display(), mount_path.display())))
        }
        _ => Err(StepError::Volume {
            volume: mount_path.display().to_string(),
            problem: "mount returned success but the data volume is not mounted here".into(),
            remedy: "check /etc/fstab and the kernel log (dmesg)".into(),
        }),
    }
}
