//! Segments and locators: how records are packed into sled values and found again.
//!
//! A *segment* holds records of one resource stored on one UTC day, written together (one
//! write batch's records of that resource and day, split at [`TARGET_BYTES`] or
//! [`MAX_RECORDS`]). One sled value per segment instead of one per record is what lets a
//! store take 100,000 records/s: sled's cost is per entry, not per byte.
//!
//! ```text
//! segment  = format:u8  count:u16  entry*            (big-endian integers)
//! entry    = request_len:u16  request  value_len:u32  value
//! locator  = format:u8  day:u32  seq:u64  offset:u32  len:u32  resource
//! ```
//!
//! A *locator* is the value of a record's request-ID index entry: the resource that owns the
//! request ID (which is what deduplication compares) and where its entry lies in which
//! segment, so a point query is one index read, one segment read, and decoding one entry.
//! Each entry repeats its request ID, which the reader checks against the one it looked up.

use vigil_core::Day;

/// The segment format this version writes and reads.
const SEGMENT_FORMAT: u8 = 1;
/// The locator format this version writes and reads.
const LOCATOR_FORMAT: u8 = 1;
/// A segment is closed once its entries reach this many bytes...
pub const TARGET_BYTES: usize = 32 * 1024;
/// ...or this many records, whichever comes first.
pub const MAX_RECORDS: usize = 64;

const HEADER: usize = 3;

/// A segment or locator that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Malformed(&'static str);

/// Builds one segment.
#[derive(Debug)]
pub struct SegmentWriter {
    bytes: Vec<u8>,
    count: u16,
}

impl Default for SegmentWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl SegmentWriter {
    /// An empty segment.
    pub fn new() -> Self {
        let mut bytes = Vec::with_capacity(TARGET_BYTES + TARGET_BYTES / 4);
        bytes.extend_from_slice(&[SEGMENT_FORMAT, 0, 0]);
        Self { bytes, count: 0 }
    }

    /// Appends a record's entry.
    pub fn push(&mut self, request: &str, value: &[u8]) {
        let request_len = u16::try_from(request.len()).expect("request IDs are short");
        let value_len = u32::try_from(value.len()).expect("a record is under 4 GiB");
        self.bytes.extend_from_slice(&request_len.to_be_bytes());
        self.bytes.extend_from_slice(request.as_bytes());
        self.bytes.extend_from_slice(&value_len.to_be_bytes());
        self.bytes.extend_from_slice(value);
        self.count += 1;
    }

    /// Whether the segment should be closed before another entry goes in.
    pub fn is_full(&self) -> bool {
        self.bytes.len() >= TARGET_BYTES || usize::from(self.count) >= MAX_RECORDS
    }

    /// Whether no entry was pushed.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The segment's bytes.
    pub fn finish(mut self) -> Vec<u8> {
        self.bytes[1..HEADER].copy_from_slice(&self.count.to_be_bytes());
        self.bytes
    }
}

/// One record's entry in a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    /// Its request ID.
    pub request: &'a str,
    /// Its stored value (see `crate::layout::record_value`).
    pub value: &'a [u8],
    /// Where the entry starts in the segment.
    pub offset: u32,
    /// The entry's length in bytes.
    pub len: u32,
}

/// The number of records in a segment.
pub fn count(segment: &[u8]) -> Result<usize, Malformed> {
    match segment {
        [SEGMENT_FORMAT, a, b, ..] => Ok(usize::from(u16::from_be_bytes([*a, *b]))),
        [_, ..] => Err(Malformed("unknown segment format")),
        [] => Err(Malformed("empty segment")),
    }
}

/// Every entry of a segment, in order.
pub fn entries(segment: &[u8]) -> Result<Vec<Entry<'_>>, Malformed> {
    let count = count(segment)?;
    let mut out = Vec::with_capacity(count);
    let mut at = HEADER;
    while at < segment.len() {
        let entry = entry_from(segment, at)?;
        at += entry.len as usize;
        out.push(entry);
    }
    if out.len() != count {
        return Err(Malformed("segment count does not match its entries"));
    }
    Ok(out)
}

/// The entry a locator points at.
pub fn entry_at(segment: &[u8], offset: u32, len: u32) -> Result<Entry<'_>, Malformed> {
    count(segment)?;
    let entry = entry_from(segment, offset as usize)?;
    if entry.len != len {
        return Err(Malformed("locator does not match the segment"));
    }
    Ok(entry)
}

