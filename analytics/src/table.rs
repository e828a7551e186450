//! The analytics tables: their schemas, the plain row structs that feed them, and how
//! each row becomes Arrow columns.
//!
//! Rows are built from `vigil_core` metadata types only. No row struct can hold
//! [`vigil_core::Content`], the verdict row drops the assessment's free-text `rationale`
//! (written by a model that read the content), and the decision row drops the reviewer's
//! note (written by a person who read it): all are left out by construction, not by a filter
//! that could be forgotten.
//!
//! The schemas here are the *file* schemas. Every table also has the partition columns
//! [`PARTITION_COLUMNS`] (`geography`, `day`), which exist only in the directory names of the
//! export (hive style) and are added by readers.

use std::fmt;
use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{
    ArrayBuilder, ArrayRef, BooleanBuilder, Float32Builder, ListBuilder, StringBuilder,
    TimestampMicrosecondBuilder, UInt32Builder, UInt64Builder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use time::{Date, OffsetDateTime, UtcOffset};
use vigil_core::flag::FlagSubject;
use vigil_core::{
    Case, Category, Decision, Detection, Geography, RecordMeta, RequestId, ResourceId, Route,
    Verdict,
};

/// The hive partition columns of every table, in directory order. They are `Utf8`; `day` is a
/// UTC date written `YYYY-MM-DD`.
pub const PARTITION_COLUMNS: [&str; 2] = ["geography", "day"];

/// One of the analytics tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    /// `records`: one row per stored record's metadata.
    Records,
    /// `detections`: one row per classifier detection (scores only).
    Detections,
    /// `cases`: one row per case opened by recurring-abuse detection.
    Cases,
    /// `verdicts`: one row per LLM review verdict, without its rationale.
    Verdicts,
    /// `audit`: one row per audit log entry (who, what, outcome, IDs; never free text).
    Audit,
    /// `decisions`: one row per human reviewer decision, without its note.
    Decisions,
}

impl Table {
    /// Every table, in a fixed order.
    pub const ALL: [Table; 6] = [
        Self::Records,
        Self::Detections,
        Self::Cases,
        Self::Verdicts,
        Self::Audit,
        Self::Decisions,
    ];

    /// The table's name in SQL and in the export directory.
    pub fn name(self) -> &'static str {
        match self {
            Self::Records => "records",
            Self::Detections => "detections",
            Self::Cases => "cases",
            Self::Verdicts => "verdicts",
            Self::Audit => "audit",
            Self::Decisions => "decisions",
        }
    }

    /// The schema of the table's Parquet files (without the partition columns).
    pub fn schema(self) -> SchemaRef {
        static SCHEMAS: LazyLock<[SchemaRef; 6]> = LazyLock::new(|| {
            [
                records_schema(),
                detections_schema(),
                cases_schema(),
                verdicts_schema(),
                audit_schema(),
                decisions_schema(),
            ]
            .map(Arc::new)
        });
        SCHEMAS[self as usize].clone()
    }

    /// The schema a query sees: the file schema, then `geography` and `day` (both `Utf8`).
    pub fn query_schema(self) -> SchemaRef {
        let mut fields: Vec<Field> = self
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields.extend(PARTITION_COLUMNS.map(|name| Field::new(name, DataType::Utf8, false)));
        Arc::new(Schema::new(fields))
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

fn utf8(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Utf8, nullable)
}

fn timestamp(name: &str) -> Field {
    Field::new(
        name,
        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        false,
    )
}

fn list_of_utf8(name: &str) -> Field {
    // The item field as `ListBuilder` makes it: named `item`, nullable.
    Field::new(
        name,
        DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true))),
        false,
    )
}

fn records_schema() -> Schema {
    Schema::new(vec![
        utf8("resource_id", false),
        utf8("request_id", false),
        utf8("end_user", true),
        timestamp("event_time"),
        timestamp("stored_at"),
        utf8("deployment", false),
        utf8("processed_in", true),
        utf8("operation", false),
        utf8("model", false),
        Field::new("content_stored", DataType::Boolean, false),
    ])
}

