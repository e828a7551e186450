//! Who may read what in vigil, and the record of every attempt.
//!
//! - [`principal`]: reviewers, managers, admins and customers, each with a region (EEA or
//!   not), and their API tokens, stored only as SHA-256 hashes.
//! - [`workstation`]: vigil's workstation CA. Content is read only over TLS with a client
//!   certificate it issued to a registered, unrevoked workstation.
//! - [`x509`]: the certificate signing requests the CA reads (only their key, once their
//!   signature verifies) and the fields of certificates it issued.
//! - [`grant`]: just-in-time access requests for one case, approved or denied by a manager who
//!   is not the requester, expiring, revocable; and the rules a point query must pass.
//! - [`store`]: one sled database holding principals, token hashes, workstations and grants
//!   (no content, ever).
//! - [`ratelimit`]: per-principal token buckets for point queries.
//! - [`audit`]: an append-only, hash-chained log of every attempt, grant step, deletion and
//!   admin action, written with group commit; an entry that cannot be written refuses the
//!   request it records.
//!
//! This crate decides; it never reads records. The API crate asks it, then reads.

pub mod audit;
pub mod cluster;
pub mod grant;
pub mod principal;
pub mod ratelimit;
pub mod store;
pub mod workstation;
pub mod x509;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use audit::{AuditEntry, AuditError, AuditEvent, AuditLog, Outcome, VerifyReport};
pub use cluster::ClusterCa;
pub use grant::{AccessRequest, GrantState, GrantStatus, Refusal};
pub use principal::{Principal, Region, Role, Token};
pub use ratelimit::RateLimiter;
pub use store::AccessStore;
pub use workstation::{Workstation, WorkstationCa};

/// Creates `dir` and its parents, readable by vigil's user only (mode 0700).
pub(crate) fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
        .create(dir)
}

/// Settings for access control, grants and the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessConfig {
    /// Principals, token hashes, workstations and grants (a sled database).
    #[serde(default = "default_dir")]
    pub dir: PathBuf,
    /// The workstation CA's certificate and key, and the server's TLS certificate.
    #[serde(default = "default_ca_dir")]
    pub ca_dir: PathBuf,
    /// The hash-chained audit log (JSON lines).
    #[serde(default = "default_audit_log")]
    pub audit_log: PathBuf,
    /// Geographies in the European Economic Area: their resources' content is readable only
    /// by reviewers whose region is the EEA.
    #[serde(default = "default_eea_geographies")]
    pub eea_geographies: Vec<String>,
    /// How long an approved grant lasts unless the approver asks for less, in seconds.
    #[serde(default = "default_grant_secs")]
    pub grant_secs: u64,
    /// The longest grant an approver may give, in seconds.
    #[serde(default = "default_max_grant_secs")]
    pub max_grant_secs: u64,
    /// Point queries per reviewer per minute (a token bucket refilled evenly).
    #[serde(default = "default_point_queries_per_minute")]
    pub point_queries_per_minute: u32,
    /// Point queries a reviewer may make at once before the rate applies.
    #[serde(default = "default_point_query_burst")]
    pub point_query_burst: u32,
    /// Seconds an API token is valid after it is issued (re-issued through the API or
    /// `vigil admin token issue`). At least 60, at most 30 days.
    #[serde(default = "default_token_ttl_secs")]
    pub token_ttl_secs: u64,
    /// Seconds a session lasts at most, however often its token is re-issued (`POST
    /// /v1/tokens`): then its holder is issued a new token. At least `token_ttl_secs`, at most
    /// 90 days.
    #[serde(default = "default_session_max_secs")]
    pub session_max_secs: u64,
}

fn default_dir() -> PathBuf {
    "var/access".into()
}
fn default_ca_dir() -> PathBuf {
    "var/access/ca".into()
}
fn default_audit_log() -> PathBuf {
    "var/audit/audit.jsonl".into()
}
fn default_eea_geographies() -> Vec<String> {
    vec!["eu".into()]
}
const fn default_grant_secs() -> u64 {
    3600
}
const fn default_max_grant_secs() -> u64 {
    8 * 3600
}
const fn default_point_queries_per_minute() -> u32 {
    60
}
const fn default_session_max_secs() -> u64 {
    7 * 86_400
}
const fn default_token_ttl_secs() -> u64 {
    12 * 3600
}
const fn default_point_query_burst() -> u32 {
    20
}

