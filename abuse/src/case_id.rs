//! Case IDs: a keyed hash of a case's subject and window under a per-installation secret.
//!
//! A case ID names a case in the stores, the flag events and the API, and a stored case is
//! found by it alone. Its inputs (resource ID, end-user ID) are chosen by customers, so an
//! unkeyed hash would let anyone who can send traffic search for two subjects whose IDs
//! collide. Case IDs are therefore HMAC-SHA256 under a secret of 32 random bytes created once
//! per installation ([`CaseIdKey::load_or_create`], the `abuse.case_id_key` file), truncated to
//! 128 bits: without the secret nobody can compute an ID, let alone a collision, and with it
//! the same subject and window always get the same ID (invariant 17).
//!
//! The key file follows the conventions of vigil's other key files ([`vigil_core::key_file`]):
//! 32 bytes as 64 hex digits, created on first use with mode 0600, atomically, and refused when
//! group or others can access it. Losing the file changes the IDs of cases opened from then on, never
//! those already stored.

use std::fmt;
use std::path::{Path, PathBuf};

use rand::RngCore;
use ring::hmac;
use vigil_core::key_file::{self, KeyFileError};
use vigil_core::ResourceId;
use zeroize::Zeroizing;

/// Bytes of secret in a case-ID key file.
pub const CASE_ID_KEY_LEN: usize = key_file::KEY_LEN;

/// Bytes of the HMAC kept in a case ID (128 bits, written as 32 hex digits).
const ID_BYTES: usize = 16;

/// Separates case-ID inputs from anything else that might ever be keyed with the same secret.
const DOMAIN: &[u8] = b"vigil/case-id/v1\0";

/// Why the case-ID key cannot be used. Messages name the file, never key material.
#[derive(Debug, thiserror::Error)]
pub enum CaseIdKeyError {
    /// The key file could not be read or created.
    #[error("case-ID key {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The key file is accessible to group or others.
    #[error(
        "case-ID key {path} is accessible to group or others (mode {mode:o}); run `chmod 600` on it"
    )]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The key file does not hold 64 hex digits (truncated, edited or not a key file).
    #[error(
        "case-ID key {path} must hold exactly 64 hex digits (a 256-bit secret); restore it from \
         a backup, or move it aside to have a new one created (new cases then get IDs unrelated \
         to the old ones)"
    )]
    Format {
        /// The file.
        path: PathBuf,
    },
}

/// The per-installation secret case IDs are keyed with.
#[derive(Clone)]
pub struct CaseIdKey {
    key: hmac::Key,
}

impl fmt::Debug for CaseIdKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CaseIdKey(..)")
    }
}