fn detections_schema() -> Schema {
    let mut fields = vec![
        utf8("resource_id", false),
        utf8("request_id", false),
        timestamp("stored_at"),
        Field::new("harmful", DataType::Boolean, false),
        Field::new("any_harm", DataType::Float32, false),
    ];
    fields.extend(
        Category::ALL
            .iter()
            .map(|c| Field::new(c.name(), DataType::Float32, false)),
    );
    fields.push(utf8("classifier_model", false));
    Schema::new(fields)
}

/// The [`vigil_core::CaseSignals`] counters, as columns.
const SIGNAL_COUNTS: [&str; 6] = [
    "records",
    "harmful",
    "previous_harmful",
    "near_duplicates",
    "template_hits",
    "escalations",
];

/// The [`vigil_core::CaseSignals`] score components, as columns.
const SIGNAL_SCORES: [&str; 4] = ["frequency", "severity", "intent", "trend"];

fn cases_schema() -> Schema {
    let mut fields = vec![
        utf8("case_id", false),
        timestamp("opened_at"),
        utf8("resource_id", false),
        utf8("subject", false),
        utf8("end_user", true),
        timestamp("window_start"),
        timestamp("window_end"),
        Field::new("abuse_score", DataType::Float32, false),
        list_of_utf8("categories"),
    ];
    fields.extend(SIGNAL_COUNTS.map(|n| Field::new(n, DataType::UInt32, false)));
    fields.extend(SIGNAL_SCORES.map(|n| Field::new(n, DataType::Float32, false)));
    fields.extend([
        list_of_utf8("pattern_families"),
        Field::new("sample_size", DataType::UInt32, false),
        list_of_utf8("sample_request_ids"),
        utf8("policy_version", false),
        utf8("flag_id", false),
        Field::new("flag_published", DataType::Boolean, false),
    ]);
    Schema::new(fields)
}

fn verdicts_schema() -> Schema {
    Schema::new(vec![
        utf8("case_id", false),
        utf8("request_id", false),
        utf8("resource_id", false),
        timestamp("reviewed_at"),
        utf8("route", false),
        utf8("reason", false),
        Field::new("violation", DataType::Boolean, true),
        list_of_utf8("categories"),
        utf8("severity", true),
        Field::new("confidence", DataType::Float32, true),
        utf8("model", false),
        utf8("policy_version", false),
        Field::new("attempts", DataType::UInt32, false),
        Field::new("in_flight", DataType::Boolean, false),
    ])
}

fn decisions_schema() -> Schema {
    Schema::new(vec![
        utf8("decision_id", false),
        utf8("case_id", false),
        utf8("request_id", true),
        utf8("resource_id", false),
        utf8("reviewer", false),
        utf8("decision", false),
        timestamp("decided_at"),
        utf8("access_request", false),
    ])
}

fn audit_schema() -> Schema {
    Schema::new(vec![
        Field::new("seq", DataType::UInt64, false),
        timestamp("at"),
        utf8("actor", false),
        utf8("role", true),
        utf8("action", false),
        utf8("outcome", true),
        utf8("reason", true),
        utf8("case_id", true),
        utf8("request_id", true),
        utf8("resource_id", true),
        utf8("access_request", true),
        utf8("workstation", true),
    ])
}

/// An audit log entry, as the `audit` table holds it: its structured fields only (a
/// reviewer's stated reason and other free text stay in the log).
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRow {
    /// The partition's geography: the resource's home, or `global` for entries about no
    /// resource.
    pub geography: Geography,
    /// The entry's sequence number.
    pub seq: u64,
    /// When it was written.
    pub at: OffsetDateTime,
    /// Who.
    pub actor: String,
    /// Their role.
    pub role: Option<String>,
    /// What.
    pub action: String,
    /// `granted`, `refused` or `done`.
    pub outcome: Option<String>,
    /// A refusal's code.
    pub reason: Option<String>,
    /// The case involved.
    pub case_id: Option<String>,
    /// The request ID involved.
    pub request_id: Option<String>,
    /// The resource involved.
    pub resource_id: Option<String>,
    /// The access request involved.
    pub access_request: Option<String>,
    /// The workstation involved.
    pub workstation: Option<String>,
}

