//! The end of the data's life, and its analytics: the retention purge, on demand or on a
//! schedule beside ingest, and the Parquet exports kept in line with the stores.
//!
//! Exports follow the stores one way: every write, purge and deletion marks the day
//! partitions it changed ([`vigil_storage::GeoStore::export_backlog`]), and
//! [`Lifecycle::export`] rewrites exactly those from what the store holds now, so a purged or
//! deleted record leaves the exports at the next export. Partitions older than anything the
//! geography keeps are removed whatever the backlog says.

use std::ops::ControlFlow;
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tracing::{info, info_span, warn};
use vigil_analytics::{
    AnalyticsError, CaseRow, DecisionRow, DetectionRow, Exports, RecordRow, Table, VerdictRow,
    PART_FILE,
};
use vigil_analytics::{AuditRow, Row as _};
use vigil_core::ResourceRegistry;
use vigil_storage::{
    Compacted, Cutoffs, ExportPart, GeoStore, PurgeReport, RetentionConfig, StaleExport,
    StorageError, Stores,
};

/// Failures of the lifecycle stage.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    /// A store failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// An export could not be written.
    #[error(transparent)]
    Analytics(#[from] AnalyticsError),
    /// The audit log could not be read, or the audit export's marker written.
    #[error("audit export: {0}")]
    Audit(String),
}

/// What one export pass wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ExportReport {
    /// Partitions rewritten (one per table, geography and day that changed).
    pub partitions_written: usize,
    /// Partitions removed (nothing left in them, or past retention).
    pub partitions_removed: usize,
    /// Rows in the partitions written.
    pub rows: u64,
    /// The export directory.
    pub dir: String,
}

impl ExportReport {
    fn add(&mut self, other: &ExportReport) {
        self.partitions_written += other.partitions_written;
        self.partitions_removed += other.partitions_removed;
        self.rows += other.rows;
    }
}

/// What the lifecycle stage did during a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LifecycleSummary {
    /// Purges run.
    pub purges: usize,
    /// What they removed, per geography (summed over purges).
    pub purged: Vec<PurgeReport>,
    /// What the exports wrote (summed over passes).
    pub exports: ExportReport,
    /// Online compactions of stores that purges or deletions had left something in.
    pub compactions: usize,
    /// Bytes they gave back to the file system.
    pub bytes_reclaimed: u64,
    /// The longest that a compaction's swap held up the store's reads and writes, in µs.
    pub longest_pause_us: u64,
}

impl LifecycleSummary {
    fn add_compaction(&mut self, compacted: &Compacted) {
        self.compactions += 1;
        self.bytes_reclaimed += compacted.bytes_before.saturating_sub(compacted.bytes_after);
        self.longest_pause_us = self.longest_pause_us.max(compacted.paused_us);
    }

    fn add_purge(&mut self, reports: Vec<PurgeReport>) {
        self.purges += 1;
        for report in reports {
            match self
                .purged
                .iter_mut()
                .find(|p| p.geography == report.geography)
            {
                Some(total) => {
                    total.today = report.today;
                    total.data_keys += report.data_keys;
                    total.records += report.records;
                    total.windows += report.windows;
                    total.cases += report.cases;
                    total.review_tasks += report.review_tasks;
                    total.verdicts += report.verdicts;
                    total.decisions += report.decisions;
                    total.complete = report.complete;
                }
                None => self.purged.push(report),
            }
        }
    }
}

impl std::fmt::Display for LifecycleSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let records: usize = self.purged.iter().map(|p| p.records).sum();
        let keys: usize = self.purged.iter().map(|p| p.data_keys).sum();
        let cases: usize = self.purged.iter().map(|p| p.cases).sum();
        writeln!(
            f,
            "purged past retention {records:>10}   records ({keys} day keys destroyed, {cases} cases; {} purge(s))",
            self.purges
        )?;
        writeln!(
            f,
            "compacted online      {:>10}   store(s), {:.1} MiB given back (reads and writes paused {:.1} ms at most)",
            self.compactions,
            self.bytes_reclaimed as f64 / (1024.0 * 1024.0),
            self.longest_pause_us as f64 / 1000.0
        )?;
        write!(
            f,
            "analytics exported    {:>10}   rows in {} partitions ({} removed) under {}",
            self.exports.rows,
            self.exports.partitions_written,
            self.exports.partitions_removed,
            self.exports.dir
        )
    }
}

