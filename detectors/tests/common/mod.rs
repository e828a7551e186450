//! What the detector tests share.

use std::path::PathBuf;

/// This crate's directory where the test runs (cargo sets it for the test binary), not where
/// it was built: a target directory shared by clones at different paths would otherwise read
/// another clone's models.
pub fn manifest_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
}