/// Column builders of the `audit` table.
#[doc(hidden)]
pub struct AuditColumns {
    seq: UInt64Builder,
    at: TimestampMicrosecondBuilder,
    text: [StringBuilder; 10],
}

impl sealed::Sealed for AuditRow {}

impl Row for AuditRow {
    const TABLE: Table = Table::Audit;
    type Columns = AuditColumns;

    fn geography(&self) -> Option<&Geography> {
        Some(&self.geography)
    }

    fn day(&self) -> Date {
        utc_day(self.at)
    }
}

impl sealed::Columns<AuditRow> for AuditColumns {
    fn with_capacity(rows: usize) -> Self {
        Self {
            seq: UInt64Builder::with_capacity(rows),
            at: timestamps(rows),
            text: std::array::from_fn(|_| strings(rows)),
        }
    }

    fn push(&mut self, row: &AuditRow) {
        self.seq.append_value(row.seq);
        self.at.append_value(micros(row.at));
        let values = [
            Some(row.actor.as_str()),
            row.role.as_deref(),
            Some(row.action.as_str()),
            row.outcome.as_deref(),
            row.reason.as_deref(),
            row.case_id.as_deref(),
            row.request_id.as_deref(),
            row.resource_id.as_deref(),
            row.access_request.as_deref(),
            row.workstation.as_deref(),
        ];
        for (builder, value) in self.text.iter_mut().zip(values) {
            builder.append_option(value);
        }
    }

    fn len(&self) -> usize {
        self.seq.len()
    }

    fn finish(&mut self) -> Vec<ArrayRef> {
        let mut columns: Vec<ArrayRef> =
            vec![Arc::new(self.seq.finish()), Arc::new(self.at.finish())];
        columns.extend(
            self.text
                .iter_mut()
                .map(|b| Arc::new(b.finish()) as ArrayRef),
        );
        columns
    }
}

/// A record's metadata, as the `records` table holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordRow {
    /// IDs, placement, event time and model (never content).
    pub meta: RecordMeta,
    /// When vigil stored the record.
    pub stored_at: OffsetDateTime,
    /// Whether its content was stored (encrypted) or only its metadata.
    pub content_stored: bool,
}

/// A classifier detection, as the `detections` table holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct DetectionRow {
    /// The record's resource.
    pub resource_id: ResourceId,
    /// The record.
    pub request_id: RequestId,
    /// When the detection was stored with its record.
    pub stored_at: OffsetDateTime,
    /// Scores, the harmful flag and the classifier model.
    pub detection: Detection,
}

/// A case, as the `cases` table holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseRow {
    /// The case.
    pub case: Case,
    /// Whether its flag event has been published (its outbox entry is gone).
    pub flag_published: bool,
}

/// A review verdict, as the `verdicts` table holds it (its rationale is never written).
#[derive(Debug, Clone, PartialEq)]
pub struct VerdictRow {
    /// The reviewed record's resource (a verdict alone does not name it).
    pub resource_id: ResourceId,
    /// The verdict.
    pub verdict: Verdict,
}

/// A human reviewer's decision, as the `decisions` table holds it (its note is never
/// written).
#[derive(Debug, Clone, PartialEq)]
pub struct DecisionRow {
    /// The decision.
    pub decision: Decision,
}

/// A row of one of the tables: what an export partition is made of.
///
/// Implemented by this crate's row structs only.
pub trait Row: sealed::Sealed + Sized {
    /// The table the row belongs to.
    const TABLE: Table;

    /// The Arrow column builders of the table.
    #[doc(hidden)]
    type Columns: sealed::Columns<Self>;

    /// The geography the row itself names, if it names one (records and cases do); a row
    /// pushed to a partition of another geography is refused.
    fn geography(&self) -> Option<&Geography>;

    /// The UTC day the row naturally belongs to: a record's event time, a detection's
    /// storage time, a case's opening time, a verdict's review time. Callers partition by
    /// this day unless they have a reason not to.
    fn day(&self) -> Date;
}