fn entry_from(segment: &[u8], at: usize) -> Result<Entry<'_>, Malformed> {
    let take = |from: usize, n: usize| {
        segment
            .get(from..from + n)
            .ok_or(Malformed("truncated segment entry"))
    };
    let request_len = u16::from_be_bytes(take(at, 2)?.try_into().expect("2 bytes"));
    let request_at = at + 2;
    let request = std::str::from_utf8(take(request_at, request_len.into())?)
        .map_err(|_| Malformed("request ID is not UTF-8"))?;
    let value_len_at = request_at + usize::from(request_len);
    let value_len = u32::from_be_bytes(take(value_len_at, 4)?.try_into().expect("4 bytes"));
    let value_at = value_len_at + 4;
    let value = take(value_at, value_len as usize)?;
    let end = value_at + value_len as usize;
    Ok(Entry {
        request,
        value,
        offset: u32::try_from(at).map_err(|_| Malformed("segment too large"))?,
        len: u32::try_from(end - at).map_err(|_| Malformed("segment too large"))?,
    })
}

/// Where a record is: the value of its request-ID index entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Locator {
    /// The resource that stored the request ID.
    pub resource: String,
    /// The day it was stored on.
    pub day: Day,
    /// Its segment's sequence number.
    pub seq: u64,
    /// Where its entry starts in the segment.
    pub offset: u32,
    /// Its entry's length.
    pub len: u32,
}

impl Locator {
    /// Where `entry` of segment (`resource`, `day`, `seq`) is.
    pub fn of(resource: &str, day: Day, seq: u64, entry: &Entry<'_>) -> Self {
        Self {
            resource: resource.to_owned(),
            day,
            seq,
            offset: entry.offset,
            len: entry.len,
        }
    }

    /// The index value.
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(21 + self.resource.len());
        bytes.push(LOCATOR_FORMAT);
        bytes.extend_from_slice(&self.day.to_be_bytes());
        bytes.extend_from_slice(&self.seq.to_be_bytes());
        bytes.extend_from_slice(&self.offset.to_be_bytes());
        bytes.extend_from_slice(&self.len.to_be_bytes());
        bytes.extend_from_slice(self.resource.as_bytes());
        bytes
    }

    /// Reads an index value.
    pub fn decode(bytes: &[u8]) -> Result<Self, Malformed> {
        let [LOCATOR_FORMAT, rest @ ..] = bytes else {
            return Err(Malformed("unknown locator format"));
        };
        if rest.len() < 20 {
            return Err(Malformed("truncated locator"));
        }
        let (day, rest) = rest.split_at(4);
        let (seq, rest) = rest.split_at(8);
        let (offset, rest) = rest.split_at(4);
        let (len, resource) = rest.split_at(4);
        Ok(Self {
            resource: std::str::from_utf8(resource)
                .map_err(|_| Malformed("resource ID is not UTF-8"))?
                .to_owned(),
            day: Day::from_be_bytes(day).ok_or(Malformed("bad day"))?,
            seq: u64::from_be_bytes(seq.try_into().expect("8 bytes")),
            offset: u32::from_be_bytes(offset.try_into().expect("4 bytes")),
            len: u32::from_be_bytes(len.try_into().expect("4 bytes")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_found_by_their_locators() {
        let mut writer = SegmentWriter::new();
        assert!(writer.is_empty());
        writer.push("r1", b"one");
        writer.push("r-two", &[]);
        writer.push("r3", &[7; 300]);
        let segment = writer.finish();
        assert_eq!(count(&segment).unwrap(), 3);
        let all = entries(&segment).unwrap();
        assert_eq!(
            all.iter().map(|e| e.request).collect::<Vec<_>>(),
            ["r1", "r-two", "r3"]
        );
        for entry in &all {
            let locator = Locator::of("res", Day::from_number(20_000), 42, entry);
            let locator = Locator::decode(&locator.encode()).unwrap();
            assert_eq!(locator.resource, "res");
            assert_eq!(locator.seq, 42);
            assert_eq!(
                entry_at(&segment, locator.offset, locator.len).unwrap(),
                *entry
            );
        }
        assert_eq!(all[2].value, &[7; 300]);
    }

    #[test]
    fn a_segment_closes_at_its_size_or_record_limit() {
        let mut big = SegmentWriter::new();
        big.push("r", &vec![0; TARGET_BYTES]);
        assert!(big.is_full());
        let mut many = SegmentWriter::new();
        for i in 0..MAX_RECORDS {
            assert!(!many.is_full());
            many.push(&i.to_string(), b"x");
        }
        assert!(many.is_full());
    }

    #[test]
    fn damage_is_reported_not_misread() {
        let mut writer = SegmentWriter::new();
        writer.push("r1", b"one");
        let segment = writer.finish();
        assert!(entries(&segment[..segment.len() - 1]).is_err());
        assert!(entries(&[9, 0, 1]).is_err());
        let mut wrong_count = segment.clone();
        wrong_count[2] = 2;
        assert!(entries(&wrong_count).is_err());
        assert!(entry_at(&segment, 3, 4).is_err());
        assert!(Locator::decode(b"contoso").is_err());
        assert!(Locator::decode(&[LOCATOR_FORMAT, 0, 0]).is_err());
    }
}