/// The retention purge and the analytics exports over a set of stores.
pub struct Lifecycle {
    stores: Arc<Stores>,
    /// Shared with whoever changes resources while the schedule runs (`vigil serve`), so a
    /// retention change applies from the next pass.
    registry: Arc<RwLock<ResourceRegistry>>,
    retention: RetentionConfig,
    exports: Exports,
    /// One export at a time: the schedule's and one asked for after a deletion may overlap.
    exporting: std::sync::Mutex<()>,
    /// The audit log whose entries the `audit` table copies, if any.
    audit_log: Option<std::path::PathBuf>,
}

impl Lifecycle {
    /// The lifecycle of `stores`, exporting into `exports`.
    pub fn new(
        stores: Arc<Stores>,
        registry: Arc<RwLock<ResourceRegistry>>,
        retention: RetentionConfig,
        exports: Exports,
    ) -> Self {
        Self {
            stores,
            registry,
            retention,
            exports,
            exporting: std::sync::Mutex::new(()),
            audit_log: None,
        }
    }

    /// The registry as it is now.
    fn registry(&self) -> ResourceRegistry {
        self.registry
            .read()
            .expect("registry lock poisoned")
            .clone()
    }

    /// The registry this lifecycle reads, to share with what changes it.
    pub fn registry_handle(&self) -> Arc<RwLock<ResourceRegistry>> {
        self.registry.clone()
    }

    /// Also exports the audit log at `path` into the `audit` table.
    pub fn with_audit_log(mut self, path: std::path::PathBuf) -> Self {
        self.audit_log = Some(path);
        self
    }

    /// Purges every geography of what is past retention as of the stores' clock.
    /// `progress` sees the running totals after each chunk, and may stop the purge.
    pub fn purge(
        &self,
        progress: &mut dyn FnMut(&PurgeReport) -> ControlFlow<()>,
    ) -> Result<Vec<PurgeReport>, LifecycleError> {
        let _span = info_span!("purge").entered();
        let started = std::time::Instant::now();
        let purged = self
            .stores
            .purge(&self.retention, &self.registry(), progress);
        let reports = finished(Job::Purge, purged)?;
        metrics::histogram!("vigil_purge_duration_seconds").record(started.elapsed().as_secs_f64());
        for r in &reports {
            metrics::counter!("vigil_purge_records_total", "geography" => r.geography.clone())
                .increment(r.records as u64);
            info!(
                geography = %r.geography,
                today = %r.today,
                data_keys = r.data_keys,
                records = r.records,
                windows = r.windows,
                cases = r.cases,
                complete = r.complete,
                "Purged what is past retention."
            );
        }
        Ok(reports)
    }

    /// Rewrites the export partitions that changed since the last export, and removes those
    /// past every resource's retention.
    pub fn export(&self) -> Result<ExportReport, LifecycleError> {
        let report = finished(Job::Export, self.export_now())?;
        metrics::counter!("vigil_export_rows_total").increment(report.rows);
        Ok(report)
    }

    fn export_now(&self) -> Result<ExportReport, LifecycleError> {
        let _span = info_span!("export").entered();
        let _one_at_a_time = self.exporting.lock().expect("lock poisoned");
        let mut report = ExportReport {
            dir: self.exports.dir().display().to_string(),
            ..ExportReport::default()
        };
        let today = self.stores.clock().today();
        for geography in self.stores.geographies_on_disk()? {
            let store = self.stores.geo(&geography)?;
            for stale in store.export_backlog()? {
                report.add(&self.export_partition(&store, &stale)?);
                store.exported(&stale)?;
            }
            let cutoffs = Cutoffs::new(&self.retention, &self.registry(), &geography, today);
            let first_kept = cutoffs.first_kept_by_geography().date();
            for table in Table::ALL {
                for (geo, day) in self.exports.partitions(table)? {
                    if geo == geography
                        && day < first_kept
                        && self.exports.remove(table, &geo, day)?
                    {
                        report.partitions_removed += 1;
                    }
                }
            }
        }
        self.export_audit(&mut report)?;
        Ok(report)
    }