pub(crate) mod sealed {
    use datafusion::arrow::array::ArrayRef;

    /// Only this crate's row structs are [`super::Row`]s.
    pub trait Sealed {}

    /// Column builders for rows of type `R`.
    pub trait Columns<R>: Send {
        /// Empty builders with room for `rows` rows.
        fn with_capacity(rows: usize) -> Self;
        /// Appends one row.
        fn push(&mut self, row: &R);
        /// Rows appended since the last [`Columns::finish`].
        fn len(&self) -> usize;
        /// The columns, in schema order; the builders are left empty.
        fn finish(&mut self) -> Vec<ArrayRef>;
    }
}

/// The UTC date of `t`.
pub(crate) fn utc_day(t: OffsetDateTime) -> Date {
    t.to_offset(UtcOffset::UTC).date()
}

/// Microseconds since the Unix epoch (rounded down).
fn micros(t: OffsetDateTime) -> i64 {
    // `time` keeps years within ±9999, well inside i64 microseconds.
    (t.unix_timestamp_nanos().div_euclid(1_000)) as i64
}

fn timestamps(rows: usize) -> TimestampMicrosecondBuilder {
    TimestampMicrosecondBuilder::with_capacity(rows).with_timezone("UTC")
}

fn strings(rows: usize) -> StringBuilder {
    StringBuilder::with_capacity(rows, rows * 16)
}

fn string_lists(rows: usize) -> ListBuilder<StringBuilder> {
    ListBuilder::with_capacity(StringBuilder::new(), rows)
}

