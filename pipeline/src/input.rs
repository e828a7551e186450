//! Where a file run reads from: a JSON-lines file, or standard input for `-` (a stream,
//! whose partial batches are sent on after [`LINGER`] rather than when they fill).

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::Path;
use std::sync::mpsc::RecvTimeoutError;
use std::time::Duration;

use vigil_ingest::LineReader;

use crate::{Feed, PipelineError, Source};

/// An opened JSON-lines input.
pub struct Input {
    /// Its name in source positions.
    pub name: String,
    /// Its size in bytes, when known (for progress).
    pub len: Option<u64>,
    /// The bytes.
    pub reader: Box<dyn BufRead + Send>,
}

impl Input {
    /// Opens `path`, or standard input when it is `-`.
    pub fn open(path: &Path) -> io::Result<Self> {
        let (name, len, reader): (_, _, Box<dyn BufRead + Send>) = if path == Path::new("-") {
            let stdin = BufReader::with_capacity(1 << 20, io::stdin());
            ("-".to_owned(), None, Box::new(stdin))
        } else {
            let file = File::open(path)?;
            // Only a regular file has a length to show progress against (a FIFO is a stream).
            let len = file
                .metadata()
                .ok()
                .filter(|m| m.is_file())
                .map(|m| m.len());
            let name = path.display().to_string();
            (name, len, Box::new(BufReader::with_capacity(1 << 20, file)))
        };
        Ok(Self { name, len, reader })
    }
}

/// How long a line read from a stream waits in a partial batch at most.
const LINGER: Duration = Duration::from_millis(200);

impl Input {
    fn read(&mut self, feed: &mut Feed<'_>) -> Result<(), PipelineError> {
        let mut reader = LineReader::new(&mut self.reader, &self.name, feed.max_record_bytes());
        let failed = |source| PipelineError::Input {
            input: self.name.clone(),
            source,
        };
        while let Some((line, position)) = reader.next_line().map_err(failed)? {
            feed.push(line, position, None)?;
            feed.handoff().set_progress(reader.bytes_read());
        }
        Ok(())
    }
}

impl Source for Input {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn run(&mut self, feed: &mut Feed<'_>) -> Result<(), PipelineError> {
        if self.len.is_some() {
            return self.read(feed);
        }
        // A stream (standard input, a pipe) may pause between lines: a partial batch is sent
        // on once it has waited LINGER, rather than when the batch fills or the input ends.
        // The lingering thread ends when reading does, however it ends (a panic included:
        // the sender is dropped while unwinding).
        let handoff = feed.handoff().clone();
        let (reading, ended) = std::sync::mpsc::channel::<()>();
        std::thread::scope(|scope| {
            scope.spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = ended.recv_timeout(LINGER) {
                    if handoff.send_older_than(LINGER).is_err() {
                        return;
                    }
                }
            });
            let _reading = reading;
            self.read(feed)
        })
    }
}
