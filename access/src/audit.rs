//! The audit log: every attempt to read content (granted or refused, and why), every grant
//! step, every deletion and every admin action, one JSON line each, chained by SHA-256.
//!
//! Each entry carries the hash of the one before it (`prev`) and its own (`hash`, over the
//! entry's canonical JSON with `hash` empty), so an edited, removed, reordered or inserted
//! line breaks the chain at that point; [`verify`] names the first broken entry.
//!
//! Writing is group-committed: one thread takes every entry waiting, writes them in one go
//! and syncs the file once, then answers each caller. A caller learns its entry is durable
//! before the request it records is carried out; if the entry cannot be written, the request
//! is refused (fail closed). A failed batch is cut back off the file so the chain stays
//! whole; if even that fails, the log refuses everything from then on. The queue in front
//! of the writer is bounded: callers faster than the disk wait (back pressure).
//!
//! The file is locked (`flock`) by its one writer. After each batch the writer also records
//! the chain's head (last sequence number and hash) in `<log>.head`, so that entries cut off
//! the end of the log are noticed too; anchor the head that `verify` prints somewhere else as
//! well, since whoever can rewrite the log can rewrite that file.
//!
//! Entries hold names, IDs, codes and counts, never content.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::format_description::well_known::Rfc3339;
use tracing::{error, warn};
use vigil_core::Clock;

/// What an entry records the result of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Content was returned, or access given.
    Granted,
    /// The request was refused; `reason` says why.
    Refused,
    /// An action other than reading was carried out.
    Done,
}

impl Outcome {
    /// The outcome's name, as the log writes it.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Granted => "granted",
            Outcome::Refused => "refused",
            Outcome::Done => "done",
        }
    }
}

/// One thing to record, before the log numbers, dates and chains it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Who: a principal's name, `anonymous`, or `cli` for the operator at the console.
    pub actor: String,
    /// The actor's role, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// What was attempted, such as `record.read` or `grant.approve`.
    pub action: String,
    /// Granted, refused or done.
    pub outcome: Option<Outcome>,
    /// A refusal's code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The case involved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub case_id: Option<String>,
    /// The request ID involved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The resource involved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_id: Option<String>,
    /// The access request (grant) involved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_request: Option<String>,
    /// The workstation the request came from, by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workstation: Option<String>,
    /// The network address an anonymous request came from (a caller without a valid token
    /// is known by nothing else).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// Anything else worth keeping: a reviewer's stated reason, counts, a setting's new value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl AuditEvent {
    /// An event by `actor` doing `action`.
    pub fn new(actor: impl Into<String>, action: impl Into<String>) -> Self {
        Self {
            actor: actor.into(),
            action: action.into(),
            ..Self::default()
        }
    }

    /// Sets the outcome.
    pub fn outcome(mut self, outcome: Outcome) -> Self {
        self.outcome = Some(outcome);
        self
    }

    /// Marks it refused, for `reason`.
    pub fn refused(mut self, reason: &str) -> Self {
        self.outcome = Some(Outcome::Refused);
        self.reason = Some(reason.to_owned());
        self
    }
}

/// A line of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// 1 for the first entry, then one more each line.
    pub seq: u64,
    /// When it was written (RFC 3339, UTC).
    pub at: String,
    /// Written under a shifted clock (`VIGIL_NOW`, a drill): `at` is the drill's time, not
    /// the real one. Absent otherwise.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub drill: bool,
    /// What happened.
    #[serde(flatten)]
    pub event: AuditEvent,
    /// The previous entry's hash (64 zeros for the first).
    pub prev: String,
    /// This entry's hash.
    pub hash: String,
}

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

impl AuditEntry {
    fn sealed(seq: u64, at: String, drill: bool, event: AuditEvent, prev: String) -> Self {
        let mut entry = Self {
            seq,
            at,
            drill,
            event,
            prev,
            hash: String::new(),
        };
        entry.hash = entry.compute_hash();
        entry
    }