impl CaseIdKey {
    /// A key from its secret bytes (tests and benchmarks; a run uses
    /// [`CaseIdKey::load_or_create`]).
    pub fn from_bytes(secret: &[u8; CASE_ID_KEY_LEN]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    /// A fresh random key held only in memory (benchmarks).
    pub fn random() -> Self {
        let mut secret = Zeroizing::new([0u8; CASE_ID_KEY_LEN]);
        rand::rngs::OsRng.fill_bytes(secret.as_mut_slice());
        Self::from_bytes(&secret)
    }

    /// Loads the key at `path`, creating it (mode 0600, in a directory created with mode 0700
    /// if missing) when it does not exist yet.
    pub fn load_or_create(path: &Path) -> Result<Self, CaseIdKeyError> {
        let secret = key_file::load_private(path, true).map_err(|e| {
            let path = path.to_owned();
            match e {
                KeyFileError::Io(source) => CaseIdKeyError::Io { path, source },
                KeyFileError::Permissions(mode) => CaseIdKeyError::Permissions { path, mode },
                KeyFileError::Format => CaseIdKeyError::Format { path },
            }
        })?;
        Ok(Self::from_bytes(&secret))
    }

    /// The ID of the case about `end_user` of `resource` (or the resource as a whole) whose
    /// window ends with bucket `newest`: `case-` and 32 lowercase hex digits.
    pub fn case_id(&self, resource: &ResourceId, end_user: Option<&str>, newest: i64) -> String {
        // Every field is length-prefixed or fixed-size, so no two subjects encode alike.
        let mut mac = hmac::Context::with_key(&self.key);
        mac.update(DOMAIN);
        let field = |mac: &mut hmac::Context, bytes: &[u8]| {
            mac.update(&(bytes.len() as u64).to_le_bytes());
            mac.update(bytes);
        };
        field(&mut mac, resource.as_str().as_bytes());
        match end_user {
            Some(end_user) => {
                mac.update(&[1]);
                field(&mut mac, end_user.as_bytes());
            }
            None => mac.update(&[0]),
        }
        mac.update(&newest.to_le_bytes());
        let tag = mac.sign();
        format!("case-{}", hex::encode(&tag.as_ref()[..ID_BYTES]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    fn resource() -> ResourceId {
        ResourceId::parse("res-a").unwrap()
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn case_ids_are_keyed_by_the_installation_secret_and_stable_under_it() {
        let (one, other) = (
            CaseIdKey::from_bytes(&[1; 32]),
            CaseIdKey::from_bytes(&[2; 32]),
        );
        let id = one.case_id(&resource(), Some("mallory"), 42);
        // Stable: the same secret, subject and window give the same ID, now and in any build
        // (HMAC-SHA256, checked independently with Python's `hmac`).
        assert_eq!(id, one.case_id(&resource(), Some("mallory"), 42));
        assert_eq!(id, "case-713171c5e0ff5f82ca332f9f1ca29883");
        // Another installation's secret gives an unrelated ID for the same subject and window.
        assert_ne!(id, other.case_id(&resource(), Some("mallory"), 42));
        // And within one installation, every input counts.
        let ids = [
            id.clone(),
            one.case_id(&resource(), Some("mallory"), 43),
            one.case_id(&resource(), Some("mallorz"), 42),
            one.case_id(&resource(), None, 42),
            one.case_id(&resource(), Some(""), 42),
            one.case_id(&ResourceId::parse("res-b").unwrap(), Some("mallory"), 42),
        ];
        let distinct: std::collections::BTreeSet<_> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len(), "{ids:?}");
        assert!(ids.iter().all(|id| id.len() == 37
            && id[5..]
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))));
    }

    #[test]
    fn the_secret_file_is_created_private_once_and_reused_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/case-id.key");
        let first = CaseIdKey::load_or_create(&path).unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir.path().join("keys")), 0o700);
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text.trim().len(), 64);
        assert!(hex::decode(text.trim()).is_ok());
        // No temporary file is left behind.
        assert_eq!(fs::read_dir(dir.path().join("keys")).unwrap().count(), 1);
        let id = first.case_id(&resource(), Some("u1"), 7);
        // A restart reads the same secret: the same IDs, and the file is not rewritten.
        let again = CaseIdKey::load_or_create(&path).unwrap();
        assert_eq!(again.case_id(&resource(), Some("u1"), 7), id);
        assert_eq!(fs::read_to_string(&path).unwrap(), text);
        // Another installation (another file) gets another secret.
        let elsewhere = CaseIdKey::load_or_create(&dir.path().join("other/case-id.key")).unwrap();
        assert_ne!(elsewhere.case_id(&resource(), Some("u1"), 7), id);
    }

    #[test]
    fn a_short_corrupt_or_exposed_secret_file_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("case-id.key");
        for bad in ["", "00ff", &"g".repeat(64), &"0".repeat(66)] {
            fs::write(&path, bad).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
            let error = CaseIdKey::load_or_create(&path).unwrap_err();
            assert!(matches!(error, CaseIdKeyError::Format { .. }), "{error}");
            assert!(error.to_string().contains(&path.display().to_string()));
            // The file is left as it was for the operator to look at.
            assert_eq!(fs::read_to_string(&path).unwrap(), bad);
        }
        fs::write(&path, "ab".repeat(32)).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        let error = CaseIdKey::load_or_create(&path).unwrap_err();
        assert!(matches!(
            error,
            CaseIdKeyError::Permissions { mode: 0o640, .. }
        ));
        assert!(error.to_string().contains(&path.display().to_string()));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(CaseIdKey::load_or_create(&path).is_ok());
    }

    #[test]
    fn the_debug_output_holds_no_key_material() {
        assert_eq!(
            format!("{:?}", CaseIdKey::from_bytes(&[7; 32])),
            "CaseIdKey(..)"
        );
    }
}
