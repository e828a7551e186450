//! AES-256-GCM sealing with associated data that binds a ciphertext to its place.
//!
//! Content is sealed under the resource's data key with associated data
//! `vigil/content/v1 \0 geography \0 resource \0 request`; data keys are sealed under a
//! key-encryption key with `vigil/data-key/v1 \0 geography \0 resource`. Text written about
//! content (a reviewer's note, the LLM reviewer's rationale) is sealed under the same data keys
//! in domains of its own: `vigil/note/v1 \0 geography \0 resource \0 case \0 decision` and
//! `vigil/rationale/v1 \0 geography \0 resource \0 case \0 request`. A ciphertext copied to
//! another record, decision, verdict, resource or geography, or from one kind to another,
//! therefore fails authentication instead of decrypting.
//! Nonces are 96 random bits from a CSPRNG; with one data key per resource that stays far
//! below the 2^32 messages per key that random GCM nonces allow.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use rand::RngCore;
use serde::{Deserialize, Serialize};

/// Length of an AES-256 key in bytes.
pub const KEY_LEN: usize = 32;
/// Length of a GCM nonce in bytes.
pub const NONCE_LEN: usize = 12;

/// A ciphertext with its nonce.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    /// The random nonce.
    pub nonce: [u8; NONCE_LEN],
    /// Ciphertext followed by the 16-byte tag.
    #[serde(with = "serde_bytes")]
    pub ciphertext: Vec<u8>,
}

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sealed({} bytes)", self.ciphertext.len())
    }
}

/// A ciphertext did not authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("ciphertext does not authenticate")]
pub struct OpenError;

/// An AES-256-GCM cipher built from 32 key bytes.
pub fn cipher(key: &[u8; KEY_LEN]) -> Aes256Gcm {
    Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key))
}

/// Encrypts `plaintext`, authenticating `aad` with it.
pub fn seal(cipher: &Aes256Gcm, aad: &[u8], plaintext: &[u8]) -> Sealed {
    let mut nonce = [0u8; NONCE_LEN];
    rand::thread_rng().fill_bytes(&mut nonce);
    let ciphertext = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .expect("AES-GCM encryption only fails for inputs over 64 GiB");
    Sealed { nonce, ciphertext }
}

/// Decrypts `sealed`, which must have been sealed with the same key and `aad`.
pub fn open(cipher: &Aes256Gcm, aad: &[u8], sealed: &Sealed) -> Result<Vec<u8>, OpenError> {
    cipher
        .decrypt(
            Nonce::from_slice(&sealed.nonce),
            Payload {
                msg: &sealed.ciphertext,
                aad,
            },
        )
        .map_err(|_| OpenError)
}

fn aad(label: &str, parts: &[&str]) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(label.len() + parts.iter().map(|p| p.len() + 1).sum::<usize>());
    out.extend_from_slice(label.as_bytes());
    for part in parts {
        out.push(0);
        out.extend_from_slice(part.as_bytes());
    }
    out
}

/// Associated data of a record's content.
pub fn content_aad(geography: &str, resource: &str, request: &str) -> Vec<u8> {
    aad("vigil/content/v1", &[geography, resource, request])
}

/// Associated data of a reviewer's note on a decision about a case of `resource`.
pub fn note_aad(geography: &str, resource: &str, case: &str, decision: &str) -> Vec<u8> {
    aad("vigil/note/v1", &[geography, resource, case, decision])
}

/// Associated data of the LLM reviewer's rationale on a case's sampled record.
pub fn rationale_aad(geography: &str, resource: &str, case: &str, request: &str) -> Vec<u8> {
    aad("vigil/rationale/v1", &[geography, resource, case, request])
}

/// Associated data of a resource's wrapped data key of one day.
pub fn data_key_aad(geography: &str, resource: &str, day: vigil_core::Day) -> Vec<u8> {
    aad(
        "vigil/data-key/v2",
        &[geography, resource, &day.to_string()],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_binds_aad() {
        let c = cipher(&[7; KEY_LEN]);
        let aad1 = content_aad("eu", "res", "r1");
        let sealed = seal(&c, &aad1, b"hello");
        assert_eq!(open(&c, &aad1, &sealed).unwrap(), b"hello");
        assert_eq!(
            open(&c, &content_aad("eu", "res", "r2"), &sealed),
            Err(OpenError)
        );
        assert_eq!(
            open(&c, &content_aad("us", "res", "r1"), &sealed),
            Err(OpenError)
        );
        assert_eq!(open(&cipher(&[8; KEY_LEN]), &aad1, &sealed), Err(OpenError));
        // Separators keep distinct tuples distinct.
        assert_ne!(
            content_aad("e", "ures", "r1"),
            content_aad("eu", "res", "r1")
        );
    }

    #[test]
    fn notes_rationales_and_content_are_distinct_domains() {
        let c = cipher(&[7; KEY_LEN]);
        let note = note_aad("eu", "res", "case-1", "r1");
        let sealed = seal(&c, &note, b"a note");
        assert_eq!(open(&c, &note, &sealed).unwrap(), b"a note");
        for other in [
            rationale_aad("eu", "res", "case-1", "r1"),
            content_aad("eu", "res", "r1"),
            note_aad("eu", "res", "case-2", "r1"),
            note_aad("eu", "other", "case-1", "r1"),
            note_aad("us", "res", "case-1", "r1"),
        ] {
            assert_eq!(open(&c, &other, &sealed), Err(OpenError));
        }
    }

    #[test]
    fn nonces_differ() {
        let c = cipher(&[1; KEY_LEN]);
        assert_ne!(seal(&c, b"", b"x").nonce, seal(&c, b"", b"x").nonce);
    }
}
