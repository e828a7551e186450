//! The keyring: one geography's wrapped data keys, in a file of fixed-size slots that is
//! overwritten in place, so that destroying a key leaves nothing on disk that unwraps it.
//!
//! sled is log-structured: a removed value stays in its segment file until sled happens to
//! rewrite that segment, so a data key "destroyed" by removing it from a tree could still be
//! read from a disk image, and the master key that wraps it never changes. Here each data key
//! (one per resource and UTC day, sealed under its key-encryption key) lives in one 128-byte
//! slot of `<data_dir>/<geography>.keyring`; the store's `data_keys` tree only maps the
//! resource and day to the slot number and names the key-encryption key. Destroying a key
//! overwrites its slot with zeros where it lies (`pwrite`) and `fdatasync`s the file before
//! anything else happens; a freed slot is reused by a later key, and the file never shrinks
//! or moves.
//!
//! Slot layout: `[state: 1][owner: 16][nonce: 12][ciphertext and tag: 48][zeros]`, where
//! `state` is 1 for a live key and 0 for a free slot, and `owner` is the first 16 bytes of the
//! SHA-256 of the key's associated data (geography, resource, day): a slot is only ever read
//! as the key it was written for. The file starts with a 128-byte header (magic and version).
//!
//! What this does not cover, stated in ARCHITECTURE.md's threat model: file systems that
//! copy on write (btrfs, ZFS) or journal data, and flash translation layers, may keep the
//! overwritten bytes in blocks vigil cannot reach; put the data directory on a file system
//! that overwrites in place (ext4 and XFS with their default data modes do).

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use crate::crypto::{Sealed, KEY_LEN, NONCE_LEN};

/// Bytes per slot (and of the header).
pub(crate) const SLOT: usize = 128;
const MAGIC: &[u8; 16] = b"vigil keyring v1";
/// A sealed data key: the key and its 16-byte tag.
const SEALED_LEN: usize = KEY_LEN + 16;
const OWNER_LEN: usize = 16;
const LIVE: u8 = 1;

/// Which key a slot holds: derived from the key's associated data.
pub(crate) type Owner = [u8; OWNER_LEN];

/// The owner tag of the data key sealed with associated data `aad`.
pub(crate) fn owner(aad: &[u8]) -> Owner {
    let digest = Sha256::digest(aad);
    let mut owner = [0u8; OWNER_LEN];
    owner.copy_from_slice(&digest[..OWNER_LEN]);
    owner
}

/// Keyring failures: the file's path and what went wrong, never key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    /// The file could not be read, written or synced.
    #[error("keyring {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The store names keys but its keyring file is not there (a copy or restore that left
    /// it behind): nothing is read or written until it is put back.
    #[error("keyring {path} is missing, but the store beside it names data keys in it; restore the file (it lives next to the store's directory, not inside it)")]
    Missing {
        /// The file.
        path: PathBuf,
    },
    /// The file is not a keyring this version reads.
    #[error("keyring {path} is not a vigil keyring (bad header or size)")]
    Format {
        /// The file.
        path: PathBuf,
    },
}

struct Slots {
    file: File,
    /// Slots in the file.
    count: u32,
    /// Free slots below `count`.
    free: BTreeSet<u32>,
}

/// One geography's keyring file (see the module docs).
pub(crate) struct Keyring {
    path: PathBuf,
    slots: Mutex<Slots>,
}

