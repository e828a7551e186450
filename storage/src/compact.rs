//! Compaction: rewriting a geography's store with only its live entries, so that what a purge
//! or deletion removed is gone from disk too, not only from the trees.
//!
//! sled reclaims space in the background but promises no moment when removed values have left
//! its segments. Compaction copies every tree into a fresh database beside the store, its next
//! generation (`<geography>.gen<N>`), then points the store at it. Once compacted, a store's
//! path (`<geography>`) is a symbolic link to its current generation, replaced atomically by a
//! new link renamed over it; the previous generation is then removed. A store never compacted
//! is a plain directory, which its first compaction moves to `<geography>.old` just before the
//! link takes its name. The copy, open since it was made, becomes the store's database as it
//! is: nothing is reopened. A crash at any step leaves the old generation or the new one under
//! the geography's name; [`recover`] removes the rest at the next open.
//!
//! It runs online, while the store is read and written:
//! 1. With no operation in flight (the trees' gate, write-locked for a moment), a watcher
//!    starts on every tree: sled's subscriber, noting the key of every write from then on.
//! 2. The trees are copied while writes go on.
//! 3. Under the gate again: each watcher is stopped once it has every event, the keys written
//!    meanwhile are copied again with their values as they are now (or removed), the copy
//!    gets the ID floor and is flushed, the link is swapped and the copy's trees replace the
//!    store's. Only this step holds up reads and writes; [`Compacted::paused_us`] says how
//!    long.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vigil_core::Geography;

use crate::geo::{sled_config, GeoStore, Trees, LOCK_WAIT};
use crate::layout;
use crate::{Result, StorageError, Stores};

/// Entries copied per batch.
const COPY_BATCH: usize = 10_000;

/// A store's generation `N` is the directory `<geography>.gen<N>`.
const GENERATION: &str = "gen";
/// A plain store directory moved aside by its first compaction.
const REPLACED: &str = "old";
/// The new link, before it is renamed over the store's path.
const LINK: &str = "link";
/// Where compactions before generations (layout 4's first release) made their copy.
const LEGACY_COPY: &str = "compact";

/// What compacting one store did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Compacted {
    /// The geography.
    pub geography: String,
    /// Bytes on disk before.
    pub bytes_before: u64,
    /// Bytes on disk after.
    pub bytes_after: u64,
    /// How long reads and writes of the store waited for the swap, in microseconds.
    pub paused_us: u64,
}

impl Stores {
    /// Rewrites `geography`'s store with only its live entries, while it stays in use (see
    /// the module docs).
    pub fn compact(&self, geography: &Geography) -> Result<Compacted> {
        let store = self.geo(geography)?;
        let dir = self.data_dir.join(geography.as_str());
        let (bytes_before, paused) = store.compact_online(&dir, &self.data_dir)?;
        Ok(Compacted {
            geography: geography.to_string(),
            bytes_before,
            bytes_after: dir_size(&dir),
            paused_us: u64::try_from(paused.as_micros()).unwrap_or(u64::MAX),
        })
    }
}

/// The keys written to one tree while a compaction copies it.
type Touched = Arc<Mutex<BTreeSet<sled::IVec>>>;

/// A key written to each tree, under the swap's lock, to wake its watcher for the last time.
/// No vigil key starts with 0xFF.
const WAKE: &[u8] = b"\xff\xffcompaction-wake";

/// The watchers of a store's trees during a compaction (see [`watch`]). Dropped before
/// [`Watchers::finish`] (the compaction failed), they are stopped all the same.
struct Watchers {
    stop: Arc<AtomicBool>,
    trees: Vec<(
        String,
        sled::Tree,
        Touched,
        Option<std::thread::JoinHandle<()>>,
    )>,
}

