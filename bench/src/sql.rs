//! `vigil bench --sql`: SQL aggregation over synthetic Parquet exports.
//!
//! Writes `--records` synthetic `records` rows and as many `detections` rows (deterministic
//! seed) through the same `vigil_analytics::Exports` partition writer the exports use,
//! spread over 3 geographies × 30 days (90 partitions per table), 200 resources and many end
//! users, streaming one partition at a time so memory stays bounded whatever `--records`.
//! Then runs a fixed set of aggregation queries `--runs` times each through one read-only
//! session, and reports per query the median latency, the rows its scans read, and scanned
//! rows per second. The write rate counts time spent in the writer (push and finish), not
//! generating the rows. Peak resident memory is reported after the writes (bounded: one
//! partition's batch and row group at a time) and at the end (the queries' hash tables,
//! which grow with distinct keys).
//!
//! The exports go to a temporary directory, or to `<--dir>/exports`, left in place there so
//! they can be queried afterwards (`VIGIL_ANALYTICS__EXPORT_DIR=<dir>/exports vigil sql ...`).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use time::{Date, OffsetDateTime};
use vigil_analytics::{AnalyticsConfig, DetectionRow, Exports, RecordRow, Sql};
use vigil_core::{
    Category, Deployment, Detection, Geography, HarmScores, Operation, RecordMeta, RequestId,
    ResourceId,
};

use crate::{machine, BenchOptions};

const GEOGRAPHIES: [&str; 3] = ["eu", "us", "apac"];
const DAYS: u16 = 30;
const FIRST_DAY: Date = time::macros::date!(2026 - 01 - 01);
const RESOURCES: usize = 200;
const MODELS: [&str; 6] = [
    "gpt-4o",
    "gpt-4o-mini",
    "o3-mini",
    "llama-3.3-70b",
    "mistral-large",
    "text-embedding-3-large",
];
const REGIONS: [&str; 6] = [
    "westeurope",
    "northeurope",
    "eastus",
    "westus",
    "japaneast",
    "australiaeast",
];

/// The queries timed, with a short name each. `{day}` is replaced by the middle day.
const QUERIES: [(&str, &str); 6] = [
    (
        "count per geography and day",
        "SELECT geography, day, count(*) AS records FROM records \
         GROUP BY geography, day ORDER BY geography, day",
    ),
    (
        "distinct end users per day",
        "SELECT day, count(DISTINCT end_user) AS end_users FROM records \
         GROUP BY day ORDER BY day",
    ),
    (
        "top 10 resources by harmful share",
        "SELECT resource_id, count(*) AS records, \
         avg(CASE WHEN harmful THEN 1.0 ELSE 0.0 END) AS harmful_share \
         FROM detections GROUP BY resource_id \
         ORDER BY harmful_share DESC, resource_id LIMIT 10",
    ),
    (
        "any_harm p50/p99 per geography",
        "SELECT geography, \
         approx_percentile_cont(0.5) WITHIN GROUP (ORDER BY any_harm) AS p50, \
         approx_percentile_cont(0.99) WITHIN GROUP (ORDER BY any_harm) AS p99 \
         FROM detections GROUP BY geography ORDER BY geography",
    ),
    (
        "records ⋈ detections: harmful share per model",
        "SELECT r.model, r.operation, count(*) AS records, \
         avg(CASE WHEN d.harmful THEN 1.0 ELSE 0.0 END) AS harmful_share \
         FROM records r JOIN detections d \
         ON r.geography = d.geography AND r.day = d.day AND r.request_id = d.request_id \
         GROUP BY r.model, r.operation ORDER BY harmful_share DESC, r.model, r.operation",
    ),
    (
        "one geography and day (pruned)",
        "SELECT operation, count(*) AS records, count(DISTINCT end_user) AS end_users \
         FROM records WHERE geography = 'eu' AND day = '{day}' \
         GROUP BY operation ORDER BY operation",
    ),
];