impl Keyring {
    /// Opens the keyring at `path`, creating it (mode 0600) when it does not exist.
    pub fn open(path: &Path) -> Result<Self, KeyringError> {
        let io = |source| KeyringError::Io {
            path: path.to_owned(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        if len == 0 {
            let mut header = [0u8; SLOT];
            header[..MAGIC.len()].copy_from_slice(MAGIC);
            file.write_all_at(&header, 0).map_err(io)?;
            file.sync_all().map_err(io)?;
            if let Some(dir) = path.parent() {
                File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
            }
        } else {
            let mut header = [0u8; SLOT];
            let bad = || KeyringError::Format {
                path: path.to_owned(),
            };
            file.read_exact_at(&mut header, 0).map_err(|_| bad())?;
            if &header[..MAGIC.len()] != MAGIC || len % SLOT as u64 != 0 {
                return Err(bad());
            }
        }
        let count = (file.metadata().map_err(io)?.len() / SLOT as u64 - 1) as u32;
        let mut slots = Slots {
            file,
            count,
            free: BTreeSet::new(),
        };
        for slot in 0..count {
            if Self::read_slot(&slots.file, slot).map_err(io)?[0] != LIVE {
                slots.free.insert(slot);
            }
        }
        Ok(Self {
            path: path.to_owned(),
            slots: Mutex::new(slots),
        })
    }

    fn io(&self) -> impl Fn(std::io::Error) -> KeyringError + '_ {
        |source| KeyringError::Io {
            path: self.path.clone(),
            source,
        }
    }

    fn offset(slot: u32) -> u64 {
        (u64::from(slot) + 1) * SLOT as u64
    }

    fn read_slot(file: &File, slot: u32) -> std::io::Result<[u8; SLOT]> {
        let mut bytes = [0u8; SLOT];
        file.read_exact_at(&mut bytes, Self::offset(slot))?;
        Ok(bytes)
    }

    /// Writes `sealed` (a data key sealed under its key-encryption key) for `owner` into a free
    /// slot, synced to disk before this returns. Returns the slot.
    pub fn put(&self, owner: Owner, sealed: &Sealed) -> Result<u32, KeyringError> {
        let mut slots = self.slots.lock().expect("lock poisoned");
        let slot = match slots.free.pop_first() {
            Some(slot) => slot,
            None => {
                slots.count += 1;
                slots.count - 1
            }
        };
        let written = Self::write(&slots.file, slot, owner, sealed).map_err(self.io());
        if written.is_err() {
            slots.free.insert(slot);
        }
        written.map(|()| slot)
    }

    fn write(file: &File, slot: u32, owner: Owner, sealed: &Sealed) -> std::io::Result<()> {
        assert_eq!(sealed.ciphertext.len(), SEALED_LEN, "a sealed data key");
        let mut bytes = [0u8; SLOT];
        bytes[0] = LIVE;
        bytes[1..1 + OWNER_LEN].copy_from_slice(&owner);
        let nonce_at = 1 + OWNER_LEN;
        bytes[nonce_at..nonce_at + NONCE_LEN].copy_from_slice(&sealed.nonce);
        bytes[nonce_at + NONCE_LEN..nonce_at + NONCE_LEN + SEALED_LEN]
            .copy_from_slice(&sealed.ciphertext);
        file.write_all_at(&bytes, Self::offset(slot))?;
        file.sync_data()
    }

    /// The sealed key in `slot`, if it is live and `owner`'s.
    pub fn get(&self, slot: u32, owner: Owner) -> Result<Option<Sealed>, KeyringError> {
        let slots = self.slots.lock().expect("lock poisoned");
        if slot >= slots.count {
            return Ok(None);
        }
        let bytes = Self::read_slot(&slots.file, slot).map_err(self.io())?;
        if bytes[0] != LIVE || bytes[1..1 + OWNER_LEN] != owner {
            return Ok(None);
        }
        let nonce_at = 1 + OWNER_LEN;
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&bytes[nonce_at..nonce_at + NONCE_LEN]);
        let ciphertext = bytes[nonce_at + NONCE_LEN..nonce_at + NONCE_LEN + SEALED_LEN].to_vec();
        Ok(Some(Sealed { nonce, ciphertext }))
    }