    fn compute_hash(&self) -> String {
        let unsealed = Self {
            hash: String::new(),
            ..self.clone()
        };
        let json = serde_json::to_vec(&unsealed).expect("an audit entry always encodes");
        hex::encode(Sha256::digest(&json))
    }
}

/// Audit log errors.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The log file could not be opened, read, written or synced.
    #[error("audit log {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// An earlier write failed and could not be undone; nothing more is written.
    #[error("audit log {0}: an earlier write failed and could not be rolled back; restart vigil after fixing the file system")]
    Failed(PathBuf),
    /// The writer thread is gone.
    #[error("audit log: the writer has stopped")]
    Closed,
    /// Another process writes this log.
    #[error("audit log {0} is in use by another vigil process")]
    InUse(PathBuf),
    /// The log is shorter than, or different from, what its head records (entries were cut
    /// off or replaced), or a non-empty log has no head. Nothing is written until an operator
    /// acknowledges the gap.
    #[error("audit log {path}: {problem}. vigil writes nothing more to it until the gap is acknowledged: after investigating, run `vigil audit acknowledge`, which records the gap in the log itself")]
    Gap {
        /// The file.
        path: PathBuf,
        /// What is missing or different.
        problem: String,
    },
    /// The last entry of an existing log could not be read, so the chain cannot go on.
    #[error("audit log {path}, line {line}: {problem} (see `vigil audit verify`)")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The line (1-based).
        line: u64,
        /// What is wrong.
        problem: String,
    },
}

type Reply = tokio::sync::oneshot::Sender<Result<u64, String>>;

/// The audit log's writer. Cheap to clone; every clone feeds the same thread.
#[derive(Clone)]
pub struct AuditLog {
    jobs: Jobs,
    path: PathBuf,
    failures: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Cleared for good once a failed sync (or a failed rollback) has stopped the writer.
    writable: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

type Jobs = tokio::sync::mpsc::Sender<(AuditEvent, Reply)>;

/// Largest batch one sync covers.
const MAX_BATCH: usize = 4096;

/// Entries that may wait for the writer. The queue is bounded, so callers faster than the
/// disk wait their turn (back pressure) instead of growing memory without end.
const QUEUE: usize = 2 * MAX_BATCH;

struct Writer {
    file: File,
    path: PathBuf,
    len: u64,
    seq: u64,
    last_hash: String,
    failed: bool,
    /// Shared with [`AuditLog::is_writable`]: cleared when `failed` is set.
    writable: std::sync::Arc<std::sync::atomic::AtomicBool>,
    clock: Clock,
    /// The head, kept beside a log that is a regular file (not a device).
    head: Option<HeadFile>,
}

impl AuditLog {
    /// Opens (or creates) the log at `path` and starts its writer thread. A last line torn by
    /// a crash was never acknowledged, so it is cut off (and a warning logged); any other
    /// unreadable last line stops here.
    ///
    /// The log is checked against its head: a log shorter than its head, or whose last entry
    /// differs from the head's, or a non-empty log without a head, is refused with
    /// [`AuditError::Gap`] (fail closed) until [`AuditLog::acknowledge_gap`] records the gap.
    pub fn open(path: &Path, clock: Clock) -> Result<Self, AuditError> {
        Self::open_checked(path, clock, true).map(|(log, _)| log)
    }

    /// Records in the log, as `event` with the gap as its detail, that it is shorter than or
    /// different from its head, then starts a new head from where the log now ends; returns
    /// the gap found (`None` when there was none, and nothing is written).
    pub fn acknowledge_gap(
        path: &Path,
        clock: Clock,
        mut event: AuditEvent,
    ) -> Result<Option<String>, AuditError> {
        let (log, found) = Self::open_checked(path, clock, false)?;
        let Some(problem) = found else {
            return Ok(None);
        };
        event.detail = Some(problem.clone());
        log.append_blocking(event)?;
        Ok(Some(problem))
    }