/// Writes the synthetic exports and times the queries over them; returns the report.
pub fn bench(options: &BenchOptions) -> anyhow::Result<String> {
    anyhow::ensure!(
        options.runs > 0 && options.records > 0,
        "--runs and --records must be positive"
    );
    let tmp;
    let export_dir: PathBuf = match &options.dir {
        Some(dir) => dir.join("exports"),
        None => {
            tmp = tempfile::tempdir().context("creating a temporary directory")?;
            tmp.path().join("exports")
        }
    };
    let config = AnalyticsConfig {
        export_dir: export_dir.clone(),
    };
    let exports = Exports::open(&config)?;
    let users_per_resource = (options.records / 2_000).max(100);

    let mut report = format!(
        "SQL over Parquet exports · {} records + {} detections in {} partitions per table ({} geographies × {} days) · {} resources, up to {} end users each · {}\n",
        options.records,
        options.records,
        GEOGRAPHIES.len() * usize::from(DAYS),
        GEOGRAPHIES.len(),
        DAYS,
        RESOURCES,
        users_per_resource,
        machine()
    );

    let written = write(&exports, options.records, users_per_resource)?;
    writeln!(
        report,
        "write: {} rows (2 tables) in {:.2} s of writer time: {:.0} rows/s · {} files, {:.1} MiB, {:.1} bytes/row · {:.2} s wall with row generation · peak resident memory {}",
        written.rows,
        written.writer_time.as_secs_f64(),
        written.rows as f64 / written.writer_time.as_secs_f64(),
        written.files,
        written.bytes as f64 / (1024.0 * 1024.0),
        written.bytes as f64 / written.rows.max(1) as f64,
        written.wall.as_secs_f64(),
        peak_resident(),
    )?;

    let sql = Sql::open(&config)?;
    let middle_day =
        vigil_analytics::day_name(FIRST_DAY + time::Duration::days(i64::from(DAYS / 2)));
    writeln!(
        report,
        "{:<46} {:>11} {:>13} {:>16} {:>7}",
        format!("query (median of {} runs)", options.runs),
        "latency",
        "rows scanned",
        "scanned rows/s",
        "result"
    )?;
    for (name, text) in QUERIES {
        let text = text.replace("{day}", &middle_day);
        let mut latencies = Vec::with_capacity(options.runs);
        let mut measured = None;
        for _ in 0..options.runs {
            let started = Instant::now();
            let m = sql
                .measure(&text)
                .with_context(|| format!("query `{name}`"))?;
            latencies.push(started.elapsed());
            measured = Some(m);
        }
        latencies.sort();
        let median = latencies[latencies.len() / 2];
        let m = measured.expect("at least one run");
        writeln!(
            report,
            "{:<46} {:>8.1} ms {:>13} {:>16.0} {:>7}",
            name,
            median.as_secs_f64() * 1e3,
            m.scanned_rows,
            m.scanned_rows as f64 / median.as_secs_f64(),
            m.rows
        )?;
    }
    write!(report, "peak resident memory {}", peak_resident())?;
    if options.dir.is_some() {
        write!(report, " · exports left in {}", export_dir.display())?;
    }
    Ok(report)
}

/// The process's peak resident memory so far (Linux `VmHWM`), in words.
fn peak_resident() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or("unknown".into(), |kib| {
            format!("{:.0} MiB", kib as f64 / 1024.0)
        })
}

struct WriteTotals {
    rows: u64,
    bytes: u64,
    files: usize,
    writer_time: Duration,
    wall: Duration,
}

/// Writes `records` records and as many detections, partition by partition.
fn write(
    exports: &Exports,
    records: usize,
    users_per_resource: usize,
) -> anyhow::Result<WriteTotals> {
    let mut rng = StdRng::seed_from_u64(20261123);
    let geographies: Vec<Geography> = GEOGRAPHIES
        .iter()
        .map(|g| Geography::parse(*g).expect("valid geography"))
        .collect();
    // Resource i lives in geography i % 3.
    let resources: Vec<ResourceId> = (0..RESOURCES)
        .map(|i| ResourceId::parse(format!("res-{i:03}")).expect("valid resource ID"))
        .collect();
    let partitions = geographies.len() * usize::from(DAYS);
    let mut totals = WriteTotals {
        rows: 0,
        bytes: 0,
        files: 0,
        writer_time: Duration::ZERO,
        wall: Duration::ZERO,
    };
    let started = Instant::now();
    let mut seq: u64 = 0;
    for (g, geography) in geographies.iter().enumerate() {
        let homed: Vec<usize> = (g..RESOURCES).step_by(geographies.len()).collect();
        for d in 0..DAYS {
            let p = g * usize::from(DAYS) + usize::from(d);
            let rows = records / partitions + usize::from(p < records % partitions);
            let day = FIRST_DAY + time::Duration::days(i64::from(d));
            let mut record_writer = exports.partition::<RecordRow>(geography, day)?;
            let mut detection_writer = exports.partition::<DetectionRow>(geography, day)?;
            for _ in 0..rows {
                seq += 1;
                let (record, detection) = synthetic(
                    &mut rng,
                    seq,
                    geography,
                    g,
                    day,
                    &homed,
                    &resources,
                    users_per_resource,
                );
                let began = Instant::now();
                record_writer.push(&record)?;
                detection_writer.push(&detection)?;
                totals.writer_time += began.elapsed();
            }
            let began = Instant::now();
            for written in [record_writer.finish()?, detection_writer.finish()?] {
                totals.rows += written.rows;
                totals.bytes += written.bytes;
                totals.files += usize::from(written.rows > 0);
            }
            totals.writer_time += began.elapsed();
        }
    }
    totals.wall = started.elapsed();
    Ok(totals)
}