fn push_list<'a>(
    builder: &mut ListBuilder<StringBuilder>,
    items: impl IntoIterator<Item = &'a str>,
) {
    for item in items {
        builder.values().append_value(item);
    }
    builder.append(true);
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

macro_rules! finish {
    ($($builder:expr),* $(,)?) => {
        vec![$(Arc::new($builder.finish()) as ArrayRef),*]
    };
}

#[doc(hidden)]
pub struct RecordColumns {
    resource_id: StringBuilder,
    request_id: StringBuilder,
    end_user: StringBuilder,
    event_time: TimestampMicrosecondBuilder,
    stored_at: TimestampMicrosecondBuilder,
    deployment: StringBuilder,
    processed_in: StringBuilder,
    operation: StringBuilder,
    model: StringBuilder,
    content_stored: BooleanBuilder,
}

impl sealed::Sealed for RecordRow {}

impl Row for RecordRow {
    const TABLE: Table = Table::Records;
    type Columns = RecordColumns;

    fn geography(&self) -> Option<&Geography> {
        Some(&self.meta.geography)
    }

    fn day(&self) -> Date {
        utc_day(self.meta.timestamp)
    }
}

impl sealed::Columns<RecordRow> for RecordColumns {
    fn with_capacity(rows: usize) -> Self {
        Self {
            resource_id: strings(rows),
            request_id: strings(rows),
            end_user: strings(rows),
            event_time: timestamps(rows),
            stored_at: timestamps(rows),
            deployment: strings(rows),
            processed_in: strings(rows),
            operation: strings(rows),
            model: strings(rows),
            content_stored: BooleanBuilder::with_capacity(rows),
        }
    }

    fn push(&mut self, row: &RecordRow) {
        let meta = &row.meta;
        self.resource_id.append_value(meta.resource_id.as_str());
        self.request_id.append_value(meta.request_id.as_str());
        self.end_user.append_option(meta.end_user.as_deref());
        self.event_time.append_value(micros(meta.timestamp));
        self.stored_at.append_value(micros(row.stored_at));
        self.deployment.append_value(meta.deployment.as_str());
        self.processed_in
            .append_option(meta.processed_in.as_deref());
        self.operation.append_value(meta.operation.as_str());
        self.model.append_value(&meta.model);
        self.content_stored.append_value(row.content_stored);
    }

    fn len(&self) -> usize {
        self.content_stored.len()
    }

    fn finish(&mut self) -> Vec<ArrayRef> {
        finish![
            self.resource_id,
            self.request_id,
            self.end_user,
            self.event_time,
            self.stored_at,
            self.deployment,
            self.processed_in,
            self.operation,
            self.model,
            self.content_stored,
        ]
    }
}

#[doc(hidden)]
pub struct DetectionColumns {
    resource_id: StringBuilder,
    request_id: StringBuilder,
    stored_at: TimestampMicrosecondBuilder,
    harmful: BooleanBuilder,
    any_harm: Float32Builder,
    categories: [Float32Builder; Category::ALL.len()],
    classifier_model: StringBuilder,
}

impl sealed::Sealed for DetectionRow {}

impl Row for DetectionRow {
    const TABLE: Table = Table::Detections;
    type Columns = DetectionColumns;

    fn geography(&self) -> Option<&Geography> {
        None
    }

    fn day(&self) -> Date {
        utc_day(self.stored_at)
    }
}

impl sealed::Columns<DetectionRow> for DetectionColumns {
    fn with_capacity(rows: usize) -> Self {
        Self {
            resource_id: strings(rows),
            request_id: strings(rows),
            stored_at: timestamps(rows),
            harmful: BooleanBuilder::with_capacity(rows),
            any_harm: Float32Builder::with_capacity(rows),
            categories: std::array::from_fn(|_| Float32Builder::with_capacity(rows)),
            classifier_model: strings(rows),
        }
    }

    fn push(&mut self, row: &DetectionRow) {
        let detection = &row.detection;
        self.resource_id.append_value(row.resource_id.as_str());
        self.request_id.append_value(row.request_id.as_str());
        self.stored_at.append_value(micros(row.stored_at));
        self.harmful.append_value(detection.harmful);
        self.any_harm.append_value(detection.scores.any_harm);
        for (builder, score) in self.categories.iter_mut().zip(detection.scores.categories) {
            builder.append_value(score);
        }
        self.classifier_model.append_value(&detection.model);
    }

    fn len(&self) -> usize {
        self.harmful.len()
    }

    fn finish(&mut self) -> Vec<ArrayRef> {
        let mut columns = finish![
            self.resource_id,
            self.request_id,
            self.stored_at,
            self.harmful,
            self.any_harm,
        ];
        columns.extend(
            self.categories
                .iter_mut()
                .map(|b| Arc::new(b.finish()) as ArrayRef),
        );
        columns.push(Arc::new(self.classifier_model.finish()));
        columns
    }
}

#[doc(hidden)]
pub struct CaseColumns {
    case_id: StringBuilder,
    opened_at: TimestampMicrosecondBuilder,
    resource_id: StringBuilder,
    subject: StringBuilder,
    end_user: StringBuilder,
    window_start: TimestampMicrosecondBuilder,
    window_end: TimestampMicrosecondBuilder,
    abuse_score: Float32Builder,
    categories: ListBuilder<StringBuilder>,
    counts: [UInt32Builder; SIGNAL_COUNTS.len()],
    scores: [Float32Builder; SIGNAL_SCORES.len()],
    pattern_families: ListBuilder<StringBuilder>,
    sample_size: UInt32Builder,
    sample_request_ids: ListBuilder<StringBuilder>,
    policy_version: StringBuilder,
    flag_id: StringBuilder,
    flag_published: BooleanBuilder,
}

impl sealed::Sealed for CaseRow {}

impl Row for CaseRow {
    const TABLE: Table = Table::Cases;
    type Columns = CaseColumns;

    fn geography(&self) -> Option<&Geography> {
        Some(&self.case.geography)
    }

    fn day(&self) -> Date {
        utc_day(self.case.opened_at)
    }
}

impl sealed::Columns<CaseRow> for CaseColumns {
    fn with_capacity(rows: usize) -> Self {
        Self {
            case_id: strings(rows),
            opened_at: timestamps(rows),
            resource_id: strings(rows),
            subject: strings(rows),
            end_user: strings(rows),
            window_start: timestamps(rows),
            window_end: timestamps(rows),
            abuse_score: Float32Builder::with_capacity(rows),
            categories: string_lists(rows),
            counts: std::array::from_fn(|_| UInt32Builder::with_capacity(rows)),
            scores: std::array::from_fn(|_| Float32Builder::with_capacity(rows)),
            pattern_families: string_lists(rows),
            sample_size: UInt32Builder::with_capacity(rows),
            sample_request_ids: string_lists(rows),
            policy_version: strings(rows),
            flag_id: strings(rows),
            flag_published: BooleanBuilder::with_capacity(rows),
        }
    }

    fn push(&mut self, row: &CaseRow) {
        let case = &row.case;
        self.case_id.append_value(&case.case_id);
        self.opened_at.append_value(micros(case.opened_at));
        self.resource_id.append_value(case.resource_id.as_str());
        match &case.subject {
            FlagSubject::EndUser { end_user } => {
                self.subject.append_value("end_user");
                self.end_user.append_value(end_user);
            }
            FlagSubject::Resource => {
                self.subject.append_value("resource");
                self.end_user.append_null();
            }
        }
        self.window_start.append_value(micros(case.window.start));
        self.window_end.append_value(micros(case.window.end));
        self.abuse_score.append_value(case.scores.abuse);
        push_list(
            &mut self.categories,
            case.categories.iter().map(|c| c.name()),
        );
        let s = &case.signals;
        let counts = [
            s.records,
            s.harmful,
            s.previous_harmful,
            s.near_duplicates,
            s.template_hits,
            s.escalations,
        ];
        for (builder, value) in self.counts.iter_mut().zip(counts) {
            builder.append_value(value);
        }
        let scores = [s.frequency, s.severity, s.intent, s.trend];
        for (builder, value) in self.scores.iter_mut().zip(scores) {
            builder.append_value(value);
        }
        push_list(
            &mut self.pattern_families,
            case.pattern_families.iter().map(String::as_str),
        );
        self.sample_size.append_value(count(case.sample.len()));
        push_list(
            &mut self.sample_request_ids,
            case.sample.iter().map(RequestId::as_str),
        );
        self.policy_version.append_value(&case.policy_version);
        self.flag_id.append_value(format!("flag-{}", case.case_id));
        self.flag_published.append_value(row.flag_published);
    }

    fn len(&self) -> usize {
        self.flag_published.len()
    }

    fn finish(&mut self) -> Vec<ArrayRef> {
        let mut columns = finish![
            self.case_id,
            self.opened_at,
            self.resource_id,
            self.subject,
            self.end_user,
            self.window_start,
            self.window_end,
            self.abuse_score,
            self.categories,
        ];
        columns.extend(
            self.counts
                .iter_mut()
                .map(|b| Arc::new(b.finish()) as ArrayRef),
        );
        columns.extend(
            self.scores
                .iter_mut()
                .map(|b| Arc::new(b.finish()) as ArrayRef),
        );
        columns.extend(finish![
            self.pattern_families,
            self.sample_size,
            self.sample_request_ids,
            self.policy_version,
            self.flag_id,
            self.flag_published,
        ]);
        columns
    }
}

#[doc(hidden)]
pub struct VerdictColumns {
    case_id: StringBuilder,
    request_id: StringBuilder,
    resource_id: StringBuilder,
    reviewed_at: TimestampMicrosecondBuilder,
    route: StringBuilder,
    reason: StringBuilder,
    violation: BooleanBuilder,
    categories: ListBuilder<StringBuilder>,
    severity: StringBuilder,
    confidence: Float32Builder,
    model: StringBuilder,
    policy_version: StringBuilder,
    attempts: UInt32Builder,
    in_flight: BooleanBuilder,
}

impl sealed::Sealed for VerdictRow {}

impl Row for VerdictRow {
    const TABLE: Table = Table::Verdicts;
    type Columns = VerdictColumns;

    fn geography(&self) -> Option<&Geography> {
        None
    }

    fn day(&self) -> Date {
        utc_day(self.verdict.reviewed_at)
    }
}

fn route_name(route: Route) -> &'static str {
    match route {
        Route::Closed => "closed",
        Route::Escalated => "escalated",
    }
}

