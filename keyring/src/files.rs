//! Key, certificate and bundle files.
//!
//! Writes are atomic: the bytes go to a temporary file in the same directory,
//! which is flushed to disk (`fsync`) and then renamed over the target, so a
//! crash leaves either the old file or the new one. Secret files are created
//! with mode 0600 from the start, so no other user can open them while they
//! are being written.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use zeroize::Zeroizing;

use crate::error::{KeyringError, Result};

/// Mode of secret key files: read and write for the owner only.
pub const SECRET_FILE_MODE: u32 = 0o600;

/// Mode of public files (certificates, CA public key, bundle, CA state).
pub const PUBLIC_FILE_MODE: u32 = 0o644;

/// Mode of directories created for identities and CAs.
pub const PRIVATE_DIR_MODE: u32 = 0o700;

/// Permission bits that must be clear on a secret key file: any access by
/// group or others.
const GROUP_OTHER_BITS: u32 = 0o077;

/// Maximum size in bytes of a secret key file. The key files of this crate
/// are under 200 bytes, so a larger file is not one of them.
pub const MAX_SECRET_FILE_BYTES: u64 = 64 * 1024;

/// Distinguishes temporary files of concurrent writes in one process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes a secret file atomically with mode 0600, replacing any existing file.
///
/// # Errors
///
/// [`KeyringError::Io`] if the temporary file cannot be created, written,
/// flushed or renamed.
pub fn write_secret_file(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomically(path, bytes, SECRET_FILE_MODE, Replace::Yes)
}

/// Writes a secret file atomically with mode 0600, but only if `path` does
/// not exist yet.
///
/// # Errors
///
/// [`KeyringError::Io`] with kind `AlreadyExists` if the file exists, or on
/// any other I/O failure.
pub(crate) fn write_new_secret_file(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomically(path, bytes, SECRET_FILE_MODE, Replace::No)
}

/// Writes a public file atomically with mode 0644, replacing any existing file.
///
/// # Errors
///
/// [`KeyringError::Io`] if the temporary file cannot be created, written,
/// flushed or renamed.
pub fn write_public_file(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomically(path, bytes, PUBLIC_FILE_MODE, Replace::Yes)
}

/// Reads a secret file after checking that neither group nor others can
/// access it. The check uses the opened file, so the file cannot be swapped
/// between the check and the read.
///
/// # Errors
///
/// [`KeyringError::KeyFilePermissions`] if `mode & 0o077 != 0`,
/// [`KeyringError::NotARegularFile`], [`KeyringError::InputTooLarge`] above
/// [`MAX_SECRET_FILE_BYTES`], or [`KeyringError::Io`].
pub fn read_secret_file(path: &Path) -> Result<Zeroizing<Vec<u8>>> {
    let file = File::open(path).map_err(|error| KeyringError::io("open", path, error))?;
    let metadata = file
        .metadata()
        .map_err(|error| KeyringError::io("read the metadata of", path, error))?;

    if !metadata.is_file() {
        return Err(KeyringError::NotARegularFile {
            path: path.to_path_buf(),
        });
    }
    let mode = metadata.permissions().mode() & 0o7777;
    if mode & GROUP_OTHER_BITS != 0 {
        return Err(KeyringError::KeyFilePermissions {
            path: path.to_path_buf(),
            mode,
        });
    }

    read_bounded(
        file,
        path,
        "secret key file",
        MAX_SECRET_FILE_BYTES,
        metadata.len(),
    )
}

/// Reads a public file of at most `max_len` bytes.
pub(crate) fn read_public_file(path: &Path, what: &'static str, max_len: usize) -> Result<Vec<u8>> {
    let file = File::open(path).map_err(|error| KeyringError::io("open", path, error))?;
    let metadata = file
        .metadata()
        .map_err(|error| KeyringError::io("read the metadata of", path, error))?;
    if !metadata.is_file() {
        return Err(KeyringError::NotARegularFile {
            path: path.to_path_buf(),
        });
    }

    let bytes = read_bounded(file, path, what, max_len as u64, metadata.len())?;
    Ok(bytes.to_vec())
}

