//! Unpacking wal-g's tar partitions (ustar, GNU and PAX long names) into a directory, with the
//! `tar` crate. Paths are kept inside the directory: a leading `/` is dropped, `..` is refused.

use std::fs;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

/// What can go wrong unpacking a tar stream.
#[derive(Debug, thiserror::Error)]
pub enum TarError {
    #[error("failed to read the tar stream: {0}")]
    Read(io::Error),
    #[error("the tar stream is damaged: it ends or breaks inside {name}: {error}")]
    Broken { name: String, error: io::Error },
    #[error("refusing tar entry {0:?}: it points outside the destination")]
    UnsafePath(String),
    #[error("failed to write {}: {error}", path.display())]
    Write { path: PathBuf, error: io::Error },
}

/// What was unpacked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Unpacked {
    pub files: u64,
    pub bytes: u64,
}

/// Unpacks the tar stream `input` into `dest`; every regular file written is fsynced. Entries
/// that already exist in `dest` are refused rather than overwritten.
pub fn unpack(input: impl Read, dest: &Path) -> Result<Unpacked, TarError> {
    fs::create_dir_all(dest).map_err(write_error(dest))?;
    let mut archive = ::tar::Archive::new(input);
    archive.set_preserve_permissions(true);
    archive.set_overwrite(false);
    let mut unpacked = Unpacked::default();
    for entry in archive.entries().map_err(TarError::Read)? {
        let mut entry = entry.map_err(TarError::Read)?;
        let name = entry.path().map_err(TarError::Read)?.to_string_lossy().into_owned();
        let path = dest.join(safe_relative(&name)?);
        let is_file = entry.header().entry_type().is_file();
        let size = entry.size();
        let inside = entry.unpack_in(dest).map_err(|error| match error.kind() {
            io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof => TarError::Broken { name: name.clone(), error },
            _ => TarError::Write { path: path.clone(), error },
        })?;
        if !inside {
            return Err(TarError::UnsafePath(name));
        }
        if is_file {
            let file = fs::File::open(&path).map_err(write_error(&path))?;
            file.sync_all().map_err(write_error(&path))?;
            unpacked.files += 1;
            unpacked.bytes += size;
        }
    }
    Ok(unpacked)
}

fn write_error(path: &Path) -> impl Fn(io::Error) -> TarError + '_ {
    move |error| TarError::Write { path: path.to_path_buf(), error }
}

/// `name` as a path relative to the destination.
fn safe_relative(name: &str) -> Result<PathBuf, TarError> {
    let mut relative = PathBuf::new();
    for component in Path::new(name).components() {
        match component {
            Component::Normal(part) => relative.push(part),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => return Err(TarError::UnsafePath(name.to_string())),
        }
    }
    if relative.as_os_str().is_empty() {
        return Err(TarError::UnsafePath(name.to_string()));
    }
    Ok(relative)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tar_entries_outside_the_destination_are_refused() {
        assert!(safe_relative("../etc/passwd").is_err());
        assert_eq!(safe_relative("/global/pg_control").expect("path"), PathBuf::from("global/pg_control"));
    }

    #[test]
    fn a_tar_stream_written_by_tar_unpacks_with_its_files_and_directories() {
        let source = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(source.path().join("base/1")).expect("mkdir");
        let long = "x".repeat(120);
        fs::write(source.path().join("base/1").join(&long), b"hello").expect("write");
        fs::write(source.path().join("PG_VERSION"), b"15\n").expect("write");
        let output = std::process::Command::new("tar")
            .args(["--format=gnu", "-cf", "-", "-C"])
            .arg(source.path())
            .args(["PG_VERSION", "base"])
            .output()
            .expect("tar");
        let dest = tempfile::tempdir().expect("tempdir");
        let unpacked = unpack(&output.stdout[..], dest.path()).expect("unpack");
        assert_eq!(unpacked.files, 2);
        assert_eq!(fs::read(dest.path().join("base/1").join(&long)).expect("read"), b"hello");
        assert_eq!(fs::read(dest.path().join("PG_VERSION")).expect("read"), b"15\n");
    }
}