    /// Opens the log; with `check_head` a gap against its head is an error, without it the
    /// gap is returned beside the log.
    fn open_checked(
        path: &Path,
        clock: Clock,
        check_head: bool,
    ) -> Result<(Self, Option<String>), AuditError> {
        let io = |source| AuditError::Io {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            crate::create_private_dir(dir).map_err(io)?;
        }
        let mut file = std::os::unix::fs::OpenOptionsExt::mode(
            OpenOptions::new().read(true).append(true).create(true),
            0o600,
        )
        .open(path)
        .map_err(io)?;
        // A writer this process just dropped lets go of the lock when its thread ends.
        let started = std::time::Instant::now();
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock)
                    if started.elapsed() < std::time::Duration::from_secs(3) =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(AuditError::InUse(path.to_owned()))
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
            }
        }
        let (len, seq, last_hash) = Self::tail(&mut file, path)?;
        let keeps_head = file.metadata().map_err(io)?.is_file();
        let checked = match keeps_head {
            true => gap(path, seq, &last_hash),
            false => Ok(()),
        };
        let found = match checked {
            Ok(()) => None,
            Err(AuditError::Gap { problem, .. }) if !check_head => Some(problem),
            Err(other) => return Err(other),
        };
        let head =
            match keeps_head {
                true => Some(HeadFile::open(path, seq, &last_hash).map_err(|source| {
                    AuditError::Io {
                        path: head_path(path),
                        source,
                    }
                })?),
                false => None,
            };
        let writer = Writer {
            file,
            path: path.to_owned(),
            len,
            seq,
            last_hash,
            failed: false,
            writable: std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true)),
            clock,
            head,
        };
        let writable = writer.writable.clone();
        let (jobs, rx) = tokio::sync::mpsc::channel(QUEUE);
        std::thread::Builder::new()
            .name("vigil-audit".into())
            .spawn(move || writer.run(rx))
            .map_err(io)?;
        Ok((
            Self {
                jobs,
                path: path.to_owned(),
                failures: Default::default(),
                writable,
            },
            found,
        ))
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Finds where the chain ends: the file's length, the last sequence number and hash.
    fn tail(file: &mut File, path: &Path) -> Result<(u64, u64, String), AuditError> {
        let io = |source| AuditError::Io {
            path: path.to_owned(),
            source,
        };
        let len = file.metadata().map_err(io)?.len();
        if len == 0 {
            return Ok((0, 0, GENESIS.into()));
        }
        // Entries are far shorter than this; the last complete one is inside it.
        let start = len.saturating_sub(256 * 1024);
        file.seek(SeekFrom::Start(start)).map_err(io)?;
        let mut buf = Vec::new();
        file.read_to_end(&mut buf).map_err(io)?;
        let mut end = buf.len();
        if buf.last() != Some(&b'\n') {
            // A torn last line: written in part when vigil stopped, never acknowledged.
            let cut = buf.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            let new_len = start + cut as u64;
            warn!(
                path = %path.display(),
                bytes = len - new_len,
                "The audit log ends in a torn line (a crash while writing); cutting it off."
            );
            file.set_len(new_len)
                .and_then(|()| file.sync_all())
                .map_err(io)?;
            end = cut;
            if new_len == 0 {
                return Ok((0, 0, GENESIS.into()));
            }
        }
        let body = &buf[..end.saturating_sub(1)];
        let last = body
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(body, |i| &body[i + 1..]);
        let entry: AuditEntry = serde_json::from_slice(last).map_err(|e| AuditError::Corrupt {
            path: path.to_owned(),
            line: 0,
            problem: format!("the last entry does not parse: {e}"),
        })?;
        if entry.compute_hash() != entry.hash {
            return Err(AuditError::Corrupt {
                path: path.to_owned(),
                line: entry.seq,
                problem: "the last entry's hash does not match it".into(),
            });
        }
        let len = start + end as u64;
        Ok((len, entry.seq, entry.hash))
    }

    /// Records `event`, returning its sequence number once it is on disk.
    pub async fn append(&self, event: AuditEvent) -> Result<u64, AuditError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let reply = match self.jobs.send((event, tx)).await {
            Ok(()) => rx.await.ok(),
            Err(_) => None,
        };
        self.answer(reply)
    }

    /// [`AuditLog::append`] for callers outside an async runtime.
    pub fn append_blocking(&self, event: AuditEvent) -> Result<u64, AuditError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let reply = match self.jobs.blocking_send((event, tx)) {
            Ok(()) => rx.blocking_recv().ok(),
            Err(_) => None,
        };
        self.answer(reply)
    }

    /// Appends that failed since the log was opened (the requests they recorded were refused).
    pub fn failures(&self) -> u64 {
        self.failures.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether the writer still writes: false once a failed sync or rollback has stopped it
    /// (every append is then refused until vigil restarts). A write refused for a full disk
    /// leaves it writing: the next one may succeed (see [`AuditLog::failures`]).
    pub fn is_writable(&self) -> bool {
        self.writable.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The writer's reply (`None`: the writer is gone), counting failures.
    fn answer(&self, reply: Option<Result<u64, String>>) -> Result<u64, AuditError> {
        let result = match reply {
            Some(Ok(seq)) => Ok(seq),
            Some(Err(problem)) => Err(AuditError::Io {
                path: self.path.clone(),
                source: std::io::Error::other(problem),
            }),
            None => Err(AuditError::Closed),
        };
        if result.is_err() {
            self.failures
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            metrics::counter!("vigil_audit_failures_total").increment(1);
        }
        result
    }
}

impl Writer {
    fn run(mut self, mut jobs: tokio::sync::mpsc::Receiver<(AuditEvent, Reply)>) {
        while let Some(first) = jobs.blocking_recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match jobs.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            self.write(batch);
        }
    }

    fn write(&mut self, batch: Vec<(AuditEvent, Reply)>) {
        if self.failed {
            let problem = AuditError::Failed(self.path.clone()).to_string();
            for (_, reply) in batch {
                let _ = reply.send(Err(problem.clone()));
            }
            return;
        }
        let at = self
            .clock
            .now()
            .format(&Rfc3339)
            .expect("a UTC time always formats");
        let mut seq = self.seq;
        let mut hash = self.last_hash.clone();
        let mut bytes = Vec::with_capacity(batch.len() * 256);
        let mut replies = Vec::with_capacity(batch.len());
        for (event, reply) in batch {
            seq += 1;
            let entry = AuditEntry::sealed(seq, at.clone(), self.clock.is_shifted(), event, hash);
            serde_json::to_writer(&mut bytes, &entry).expect("an audit entry always encodes");
            bytes.push(b'\n');
            hash = entry.hash;
            replies.push((seq, reply));
        }
        let syncing = std::time::Instant::now();
        let written = self
            .file
            .write_all(&bytes)
            .and_then(|()| self.file.sync_data());
        metrics::histogram!("vigil_audit_fsync_duration_seconds")
            .record(syncing.elapsed().as_secs_f64());
        match written {
            Ok(()) => {
                self.len += bytes.len() as u64;
                self.seq = seq;
                self.last_hash = hash;
                let head = match &self.head {
                    Some(head) => head.record(self.seq, &self.last_hash),
                    None => Ok(()),
                };
                if let Err(e) = head {
                    warn!(path = %self.path.display(), error = %e, "The audit log's head could not be recorded; entries cut off its end would go unnoticed.");
                }
                for (seq, reply) in replies {
                    let _ = reply.send(Ok(seq));
                }
            }
            Err(e) => {
                error!(path = %self.path.display(), error = %e, entries = replies.len(), "The audit log could not be written; the requests it would record are refused.");
                // Cut the batch back off so the chain stays whole for the next one. A failed
                // sync may have lost pages silently, so a failed sync also ends writing.
                let rolled_back = self
                    .file
                    .set_len(self.len)
                    .and_then(|()| self.file.sync_all());
                let sync_failed = e.kind() != std::io::ErrorKind::StorageFull;
                if rolled_back.is_err() || sync_failed {
                    self.failed = true;
                    self.writable
                        .store(false, std::sync::atomic::Ordering::Relaxed);
                }
                for (_, reply) in replies {
                    let _ = reply.send(Err(e.to_string()));
                }
            }
        }
    }
}

