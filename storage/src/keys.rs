//! Keys: vigil's master key, customer-managed keys, and per-resource data keys.
//!
//! Envelope encryption: every resource has a random 256-bit data key per UTC day that encrypts
//! its content. The data key is stored only wrapped (sealed), in the geography's keyring
//! ([`crate::keyring`]), by a key-encryption key: the resource's
//! customer-managed key when the registry names one, otherwise vigil's master key. Destroying or
//! revoking the key-encryption key therefore makes all of that resource's content unreadable
//! (crypto-shredding), and only that resource's.
//!
//! Key files hold 32 bytes as 64 hex digits ([`vigil_core::key_file`]). The master key file is
//! created on first use with mode 0600, atomically, and refused if group or others can read it.

use std::path::{Path, PathBuf};

use aes_gcm::Aes256Gcm;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use vigil_core::key_file::{self, KeyFileError};
use vigil_core::Resource;
use zeroize::Zeroizing;

use crate::crypto::{self, Sealed, KEY_LEN};

/// Key errors. Messages name keys and resources, never key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The master key file could not be read or created.
    #[error("master key {path}: {source}")]
    MasterIo {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The master key file is readable by group or others.
    #[error(
        "master key {path} is accessible to group or others (mode {mode:o}); run `chmod 600` on it"
    )]
    MasterPermissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A key file does not hold 64 hex digits.
    #[error("key file {path} must hold exactly 64 hex digits (a 256-bit key)")]
    Format {
        /// The file.
        path: PathBuf,
    },
    /// A resource's customer-managed key cannot be read.
    #[error("customer key of resource {resource_id} is unavailable: {problem}")]
    CustomerKeyUnavailable {
        /// The resource.
        resource_id: String,
        /// Why (file missing, unreadable, malformed).
        problem: String,
    },
    /// A wrapped data key did not authenticate under its key-encryption key: the key was
    /// replaced, revoked or is the wrong one.
    #[error("data key of resource {resource_id} cannot be unwrapped with {kek}")]
    Unwrap {
        /// The resource.
        resource_id: String,
        /// Which key-encryption key was tried.
        kek: String,
        /// Whether that was the resource's customer-managed key (otherwise the master key).
        by_customer_key: bool,
    },
    /// The data directory was encrypted under a master key that is not there.
    #[error(
        "master key {path} is missing, but the data directory {data_dir} was encrypted under one; \
         restore the key file (a new key would make the stored data unreadable)"
    )]
    MasterMissing {
        /// The key file.
        path: PathBuf,
        /// The data directory.
        data_dir: PathBuf,
    },
    /// The master key is not the one the data directory was encrypted under.
    #[error("master key {path} is not the key the data directory {data_dir} was encrypted under")]
    MasterMismatch {
        /// The key file.
        path: PathBuf,
        /// The data directory.
        data_dir: PathBuf,
    },
}

impl KeyError {
    /// Whether the error concerns one resource's own customer-managed key, so that only that
    /// resource's records are affected; every other key error concerns vigil's master key or
    /// its files and affects everything.
    pub fn is_resource_scoped(&self) -> bool {
        matches!(
            self,
            Self::CustomerKeyUnavailable { .. }
                | Self::Unwrap {
                    by_customer_key: true,
                    ..
                }
        )
    }
}

const CHECK_AAD: &[u8] = b"vigil/master-key-check/v1";
const CHECK_PLAINTEXT: &[u8] = b"vigil master key";

/// vigil's own key-encryption key.
pub struct MasterKey {
    cipher: Aes256Gcm,
}

impl MasterKey {
    /// Loads the master key at `path`, creating it (mode 0600) if it does not exist.
    pub fn load_or_create(path: &Path) -> Result<Self, KeyError> {
        Self::open(path, true)
    }