/// One synthetic record of `geography` on `day` and its detection. Resources are picked with
/// a skew (a few busy ones), end users among the resource's own; about one resource in 37 is
/// abusive (30% harmful records against 2%).
#[allow(clippy::too_many_arguments)]
fn synthetic(
    rng: &mut StdRng,
    seq: u64,
    geography: &Geography,
    g: usize,
    day: Date,
    homed: &[usize],
    resources: &[ResourceId],
    users_per_resource: usize,
) -> (RecordRow, DetectionRow) {
    let skew: f64 = rng.gen::<f64>().powi(2);
    let resource = homed[((skew * homed.len() as f64) as usize).min(homed.len() - 1)];
    let resource_id = resources[resource].clone();
    let request_id = RequestId::parse(format!("req-{seq:010}-{:08x}", rng.gen::<u32>()))
        .expect("valid request ID");
    let event_time: OffsetDateTime = day.midnight().assume_utc()
        + time::Duration::microseconds(rng.gen_range(0..86_400_000_000i64));
    let stored_at = event_time + time::Duration::milliseconds(rng.gen_range(5..5_000));
    let deployment = match rng.gen_range(0..10) {
        0..=6 => Deployment::Standard,
        7 | 8 => Deployment::Global,
        _ => Deployment::Datazone,
    };
    let processed_in = match (deployment, rng.gen_range(0..20)) {
        (_, 0) => None,
        (Deployment::Standard, k) => Some(REGIONS[g * 2 + k % 2]),
        (_, _) => Some(REGIONS[rng.gen_range(0..REGIONS.len())]),
    };
    let operation = match rng.gen_range(0..50) {
        0..=39 => Operation::Chat,
        40..=44 => Operation::Completion,
        45..=48 => Operation::Embedding,
        _ => Operation::Image,
    };
    let model = if operation == Operation::Embedding {
        MODELS[5]
    } else {
        MODELS[rng.gen_range(0..5)]
    };
    let end_user = (rng.gen_range(0..10) != 0)
        .then(|| format!("u-{resource}-{}", rng.gen_range(0..users_per_resource)));
    let record = RecordRow {
        meta: RecordMeta {
            request_id: request_id.clone(),
            resource_id: resource_id.clone(),
            geography: geography.clone(),
            deployment,
            processed_in: processed_in.map(str::to_owned),
            timestamp: event_time,
            operation,
            model: model.to_owned(),
            end_user,
        },
        stored_at,
        content_stored: !resource.is_multiple_of(10),
    };

    let harmful_rate = if resource.is_multiple_of(37) {
        0.30
    } else {
        0.02
    };
    let harmful = rng.gen_bool(harmful_rate);
    let any_harm: f32 = if harmful {
        0.5 + 0.5 * rng.gen::<f32>()
    } else {
        0.45 * rng.gen::<f32>().powi(3)
    };
    let mut scores = HarmScores {
        any_harm,
        categories: std::array::from_fn(|_| 0.1 * any_harm * rng.gen::<f32>()),
    };
    let worst = Category::ALL[rng.gen_range(0..Category::ALL.len())];
    scores.categories[worst.index()] = any_harm * (0.8 + 0.2 * rng.gen::<f32>());
    let detection = DetectionRow {
        resource_id,
        request_id,
        stored_at,
        detection: Detection {
            scores,
            harmful,
            model: "harm-linear-v1".into(),
        },
    };
    (record, detection)
}