    /// Brings the `audit` table up to date with the audit log: rewrites the partitions of the
    /// days (and geographies) that gained entries since the last export, which `audit/.seq`
    /// remembers. The log is append-only, so no other partition can have changed.
    ///
    /// The log is streamed twice, never held in memory: once to find the partitions that
    /// changed, once to write their rows.
    fn export_audit(&self, report: &mut ExportReport) -> Result<(), LifecycleError> {
        let Some(log) = &self.audit_log else {
            return Ok(());
        };
        // Only a regular file is read (a device such as /dev/full reads without end).
        if !std::fs::metadata(log).is_ok_and(|m| m.is_file()) {
            return Ok(());
        }
        let marker = self.exports.table_dir(Table::Audit).join(".seq");
        let exported: u64 = std::fs::read_to_string(&marker)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        let registry = self.registry();
        let mut last = 0;
        let mut stale = std::collections::BTreeMap::new();
        self.audit_rows(log, &registry, |row| {
            last = last.max(row.seq);
            if row.seq > exported {
                stale.insert((row.geography.clone(), row.day()), None);
            }
            Ok(())
        })?;
        if !stale.is_empty() {
            self.audit_rows(log, &registry, |row| {
                if let Some(part) = stale.get_mut(&(row.geography.clone(), row.day())) {
                    let part = match part {
                        Some(part) => part,
                        None => part.insert(
                            self.exports
                                .partition::<AuditRow>(&row.geography, row.day())?,
                        ),
                    };
                    part.push(&row)?;
                }
                Ok(())
            })?;
            for part in stale.into_values().flatten() {
                report.partitions_written += 1;
                report.rows += part.finish()?.rows;
            }
        }
        if last > exported {
            let io = |e: std::io::Error| LifecycleError::Audit(format!("{}: {e}", log.display()));
            std::fs::create_dir_all(self.exports.table_dir(Table::Audit)).map_err(io)?;
            std::fs::write(&marker, last.to_string()).map_err(io)?;
        }
        Ok(())
    }