    /// Loads the master key at `path`, which must exist.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        Self::open(path, false)
    }

    fn open(path: &Path, create: bool) -> Result<Self, KeyError> {
        let key = key_file::load_private(path, create).map_err(|e| match e {
            KeyFileError::Io(source) => KeyError::MasterIo {
                path: path.to_owned(),
                source,
            },
            KeyFileError::Permissions(mode) => KeyError::MasterPermissions {
                path: path.to_owned(),
                mode,
            },
            KeyFileError::Format => KeyError::Format {
                path: path.to_owned(),
            },
        })?;
        Ok(Self {
            cipher: crypto::cipher(&key),
        })
    }

    /// A check value: a constant sealed under this key, kept beside the data it protects so
    /// that a different key is recognised before it wraps anything.
    pub(crate) fn check_value(&self) -> Sealed {
        crypto::seal(&self.cipher, CHECK_AAD, CHECK_PLAINTEXT)
    }

    /// Writes this key's check value to `path`, atomically.
    pub(crate) fn write_check(&self, path: &Path) -> Result<(), crate::StorageError> {
        let check = postcard::to_stdvec(&self.check_value()).expect("a check value encodes");
        crate::write_atomically(path, &check).map_err(|source| crate::StorageError::Io {
            path: path.to_owned(),
            source,
        })
    }

    /// Whether `check` was made by [`MasterKey::check_value`] under this key.
    pub(crate) fn verifies(&self, check: &Sealed) -> bool {
        crypto::open(&self.cipher, CHECK_AAD, check).is_ok_and(|p| p == CHECK_PLAINTEXT)
    }
}

/// Which key-encryption key wraps a data key, as recorded next to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum KekRef {
    /// vigil's master key.
    Master,
    /// A customer-managed key, by its registry reference.
    Customer(String),
}

impl std::fmt::Display for KekRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Master => f.write_str("the master key"),
            Self::Customer(r) => write!(f, "customer key {r}"),
        }
    }
}

/// A data key as stored: sealed by a key-encryption key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct WrappedKey {
    pub kek: KekRef,
    pub sealed: Sealed,
}

/// Where a data key is, as the `data_keys` tree records it: its keyring slot and the
/// key-encryption key that wrapped it (the wrapped key itself is only in the keyring).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct KeyEntry {
    pub kek: KekRef,
    pub slot: u32,
}

impl KeyEntry {
    /// The entry as the `data_keys` tree stores it.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("a key entry encodes")
    }
}

/// Resolves the key-encryption key of each resource.
pub(crate) struct KeySource {
    master: MasterKey,
    base_dir: PathBuf,
    /// How long a customer key, once used, is trusted before it is checked again.
    check_interval: std::time::Duration,
}

/// Identifies the key material a customer key file held when it was used (a digest, never the
/// key), to tell later whether the file still holds it.
pub(crate) type KeyFingerprint = [u8; 32];

impl KeySource {
    pub fn new(master: MasterKey, base_dir: &Path, check_interval: std::time::Duration) -> Self {
        Self {
            master,
            base_dir: base_dir.to_owned(),
            check_interval,
        }
    }

    /// How long a customer key, once used, is trusted before it is checked again.
    pub fn check_interval(&self) -> std::time::Duration {
        self.check_interval
    }

    /// The fingerprint of the customer key `kek` names as its file holds it now (`None` for
    /// the master key, which vigil holds for its whole run); an error when the file is gone
    /// or unreadable: the key was revoked.
    pub fn customer_fingerprint(
        &self,
        resource_id: &str,
        kek: &KekRef,
    ) -> Result<Option<KeyFingerprint>, KeyError> {
        let KekRef::Customer(_) = kek else {
            return Ok(None);
        };
        let key = self.customer_key(resource_id, kek)?;
        Ok(Some(Sha256::digest(key.as_slice()).into()))
    }

    /// vigil's master key.
    pub fn master(&self) -> &MasterKey {
        &self.master
    }

    /// Whether the master key opens a data key it wrapped.
    pub fn master_opens(&self, wrapped: &WrappedKey, aad: &[u8]) -> bool {
        wrapped.kek == KekRef::Master
            && crypto::open(&self.master.cipher, aad, &wrapped.sealed).is_ok()
    }

    /// The key-encryption key the registry assigns to `resource`.
    pub fn kek_ref(resource: &Resource) -> KekRef {
        match &resource.customer_key {
            Some(k) => KekRef::Customer(k.as_str().to_owned()),
            None => KekRef::Master,
        }
    }

    /// The cipher of a key-encryption key (`resource_id` names the resource in errors).
    pub fn kek(&self, resource_id: &str, kek: &KekRef) -> Result<Aes256Gcm, KeyError> {
        match kek {
            KekRef::Master => Ok(self.master.cipher.clone()),
            KekRef::Customer(_) => Ok(crypto::cipher(&*self.customer_key(resource_id, kek)?)),
        }
    }

