//! Compaction: rewriting a geography's store with only its live entries, so that what a purge
//! or deletion removed is gone from disk too, not only from the trees.
//!
//! sled reclaims space in the background but promises no moment when removed values have left
//! its segments. Compaction copies every tree into a fresh database beside the store
//! (`<geography>.compact`), then swaps directories: the store moves to `<geography>.old`, the
//! copy takes its name, and the old one is removed. A crash at any step leaves either the old
//! store or the new one under the geography's name; [`recover`] tidies the rest at the next
//! open. Compaction needs the store to itself (nothing else may hold it open).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use vigil_core::Geography;

use crate::geo::{sled_config, GeoStore};
use crate::layout;
use crate::{Result, StorageError, Stores};

/// Entries copied per batch.
const COPY_BATCH: usize = 10_000;

const COMPACTING: &str = "compact";
const REPLACED: &str = "old";

/// What compacting one store did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Compacted {
    /// The geography.
    pub geography: String,
    /// Bytes on disk before.
    pub bytes_before: u64,
    /// Bytes on disk after.
    pub bytes_after: u64,
}

impl Stores {
    /// Rewrites `geography`'s store with only its live entries (see the module docs). Fails
    /// with [`StorageError::InUse`] while anything else holds the store.
    pub fn compact(&self, geography: &Geography) -> Result<Compacted> {
        let dir = self.data_dir.join(geography.as_str());
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| StorageError::Io { path, source }
        };
        let mut open = self.open.write().expect("lock poisoned");
        let store = match open.remove(geography) {
            Some(store) => store,
            None => Arc::new(GeoStore::open(
                &dir,
                geography.clone(),
                self.keys.clone(),
                self.clock,
            )?),
        };
        let store = Arc::try_unwrap(store).map_err(|store| {
            open.insert(geography.clone(), store);
            StorageError::InUse {
                geography: geography.clone(),
                what: "compaction",
            }
        })?;
        store.flush()?;
        let bytes_before = dir_size(&dir);
        let copy = sibling(&dir, COMPACTING);
        if copy.exists() {
            std::fs::remove_dir_all(&copy).map_err(io(&copy))?;
        }
        tracing::info!(geography = %geography, bytes_before, "Compacting: copying the store's live entries.");
        store.copy_into(&copy)?;
        drop(store);
        let old = sibling(&dir, REPLACED);
        std::fs::rename(&dir, &old).map_err(io(&dir))?;
        std::fs::rename(&copy, &dir).map_err(io(&copy))?;
        sync_dir(&self.data_dir).map_err(io(&self.data_dir))?;
        std::fs::remove_dir_all(&old).map_err(io(&old))?;
        Ok(Compacted {
            geography: geography.to_string(),
            bytes_before,
            bytes_after: dir_size(&dir),
        })
    }
}

impl GeoStore {
    /// Copies every tree into a new database at `path`, flushed before returning.
    fn copy_into(&self, path: &Path) -> Result<()> {
        let err = |source| StorageError::Sled {
            geography: self.geography().clone(),
            source,
        };
        let copy = sled_config(path).open().map_err(err)?;
        for name in self.db.tree_names() {
            let from = self.db.open_tree(&name).map_err(err)?;
            let to = copy.open_tree(&name).map_err(err)?;
            let mut batch = sled::Batch::default();
            let mut in_batch = 0;
            for entry in from.iter() {
                let (key, value) = entry.map_err(err)?;
                batch.insert(key, value);
                in_batch += 1;
                if in_batch == COPY_BATCH {
                    to.apply_batch(std::mem::take(&mut batch)).map_err(err)?;
                    in_batch = 0;
                    tracing::debug!(tree = %String::from_utf8_lossy(&name), "Compaction progress.");
                }
            }
            to.apply_batch(batch).map_err(err)?;
        }
        // The copy's ID generator starts from zero: IDs go on from where this store's are.
        let floor = self.next_id()? + 1;
        copy.open_tree(layout::DATA_KEYS_TREE)
            .map_err(err)?
            .insert(layout::ID_FLOOR_KEY, &floor.to_be_bytes())
            .map_err(err)?;
        copy.flush().map_err(err)?;
        Ok(())
    }
}

/// Tidies compactions a crash cut short: a store moved aside without a replacement is moved
/// back; a leftover copy or replaced store is removed.
pub(crate) fn recover(data_dir: &Path) -> Result<()> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| StorageError::Io { path, source }
    };
    let entries = std::fs::read_dir(data_dir).map_err(io(data_dir))?;
    let mut leftovers: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    // Moved-aside stores first: one may have to take its name back before copies go.
    leftovers.sort_by_key(|p| p.extension().is_none_or(|e| e != REPLACED));
    for path in leftovers {
        let Some(ext) = path.extension().and_then(|e| e.to_str()) else {
            continue;
        };
        let store = path.with_extension("");
        match ext {
            REPLACED if !store.exists() => {
                tracing::warn!(store = %store.display(), "A compaction was cut short before its copy was in place; keeping the store as it was.");
                std::fs::rename(&path, &store).map_err(io(&path))?;
            }
            REPLACED | COMPACTING => std::fs::remove_dir_all(&path).map_err(io(&path))?,
            _ => {}
        }
    }
    Ok(())
}

fn sibling(dir: &Path, extension: &str) -> PathBuf {
    dir.with_extension(extension)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Bytes of every file under `dir`.
fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok())
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            _ => e.metadata().map_or(0, |m| m.len()),
        })
        .sum()
}