/// The recorded head of the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Head {
    seq: u64,
    hash: String,
}

fn head_path(log: &Path) -> PathBuf {
    let mut name = log.as_os_str().to_owned();
    name.push(".head");
    PathBuf::from(name)
}

/// Bytes a head takes on disk: its JSON, padded with spaces, so that each new head overwrites
/// the last in place (a write within one block, then `fdatasync`: one sync per batch, on the
/// group commit's path, instead of a new file renamed over the last and its directory synced).
const HEAD_LEN: usize = 128;

/// The head file `<log>.head`, open for the writer.
struct HeadFile(File);

impl HeadFile {
    /// Opens the head of the log at `log`, whose chain ends at `seq` with `hash`. A missing
    /// head is created holding that end, and its directory synced: a new log starts with its
    /// head, so a log with entries and no head can only be one whose head was removed.
    fn open(log: &Path, seq: u64, hash: &str) -> std::io::Result<Self> {
        let path = head_path(log);
        let existed = path.exists();
        let file = std::os::unix::fs::OpenOptionsExt::mode(
            OpenOptions::new().read(true).write(true).create(true),
            0o600,
        )
        .open(&path)?;
        let head = Self(file);
        if !existed {
            head.record(seq, hash)?;
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                File::open(dir)?.sync_all()?;
            }
        }
        Ok(head)
    }

    /// Records the chain's end, in place, and syncs it.
    fn record(&self, seq: u64, hash: &str) -> std::io::Result<()> {
        let mut bytes = serde_json::to_vec(&Head {
            seq,
            hash: hash.to_owned(),
        })
        .expect("a head always encodes");
        debug_assert!(bytes.len() < HEAD_LEN);
        bytes.resize(HEAD_LEN - 1, b' ');
        bytes.push(b'\n');
        std::os::unix::fs::FileExt::write_all_at(&self.0, &bytes, 0)?;
        self.0.sync_data()
    }
}

