//! Timing helpers the harnesses share: the machine in words, runs of work spread over
//! threads, and the median line of a throughput report.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use vigil_pipeline::Percentiles;

/// The machine, in words, for reports.
pub fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{cores} cores, {cpu}")
}

/// Runs `work` over `items` items `runs` times on `threads` threads that take chunks of `chunk`
/// items from a common counter (`work` gets each chunk's index range). Returns each run's rate
/// in items/s and the latency of every chunk of every run.
pub fn timed_runs(
    runs: usize,
    threads: usize,
    items: usize,
    chunk: usize,
    work: impl Fn(std::ops::Range<usize>) -> anyhow::Result<()> + Sync,
) -> anyhow::Result<(Vec<f64>, Vec<Duration>)> {
    let chunk = chunk.max(1);
    let mut rates = Vec::new();
    let latencies = Mutex::new(Vec::new());
    for _ in 0..runs {
        let next = AtomicUsize::new(0);
        let started = Instant::now();
        std::thread::scope(|scope| -> anyhow::Result<()> {
            let workers: Vec<_> = (0..threads.max(1))
                .map(|_| {
                    scope.spawn(|| -> anyhow::Result<()> {
                        let mut mine: Vec<Duration> = Vec::new();
                        loop {
                            let start = next.fetch_add(chunk, Ordering::Relaxed);
                            if start >= items {
                                break;
                            }
                            let began = Instant::now();
                            work(start..(start + chunk).min(items))?;
                            mine.push(began.elapsed());
                        }
                        latencies.lock().expect("lock poisoned").extend(mine);
                        Ok(())
                    })
                })
                .collect();
            for worker in workers {
                worker.join().expect("a bench worker panicked")?;
            }
            Ok(())
        })?;
        rates.push(items as f64 / started.elapsed().as_secs_f64());
    }
    Ok((rates, latencies.into_inner().expect("lock poisoned")))
}

/// The last line of a throughput report: the median rate of the runs and the latency
/// percentiles of all their batches.
pub fn median_line(rates: &mut [f64], latencies: &mut [Duration], unit: &str) -> String {
    rates.sort_by(f64::total_cmp);
    let latency = Percentiles::of(latencies);
    format!(
        "median {:>8.0} {unit}/s · batch latency p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        rates.get(rates.len() / 2).copied().unwrap_or(0.0),
        latency.p50_ms,
        latency.p90_ms,
        latency.p99_ms,
        latency.max_ms
    )
}

/// The median of `rates` (the upper one of an even count), sorting them.
pub fn median(rates: &mut [f64]) -> f64 {
    rates.sort_by(f64::total_cmp);
    rates[rates.len() / 2]
}
