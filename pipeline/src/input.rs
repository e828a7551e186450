//! Where a run reads from: a JSON-lines file, or standard input for `-`.

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::Path;

/// An opened input.
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
        if path == Path::new("-") {
            return Ok(Self {
                name: "-".into(),
                len: None,
                reader: Box::new(BufReader::with_capacity(1 << 20, io::stdin())),
            });
        }
        let file = File::open(path)?;
        let len = file.metadata().ok().map(|m| m.len());
        Ok(Self {
            name: path.display().to_string(),
            len,
            reader: Box::new(BufReader::with_capacity(1 << 20, file)),
        })
    }
}