    /// Calls `each` with the row of every entry of the audit log at `log`, in order, reading
    /// one line at a time.
    fn audit_rows(
        &self,
        log: &std::path::Path,
        registry: &ResourceRegistry,
        mut each: impl FnMut(AuditRow) -> Result<(), LifecycleError>,
    ) -> Result<(), LifecycleError> {
        use std::io::BufRead;
        let io = |e: std::io::Error| LifecycleError::Audit(format!("{}: {e}", log.display()));
        let file = match std::fs::File::open(log) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io(e)),
        };
        let global = vigil_core::Geography::parse("global").expect("a valid geography");
        let mut reader = std::io::BufReader::new(file);
        let mut line = Vec::new();
        loop {
            line.clear();
            if reader.read_until(b'\n', &mut line).map_err(io)? == 0 {
                return Ok(());
            }
            // A line that does not parse is `vigil audit verify`'s to report, not the export's.
            let Ok(entry) = serde_json::from_slice::<vigil_access::AuditEntry>(&line) else {
                continue;
            };
            let Ok(at) = OffsetDateTime::parse(&entry.at, &Rfc3339) else {
                continue;
            };
            let e = entry.event;
            let geography = e
                .resource_id
                .as_deref()
                .and_then(|r| registry.get(r))
                .map_or_else(|| global.clone(), |r| r.geography.clone());
            each(AuditRow {
                geography,
                seq: entry.seq,
                at,
                actor: e.actor,
                role: e.role,
                action: e.action,
                outcome: e.outcome.map(|o| o.name().to_owned()),
                reason: e.reason,
                case_id: e.case_id,
                request_id: e.request_id,
                resource_id: e.resource_id,
                access_request: e.access_request,
                workstation: e.workstation,
            })?;
        }
    }

    /// Rewrites one changed day partition from what the store holds now.
    fn export_partition(
        &self,
        store: &GeoStore,
        stale: &StaleExport,
    ) -> Result<ExportReport, LifecycleError> {
        let geography = store.geography();
        let day = stale.day.date();
        let mut report = ExportReport::default();
        // A partition left empty is removed; count it only if there was one to remove.
        let existed = |table: Table| {
            self.exports
                .partition_dir(table, geography, day)
                .join(PART_FILE)
                .is_file()
        };
        let mut tally = |rows: u64, existed: bool| {
            if rows > 0 {
                report.partitions_written += 1;
                report.rows += rows;
            } else if existed {
                report.partitions_removed += 1;
            }
        };
        match stale.part {
            ExportPart::Records => {
                let mut records = self.exports.partition::<RecordRow>(geography, day)?;
                let mut detections = self.exports.partition::<DetectionRow>(geography, day)?;
                let mut failed = None;
                store.records_of_day(stale.day, |r| {
                    if failed.is_some() {
                        return;
                    }
                    let pushed = (|| {
                        if let Some(detection) = r.detection {
                            detections.push(&DetectionRow {
                                resource_id: r.meta.resource_id.clone(),
                                request_id: r.meta.request_id.clone(),
                                stored_at: r.stored_at,
                                detection,
                            })?;
                        }
                        records.push(&RecordRow {
                            meta: r.meta,
                            stored_at: r.stored_at,
                            content_stored: r.content_stored,
                        })
                    })();
                    failed = pushed.err();
                })?;
                if let Some(e) = failed {
                    return Err(e.into());
                }
                let had = (existed(Table::Records), existed(Table::Detections));
                tally(records.finish()?.rows, had.0);
                tally(detections.finish()?.rows, had.1);
            }
            ExportPart::Cases => {
                let mut cases = self.exports.partition::<CaseRow>(geography, day)?;
                let mut verdicts = self.exports.partition::<VerdictRow>(geography, day)?;
                let mut decisions = self.exports.partition::<DecisionRow>(geography, day)?;
                for (case, flag_published) in store.cases_of_day(stale.day)? {
                    for verdict in store.verdicts(Some(&case.case_id))? {
                        verdicts.push(&VerdictRow {
                            resource_id: case.resource_id.clone(),
                            verdict,
                        })?;
                    }
                    for decision in store.decisions(Some(&case.case_id))? {
                        decisions.push(&DecisionRow { decision })?;
                    }
                    cases.push(&CaseRow {
                        case,
                        flag_published,
                    })?;
                }
                let had = (
                    existed(Table::Cases),
                    existed(Table::Verdicts),
                    existed(Table::Decisions),
                );
                tally(cases.finish()?.rows, had.0);
                tally(verdicts.finish()?.rows, had.1);
                tally(decisions.finish()?.rows, had.2);
            }
        }
        Ok(report)
    }

    /// Purges, compacts what purges and deletions left, then exports.
    fn pass(&self, summary: &Mutex<LifecycleSummary>) -> Result<(), LifecycleError> {
        let purged = self.purge(&mut |_| ControlFlow::Continue(()))?;
        summary.lock().expect("lock poisoned").add_purge(purged);
        for compacted in self.compact()? {
            summary
                .lock()
                .expect("lock poisoned")
                .add_compaction(&compacted);
        }
        self.export_into(summary)
    }

    /// Compacts, while they stay in use, the stores that purges, deletions or content strips
    /// have removed entries from since they were last compacted.
    pub fn compact(&self) -> Result<Vec<Compacted>, LifecycleError> {
        let _span = info_span!("compact").entered();
        let mut done = Vec::new();
        for store in self.stores.on_disk()? {
            if store.removed_since_compaction() == 0 {
                continue;
            }
            let compacted = self.stores.compact(store.geography())?;
            info!(
                geography = %compacted.geography,
                bytes_before = compacted.bytes_before,
                bytes_after = compacted.bytes_after,
                paused_us = compacted.paused_us,
                "Compacted a store online."
            );
            done.push(compacted);
        }
        Ok(done)
    }

    fn export_into(&self, summary: &Mutex<LifecycleSummary>) -> Result<(), LifecycleError> {
        let exported = self.export()?;
        let mut summary = summary.lock().expect("lock poisoned");
        summary.exports.dir.clone_from(&exported.dir);
        summary.exports.add(&exported);
        Ok(())
    }

    /// Starts a thread that purges and exports now and then every `interval`, until
    /// [`Scheduled::finish`]. Failures are logged and retried at the next interval: a purge
    /// that fails is finished by the next one.
    pub fn schedule(self: Arc<Self>, interval: Duration) -> Scheduled {
        let stop = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        let summary = Arc::new(Mutex::new(LifecycleSummary::default()));
        let thread = {
            let (stop, summary, lifecycle) = (stop.clone(), summary.clone(), self.clone());
            std::thread::Builder::new()
                .name("lifecycle".into())
                .spawn(move || loop {
                    let started = Instant::now();
                    if let Err(error) = lifecycle.pass(&summary) {
                        warn!(%error, "The scheduled purge or export failed; it runs again at the next interval.");
                    }
                    let (lock, wake) = &*stop;
                    let mut stopped = lock.lock().expect("lock poisoned");
                    while !*stopped {
                        let left = interval.saturating_sub(started.elapsed());
                        if left.is_zero() {
                            break;
                        }
                        stopped = wake.wait_timeout(stopped, left).expect("lock poisoned").0;
                    }
                    if *stopped {
                        return;
                    }
                })
                .expect("spawning the lifecycle thread")
        };
        Scheduled {
            lifecycle: self,
            stop,
            summary,
            thread: Some(thread),
        }
    }
}