impl sealed::Columns<VerdictRow> for VerdictColumns {
    fn with_capacity(rows: usize) -> Self {
        Self {
            case_id: strings(rows),
            request_id: strings(rows),
            resource_id: strings(rows),
            reviewed_at: timestamps(rows),
            route: strings(rows),
            reason: strings(rows),
            violation: BooleanBuilder::with_capacity(rows),
            categories: string_lists(rows),
            severity: strings(rows),
            confidence: Float32Builder::with_capacity(rows),
            model: strings(rows),
            policy_version: strings(rows),
            attempts: UInt32Builder::with_capacity(rows),
            in_flight: BooleanBuilder::with_capacity(rows),
        }
    }

    fn push(&mut self, row: &VerdictRow) {
        let verdict = &row.verdict;
        self.case_id.append_value(&verdict.case_id);
        self.request_id.append_value(verdict.request_id.as_str());
        self.resource_id.append_value(row.resource_id.as_str());
        self.reviewed_at.append_value(micros(verdict.reviewed_at));
        self.route.append_value(route_name(verdict.route));
        self.reason.append_value(verdict.reason.name());
        // The assessment's `rationale` is deliberately never read here.
        let assessment = verdict.assessment.as_ref();
        self.violation
            .append_option(assessment.map(|a| a.violation));
        push_list(
            &mut self.categories,
            assessment
                .into_iter()
                .flat_map(|a| a.categories.iter().map(|c| c.name())),
        );
        self.severity
            .append_option(assessment.map(|a| a.severity.name()));
        self.confidence
            .append_option(assessment.map(|a| a.confidence));
        self.model.append_value(&verdict.model);
        self.policy_version.append_value(&verdict.policy_version);
        self.attempts.append_value(verdict.attempts);
        self.in_flight.append_value(verdict.in_flight);
    }