    /// Overwrites the `doomed` slots (each with the owner it must hold: a slot since freed and
    /// reused by another key is left alone) with zeros where they lie, and syncs the file once:
    /// from then on nothing on disk holds those keys.
    pub fn destroy(&self, doomed: &[(u32, Owner)]) -> Result<(), KeyringError> {
        if doomed.is_empty() {
            return Ok(());
        }
        let mut slots = self.slots.lock().expect("lock poisoned");
        let mut zeroed = Vec::new();
        for &(slot, owner) in doomed.iter().filter(|(s, _)| *s < slots.count) {
            let bytes = Self::read_slot(&slots.file, slot).map_err(self.io())?;
            if bytes[0] == LIVE && bytes[1..1 + OWNER_LEN] == owner {
                slots
                    .file
                    .write_all_at(&[0u8; SLOT], Self::offset(slot))
                    .map_err(self.io())?;
                zeroed.push(slot);
            }
        }
        slots.file.sync_data().map_err(self.io())?;
        slots.free.extend(zeroed);
        Ok(())
    }

    /// Live slots whose owner `keep` rejects are destroyed (keys written just before a crash,
    /// which no index entry names, and so no content was sealed under). Returns how many.
    pub fn destroy_orphans(
        &self,
        keep: impl Fn(u32, Owner) -> bool,
    ) -> Result<usize, KeyringError> {
        let orphans = {
            let slots = self.slots.lock().expect("lock poisoned");
            let mut orphans = Vec::new();
            for slot in (0..slots.count).filter(|s| !slots.free.contains(s)) {
                let bytes = Self::read_slot(&slots.file, slot).map_err(self.io())?;
                let mut owner = [0u8; OWNER_LEN];
                owner.copy_from_slice(&bytes[1..1 + OWNER_LEN]);
                if !keep(slot, owner) {
                    orphans.push((slot, owner));
                }
            }
            orphans
        };
        self.destroy(&orphans)?;
        Ok(orphans.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealed(byte: u8) -> Sealed {
        Sealed {
            nonce: [byte; NONCE_LEN],
            ciphertext: vec![byte; SEALED_LEN],
        }
    }

    #[test]
    fn keys_are_written_read_and_destroyed_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("eu.keyring");
        let ring = Keyring::open(&path).unwrap();
        let (a, b) = (owner(b"a"), owner(b"b"));
        let sa = ring.put(a, &sealed(0xa1)).unwrap();
        let sb = ring.put(b, &sealed(0xb2)).unwrap();
        assert_ne!(sa, sb);
        assert_eq!(ring.get(sa, a).unwrap(), Some(sealed(0xa1)));
        assert_eq!(ring.get(sa, b).unwrap(), None, "another owner's slot");
        let size = std::fs::metadata(&path).unwrap().len();

        ring.destroy(&[(sa, b)]).unwrap();
        assert_eq!(
            ring.get(sa, a).unwrap(),
            Some(sealed(0xa1)),
            "not b's slot: kept"
        );
        ring.destroy(&[(sa, a)]).unwrap();
        assert_eq!(ring.get(sa, a).unwrap(), None);
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len() as u64, size, "overwritten in place");
        assert!(!bytes.windows(SEALED_LEN).any(|w| w == [0xa1; SEALED_LEN]));
        assert!(bytes.windows(SEALED_LEN).any(|w| w == [0xb2; SEALED_LEN]));

        // The freed slot is reused; the file does not grow.
        let sc = ring.put(a, &sealed(0xc3)).unwrap();
        assert_eq!(sc, sa);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), size);
        drop(ring);

        // Reopened: what is live stays, and keys no index names are destroyed.
        let ring = Keyring::open(&path).unwrap();
        assert_eq!(ring.get(sb, b).unwrap(), Some(sealed(0xb2)));
        assert_eq!(ring.destroy_orphans(|slot, _| slot == sb).unwrap(), 1);
        assert_eq!(ring.get(sc, a).unwrap(), None);
        assert_eq!(ring.get(sb, b).unwrap(), Some(sealed(0xb2)));
    }

    #[test]
    fn refuses_a_file_that_is_not_a_keyring() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.keyring");
        std::fs::write(&path, b"not a keyring").unwrap();
        assert!(matches!(
            Keyring::open(&path),
            Err(KeyringError::Format { .. })
        ));
    }
}
