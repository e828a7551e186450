//! Where inputs come from ([`SourcePosition`]), and JSON-lines input: a file or standard input,
//! read as lines of bytes with their positions.
//!
//! Lines are read as raw bytes, not strings, so that invalid UTF-8 is reported per line
//! instead of aborting the read. A line longer than the configured limit is not buffered
//! whole: the reader keeps its first `limit` bytes for the dead letter, skips the rest, and
//! reports the full length.

use std::fmt;
use std::io::{self, BufRead};
use std::sync::Arc;

use serde::Serialize;

/// Where an input came from, for dead letters and diagnostics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum SourcePosition {
    /// A line of a JSON-lines file (`-` for standard input).
    File {
        /// The file's name as given.
        file: Arc<str>,
        /// The 1-based line number.
        line: u64,
    },
    /// A message of a Kafka topic.
    Kafka {
        /// The topic.
        topic: Arc<str>,
        /// The partition.
        partition: i32,
        /// The message's offset in the partition.
        offset: i64,
    },
}

impl fmt::Display for SourcePosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File { file, line } => write!(f, "{file}:{line}"),
            Self::Kafka {
                topic,
                partition,
                offset,
            } => write!(f, "{topic}[{partition}]@{offset}"),
        }
    }
}

/// One non-blank line of input. Its `Debug` output shows only sizes.
pub enum Line {
    /// A line within the size limit, without its line terminator.
    Complete(Vec<u8>),
    /// A line over the size limit.
    Oversized {
        /// Its first `limit` bytes.
        prefix: Vec<u8>,
        /// Its full length in bytes.
        len: u64,
    },
}

impl Line {
    /// The input's full length in bytes (an oversized one's too, not only what was kept).
    pub fn len(&self) -> u64 {
        match self {
            Self::Complete(bytes) => bytes.len() as u64,
            Self::Oversized { len, .. } => *len,
        }
    }

    /// Whether the input is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Debug for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Complete(bytes) => write!(f, "Complete({} bytes)", bytes.len()),
            Self::Oversized { prefix, len } => {
                write!(f, "Oversized({} of {len} bytes kept)", prefix.len())
            }
        }
    }
}

/// Reads lines of bytes, numbering them and skipping blank ones.
pub struct LineReader<R> {
    inner: R,
    name: Arc<str>,
    line: u64,
    limit: usize,
    bytes_read: u64,
}

impl<R: BufRead> LineReader<R> {
    /// Reads from `inner`, calling it `name` in positions, keeping lines up to `limit` bytes.
    pub fn new(inner: R, name: &str, limit: usize) -> Self {
        Self {
            inner,
            name: name.into(),
            line: 0,
            limit,
            bytes_read: 0,
        }
    }

    /// Bytes consumed so far, line terminators included.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    /// The next non-blank line and its position, or `None` at the end of the input.
    pub fn next_line(&mut self) -> io::Result<Option<(Line, SourcePosition)>> {
        loop {
            let mut buf = Vec::new();
            let mut len: u64 = 0;
            let mut saw_any = false;
            loop {
                let available = match self.inner.fill_buf() {
                    Ok(a) => a,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                if available.is_empty() {
                    break;
                }
                saw_any = true;
                let (chunk, done) = match memchr::memchr(b'\n', available) {
                    Some(i) => (&available[..i], i + 1),
                    None => (available, available.len()),
                };
                let room = (self.limit + 1).saturating_sub(buf.len());
                buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
                len += chunk.len() as u64;
                let ended = done > chunk.len();
                self.inner.consume(done);
                self.bytes_read += done as u64;
                if ended {
                    break;
                }
            }
            if !saw_any {
                return Ok(None);
            }
            self.line += 1;
            if buf.last() == Some(&b'\r') && len <= self.limit as u64 + 1 {
                buf.pop();
                len -= 1;
            }
            if buf.iter().all(u8::is_ascii_whitespace) && len == buf.len() as u64 {
                continue;
            }
            let position = SourcePosition::File {
                file: self.name.clone(),
                line: self.line,
            };
            let line = if len > self.limit as u64 {
                buf.truncate(self.limit);
                Line::Oversized { prefix: buf, len }
            } else {
                Line::Complete(buf)
            };
            return Ok(Some((line, position)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8], limit: usize) -> Vec<(String, u64)> {
        // Tiny buffer capacity to exercise lines that span several reads.
        let reader = io::BufReader::with_capacity(3, input);
        let mut r = LineReader::new(reader, "t", limit);
        let mut out = Vec::new();
        while let Some((line, position)) = r.next_line().unwrap() {
            let SourcePosition::File { line: n, .. } = position else {
                unreachable!("a line reader gives file positions")
            };
            let text = match line {
                Line::Complete(b) => String::from_utf8(b).unwrap(),
                Line::Oversized { prefix, len } => {
                    format!("{}..({len})", String::from_utf8(prefix).unwrap())
                }
            };
            out.push((text, n));
        }
        out
    }

    #[test]
    fn numbers_lines_and_skips_blank_ones() {
        assert_eq!(
            lines(b"a\n\n  \r\nbb\r\nccc", 10),
            vec![("a".into(), 1), ("bb".into(), 4), ("ccc".into(), 5)]
        );
    }

    #[test]
    fn keeps_a_prefix_of_oversized_lines() {
        assert_eq!(
            lines(b"12345678\nok\n", 4),
            vec![("1234..(8)".into(), 1), ("ok".into(), 2)]
        );
        // Exactly at the limit is fine.
        assert_eq!(lines(b"1234\n", 4), vec![("1234".into(), 1)]);
        assert_eq!(lines(b"1234\r\n", 4), vec![("1234".into(), 1)]);
    }
}
