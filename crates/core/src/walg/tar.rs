//! Unpacking wal-g's tar partitions (ustar, GNU and PAX long names) into a directory. Paths
//! are kept inside the directory: a leading `/` is dropped, `..` is refused.

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

const BLOCK: usize = 512;

/// What can go wrong unpacking a tar stream.
#[derive(Debug, thiserror::Error)]
pub enum TarError {
    #[error("failed to read the tar stream: {0}")]
    Read(io::Error),
    #[error("the tar stream is damaged: {0}")]
    Damaged(String),
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

/// Unpacks the tar stream `input` into `dest`; every file written is fsynced.
pub fn unpack(mut input: impl Read, dest: &Path) -> Result<Unpacked, TarError> {
    let mut unpacked = Unpacked::default();
    let mut long_name: Option<String> = None;
    let mut long_link: Option<String> = None;
    let mut header = [0u8; BLOCK];
    loop {
        if !read_block(&mut input, &mut header)? || header.iter().all(|byte| *byte == 0) {
            return Ok(unpacked);
        }
        let size = number(&header[124..136])?;
        let kind = header[156];
        match kind {
            b'L' => long_name = Some(text_of(&read_data(&mut input, size)?)),
            b'K' => long_link = Some(text_of(&read_data(&mut input, size)?)),
            b'x' => {
                let data = read_data(&mut input, size)?;
                let (path, link) = pax_paths(&data);
                long_name = path.or(long_name);
                long_link = link.or(long_link);
            }
            b'g' => {
                read_data(&mut input, size)?;
            }
            _ => {
                let name = long_name.take().unwrap_or_else(|| ustar_name(&header));
                let link = long_link.take().unwrap_or_else(|| text_of(&header[157..257]));
                let path = dest.join(safe_relative(&name)?);
                let mode = number(&header[100..108])? as u32 & 0o7777;
                match kind {
                    b'0' | 0 | b'7' => {
                        copy_file(&mut input, size, &path, mode)?;
                        unpacked.files += 1;
                        unpacked.bytes += size;
                    }
                    b'5' => create_dir(&path, mode)?,
                    b'2' => {
                        make_parent(&path)?;
                        std::os::unix::fs::symlink(&link, &path).map_err(write_error(&path))?;
                    }
                    _ => {
                        read_data(&mut input, size)?;
                    }
                }
            }
        }
    }
}

fn write_error(path: &Path) -> impl Fn(io::Error) -> TarError + '_ {
    move |error| TarError::Write { path: path.to_path_buf(), error }
}

fn read_block(input: &mut impl Read, block: &mut [u8; BLOCK]) -> Result<bool, TarError> {
    let mut filled = 0;
    while filled < BLOCK {
        match input.read(&mut block[filled..]) {
            Ok(0) if filled == 0 => return Ok(false),
            Ok(0) => return Err(TarError::Damaged("it ends inside a header".to_string())),
            Ok(read) => filled += read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(TarError::Read(error)),
        }
    }
    Ok(true)
}

/// An entry's data and its padding, held (for small metadata entries only).
fn read_data(input: &mut impl Read, size: u64) -> Result<Vec<u8>, TarError> {
    let mut data = Vec::new();
    input.take(padded(size)).read_to_end(&mut data).map_err(TarError::Read)?;
    if (data.len() as u64) < padded(size) {
        return Err(TarError::Damaged("it ends inside an entry".to_string()));
    }
    data.truncate(size as usize);
    Ok(data)
}

fn padded(size: u64) -> u64 {
    size.div_ceil(BLOCK as u64) * BLOCK as u64
}

fn copy_file(input: &mut impl Read, size: u64, path: &Path, mode: u32) -> Result<(), TarError> {
    make_parent(path)?;
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if mode == 0 { 0o600 } else { mode })
        .open(path)
        .map_err(write_error(path))?;
    let copied = io::copy(&mut input.take(size), &mut file).map_err(|error| match error.kind() {
        io::ErrorKind::Other | io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof => TarError::Read(error),
        _ => TarError::Write { path: path.to_path_buf(), error },
    })?;
    if copied < size {
        return Err(TarError::Damaged(format!("it ends inside {}", path.display())));
    }
    file.flush().and_then(|()| file.sync_all()).map_err(write_error(path))?;
    let padding = padded(size) - size;
    io::copy(&mut input.take(padding), &mut io::sink()).map_err(TarError::Read)?;
    Ok(())
}

fn create_dir(path: &Path, mode: u32) -> Result<(), TarError> {
    fs::create_dir_all(path).map_err(write_error(path))?;
    let mode = if mode == 0 { 0o700 } else { mode };
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(write_error(path))
}

fn make_parent(path: &Path) -> Result<(), TarError> {
    match path.parent() {
        Some(parent) if !parent.exists() => create_dir(parent, 0o700),
        _ => Ok(()),
    }
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

fn text_of(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|byte| *byte == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// The name of a ustar header: its `prefix` field (ustar magic only) joined with `name`.
fn ustar_name(header: &[u8; BLOCK]) -> String {
    let name = text_of(&header[..100]);
    let prefix = if &header[257..263] == b"ustar\0" { text_of(&header[345..500]) } else { String::new() };
    if prefix.is_empty() { name } else { format!("{prefix}/{name}") }
}

/// An octal field, or GNU's base-256 form (high bit set).
fn number(field: &[u8]) -> Result<u64, TarError> {
    if field.first().is_some_and(|byte| byte & 0x80 != 0) {
        return Ok(field[1..].iter().fold(0u64, |value, byte| (value << 8) | u64::from(*byte)));
    }
    let text = text_of(field);
    let text = text.trim_matches(|c: char| c == ' ' || c == '\0');
    if text.is_empty() {
        return Ok(0);
    }
    u64::from_str_radix(text, 8).map_err(|_| TarError::Damaged(format!("bad number field {text:?}")))
}

/// `path` and `linkpath` of a PAX extended header (`"<len> key=value\n"` records).
fn pax_paths(data: &[u8]) -> (Option<String>, Option<String>) {
    let text = String::from_utf8_lossy(data);
    let (mut path, mut link) = (None, None);
    for record in text.split('\n') {
        let Some((_, pair)) = record.split_once(' ') else { continue };
        match pair.split_once('=') {
            Some(("path", value)) => path = Some(value.to_string()),
            Some(("linkpath", value)) => link = Some(value.to_string()),
            _ => {}
        }
    }
    (path, link)
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
