//! Where a file run reads from: a JSON-lines file, or standard input for `-`.

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::Path;

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
            let len = file.metadata().ok().map(|m| m.len());
            let name = path.display().to_string();
            (name, len, Box::new(BufReader::with_capacity(1 << 20, file)))
        };
        Ok(Self { name, len, reader })
    }
}

impl Source for Input {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn run(&mut self, feed: &mut Feed<'_>) -> Result<(), PipelineError> {
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
