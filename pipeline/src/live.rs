//! The resource registry as it is now, for a process that runs for a while (`vigil run`,
//! `vigil serve`): a [`RegistryWatcher`] reloads the registry file when it changes (as the
//! abuse policy is reloaded), applies the change to the stores (content destroyed when content
//! logging was turned off, data keys re-wrapped under a new customer key), and records that it
//! did in the data directory ([`applied_marker`]), so that `vigil resource` can tell the change
//! took effect although it could not open the stores itself.
//!
//! The running pipeline reads [`LiveRegistry::changed`] for every record it seals and
//! [`LiveRegistry::logs_content`] for every record it writes: once content logging is off for a
//! resource, no content of its is sealed, and none sealed just before reaches disk; a new
//! customer key wraps the data keys made from then on. The LLM reviewer looks each resource up
//! as it is now too, and a record of a resource added since the start is routed by
//! [`LiveRegistry::resource`]. Everything else a running pipeline takes from the registry it
//! started with (routing of the resources it started with, a resource removed, turning content
//! logging back on) applies from its next start.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tracing::{info, warn};
use vigil_core::{ResourceId, ResourceRegistry};
use vigil_storage::{RetentionConfig, Stores};

/// A registry shared with whatever changes it, and a count of its changes.
#[derive(Clone)]
pub struct LiveRegistry {
    registry: Arc<RwLock<ResourceRegistry>>,
    generation: Arc<AtomicU64>,
    /// Held while a change is saved or applied, so that changes never overwrite each other
    /// (shared with the API's resource updates).
    change: Arc<Mutex<()>>,
}

impl LiveRegistry {
    /// The registry behind `registry` (shared with the API and the lifecycle).
    pub fn new(registry: Arc<RwLock<ResourceRegistry>>) -> Self {
        Self {
            registry,
            generation: Arc::default(),
            change: Arc::default(),
        }
    }

    /// The lock a change to the registry holds while it is saved and applied.
    pub fn change_lock(&self) -> Arc<Mutex<()>> {
        self.change.clone()
    }

    /// Whether `resource`'s content may be stored now: false once its content logging is off,
    /// or once it is gone from the registry.
    pub fn logs_content(&self, resource: &ResourceId) -> bool {
        self.registry
            .read()
            .expect("registry lock poisoned")
            .get(resource.as_str())
            .is_some_and(|r| r.content_logging)
    }

    /// `resource` (as a run started with it) as the registry has it now, when that differs in
    /// what sealing reads: content logging turned off (or the resource gone), or another
    /// customer key. `None` when nothing changed. Content logging turned back on is not
    /// followed: that waits for the next start.
    pub fn changed(&self, resource: &vigil_core::Resource) -> Option<vigil_core::Resource> {
        let registry = self.registry.read().expect("registry lock poisoned");
        let now = registry.get(resource.id.as_str());
        let logging = resource.content_logging && now.is_some_and(|r| r.content_logging);
        let key = now.map_or(&resource.customer_key, |r| &r.customer_key);
        if logging == resource.content_logging && *key == resource.customer_key {
            return None;
        }
        Some(vigil_core::Resource {
            content_logging: logging,
            customer_key: key.clone(),
            ..resource.clone()
        })
    }

    /// `id`'s entry as it is now.
    pub fn resource(&self, id: &str) -> Option<vigil_core::Resource> {
        self.registry
            .read()
            .expect("registry lock poisoned")
            .get(id)
            .cloned()
    }

    /// Changes so far: a different number means the registry changed.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The registry as it is now.
    pub fn snapshot(&self) -> ResourceRegistry {
        self.registry
            .read()
            .expect("registry lock poisoned")
            .clone()
    }

    fn replace(&self, registry: ResourceRegistry) {
        *self.registry.write().expect("registry lock poisoned") = registry;
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}

/// Where a running process records which version of the registry file it has applied to the
/// stores in `data_dir`.
pub fn applied_marker(data_dir: &Path) -> PathBuf {
    data_dir.join("registry.applied")
}

/// The version of the registry file at `path`, as [`applied_marker`] records it: it changes
/// whenever the file is saved again (a new file renamed into place).
pub fn registry_version(path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some(format!(
        "{}:{}:{}.{}",
        meta.ino(),
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec()
    ))
}

/// Watches the registry file; stops when dropped.
pub struct RegistryWatcher {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RegistryWatcher {
    /// Checks the registry file at `path` every `interval`; each version other than `loaded`
    /// (the one the process read at start, [`registry_version`] taken before it read it) that
    /// loads and passes `retention`'s checks replaces `live` and is applied to `stores`. A
    /// version that does not is refused, with a warning, and the last good one stays.
    pub fn start(
        path: PathBuf,
        loaded: Option<String>,
        live: LiveRegistry,
        stores: Arc<Stores>,
        retention: RetentionConfig,
        interval: Duration,
    ) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let marker = applied_marker(stores.data_dir());
        // A change saved between the version taken and the load is applied at the first look.
        let mut seen = loaded;
        let thread = std::thread::Builder::new()
            .name("registry-watch".into())
            .spawn(move || {
                while !stopping.load(Ordering::Relaxed) {
                    std::thread::sleep(interval);
                    if registry_version(&path) == seen {
                        continue;
                    }
                    // A change through the API saves and applies under this lock: read the
                    // file only once it is done.
                    let change = live.change.clone();
                    let _one_at_a_time = change.lock().expect("registry change lock poisoned");
                    let version = registry_version(&path);
                    seen.clone_from(&version);
                    let registry = match ResourceRegistry::load(&path) {
                        Ok(registry) => registry,
                        Err(error) => {
                            warn!(%error, "The changed resource registry does not load; the last good one stays in force.");
                            continue;
                        }
                    };
                    if let Err(error) = retention.validate(&registry) {
                        warn!(%error, "The changed resource registry breaks the retention rules; the last good one stays in force.");
                        continue;
                    }
                    live.replace(registry.clone());
                    if !apply(&stores, &registry, &marker, version.as_deref()) {
                        // Tried again at the next look.
                        seen = None;
                    }
                }
            })?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

/// Applies `registry` to `stores` and records `version` as applied; false when the stores
/// could not be brought in line.
fn apply(
    stores: &Stores,
    registry: &ResourceRegistry,
    marker: &Path,
    version: Option<&str>,
) -> bool {
    match stores.reconcile(registry) {
        Ok(done) => {
            done.log();
            info!("Applied the changed resource registry.");
            if let Some(version) = version {
                if let Err(error) = std::fs::write(marker, version) {
                    warn!(%error, "Could not record that the registry change was applied.");
                }
            }
            true
        }
        Err(error) => {
            warn!(%error, "Applying the changed resource registry to the stores failed; content logging settings are in force for new records, and it is tried again.");
            false
        }
    }
}

impl Drop for RegistryWatcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