impl Watchers {
    /// Watches every tree of `db`. The caller makes sure no write is in flight: one that began
    /// before its tree was watched would go unnoticed.
    fn start(db: &sled::Db) -> sled::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut trees = Vec::new();
        for name in db.tree_names() {
            let tree = db.open_tree(&name)?;
            let (touched, handle) = watch(&tree, stop.clone());
            let name = String::from_utf8_lossy(&name).into_owned();
            trees.push((name, tree, touched, Some(handle)));
        }
        Ok(Self { stop, trees })
    }

    /// Stops every watcher once it has taken every event before this call; the caller makes
    /// sure no write is in flight. Returns each tree with the keys written to it.
    fn finish(mut self) -> sled::Result<Vec<(String, sled::Tree, BTreeSet<sled::IVec>)>> {
        self.stop_all()?;
        Ok(std::mem::take(&mut self.trees)
            .into_iter()
            .map(|(name, tree, touched, _)| {
                let keys = std::mem::take(&mut *touched.lock().expect("lock poisoned"));
                (name, tree, keys)
            })
            .collect())
    }

    fn stop_all(&mut self) -> sled::Result<()> {
        self.stop.store(true, Ordering::Release);
        for (_, tree, _, handle) in &mut self.trees {
            if let Some(handle) = handle.take() {
                tree.insert(WAKE, &[])?;
                tree.remove(WAKE)?;
                handle.join().expect("a compaction watcher panicked");
            }
        }
        Ok(())
    }
}

impl Drop for Watchers {
    fn drop(&mut self) {
        if let Err(e) = self.stop_all() {
            tracing::warn!(error = %e, "Could not stop a compaction's watchers.");
        }
    }
}

/// Collects the keys of every write to `tree` from now until it sees [`WAKE`] written with
/// `stop` set. Registered before the copy starts, so no write is missed.
///
/// It blocks on sled's event iterator rather than polling with `next_timeout`: in sled 0.34 a
/// timed-out wait on an event whose write then gave up (a retried insert drops its
/// reservation) makes every later `next_timeout` fail without reading on.
fn watch(tree: &sled::Tree, stop: Arc<AtomicBool>) -> (Touched, std::thread::JoinHandle<()>) {
    let touched: Touched = Arc::default();
    let events = tree.watch_prefix(Vec::<u8>::new());
    let keys = touched.clone();
    let handle = std::thread::spawn(move || {
        for event in events {
            if event.key() == WAKE {
                if stop.load(Ordering::Acquire) {
                    return;
                }
                continue;
            }
            keys.lock()
                .expect("lock poisoned")
                .insert(event.key().clone());
        }
    });
    (touched, handle)
}