impl Default for AccessConfig {
    fn default() -> Self {
        Self {
            dir: default_dir(),
            ca_dir: default_ca_dir(),
            audit_log: default_audit_log(),
            eea_geographies: default_eea_geographies(),
            grant_secs: default_grant_secs(),
            max_grant_secs: default_max_grant_secs(),
            point_queries_per_minute: default_point_queries_per_minute(),
            point_query_burst: default_point_query_burst(),
            token_ttl_secs: default_token_ttl_secs(),
            session_max_secs: default_session_max_secs(),
        }
    }
}

impl AccessConfig {
    /// Checks the settings against each other.
    pub fn validate(&self) -> Result<(), AccessError> {
        let invalid = |m: String| Err(AccessError::Invalid(m));
        if self.grant_secs == 0 || self.grant_secs > self.max_grant_secs {
            return invalid(format!(
                "access.grant_secs is {}, it must be 1-{} (access.max_grant_secs)",
                self.grant_secs, self.max_grant_secs
            ));
        }
        if !(60..=30 * 86_400).contains(&self.token_ttl_secs) {
            return invalid(format!(
                "access.token_ttl_secs is {}, it must be 60-2592000 (30 days)",
                self.token_ttl_secs
            ));
        }
        if !(self.token_ttl_secs..=90 * 86_400).contains(&self.session_max_secs) {
            return invalid(format!(
                "access.session_max_secs is {}, it must be {}-7776000 (access.token_ttl_secs to 90 days)",
                self.session_max_secs, self.token_ttl_secs
            ));
        }
        if self.point_queries_per_minute == 0 || self.point_query_burst == 0 {
            return invalid(
                "access.point_queries_per_minute and access.point_query_burst must be at least 1"
                    .into(),
            );
        }
        Ok(())
    }

    /// How long a token lives, and a session at most.
    pub fn token_lifetimes(&self) -> (time::Duration, time::Duration) {
        let secs = |s: u64| time::Duration::seconds(i64::try_from(s).unwrap_or(i64::MAX));
        (secs(self.token_ttl_secs), secs(self.session_max_secs))
    }

    /// When a token issued at `now` expires.
    pub fn token_expiry(&self, now: time::OffsetDateTime) -> time::OffsetDateTime {
        now + time::Duration::seconds(i64::try_from(self.token_ttl_secs).unwrap_or(i64::MAX))
    }

    /// Whether `geography` is in the EEA.
    pub fn is_eea(&self, geography: &str) -> bool {
        self.eea_geographies.iter().any(|g| g == geography)
    }
}

/// Errors of the access store and CA.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// The sled database failed.
    #[error("access store: {0}")]
    Store(#[from] sled::Error),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A stored value could not be decoded.
    #[error("access store: corrupt entry {key}: {problem}")]
    Corrupt {
        /// The entry's key.
        key: String,
        /// What is wrong.
        problem: String,
    },
    /// The access store is held by another vigil process.
    #[error("the access store {0} is in use by another vigil process (a running `vigil serve` or `vigil run` with the API); stop it first")]
    InUse(PathBuf),
    /// A value breaks a rule.
    #[error("{0}")]
    Invalid(String),
    /// No such principal, workstation or access request.
    #[error("{0} not found")]
    NotFound(String),
    /// The name is taken.
    #[error("{0} already exists")]
    Duplicate(String),
    /// The CA could not issue a certificate.
    #[error("workstation CA: {0}")]
    Ca(String),
    /// A workstation's certificate signing request was refused.
    #[error("certificate signing request: {0}")]
    Csr(x509::CsrError),
}

// Not `#[from]`, which would also make it the source: `{:#}` would print it twice.
impl From<x509::CsrError> for AccessError {
    fn from(e: x509::CsrError) -> Self {
        Self::Csr(e)
    }
}
