//! Key files: a 256-bit secret written as 64 hex digits (the master key, customer keys, the
//! case-ID key).
//!
//! A file vigil creates itself is created on first use with mode 0600, in a directory created
//! with mode 0700, atomically: a synced temporary file hard-linked into place, so two processes
//! racing to create it agree on one key. A file vigil keeps its own secret in is refused when
//! group or others can access it. Errors never hold key material.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use rand::RngCore;
use zeroize::Zeroizing;

/// Bytes of a key.
pub const KEY_LEN: usize = 32;

/// A key, wiped from memory when dropped.
pub type Key = Zeroizing<[u8; KEY_LEN]>;

/// Why a key file cannot be used. The caller names the file.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// It could not be read or created.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Group or others can access it.
    #[error("accessible to group or others (mode {0:o})")]
    Permissions(u32),
    /// It does not hold 64 hex digits.
    #[error("must hold exactly 64 hex digits (a 256-bit key)")]
    Format,
}

/// Reads the private key file at `path`, creating it with a fresh random key first when it does
/// not exist and `create` is set.
pub fn load_private(path: &Path, create: bool) -> Result<Key, KeyFileError> {
    match fs::metadata(path) {
        Ok(meta) => {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(KeyFileError::Permissions(mode));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => create_new(path)?,
        Err(e) => return Err(e.into()),
    }
    read(path)
}

/// Reads the key file at `path` (one vigil did not create, such as a customer's key: its mode
/// is the owner's business).
pub fn read(path: &Path) -> Result<Key, KeyFileError> {
    let text = Zeroizing::new(fs::read(path)?);
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    hex::decode_to_slice(text.trim_ascii(), key.as_mut_slice())
        .map_err(|_| KeyFileError::Format)?;
    Ok(key)
}

/// Creates the key file at `path` with a fresh random key, unless another process just did.
fn create_new(path: &Path) -> std::io::Result<()> {
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    rand::rngs::OsRng.fill_bytes(key.as_mut_slice());
    let mut text = Zeroizing::new(hex::encode(key.as_slice()));
    text.push('\n');
    let (dir, tmp) = crate::atomic_file::synced_temp(path, text.as_bytes(), 0o600)?;
    // A hard link fails if the target exists: a concurrent creator's key wins, not ours.
    let linked = fs::hard_link(&tmp, path);
    let removed = fs::remove_file(&tmp);
    match linked {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
        _ => removed?,
    }
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_created_private_once_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/a.key");
        let first = load_private(&path, true).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        assert_eq!(*load_private(&path, true).unwrap(), *first);
        // No temporary files are left behind.
        assert_eq!(fs::read_dir(dir.path().join("keys")).unwrap().count(), 1);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(
            load_private(&path, true),
            Err(KeyFileError::Permissions(0o640))
        ));
        assert!(matches!(
            load_private(&dir.path().join("missing"), false),
            Err(KeyFileError::Io(_))
        ));
        fs::write(dir.path().join("short"), "abcd").unwrap();
        assert!(matches!(
            read(&dir.path().join("short")),
            Err(KeyFileError::Format)
        ));
    }
}