/// A running purge-and-export schedule.
pub struct Scheduled {
    lifecycle: Arc<Lifecycle>,
    stop: Arc<(Mutex<bool>, std::sync::Condvar)>,
    summary: Arc<Mutex<LifecycleSummary>>,
    thread: Option<JoinHandle<()>>,
}

impl Scheduled {
    /// Stops the schedule (waiting for a pass under way), exports what the run changed since
    /// the last pass, and returns what the schedule did.
    pub fn finish(mut self) -> Result<LifecycleSummary, LifecycleError> {
        self.stop_thread();
        self.lifecycle.export_into(&self.summary)?;
        Ok(self.summary.lock().expect("lock poisoned").clone())
    }

    fn stop_thread(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        let (lock, wake) = &*self.stop;
        *lock.lock().expect("lock poisoned") = true;
        wake.notify_all();
        if thread.join().is_err() {
            warn!("The lifecycle thread panicked.");
        }
    }
}

impl Drop for Scheduled {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

/// A pass whose runs the metrics count.
#[derive(Clone, Copy)]
enum Job {
    Purge,
    Export,
}

/// Counts a purge or export pass by outcome, and notes when one last succeeded.
fn finished<T, E>(job: Job, result: Result<T, E>) -> Result<T, E> {
    let (runs, last_success) = match job {
        Job::Purge => (
            "vigil_purge_runs_total",
            "vigil_purge_last_success_timestamp_seconds",
        ),
        Job::Export => (
            "vigil_export_runs_total",
            "vigil_export_last_success_timestamp_seconds",
        ),
    };
    let outcome = if result.is_ok() { "ok" } else { "failed" };
    metrics::counter!(runs, "outcome" => outcome).increment(1);
    if result.is_ok() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        metrics::gauge!(last_success).set(now.as_secs_f64());
    }
    result
}
