//! Where flag events go: the Kafka flag topics in production ([`FlagSink`] is implemented by
//! `vigil_kafka::FlagPublisher`), or a JSON-lines file on the embedded default.
//!
//! Flag events leave only from the store's outbox, after the records and the case behind them
//! are durable; a crash between publishing and clearing the outbox publishes again at the next
//! run, so delivery is at least once and consumers deduplicate on the stable `flag_id`.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use vigil_core::FlagEvent;

/// Why a flag event could not be published.
#[derive(Debug, thiserror::Error)]
#[error("publishing flag events to {destination}: {message}")]
pub struct FlagSinkError {
    /// The sink.
    pub destination: String,
    /// What went wrong.
    pub message: String,
}

/// A destination for flag events.
pub trait FlagSink: Send {
    /// Where the events go, for summaries and logs.
    fn destination(&self) -> String;

    /// Sends one event (it may be buffered until [`FlagSink::flush`]).
    fn publish(&mut self, event: &FlagEvent) -> Result<(), FlagSinkError>;

    /// Returns once every event published so far is durable (on disk, acknowledged).
    fn flush(&mut self) -> Result<(), FlagSinkError>;
}

/// Flag events appended to a JSON-lines file, one event per line.
pub struct FlagFile {
    path: PathBuf,
    file: Option<BufWriter<File>>,
}

impl FlagFile {
    /// Appends to `path` (created with its directory on the first event).
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            file: None,
        }
    }

    fn error(&self, e: impl ToString) -> FlagSinkError {
        FlagSinkError {
            destination: self.destination(),
            message: e.to_string(),
        }
    }
}

impl FlagSink for FlagFile {
    fn destination(&self) -> String {
        self.path.display().to_string()
    }

    fn publish(&mut self, event: &FlagEvent) -> Result<(), FlagSinkError> {
        event.validate().map_err(|e| self.error(e))?;
        if self.file.is_none() {
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| self.error(e))?;
            }
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .map_err(|e| self.error(e))?;
            self.file = Some(BufWriter::new(file));
        }
        let line = serde_json::to_vec(event).expect("a flag event serializes");
        let file = self.file.as_mut().expect("opened above");
        let written = file.write_all(&line).and_then(|()| file.write_all(b"\n"));
        written.map_err(|e| self.error(e))
    }

    fn flush(&mut self) -> Result<(), FlagSinkError> {
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        let flushed = file.flush().and_then(|()| file.get_ref().sync_data());
        flushed.map_err(|e| self.error(e))
    }
}
