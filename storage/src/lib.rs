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
//! Lifecycle ([`geo::GeoStore::purge`], deletion, [`Stores::compact`]): data keys are per
//! resource and per UTC day, kept wrapped in each geography's [`keyring`] file, whose slots
//! are overwritten in place; retention and deletion destroy keys first (crypto-shredding that
//! holds against a copy of the disk) and remove entries after; compaction rewrites a store
//! without what was removed.
//!
//! Architecture invariants:
//! - Only this crate touches the stores and the keys, and nothing it writes to disk holds
//!   prompt or completion text in the clear.
//! - A resource whose content logging is off has no content written at all, not even
//!   encrypted; only its metadata is kept.

pub mod changelog;
mod compact;
pub mod crypto;
pub mod geo;
pub mod keyring;
pub mod keys;
mod layout;
pub mod retention;
pub mod segment;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use vigil_core::{Clock, Geography, RequestId, Resource, ResourceId, ResourceRegistry};

pub use compact::Compacted;
pub use geo::{
    Annex, CaseConflict, DeletedRequest, ExportPart, ExportedRecord, Footprint, GeoStore, Imported,
    JobKind, JobReport, PurgeProgress, PurgeReport, ReviewTask, SealedRecord, StaleExport,
    StoredRecord, WriteOutcome,
};
pub use keys::{KeyError, MasterKey};
pub use retention::{Cutoffs, RetentionConfig};

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
    /// Seconds a customer key, once used, is trusted before it is checked again (its file
    /// read and compared): a revoked key stops new content from being sealed within this
    /// time. Point queries check it every time. At most 60.
    #[serde(default = "default_customer_key_check_secs")]
    pub customer_key_check_secs: u64,
}

const fn default_customer_key_check_secs() -> u64 {
    30
}

fn default_data_dir() -> PathBuf {
    "var/data".into()
}

fn default_master_key() -> PathBuf {
    "var/keys/master.key".into()
}