impl GeoStore {
    /// Compacts this store while it is in use: copies its trees into the store's next
    /// generation while writes go on, noting every key written meanwhile; then, with no
    /// operation in flight (the trees' write lock), copies those keys' current values again,
    /// points the store's path at the new generation and swaps its trees in. Returns the bytes
    /// before and how long operations were paused.
    pub(crate) fn compact_online(&self, dir: &Path, data_dir: &Path) -> Result<(u64, Duration)> {
        let _one = self.compaction.lock().expect("lock poisoned");
        let err = |source| StorageError::Sled {
            geography: self.geography().clone(),
            source,
        };
        self.flush()?;
        let bytes_before = dir_size(dir);
        let current = generation_of(dir);
        let copy_path = generation_path(dir, current.map_or(1, |n| n + 1));
        if copy_path.exists() {
            std::fs::remove_dir_all(&copy_path).map_err(io(&copy_path))?;
        }
        tracing::info!(geography = %self.geography(), bytes_before, "Compacting: copying the store's live entries.");
        // With no write in flight while the watchers start.
        let watchers = Watchers::start(&self.trees.write().db).map_err(err)?;
        let copy = sled_config(&copy_path).open().map_err(err)?;
        for (name, from, _, _) in &watchers.trees {
            let to = copy.open_tree(name).map_err(err)?;
            copy_tree(from, &to).map_err(err)?;
        }
        // The bulk of the copy reaches the disk before the gate closes.
        copy.flush().map_err(err)?;
        // The swap: nothing reads or writes the store meanwhile.
        let mut trees = self.trees.write();
        let paused = std::time::Instant::now();
        for (name, from, touched) in watchers.finish().map_err(err)? {
            let to = copy.open_tree(&name).map_err(err)?;
            let mut batch = sled::Batch::default();
            for key in touched {
                match from.get(&key).map_err(err)? {
                    Some(value) => batch.insert(key, value),
                    None => batch.remove(key),
                }
            }
            to.apply_batch(batch).map_err(err)?;
        }
        // The copy's ID generator starts from zero: IDs go on from where this store's are.
        let floor = self.next_id_in(&trees.db)? + 1;
        copy.open_tree(layout::DATA_KEYS_TREE)
            .map_err(err)?
            .insert(layout::ID_FLOOR_KEY, &floor.to_be_bytes())
            .map_err(err)?;
        copy.flush().map_err(err)?;
        let copy = Trees::of(copy).map_err(err)?;
        // Until the link is renamed over the store's path, a failure leaves the store as it
        // was (its trees, still open, stay in use) and the copy is discarded.
        if let Err(e) = point_at(dir, &copy_path) {
            drop(copy);
            if let Err(left) = std::fs::remove_dir_all(&copy_path) {
                tracing::warn!(error = %left, "Could not remove a failed compaction's copy; the next open will.");
            }
            return Err(e);
        }
        let replaced = std::mem::replace(&mut *trees, copy);
        self.set_id_floor(floor);
        self.compacted();
        // The link is in place and about to be written through: a rename not yet on disk
        // would bring the old generation back after a crash, without what is written next, so
        // the directory is synced before any operation goes on.
        let synced = sync_dir(data_dir).map_err(io(data_dir));
        let paused = paused.elapsed();
        drop(trees);
        drop(replaced);
        synced?;
        let previous = match current {
            Some(n) => generation_path(dir, n),
            None => sibling(dir, REPLACED),
        };
        if let Err(e) = std::fs::remove_dir_all(&previous) {
            tracing::warn!(error = %e, path = %previous.display(), "Could not remove the store's previous generation; the next open will.");
        }
        Ok((bytes_before, paused))
    }
}

/// Points the store's path `dir` at the generation `target`: a new link, renamed over the
/// store's link in one step; the first time, once the plain directory has moved aside. A
/// failure puts the plain directory back.
fn point_at(dir: &Path, target: &Path) -> Result<()> {
    // Another process's open tidies only what no open database holds (see [`in_use`]); the
    // copy is checked all the same before anything points at it.
    if !target.join("db").is_file() {
        return Err(StorageError::Io {
            path: target.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "the compacted copy is gone"),
        });
    }
    let link = sibling(dir, LINK);
    if link.symlink_metadata().is_ok() {
        std::fs::remove_file(&link).map_err(io(&link))?;
    }
    let name = target.file_name().expect("a generation has a file name");
    std::os::unix::fs::symlink(name, &link).map_err(io(&link))?;
    let plain = !is_link(dir);
    let old = sibling(dir, REPLACED);
    if plain {
        std::fs::rename(dir, &old).map_err(io(dir))?;
    }
    if let Err(e) = std::fs::rename(&link, dir) {
        if plain {
            std::fs::rename(&old, dir).map_err(io(&old))?;
        }
        let _ = std::fs::remove_file(&link);
        return Err(io(&link)(e));
    }
    Ok(())
}

/// The generation the store's path `dir` links to; `None` for a plain directory.
fn generation_of(dir: &Path) -> Option<u64> {
    let target = std::fs::read_link(dir).ok()?;
    generation_number(target.extension()?.to_str()?)
}

fn generation_number(extension: &str) -> Option<u64> {
    extension.strip_prefix(GENERATION)?.parse().ok()
}

