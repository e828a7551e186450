//! vigil's storage: one encrypted sled database per geography.
//!
//! Layout under the data directory: `<data_dir>/<geography>/` is a sled database holding only
//! the records of resources whose home is that geography. Inside it, every key of a resource
//! starts with that resource's ID, so a resource is one contiguous key range (logical
//! separation), and a request-ID index makes writes idempotent: a redelivered record is
//! recognised and stored once.
//!
//! Encryption at rest is envelope encryption with AES-256-GCM ([`keys`], [`crypto`]): each
//! resource has its own data key, wrapped either by vigil's master key or by the resource's
//! customer-managed key. The associated data of every ciphertext binds it to its geography,
//! resource and request ID.
//!
//! Architecture invariants:
//! - Only this crate touches the stores and the keys, and nothing it writes to disk holds
//!   prompt or completion text in the clear.
//! - A resource whose content logging is off has no content written at all, not even
//!   encrypted; only its metadata is kept.

pub mod crypto;
pub mod geo;
pub mod keys;
mod layout;
pub mod retention;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use vigil_core::Geography;

pub use geo::{GeoStore, SealedRecord, StoredRecord, WriteOutcome};
pub use keys::{KeyError, MasterKey};
pub use retention::RetentionConfig;

/// Settings for storage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// Directory holding one sled database per geography.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// The master key file (created with mode 0600 on first use). It wraps the data keys of
    /// resources without a customer-managed key; keep it outside the data directory.
    #[serde(default = "default_master_key")]
    pub master_key: PathBuf,
    /// How long records are kept.
    #[serde(default)]
    pub retention: RetentionConfig,
}

fn default_data_dir() -> PathBuf {
    "var/data".into()
}

fn default_master_key() -> PathBuf {
    "var/keys/master.key".into()
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            data_dir: default_data_dir(),
            master_key: default_master_key(),
            retention: RetentionConfig::default(),
        }
    }
}

/// Storage errors.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The sled database failed.
    #[error("store for geography {geography}: {source}")]
    Sled {
        /// The geography.
        geography: Geography,
        /// The cause.
        source: sled::Error,
    },
    /// A key could not be loaded, created or used.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// A stored ciphertext did not authenticate: it was tampered with, moved to another record,
    /// or the key that wraps it is the wrong one.
    #[error("content of request {request_id} (resource {resource_id}) cannot be decrypted")]
    Decrypt {
        /// The resource.
        resource_id: String,
        /// The request.
        request_id: String,
    },
    /// A stored value is not in a format this version understands.
    #[error("stored value for key {key} is corrupt: {problem}")]
    Corrupt {
        /// The store key, printable (IDs only).
        key: String,
        /// What is wrong.
        problem: String,
    },
    /// The data directory could not be created.
    #[error("data directory {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// A `Result` with [`StorageError`].
pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// All geography stores under one data directory, opened on first use.
pub struct Stores {
    data_dir: PathBuf,
    keys: Arc<keys::KeySource>,
    open: RwLock<HashMap<Geography, Arc<GeoStore>>>,
}

impl Stores {
    /// Opens the data directory, loading (or creating) the master key. `key_base_dir` is the
    /// directory relative customer key references resolve against.
    pub fn open(config: &StorageConfig, key_base_dir: &Path) -> Result<Self> {
        // Only vigil's own user may look inside: even encrypted, the stores hold metadata.
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(&config.data_dir)
            .map_err(|source| StorageError::Io {
                path: config.data_dir.clone(),
                source,
            })?;
        let master = MasterKey::load_or_create(&config.master_key)?;
        Ok(Self {
            data_dir: config.data_dir.clone(),
            keys: Arc::new(keys::KeySource::new(master, key_base_dir)),
            open: RwLock::new(HashMap::new()),
        })
    }

    /// The store of `geography`, opening it if needed.
    pub fn geo(&self, geography: &Geography) -> Result<Arc<GeoStore>> {
        if let Some(store) = self.open.read().expect("lock poisoned").get(geography) {
            return Ok(store.clone());
        }
        let mut open = self.open.write().expect("lock poisoned");
        if let Some(store) = open.get(geography) {
            return Ok(store.clone());
        }
        let store = Arc::new(GeoStore::open(
            &self.data_dir.join(geography.as_str()),
            geography.clone(),
            self.keys.clone(),
        )?);
        open.insert(geography.clone(), store.clone());
        Ok(store)
    }

    /// The geographies that have a store on disk.
    pub fn geographies_on_disk(&self) -> Result<Vec<Geography>> {
        let entries = std::fs::read_dir(&self.data_dir).map_err(|source| StorageError::Io {
            path: self.data_dir.clone(),
            source,
        })?;
        let mut geos: Vec<Geography> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .filter_map(|e| Geography::parse(e.file_name().to_string_lossy().into_owned()).ok())
            .collect();
        geos.sort();
        Ok(geos)
    }

    /// Flushes every open store to disk.
    pub fn flush(&self) -> Result<()> {
        for store in self.open.read().expect("lock poisoned").values() {
            store.flush()?;
        }
        Ok(())
    }
}