/// Creates `dir` and missing parents with mode 0700. Existing directories
/// keep their mode.
pub(crate) fn create_private_dir(dir: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR_MODE)
        .create(dir)
        .map_err(|error| KeyringError::io("create directory", dir, error))
}

/// Reads at most `max_len` bytes into a buffer that is zeroized on drop.
fn read_bounded(
    file: File,
    path: &Path,
    what: &'static str,
    max_len: u64,
    size_hint: u64,
) -> Result<Zeroizing<Vec<u8>>> {
    let too_large = |size| KeyringError::InputTooLarge {
        what,
        size,
        max: max_len,
    };
    if size_hint > max_len {
        return Err(too_large(size_hint));
    }

    // Reserving the whole size up front avoids reallocations, which would
    // leave copies of secret bytes in freed memory.
    let capacity = usize::try_from(max_len.min(size_hint) + 1).unwrap_or(usize::MAX);
    let mut buffer = Zeroizing::new(Vec::with_capacity(capacity));
    file.take(max_len + 1)
        .read_to_end(&mut buffer)
        .map_err(|error| KeyringError::io("read", path, error))?;

    // The file may have grown since the metadata was read.
    if buffer.len() as u64 > max_len {
        return Err(too_large(buffer.len() as u64));
    }
    Ok(buffer)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Replace {
    Yes,
    No,
}

fn write_atomically(path: &Path, bytes: &[u8], mode: u32, replace: Replace) -> Result<()> {
    let dir = parent_dir(path);
    let temp_path = temp_path_for(path)?;

    let result = write_temp_then_publish(&temp_path, path, bytes, mode, replace);
    if result.is_err() {
        // Best effort: a leftover temporary file contains no more than the target would.
        let _ = fs::remove_file(&temp_path);
        return result;
    }

    // Flushing the directory makes the rename itself survive a crash.
    let dir_handle =
        File::open(&dir).map_err(|error| KeyringError::io("open directory", &dir, error))?;
    dir_handle
        .sync_all()
        .map_err(|error| KeyringError::io("flush directory", &dir, error))
}

fn write_temp_then_publish(
    temp_path: &Path,
    path: &Path,
    bytes: &[u8],
    mode: u32,
    replace: Replace,
) -> Result<()> {
    // `create_new` refuses to follow a symlink planted at the temporary name.
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(temp_path)
        .map_err(|error| KeyringError::io("create", temp_path, error))?;

    // The umask may have cleared bits of `mode`, so set it exactly.
    file.set_permissions(Permissions::from_mode(mode))
        .map_err(|error| KeyringError::io("set permissions of", temp_path, error))?;
    file.write_all(bytes)
        .map_err(|error| KeyringError::io("write", temp_path, error))?;
    file.sync_all()
        .map_err(|error| KeyringError::io("flush", temp_path, error))?;
    drop(file);

    match replace {
        Replace::Yes => fs::rename(temp_path, path)
            .map_err(|error| KeyringError::io("rename a file to", path, error)),
        Replace::No => {
            // A hard link fails if the target exists, unlike rename, so an
            // existing file is never replaced even by a concurrent writer.
            fs::hard_link(temp_path, path)
                .map_err(|error| KeyringError::io("create", path, error))?;
            fs::remove_file(temp_path).map_err(|error| KeyringError::io("remove", temp_path, error))
        }
    }
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn temp_path_for(path: &Path) -> Result<PathBuf> {
    let Some(file_name) = path.file_name() else {
        return Err(KeyringError::io(
            "write",
            path,
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the path has no file name",
            ),
        ));
    };
    let counter = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let temp_name = format!(
        ".{}.tmp.{}.{}",
        file_name.to_string_lossy(),
        std::process::id(),
        counter
    );
    Ok(parent_dir(path).join(temp_name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn secret_file_is_0600_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.key");
        write_secret_file(&path, b"secret bytes").unwrap();

        assert_eq!(mode_of(&path), 0o600);
        assert_eq!(read_secret_file(&path).unwrap().as_slice(), b"secret bytes");
    }

    #[test]
    fn secret_file_replaces_old_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.key");
        write_secret_file(&path, b"old").unwrap();
        write_secret_file(&path, b"new").unwrap();
        assert_eq!(read_secret_file(&path).unwrap().as_slice(), b"new");
    }

    #[test]
    fn no_temporary_files_remain() {
        let dir = tempfile::tempdir().unwrap();
        write_secret_file(&dir.path().join("a.key"), b"a").unwrap();
        write_public_file(&dir.path().join("b.pub"), b"b").unwrap();
        let mut names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["a.key", "b.pub"]);
    }

    #[test]
    fn public_file_is_0644() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pub");
        write_public_file(&path, b"{}").unwrap();
        assert_eq!(mode_of(&path), 0o644);
    }

    #[test]
    fn group_or_other_access_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.key");
        write_secret_file(&path, b"x").unwrap();

        for mode in [0o644, 0o640, 0o604, 0o660, 0o602, 0o610, 0o601] {
            fs::set_permissions(&path, Permissions::from_mode(mode)).unwrap();
            let error = read_secret_file(&path).unwrap_err();
            match &error {
                KeyringError::KeyFilePermissions {
                    path: found,
                    mode: found_mode,
                } => {
                    assert_eq!(found, &path);
                    assert_eq!(*found_mode, mode);
                }
                other => panic!("mode {mode:o}: expected a permission error, got {other:?}"),
            }
            let message = error.to_string();
            assert!(
                message.contains(&format!("chmod 600 {}", path.display())),
                "{message}"
            );
        }
    }

    #[test]
    fn owner_only_modes_are_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.key");
        write_secret_file(&path, b"x").unwrap();
        for mode in [0o600, 0o400] {
            fs::set_permissions(&path, Permissions::from_mode(mode)).unwrap();
            assert!(read_secret_file(&path).is_ok(), "mode {mode:o}");
        }
    }

    #[test]
    fn oversized_secret_file_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.key");
        let bytes = vec![b'x'; MAX_SECRET_FILE_BYTES as usize + 1];
        write_secret_file(&path, &bytes).unwrap();
        let result = read_secret_file(&path);
        assert!(matches!(result, Err(KeyringError::InputTooLarge { .. })));
    }

    #[test]
    fn directory_is_not_a_key_file() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        fs::create_dir(&sub).unwrap();
        fs::set_permissions(&sub, Permissions::from_mode(0o700)).unwrap();
        let result = read_secret_file(&sub);
        assert!(matches!(result, Err(KeyringError::NotARegularFile { .. })));
    }

    #[test]
    fn missing_file_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.key");
        let error = read_secret_file(&path).unwrap_err();
        assert!(matches!(error, KeyringError::Io { .. }));
        assert!(error.to_string().contains("absent.key"));
    }

    #[test]
    fn new_secret_file_does_not_replace() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.key");
        write_new_secret_file(&path, b"first").unwrap();
        let error = write_new_secret_file(&path, b"second").unwrap_err();
        match error {
            KeyringError::Io { source, .. } => {
                assert_eq!(source.kind(), std::io::ErrorKind::AlreadyExists)
            }
            other => panic!("expected an I/O error, got {other:?}"),
        }
        assert_eq!(read_secret_file(&path).unwrap().as_slice(), b"first");
        assert_eq!(mode_of(&path), 0o600);
    }

    #[test]
    fn private_dir_is_0700() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a/b");
        create_private_dir(&nested).unwrap();
        assert_eq!(mode_of(&nested), 0o700);
    }
}