/// The recorded head of the log at `log`, if there is one.
fn read_head(log: &Path) -> Result<Option<Head>, AuditError> {
    let path = head_path(log);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| AuditError::Gap {
                path: log.to_owned(),
                problem: format!("its head {} does not parse ({e})", path.display()),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(AuditError::Io { path, source }),
    }
}

/// Checks the log at `path`, whose chain ends at entry `seq` with `last_hash`, against its
/// head: [`AuditError::Gap`] names what is missing or different. The whole chain is read only
/// when the log goes on past its head (a crash between writing entries and their head), to
/// check the entry the head names.
fn gap(path: &Path, seq: u64, last_hash: &str) -> Result<(), AuditError> {
    let gap = |problem: String| {
        Err(AuditError::Gap {
            path: path.to_owned(),
            problem,
        })
    };
    match read_head(path)? {
        None if seq == 0 => Ok(()),
        None => gap(no_head(path, seq)),
        Some(head) if head.seq > seq => gap(cut_off(seq, head.seq)),
        Some(head) if head.seq == seq && head.hash != last_hash => gap(format!(
            "its last entry (seq {seq}) is not the one its head records (replaced)"
        )),
        Some(head) if head.seq == seq => Ok(()),
        Some(_) => match verify(path)?.first_broken {
            None => Ok(()),
            Some(broken) => gap(format!("line {}: {}", broken.line, broken.problem)),
        },
    }
}

fn no_head(log: &Path, entries: u64) -> String {
    format!(
        "it holds {entries} entries but has no head ({}) recording how far it went, so entries cut off its end could not be noticed",
        head_path(log).display()
    )
}