    /// The customer key `kek` names, read from its file now.
    fn customer_key(&self, resource_id: &str, kek: &KekRef) -> Result<key_file::Key, KeyError> {
        let unavailable = |problem: String| KeyError::CustomerKeyUnavailable {
            resource_id: resource_id.to_owned(),
            problem,
        };
        let KekRef::Customer(reference) = kek else {
            return Err(unavailable("not a customer key".into()));
        };
        let key_ref = vigil_core::KeyRef::parse(reference.as_str())
            .map_err(|e| unavailable(e.to_string()))?;
        let path = key_ref.path(&self.base_dir);
        key_file::read(&path).map_err(|e| unavailable(format!("{}: {e}", path.display())))
    }

    /// A fresh random data key, and its wrapped form under the resource's key-encryption key.
    pub fn new_data_key(
        &self,
        resource: &Resource,
        aad: &[u8],
    ) -> Result<(Aes256Gcm, WrappedKey), KeyError> {
        self.new_data_key_under(resource.id.as_str(), Self::kek_ref(resource), aad)
    }

    /// A fresh random data key, and its wrapped form under `kek_ref`.
    pub fn new_data_key_under(
        &self,
        resource_id: &str,
        kek_ref: KekRef,
        aad: &[u8],
    ) -> Result<(Aes256Gcm, WrappedKey), KeyError> {
        let kek = self.kek(resource_id, &kek_ref)?;
        let mut dek = Zeroizing::new([0u8; KEY_LEN]);
        rand::rngs::OsRng.fill_bytes(dek.as_mut_slice());
        let wrapped = WrappedKey {
            kek: kek_ref,
            sealed: crypto::seal(&kek, aad, dek.as_slice()),
        };
        Ok((crypto::cipher(&dek), wrapped))
    }

    /// Unwraps a stored data key, as it is.
    pub fn unwrap_under(
        &self,
        resource_id: &str,
        aad: &[u8],
        stored: &WrappedKey,
    ) -> Result<(Aes256Gcm, Zeroizing<[u8; KEY_LEN]>), KeyError> {
        let kek = self.kek(resource_id, &stored.kek)?;
        let unwrap_err = || KeyError::Unwrap {
            resource_id: resource_id.to_owned(),
            kek: stored.kek.to_string(),
            by_customer_key: matches!(stored.kek, KekRef::Customer(_)),
        };
        let dek =
            Zeroizing::new(crypto::open(&kek, aad, &stored.sealed).map_err(|_| unwrap_err())?);
        let dek: Zeroizing<[u8; KEY_LEN]> =
            Zeroizing::new(dek.as_slice().try_into().map_err(|_| unwrap_err())?);
        Ok((crypto::cipher(&dek), dek))
    }

    /// Unwraps a stored data key. Returns the cipher and, when the registry now assigns a
    /// different key-encryption key than the one that wrapped it, the data key re-wrapped
    /// under the new one (to be stored in place of the old).
    pub fn unwrap_data_key(
        &self,
        resource: &Resource,
        aad: &[u8],
        stored: &WrappedKey,
    ) -> Result<(Aes256Gcm, Option<WrappedKey>), KeyError> {
        let (cipher, dek) = self.unwrap_under(resource.id.as_str(), aad, stored)?;
        let wanted = Self::kek_ref(resource);
        let rewrapped = if wanted != stored.kek {
            let new_kek = self.kek(resource.id.as_str(), &wanted)?;
            Some(WrappedKey {
                kek: wanted,
                sealed: crypto::seal(&new_kek, aad, dek.as_slice()),
            })
        } else {
            None
        };
        Ok((cipher, rewrapped))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn master_key_is_created_private_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/master.key");
        MasterKey::load_or_create(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let first = fs::read_to_string(&path).unwrap();
        MasterKey::load_or_create(&path).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), first);
        assert_eq!(first.trim().len(), 64);
        // No temporary files are left behind.
        assert_eq!(fs::read_dir(dir.path().join("keys")).unwrap().count(), 1);
    }

    #[test]
    fn refuses_a_readable_master_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        MasterKey::load_or_create(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            MasterKey::load_or_create(&path),
            Err(KeyError::MasterPermissions { mode: 0o644, .. })
        ));
    }

    #[test]
    fn refuses_a_malformed_master_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        fs::write(&path, "not hex").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            MasterKey::load_or_create(&path),
            Err(KeyError::Format { .. })
        ));
    }
}