    fn len(&self) -> usize {
        self.in_flight.len()
    }

    fn finish(&mut self) -> Vec<ArrayRef> {
        finish![
            self.case_id,
            self.request_id,
            self.resource_id,
            self.reviewed_at,
            self.route,
            self.reason,
            self.violation,
            self.categories,
            self.severity,
            self.confidence,
            self.model,
            self.policy_version,
            self.attempts,
            self.in_flight,
        ]
    }
}

/// Column builders of the `decisions` table.
#[doc(hidden)]
pub struct DecisionColumns {
    text: [StringBuilder; 5],
    request_id: StringBuilder,
    decided_at: TimestampMicrosecondBuilder,
    access_request: StringBuilder,
}

impl sealed::Sealed for DecisionRow {}

impl Row for DecisionRow {
    const TABLE: Table = Table::Decisions;
    type Columns = DecisionColumns;

    fn geography(&self) -> Option<&Geography> {
        Some(&self.decision.geography)
    }

    fn day(&self) -> Date {
        utc_day(self.decision.decided_at)
    }
}

impl sealed::Columns<DecisionRow> for DecisionColumns {
    fn with_capacity(rows: usize) -> Self {
        Self {
            text: std::array::from_fn(|_| strings(rows)),
            request_id: strings(rows),
            decided_at: timestamps(rows),
            access_request: strings(rows),
        }
    }

    fn push(&mut self, row: &DecisionRow) {
        let d = &row.decision;
        // The reviewer's `note` is deliberately never read here.
        let [decision_id, case_id, resource_id, reviewer, outcome] = &mut self.text;
        decision_id.append_value(&d.decision_id);
        case_id.append_value(&d.case_id);
        self.request_id
            .append_option(d.request_id.as_ref().map(RequestId::as_str));
        resource_id.append_value(d.resource_id.as_str());
        reviewer.append_value(&d.reviewer);
        outcome.append_value(d.outcome.name());
        self.decided_at.append_value(micros(d.decided_at));
        self.access_request.append_value(&d.access_request);
    }

    fn len(&self) -> usize {
        self.decided_at.len()
    }

    fn finish(&mut self) -> Vec<ArrayRef> {
        let [decision_id, case_id, resource_id, reviewer, outcome] = &mut self.text;
        finish![
            decision_id,
            case_id,
            self.request_id,
            resource_id,
            reviewer,
            outcome,
            self.decided_at,
            self.access_request,
        ]
    }
}