fn cut_off(seq: u64, head_seq: u64) -> String {
    format!(
        "it ends at seq {seq}, but its head records entries up to seq {head_seq}: {} entries were cut off its end",
        head_seq - seq
    )
}

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Entries whose chain checked out, from the first.
    pub verified: u64,
    /// The hash of the last verified entry: record it elsewhere to anchor the log.
    pub last_hash: String,
    /// The first entry that breaks the chain, if any.
    pub first_broken: Option<BrokenEntry>,
}

/// An entry that breaks the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BrokenEntry {
    /// Its line in the file (1-based).
    pub line: u64,
    /// The sequence number it claims, if it parses.
    pub seq: Option<u64>,
    /// What is wrong.
    pub problem: String,
}

/// Checks the whole chain of the log at `path`: each line parses, is in canonical form,
/// numbers on from the one before, names its hash as `prev`, and hashes to its `hash`.
pub fn verify(path: &Path) -> Result<VerifyReport, AuditError> {
    let io = |source| AuditError::Io {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    let is_file = file.metadata().map_err(io)?.is_file();
    let head = match read_head(path) {
        Ok(head) => head,
        Err(AuditError::Gap { problem, .. }) => {
            return Ok(VerifyReport {
                verified: 0,
                last_hash: GENESIS.into(),
                first_broken: Some(BrokenEntry {
                    line: 0,
                    seq: None,
                    problem,
                }),
            })
        }
        Err(other) => return Err(other),
    };
    let mut reader = BufReader::new(file);
    let mut prev = GENESIS.to_owned();
    let mut verified = 0u64;
    let mut line = Vec::new();
    let mut number = 0u64;
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line).map_err(io)?;
        if n == 0 {
            break;
        }
        number += 1;
        let broken = |seq, problem: String| {
            Ok(VerifyReport {
                verified,
                last_hash: prev.clone(),
                first_broken: Some(BrokenEntry {
                    line: number,
                    seq,
                    problem,
                }),
            })
        };
        if line.last() != Some(&b'\n') {
            return broken(None, "the line is incomplete (no newline)".into());
        }
        let text = &line[..line.len() - 1];
        let entry: AuditEntry = match serde_json::from_slice(text) {
            Ok(e) => e,
            Err(e) => return broken(None, format!("not an audit entry: {e}")),
        };
        let seq = Some(entry.seq);
        if serde_json::to_vec(&entry).ok().as_deref() != Some(text) {
            return broken(seq, "the line is not in canonical form (edited)".into());
        }
        if entry.seq != verified + 1 {
            return broken(
                seq,
                format!("sequence {} where {} was due", entry.seq, verified + 1),
            );
        }
        if entry.prev != prev {
            return broken(seq, "prev does not match the previous entry's hash".into());
        }
        if entry.compute_hash() != entry.hash {
            return broken(seq, "the hash does not match the entry (edited)".into());
        }
        if head
            .as_ref()
            .is_some_and(|h| h.seq == entry.seq && h.hash != entry.hash)
        {
            return broken(seq, "the entry differs from the recorded head".into());
        }
        prev = entry.hash;
        verified += 1;
    }
    let missing = match &head {
        Some(head) if head.seq > verified => Some(cut_off(verified, head.seq)),
        None if verified > 0 && is_file => Some(no_head(path, verified)),
        _ => None,
    };
    if let Some(problem) = missing {
        return Ok(VerifyReport {
            verified,
            last_hash: prev,
            first_broken: Some(BrokenEntry {
                line: number + 1,
                seq: Some(verified + 1),
                problem,
            }),
        });
    }
    Ok(VerifyReport {
        verified,
        last_hash: prev,
        first_broken: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(i: u32) -> AuditEvent {
        AuditEvent {
            case_id: Some(format!("case-{i}")),
            ..AuditEvent::new("alice", "record.read").refused("no_grant")
        }
    }

    fn clock() -> Clock {
        Clock::starting_at(time::macros::datetime!(2026-11-23 10:00 UTC))
    }

    #[test]
    fn chains_across_reopens_and_threads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit/audit.jsonl");
        let log = AuditLog::open(&path, clock()).unwrap();
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let log = log.clone();
                std::thread::spawn(move || {
                    for i in 0..25 {
                        log.append_blocking(event(t * 100 + i)).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(log);
        let log = AuditLog::open(&path, clock()).unwrap();
        assert_eq!(log.append_blocking(event(999)).unwrap(), 201);
        let report = verify(&path).unwrap();
        assert_eq!(report.verified, 201);
        assert_eq!(report.first_broken, None);
    }

    #[test]
    fn finds_the_first_tampered_entry() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path, clock()).unwrap();
        for i in 0..5 {
            log.append_blocking(event(i)).unwrap();
        }
        let original = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = original.lines().collect();

        // An edited field, its hash left alone.
        let edited = original.replacen("\"case-2\"", "\"case-7\"", 1);
        std::fs::write(&path, &edited).unwrap();
        let broken = verify(&path).unwrap().first_broken.unwrap();
        assert_eq!((broken.line, broken.seq), (3, Some(3)), "{broken:?}");
        assert_eq!(verify(&path).unwrap().verified, 2);

        // A removed entry.
        let removed: Vec<&str> = lines.iter().copied().filter(|l| *l != lines[1]).collect();
        std::fs::write(&path, removed.join("\n") + "\n").unwrap();
        let broken = verify(&path).unwrap().first_broken.unwrap();
        assert_eq!(broken.line, 2);
        assert!(broken.problem.contains("sequence"), "{broken:?}");

        // An entry rewritten whole, with a recomputed hash: the next one's prev gives it away.
        let mut forged: AuditEntry = serde_json::from_str(lines[3]).unwrap();
        forged.event.outcome = Some(Outcome::Granted);
        forged.hash = forged.compute_hash();
        let mut rewritten: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        rewritten[3] = serde_json::to_string(&forged).unwrap();
        std::fs::write(&path, rewritten.join("\n") + "\n").unwrap();
        let broken = verify(&path).unwrap().first_broken.unwrap();
        assert_eq!(broken.line, 5, "{broken:?}");
        assert!(broken.problem.contains("prev"), "{broken:?}");

        // The last two entries cut off the end.
        std::fs::write(&path, lines[..3].join("\n") + "\n").unwrap();
        let broken = verify(&path).unwrap().first_broken.unwrap();
        assert_eq!((broken.line, broken.seq), (4, Some(4)), "{broken:?}");
        assert!(broken.problem.contains("cut off its end"), "{broken:?}");

        // Whitespace added to a line.
        let spaced = original.replacen("{\"seq\":4,", "{ \"seq\":4,", 1);
        std::fs::write(&path, &spaced).unwrap();
        assert_eq!(verify(&path).unwrap().first_broken.unwrap().line, 4);
    }

    #[test]
    fn entries_written_under_a_shifted_clock_say_so() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path, Clock::system()).unwrap();
        log.append_blocking(event(1)).unwrap();
        drop(log);
        let log = AuditLog::open(&path, clock()).unwrap();
        log.append_blocking(event(2)).unwrap();
        drop(log);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(!lines[0].contains("drill"), "{}", lines[0]);
        assert!(lines[1].contains("\"drill\":true"), "{}", lines[1]);
        assert_eq!(verify(&path).unwrap().first_broken, None);
    }

    fn acknowledgement() -> AuditEvent {
        AuditEvent::new("cli:root", "audit.acknowledge_gap").outcome(Outcome::Done)
    }

    #[test]
    fn a_log_cut_short_is_refused_until_the_gap_is_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path, clock()).unwrap();
        for i in 0..5 {
            log.append_blocking(event(i)).unwrap();
        }
        drop(log);
        let original = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = original.lines().collect();
        // The last two entries cut off, the head kept: the writer must not chain on.
        std::fs::write(&path, lines[..3].join("\n") + "\n").unwrap();
        let refused = AuditLog::open(&path, clock()).err().expect("refused");
        let message = refused.to_string();
        assert!(matches!(refused, AuditError::Gap { .. }), "{message}");
        assert!(
            message.contains("ends at seq 3") && message.contains("up to seq 5"),
            "{message}"
        );
        assert!(message.contains("vigil audit acknowledge"), "{message}");
        // Nothing was written: the log is as it was cut.
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 3);

        // The last entry replaced by one with a valid chain of its own.
        let mut forged: AuditEntry = serde_json::from_str(lines[4]).unwrap();
        forged.event.outcome = Some(Outcome::Granted);
        forged.hash = forged.compute_hash();
        let mut replaced: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        replaced[4] = serde_json::to_string(&forged).unwrap();
        std::fs::write(&path, replaced.join("\n") + "\n").unwrap();
        let message = AuditLog::open(&path, clock())
            .err()
            .expect("refused")
            .to_string();
        assert!(
            message.contains("not the one its head records"),
            "{message}"
        );

        // Acknowledged: the gap is an entry of the log, and the log opens and verifies again.
        std::fs::write(&path, lines[..3].join("\n") + "\n").unwrap();
        let gap = AuditLog::acknowledge_gap(&path, clock(), acknowledgement()).unwrap();
        assert!(gap.is_some_and(|g| g.contains("2 entries were cut off")));
        let log = AuditLog::open(&path, clock()).unwrap();
        assert_eq!(log.append_blocking(event(9)).unwrap(), 5);
        drop(log);
        let text = std::fs::read_to_string(&path).unwrap();
        let ack: AuditEntry = serde_json::from_str(text.lines().nth(3).unwrap()).unwrap();
        assert_eq!(ack.event.action, "audit.acknowledge_gap");
        assert!(ack.event.detail.unwrap().contains("up to seq 5"));
        assert_eq!(verify(&path).unwrap().first_broken, None);
        // With no gap, acknowledging writes nothing.
        assert_eq!(
            AuditLog::acknowledge_gap(&path, clock(), acknowledgement()).unwrap(),
            None
        );
        assert_eq!(verify(&path).unwrap().verified, 5);
    }

    #[test]
    fn a_non_empty_log_without_its_head_is_refused_and_fails_verification() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path, clock()).unwrap();
        log.append_blocking(event(1)).unwrap();
        drop(log);
        std::fs::remove_file(head_path(&path)).unwrap();
        let broken = verify(&path).unwrap().first_broken.expect("broken");
        assert!(broken.problem.contains("no head"), "{broken:?}");
        let message = AuditLog::open(&path, clock())
            .err()
            .expect("refused")
            .to_string();
        assert!(message.contains("no head"), "{message}");
    }

    #[test]
    fn a_log_that_went_on_past_its_head_opens_when_the_head_is_in_its_chain() {
        // A crash after the entries were synced and before their head was written.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path, clock()).unwrap();
        log.append_blocking(event(1)).unwrap();
        drop(log);
        let head = std::fs::read(head_path(&path)).unwrap();
        let log = AuditLog::open(&path, clock()).unwrap();
        log.append_blocking(event(2)).unwrap();
        drop(log);
        std::fs::write(head_path(&path), head).unwrap();
        let log = AuditLog::open(&path, clock()).unwrap();
        assert_eq!(log.append_blocking(event(3)).unwrap(), 3);
    }

    #[test]
    fn a_torn_last_line_is_cut_off_and_the_chain_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path, clock()).unwrap();
        log.append_blocking(event(1)).unwrap();
        drop(log);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"seq\":2,\"at\":\"20").unwrap();
        drop(f);
        let log = AuditLog::open(&path, clock()).unwrap();
        assert_eq!(log.append_blocking(event(2)).unwrap(), 2);
        assert_eq!(verify(&path).unwrap().verified, 2);
    }

    #[test]
    fn a_log_that_cannot_be_written_refuses() {
        // /dev/full accepts the open and fails every write, like a full disk.
        let log = AuditLog::open(Path::new("/dev/full"), clock()).unwrap();
        for _ in 0..2 {
            assert!(log.append_blocking(event(1)).is_err());
        }
    }
}
