//! The sled ceiling of `vigil bench`: the key and value shapes of a storage layout written
//! straight into sled (same configuration, same batch size, the same deduplicating index
//! lookup per record), with no decoding, sealing or pipeline around them. It shows how much of
//! the store stage is sled itself, and what the layout before segments (layout 3: a record,
//! an index and a bucket entry per record) costs against the current one (layout 4: an index
//! entry per record, records packed into segments).

use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use vigil_storage::segment::SegmentWriter;

/// Records per sled batch: the pipeline's batch size.
const BATCH: usize = 1024;
/// Resources the records are spread over, round robin (as the bench input is).
const RESOURCES: usize = 8;

/// A storage layout's shape.
#[derive(Clone, Copy)]
enum Shape {
    /// Layout 3: `I request` → resource, `R resource \0 request` → value, `B resource \0 day
    /// request` → nothing.
    EntryPerRecord,
    /// Layout 4: `I request` → locator, `S resource \0 day seq` → segment.
    Segments,
}

/// Writes `records` values of `value_len` bytes in each shape into fresh databases under
/// `work` and appends records/s to `report`; returns the segment shape's rate.
pub(crate) fn ceiling(
    work: &Path,
    records: usize,
    value_len: usize,
    report: &mut String,
) -> anyhow::Result<f64> {
    writeln!(
        report,
        "\nsled alone, {records} values of {value_len} bytes (the stored values' mean), batches of {BATCH}:"
    )?;
    let mut segments_rate = 0.0;
    for (shape, name) in [
        (Shape::EntryPerRecord, "layout 3, an entry per record"),
        (Shape::Segments, "layout 4, segments (this vigil)"),
    ] {
        let dir = work.join("sled-ceiling");
        let _ = std::fs::remove_dir_all(&dir);
        let rate = write_shape(&dir, shape, records, value_len)?;
        let _ = std::fs::remove_dir_all(&dir);
        writeln!(report, "  {name:<34} {rate:>10.0} records/s")?;
        segments_rate = rate;
    }
    Ok(segments_rate)
}

fn write_shape(dir: &Path, shape: Shape, records: usize, value_len: usize) -> anyhow::Result<f64> {
    let db = vigil_storage::geo::open_db(dir)?;
    let tree = db.open_tree("records")?;
    let value = vec![0x5a_u8; value_len];
    let day = 20_400_u32.to_be_bytes();
    // `kind resource \0 rest...`
    let key = |kind: u8, resource: usize, rest: &[&[u8]]| {
        let mut key = format!("{}bench-resource-{resource:04}\0", kind as char).into_bytes();
        rest.iter().for_each(|part| key.extend_from_slice(part));
        key
    };
    let started = Instant::now();
    let mut seq = 0_u64;
    for start in (0..records).step_by(BATCH) {
        let mut batch = sled::Batch::default();
        let mut segments: Vec<SegmentWriter> =
            (0..RESOURCES).map(|_| SegmentWriter::new()).collect();
        let mut close = |batch: &mut sled::Batch, resource: usize, segment: SegmentWriter| {
            seq += 1;
            batch.insert(
                key(b'S', resource, &[&day, &seq.to_be_bytes()]),
                segment.finish(),
            );
        };
        for i in start..(start + BATCH).min(records) {
            let resource = i % RESOURCES;
            let request = format!("{:032x}", mix(i as u64));
            let index = [b"I", request.as_bytes()].concat();
            anyhow::ensure!(tree.get(&index)?.is_none(), "request IDs repeat");
            match shape {
                Shape::EntryPerRecord => {
                    batch.insert(index, key(b'R', resource, &[])[1..].to_vec());
                    batch.insert(key(b'R', resource, &[request.as_bytes()]), value.as_slice());
                    batch.insert(key(b'B', resource, &[&day, request.as_bytes()]), &[]);
                }
                Shape::Segments => {
                    // A locator: format, day, sequence, offset and length, then the resource.
                    batch.insert(
                        index,
                        [&[1_u8; 21][..], &key(b'S', resource, &[])[1..]].concat(),
                    );
                    let segment = &mut segments[resource];
                    segment.push(&request, &value);
                    if segment.is_full() {
                        close(&mut batch, resource, std::mem::take(segment));
                    }
                }
            }
        }
        for (resource, segment) in segments.into_iter().enumerate() {
            if !segment.is_empty() {
                close(&mut batch, resource, segment);
            }
        }
        tree.apply_batch(batch)?;
    }
    db.flush()?;
    Ok(records as f64 / started.elapsed().as_secs_f64())
}

/// A bijective mix of `i` (splitmix64's finaliser): request IDs in no particular order, as
/// real ones arrive.
fn mix(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