impl StorageConfig {
    /// Checks the settings a TOML type cannot (retention is checked against the registry,
    /// [`RetentionConfig::validate`]).
    pub fn validate(&self) -> Result<()> {
        if !(1..=60).contains(&self.customer_key_check_secs) {
            return Err(StorageError::Config(
                "storage.customer_key_check_secs must be between 1 and 60".into(),
            ));
        }
        Ok(())
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            data_dir: default_data_dir(),
            master_key: default_master_key(),
            retention: RetentionConfig::default(),
            customer_key_check_secs: default_customer_key_check_secs(),
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
    /// A keyring file could not be read or written.
    #[error(transparent)]
    Keyring(#[from] keyring::KeyringError),
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
    /// The store was written by an older version of vigil, with another layout.
    #[error("store {path} has layout version {found}; this vigil reads version {}: move it aside and re-ingest", layout::LAYOUT_VERSION)]
    Layout {
        /// The store's directory.
        path: PathBuf,
        /// The layout version found.
        found: u8,
    },
    /// A case would have replaced another subject's case stored under the same ID; nothing
    /// was written and the stored case is kept.
    #[error(transparent)]
    CaseConflict(#[from] CaseConflict),
    /// The changelog could not be written, or what it holds could not be imported.
    #[error(transparent)]
    Changelog(#[from] changelog::ChangelogError),
    /// The resource's partition is moving between nodes: a decision or deletion waits until
    /// its new node has rebuilt it.
    #[error("resource {resource_id} of geography {geography} is {moving}; try again shortly")]
    Moving {
        /// The geography.
        geography: Geography,
        /// The resource.
        resource_id: String,
        /// Which way.
        moving: changelog::Moving,
    },
    /// A storage setting is out of range.
    #[error("{0}")]
    Config(String),
    /// The data directory could not be created.
    #[error("data directory {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// What [`Stores::reconcile`] did.
#[derive(Debug, Default)]
pub struct Reconciled {
    /// Resources whose content logging is off and whose stored content was destroyed, with
    /// the number of records stripped.
    pub content_forgotten: Vec<(ResourceId, usize)>,
    /// Resource deletions a crash had cut short, finished now.
    pub deletions_finished: Vec<JobReport>,
    /// Customer keys that could not be used; those resources' content stays unreadable.
    pub key_problems: Vec<KeyError>,
    /// Resources of partitions given to another node, whose removal here a crash had cut
    /// short, finished now.
    pub releases_finished: Vec<JobReport>,
}

impl Reconciled {
    /// Logs what was done and what could not be (IDs and counts only).
    pub fn log(&self) {
        for (resource_id, records) in &self.content_forgotten {
            tracing::info!(%resource_id, records, "Content logging is off: destroyed the resource's stored content.");
        }
        for done in &self.deletions_finished {
            tracing::info!(resource_id = %done.resource_id, records = done.records, "Finished deleting a resource's data (a crash had cut it short).");
        }
        for done in &self.releases_finished {
            tracing::info!(resource_id = %done.resource_id, records = done.records, "Finished letting go of a resource whose partition moved to another node.");
        }
        for error in &self.key_problems {
            tracing::warn!(%error, "A customer key is unavailable; that resource's content is unreadable.");
        }
    }
}

/// The file in the data directory that holds the master key's check value.
const MASTER_CHECK_FILE: &str = "master-key.check";

/// The geographies with a store directory under `data_dir`.
fn geographies_in(data_dir: &Path) -> Result<Vec<Geography>> {
    let entries = std::fs::read_dir(data_dir).map_err(|source| StorageError::Io {
        path: data_dir.to_owned(),
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

/// Replaces `path` with `bytes` atomically: a synced temporary file renamed into place.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    vigil_core::atomic_file::replace(path, bytes, 0o600)
}

/// A `Result` with [`StorageError`].
pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// All geography stores under one data directory, opened on first use.
pub struct Stores {
    data_dir: PathBuf,
    keys: Arc<keys::KeySource>,
    clock: Clock,
    open: RwLock<HashMap<Geography, Arc<GeoStore>>>,
}

impl Stores {
    /// Opens the data directory with the system clock; see [`Stores::open_with_clock`].
    pub fn open(config: &StorageConfig, key_base_dir: &Path) -> Result<Self> {
        Self::open_with_clock(config, key_base_dir, Clock::system())
    }

    /// Opens the data directory, loading (or creating) the master key. `key_base_dir` is the
    /// directory relative customer key references resolve against; `clock` dates what is
    /// stored and decides what has expired. A compaction a crash cut short is rolled back or
    /// finished first.
    pub fn open_with_clock(
        config: &StorageConfig,
        key_base_dir: &Path,
        clock: Clock,
    ) -> Result<Self> {
        let data_dir = &config.data_dir;
        config.validate()?;
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| StorageError::Io { path, source }
        };
        // Only vigil's own user may look inside: even encrypted, the stores hold metadata.
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(data_dir)
            .map_err(io(data_dir))?;
        compact::recover(data_dir)?;
        let (master, unvouched) = Self::master_key(config)?;
        let stores = Self {
            data_dir: data_dir.clone(),
            keys: Arc::new(keys::KeySource::new(
                master,
                key_base_dir,
                std::time::Duration::from_secs(config.customer_key_check_secs),
            )),
            clock,
            open: RwLock::new(HashMap::new()),
        };
        if unvouched {
            stores.vouch_for_master_key(config)?;
        }
        Ok(stores)
    }

    /// Records the master key's check value for a data directory that has stores but no check
    /// value yet, after making sure the key opens a data key it wrapped: recording the check
    /// of a wrong key would lock the right one out.
    fn vouch_for_master_key(&self, config: &StorageConfig) -> Result<()> {
        for geography in self.geographies_on_disk()? {
            let opens = self
                .geo(&geography)?
                .master_opens_a_data_key(|wrapped, aad| self.keys.master_opens(wrapped, aad))?;
            if opens == Some(false) {
                return Err(KeyError::MasterMismatch {
                    path: config.master_key.clone(),
                    data_dir: config.data_dir.clone(),
                }
                .into());
            }
        }
        self.keys
            .master()
            .write_check(&config.data_dir.join(MASTER_CHECK_FILE))
    }

    /// Loads the master key and checks it against the data directory's check value. A new
    /// key is created only for a data directory that holds nothing yet: creating one for
    /// existing stores would wrap new data keys under a key the old ones do not share, and
    /// leave part of the data unreadable whichever key is kept. Returns the key and whether it
    /// still has to be vouched for (stores exist, but no check value yet).
    fn master_key(config: &StorageConfig) -> Result<(MasterKey, bool)> {
        let data_dir = &config.data_dir;
        let check_path = data_dir.join(MASTER_CHECK_FILE);
        let missing = |e: KeyError| match e {
            KeyError::MasterIo { path, source }
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                KeyError::MasterMissing {
                    path,
                    data_dir: data_dir.clone(),
                }
            }
            e => e,
        };
        match std::fs::read(&check_path) {
            Ok(bytes) => {
                let master = MasterKey::load(&config.master_key).map_err(missing)?;
                let check = postcard::from_bytes(&bytes).map_err(|e| StorageError::Corrupt {
                    key: check_path.display().to_string(),
                    problem: e.to_string(),
                })?;
                if !master.verifies(&check) {
                    return Err(KeyError::MasterMismatch {
                        path: config.master_key.clone(),
                        data_dir: data_dir.clone(),
                    }
                    .into());
                }
                Ok((master, false))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if geographies_in(data_dir)?.is_empty() {
                    let master = MasterKey::load_or_create(&config.master_key)?;
                    master.write_check(&check_path)?;
                    Ok((master, false))
                } else {
                    Ok((MasterKey::load(&config.master_key).map_err(missing)?, true))
                }
            }
            Err(source) => Err(StorageError::Io {
                path: check_path,
                source,
            }),
        }
    }

    /// Brings the stores in line with the registry, before a run and after a registry change:
    /// a resource whose content logging is now off has its data key destroyed (its stored
    /// content is unreadable at once) and its records stripped of their ciphertext; a data key
    /// wrapped by another key than the registry now names is re-wrapped. Problems with one
    /// resource's customer key are returned, not fatal.
    pub fn reconcile(&self, registry: &ResourceRegistry) -> Result<Reconciled> {
        let mut done = Reconciled::default();
        for geography in self.geographies_on_disk()? {
            let store = self.geo(&geography)?;
            // First finish jobs a crash interrupted, whatever the registry says now.
            for (resource_id, kind) in store.pending_jobs()? {
                let report = store.run_job(&resource_id, kind)?;
                match kind {
                    JobKind::StripContent => {
                        done.content_forgotten.push((resource_id, report.records))
                    }
                    JobKind::DeleteData => done.deletions_finished.push(report),
                    JobKind::Release => done.releases_finished.push(report),
                }
            }
            for resource in registry.iter().filter(|r| r.geography == geography) {
                if !resource.content_logging {
                    let stripped = store.forget_content(&resource.id)?;
                    if stripped > 0 {
                        done.content_forgotten.push((resource.id.clone(), stripped));
                    }
                    continue;
                }
                match store.check_data_key(resource) {
                    Ok(()) => {}
                    Err(StorageError::Key(e)) if e.is_resource_scoped() => {
                        done.key_problems.push(e)
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(done)
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
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
            self.clock,
        )?);
        open.insert(geography.clone(), store.clone());
        Ok(store)
    }

    /// The stores this process has open now, by geography (none is opened by asking).
    pub fn opened(&self) -> Vec<(Geography, Arc<GeoStore>)> {
        let open = self.open.read().expect("lock poisoned");
        open.iter()
            .map(|(g, store)| (g.clone(), store.clone()))
            .collect()
    }

    /// The store of every geography on disk, opened.
    pub fn on_disk(&self) -> Result<Vec<Arc<GeoStore>>> {
        self.geographies_on_disk()?
            .iter()
            .map(|g| self.geo(g))
            .collect()
    }

    /// The geographies that have a store on disk.
    pub fn geographies_on_disk(&self) -> Result<Vec<Geography>> {
        geographies_in(&self.data_dir)
    }

    /// The clock the stores date records by.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Purges every geography on disk of what is past retention as of the clock's today (see
    /// [`GeoStore::purge`]). `progress` sees each geography's running totals.
    pub fn purge(
        &self,
        retention: &RetentionConfig,
        registry: &ResourceRegistry,
        progress: PurgeProgress<'_>,
    ) -> Result<Vec<PurgeReport>> {
        let today = self.clock.today();
        let mut reports = Vec::new();
        for geography in self.geographies_on_disk()? {
            let cutoffs = Cutoffs::new(retention, registry, &geography, today);
            let report = self.geo(&geography)?.purge(&cutoffs, progress)?;
            let complete = report.complete;
            reports.push(report);
            if !complete {
                break;
            }
        }
        Ok(reports)
    }

    /// Deletes one record of `resource` (see [`GeoStore::delete_request`]).
    pub fn delete_request(
        &self,
        resource: &Resource,
        request_id: &RequestId,
    ) -> Result<Option<DeletedRequest>> {
        self.geo(&resource.geography)?
            .delete_request(&resource.id, request_id)
    }

    /// Flushes every open store to disk.
    pub fn flush(&self) -> Result<()> {
        for store in self.open.read().expect("lock poisoned").values() {
            store.flush()?;
        }
        Ok(())
    }
}