fn generation_path(dir: &Path, n: u64) -> PathBuf {
    sibling(dir, &format!("{GENERATION}{n}"))
}

fn is_link(path: &Path) -> bool {
    path.symlink_metadata()
        .is_ok_and(|m| m.file_type().is_symlink())
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StorageError {
    let path = path.to_owned();
    move |source| StorageError::Io { path, source }
}

/// Copies every entry of `from` into `to`, a batch at a time.
fn copy_tree(from: &sled::Tree, to: &sled::Tree) -> sled::Result<()> {
    let mut batch = sled::Batch::default();
    let mut in_batch = 0;
    for entry in from.iter() {
        let (key, value) = entry?;
        batch.insert(key, value);
        in_batch += 1;
        if in_batch == COPY_BATCH {
            to.apply_batch(std::mem::take(&mut batch))?;
            in_batch = 0;
            tracing::debug!(tree = %String::from_utf8_lossy(&from.name()), "Compaction progress.");
        }
    }
    to.apply_batch(batch)
}

/// Tidies compactions a crash cut short: a store moved aside without a replacement is moved
/// back; a generation the store's path does not link to, a leftover link, or a copy made by an
/// older compaction is removed.
pub(crate) fn recover(data_dir: &Path) -> Result<()> {
    let entries = std::fs::read_dir(data_dir).map_err(io(data_dir))?;
    let mut leftovers: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    // Moved-aside stores first: one may have to take its name back before copies go.
    leftovers.sort_by_key(|p| p.extension().is_none_or(|e| e != REPLACED));
    for path in leftovers {
        let Some(ext) = path.extension().and_then(|e| e.to_str()) else {
            continue;
        };
        let store = path.with_extension("");
        let store_exists = store.symlink_metadata().is_ok();
        let tidy = match ext {
            REPLACED if !store_exists => Tidy::MoveBack,
            REPLACED | LEGACY_COPY => Tidy::Remove,
            LINK => Tidy::Unlink,
            _ if generation_number(ext).is_some() => {
                let current = std::fs::read_link(&store)
                    .is_ok_and(|target| target.file_name() == path.file_name());
                if current {
                    continue;
                }
                if !store_exists {
                    tracing::warn!(generation = %path.display(), "A store generation without its store; leaving it as it is.");
                    continue;
                }
                Tidy::Remove
            }
            _ => continue,
        };
        // A compaction in flight in another process (or this one) holds its copy open.
        if in_use(&path) {
            continue;
        }
        match tidy {
            Tidy::MoveBack => {
                tracing::warn!(store = %store.display(), "A compaction was cut short before its copy was in place; keeping the store as it was.");
                std::fs::rename(&path, &store).map_err(io(&path))?;
            }
            Tidy::Remove => std::fs::remove_dir_all(&path).map_err(io(&path))?,
            Tidy::Unlink => std::fs::remove_file(&path).map_err(io(&path))?,
        }
    }
    Ok(())
}

/// What [`recover`] does with a compaction's leftover.
enum Tidy {
    /// A plain store moved aside with no link in its place: it takes its name back.
    MoveBack,
    /// A copy or replaced store: removed.
    Remove,
    /// A link never renamed over the store's path: removed.
    Unlink,
}

/// Whether a database is open in `dir`: sled holds an exclusive `flock` on its `db` file for
/// as long as it is open, in this process or another. A database just closed lets go a moment
/// later (its flusher thread ends), so the lock is waited for up to [`LOCK_WAIT`].
fn in_use(dir: &Path) -> bool {
    let Ok(file) = std::fs::File::open(dir.join("db")) else {
        return false;
    };
    let started = std::time::Instant::now();
    loop {
        match file.try_lock() {
            Err(std::fs::TryLockError::WouldBlock) if started.elapsed() < LOCK_WAIT => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(std::fs::TryLockError::WouldBlock) => return true,
            _ => return false,
        }
    }
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
