//! The analytics exports end to end: real Parquet files in a temporary directory, read back
//! with real DataFusion SQL.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use time::macros::{date, datetime};
use time::{Date, Duration, OffsetDateTime};
use vigil_analytics::{
    query, AnalyticsConfig, AnalyticsError, AuditRow, CaseRow, DecisionRow, DetectionRow, Exports,
    OutputFormat, RecordRow, Row, Sql, Table, VerdictRow, BATCH_ROWS, PART_FILE,
};
use vigil_core::flag::{FlagScores, FlagSubject, FlagWindow};
use vigil_core::{
    Assessment, Case, CaseSignals, Category, Decision, DecisionOutcome, Deployment, Detection,
    Geography, HarmScores, Operation, RecordMeta, RequestId, ResourceId, Route, RouteReason,
    Severity, Verdict,
};

const DAY1: Date = date!(2026 - 03 - 01);
const DAY2: Date = date!(2026 - 03 - 02);

fn geo(name: &str) -> Geography {
    Geography::parse(name).unwrap()
}

fn config(dir: &Path) -> AnalyticsConfig {
    AnalyticsConfig {
        export_dir: dir.join("exports"),
    }
}

fn at(day: Date, seconds: i64) -> OffsetDateTime {
    day.midnight().assume_utc() + Duration::seconds(seconds)
}

fn record(geography: &str, day: Date, i: usize) -> RecordRow {
    RecordRow {
        meta: RecordMeta {
            request_id: RequestId::parse(format!("req-{geography}-{day}-{i}")).unwrap(),
            resource_id: ResourceId::parse(format!("res-{geography}-{}", i % 2)).unwrap(),
            geography: geo(geography),
            deployment: Deployment::Standard,
            processed_in: i.is_multiple_of(2).then(|| "westeurope".to_owned()),
            timestamp: at(day, 60 * i as i64),
            operation: Operation::Chat,
            model: "gpt-test".into(),
            end_user: (!i.is_multiple_of(3)).then(|| format!("user-{}", i % 4)),
        },
        stored_at: at(day, 60 * i as i64 + 1),
        content_stored: i.is_multiple_of(2),
    }
}

fn detection(row: &RecordRow, harmful: bool) -> DetectionRow {
    let mut scores = HarmScores {
        any_harm: if harmful { 0.9 } else { 0.1 },
        ..HarmScores::default()
    };
    scores.categories[Category::Violence.index()] = if harmful { 0.8 } else { 0.05 };
    DetectionRow {
        resource_id: row.meta.resource_id.clone(),
        request_id: row.meta.request_id.clone(),
        stored_at: row.stored_at,
        detection: Detection {
            scores,
            harmful,
            model: "harm-linear-v1".into(),
        },
    }
}

fn case(geography: &str, end_user: Option<&str>) -> CaseRow {
    CaseRow {
        case: Case {
            case_id: format!("case-{geography}-{}", end_user.unwrap_or("resource")),
            opened_at: datetime!(2026-03-01 10:00 UTC),
            geography: geo(geography),
            resource_id: ResourceId::parse(format!("res-{geography}-0")).unwrap(),
            subject: match end_user {
                Some(u) => FlagSubject::EndUser { end_user: u.into() },
                None => FlagSubject::Resource,
            },
            window: FlagWindow {
                start: datetime!(2026-03-01 09:00 UTC),
                end: datetime!(2026-03-01 10:00 UTC),
            },
            scores: FlagScores {
                abuse: 0.75,
                categories: [(Category::Jailbreak, 0.9)].into(),
            },
            categories: vec![Category::Jailbreak, Category::Illegal],
            signals: CaseSignals {
                records: 40,
                harmful: 12,
                previous_harmful: 1,
                near_duplicates: 5,
                template_hits: 3,
                escalations: 2,
                frequency: 0.5,
                severity: 0.6,
                intent: 0.7,
                trend: 0.8,
            },
            pattern_families: vec!["ignore_instructions".into()],
            sample: vec![
                RequestId::parse("req-a").unwrap(),
                RequestId::parse("req-b").unwrap(),
            ],
            policy_version: "7".into(),
        },
        flag_published: true,
    }
}

fn verdict(request: &str, rationale: &str, assessed: bool) -> VerdictRow {
    VerdictRow {
        resource_id: ResourceId::parse("res-eu-0").unwrap(),
        verdict: Verdict {
            case_id: "case-eu-u1".into(),
            request_id: RequestId::parse(request).unwrap(),
            reviewed_at: datetime!(2026-03-01 11:00 UTC),
            route: Route::Escalated,
            reason: if assessed {
                RouteReason::Violation
            } else {
                RouteReason::BackendUnavailable
            },
            assessment: assessed.then(|| Assessment {
                violation: true,
                categories: vec![Category::Jailbreak],
                severity: Severity::High,
                confidence: 0.875,
                rationale: rationale.into(),
            }),
            model: "local:test-model".into(),
            policy_version: "7".into(),
            attempts: 2,
            in_flight: false,
        },
    }
}

fn write<R: Row>(exports: &Exports, geography: &str, day: Date, rows: &[R]) -> u64 {
    let mut writer = exports.partition::<R>(&geo(geography), day).unwrap();
    for row in rows {
        writer.push(row).unwrap();
    }
    writer.finish().unwrap().rows
}

/// eu/day1: 3 records, eu/day2: 1, us/day1: 2, us/day2: 4; one detection per record, the
/// first of each partition harmful.
fn write_grid(exports: &Exports) {
    for (geography, day, n) in [
        ("eu", DAY1, 3),
        ("eu", DAY2, 1),
        ("us", DAY1, 2),
        ("us", DAY2, 4),
    ] {
        let records: Vec<RecordRow> = (0..n).map(|i| record(geography, day, i)).collect();
        let detections: Vec<DetectionRow> = records
            .iter()
            .enumerate()
            .map(|(i, r)| detection(r, i == 0))
            .collect();
        assert_eq!(write(exports, geography, day, &records), n as u64);
        assert_eq!(write(exports, geography, day, &detections), n as u64);
    }
}

const COUNTS: &str =
    "SELECT geography, day, count(*) AS n FROM records GROUP BY geography, day ORDER BY geography, day";

#[test]
fn counts_per_geography_and_day_in_every_format() {
    let tmp = tempfile::tempdir().unwrap();
    let config = config(tmp.path());
    let exports = Exports::open(&config).unwrap();
    write_grid(&exports);

    let table = query(&config, COUNTS, OutputFormat::Table).unwrap();
    assert_eq!(
        table,
        "\
+-----------+------------+---+
| geography | day        | n |
+-----------+------------+---+
| eu        | 2026-03-01 | 3 |
| eu        | 2026-03-02 | 1 |
| us        | 2026-03-01 | 2 |
| us        | 2026-03-02 | 4 |
+-----------+------------+---+"
    );
    let csv = query(&config, COUNTS, OutputFormat::Csv).unwrap();
    assert_eq!(
        csv,
        "geography,day,n\neu,2026-03-01,3\neu,2026-03-02,1\nus,2026-03-01,2\nus,2026-03-02,4"
    );
    let json = query(&config, COUNTS, OutputFormat::Json).unwrap();
    assert_eq!(
        json,
        "\
{\"geography\":\"eu\",\"day\":\"2026-03-01\",\"n\":3}
{\"geography\":\"eu\",\"day\":\"2026-03-02\",\"n\":1}
{\"geography\":\"us\",\"day\":\"2026-03-01\",\"n\":2}
{\"geography\":\"us\",\"day\":\"2026-03-02\",\"n\":4}"
    );

    // A join across tables, and partition pruning on day.
    let harmful = query(
        &config,
        "SELECT r.geography, count(*) AS harmful FROM records r JOIN detections d \
         ON r.request_id = d.request_id AND r.geography = d.geography AND r.day = d.day \
         WHERE d.harmful AND r.day = '2026-03-02' GROUP BY r.geography ORDER BY r.geography",
        OutputFormat::Csv,
    )
    .unwrap();
    assert_eq!(harmful, "geography,harmful\neu,1\nus,1");

    // Columns come back with their types: nullable end users, UTC timestamps.
    let sql = Sql::open(&config).unwrap();
    let users = sql
        .query(
            "SELECT count(end_user) AS with_user, count(DISTINCT end_user) AS users, \
             min(event_time) AS first FROM records WHERE geography = 'us'",
            OutputFormat::Csv,
        )
        .unwrap();
    // us: i in 0..2 on day 1 and 0..4 on day 2, an end user when i % 3 != 0: user-1 (day 1),
    // user-1 and user-2 (day 2).
    assert_eq!(users, "with_user,users,first\n3,2,2026-03-01T00:00:00Z");
    let measured = sql.measure(COUNTS).unwrap();
    assert_eq!(measured.rows, 4);
    assert_eq!(measured.scanned_rows, 10);
}

#[test]
fn lists_nulls_and_verdicts_render_in_csv_and_json() {
    let tmp = tempfile::tempdir().unwrap();
    let config = config(tmp.path());
    let exports = Exports::open(&config).unwrap();
    write(
        &exports,
        "eu",
        DAY1,
        &[case("eu", Some("u1")), case("eu", None)],
    );
    write(
        &exports,
        "eu",
        DAY1,
        &[verdict("req-a", "fine", true), verdict("req-b", "", false)],
    );
    let cases = query(
        &config,
        "SELECT case_id, subject, end_user, categories, records, trend, sample_size, \
         sample_request_ids, flag_id, flag_published FROM cases ORDER BY case_id",
        OutputFormat::Csv,
    )
    .unwrap();
    assert_eq!(
        cases,
        "case_id,subject,end_user,categories,records,trend,sample_size,sample_request_ids,flag_id,flag_published\n\
         case-eu-resource,resource,,\"[jailbreak, illegal]\",40,0.8,2,\"[req-a, req-b]\",flag-case-eu-resource,true\n\
         case-eu-u1,end_user,u1,\"[jailbreak, illegal]\",40,0.8,2,\"[req-a, req-b]\",flag-case-eu-u1,true"
    );
    let verdicts = query(
        &config,
        "SELECT request_id, route, reason, violation, categories, severity, confidence, attempts \
         FROM verdicts ORDER BY request_id",
        OutputFormat::Json,
    )
    .unwrap();
    assert_eq!(
        verdicts,
        "\
{\"request_id\":\"req-a\",\"route\":\"escalated\",\"reason\":\"violation\",\"violation\":true,\"categories\":[\"jailbreak\"],\"severity\":\"high\",\"confidence\":0.875,\"attempts\":2}
{\"request_id\":\"req-b\",\"route\":\"escalated\",\"reason\":\"backend_unavailable\",\"violation\":null,\"categories\":[],\"severity\":null,\"confidence\":null,\"attempts\":2}"
    );
}

#[test]
fn partitions_are_listed_replaced_and_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let config = config(tmp.path());
    let exports = Exports::open(&config).unwrap();
    write_grid(&exports);
    let all = vec![
        (geo("eu"), DAY1),
        (geo("eu"), DAY2),
        (geo("us"), DAY1),
        (geo("us"), DAY2),
    ];
    assert_eq!(exports.partitions(Table::Records).unwrap(), all);
    assert_eq!(exports.partitions(Table::Detections).unwrap(), all);
    assert_eq!(exports.partitions(Table::Cases).unwrap(), vec![]);

    // Rewriting a partition replaces its rows.
    write(&exports, "us", DAY2, &[record("us", DAY2, 9)]);
    let counts = query(&config, COUNTS, OutputFormat::Csv).unwrap();
    assert!(counts.ends_with("us,2026-03-02,1"), "{counts}");

    // A partition finished with no rows is removed, and its empty geography directory too.
    write::<RecordRow>(&exports, "eu", DAY2, &[]);
    assert!(!exports
        .partition_dir(Table::Records, &geo("eu"), DAY2)
        .exists());
    write::<RecordRow>(&exports, "eu", DAY1, &[]);
    assert!(!exports
        .table_dir(Table::Records)
        .join("geography=eu")
        .exists());
    assert_eq!(
        exports.partitions(Table::Records).unwrap(),
        vec![(geo("us"), DAY1), (geo("us"), DAY2)]
    );
    // Zero rows for a partition that never existed is fine.
    write::<RecordRow>(&exports, "ap", DAY1, &[]);

    assert!(exports.remove(Table::Records, &geo("us"), DAY1).unwrap());
    assert!(!exports.remove(Table::Records, &geo("us"), DAY1).unwrap());
    assert_eq!(
        exports.partitions(Table::Records).unwrap(),
        vec![(geo("us"), DAY2)]
    );
    assert_eq!(
        query(&config, COUNTS, OutputFormat::Csv).unwrap(),
        "geography,day,n\nus,2026-03-02,1"
    );
    // The other table is untouched.
    assert_eq!(exports.partitions(Table::Detections).unwrap(), all);
}

#[test]
fn large_partitions_stream_in_batches() {
    let tmp = tempfile::tempdir().unwrap();
    let config = config(tmp.path());
    let exports = Exports::open(&config).unwrap();
    let n = BATCH_ROWS * 2 + 7;
    let mut writer = exports.partition::<RecordRow>(&geo("eu"), DAY1).unwrap();
    for i in 0..n {
        writer.push(&record("eu", DAY1, i)).unwrap();
    }
    let written = writer.finish().unwrap();
    assert_eq!(written.rows, n as u64);
    assert!(written.bytes > 0);
    assert_eq!(
        query(
            &config,
            "SELECT count(*) AS n, count(DISTINCT request_id) AS ids FROM records",
            OutputFormat::Csv
        )
        .unwrap(),
        format!("n,ids\n{n},{n}")
    );
}

#[test]
fn crashes_leave_no_visible_half_file() {
    let tmp = tempfile::tempdir().unwrap();
    let config = config(tmp.path());
    let exports = Exports::open(&config).unwrap();
    write_grid(&exports);
    let dir = exports.partition_dir(Table::Records, &geo("eu"), DAY1);

    // A writer part-way through (more than a batch pushed, not finished) has a temporary
    // file in the partition's directory, and so has a writer that crashed: readers skip both.
    let mut unfinished = exports.partition::<RecordRow>(&geo("eu"), DAY1).unwrap();
    for i in 0..BATCH_ROWS + 1 {
        unfinished.push(&record("eu", DAY1, i)).unwrap();
    }
    let stale = dir.join(".part-0.4242-0.tmp");
    fs::write(&stale, b"PAR1 half a file").unwrap();
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 3);
    assert_eq!(
        query(&config, COUNTS, OutputFormat::Csv).unwrap(),
        "geography,day,n\neu,2026-03-01,3\neu,2026-03-02,1\nus,2026-03-01,2\nus,2026-03-02,4"
    );
    // A writer dropped without finishing removes its own file and changes nothing.
    drop(unfinished);
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 2);
    assert!(stale.exists());
    // The next write to the partition cleans the stale file up.
    write(&exports, "eu", DAY1, &[record("eu", DAY1, 0)]);
    let left: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(left, vec![PART_FILE.to_owned()]);
}

#[test]
fn a_row_of_another_geography_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let exports = Exports::open(&config(tmp.path())).unwrap();
    let mut writer = exports.partition::<RecordRow>(&geo("us"), DAY1).unwrap();
    let err = writer.push(&record("eu", DAY1, 0)).unwrap_err();
    assert!(
        matches!(err, AnalyticsError::WrongGeography { .. }),
        "{err}"
    );
}

#[test]
fn statements_that_write_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let config = config(tmp.path());
    let exports = Exports::open(&config).unwrap();
    write_grid(&exports);
    let target = tmp.path().join("copied.parquet");
    for sql in [
        "CREATE TABLE t AS SELECT 1 AS x".to_owned(),
        "CREATE TABLE t (x INT)".to_owned(),
        "CREATE VIEW v AS SELECT * FROM records".to_owned(),
        format!(
            "CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION '{}'",
            tmp.path().display()
        ),
        "DROP TABLE records".to_owned(),
        "INSERT INTO records SELECT * FROM records".to_owned(),
        "DELETE FROM records".to_owned(),
        format!("COPY (SELECT * FROM records) TO '{}'", target.display()),
        format!("COPY records TO '{}' STORED AS PARQUET", target.display()),
        "SET datafusion.execution.batch_size = 1".to_owned(),
        "EXPLAIN ANALYZE INSERT INTO records SELECT * FROM records".to_owned(),
    ] {
        match query(&config, &sql, OutputFormat::Table) {
            Err(AnalyticsError::ReadOnly { .. }) => {}
            // Some statements fail to plan at all (DELETE on a listing table); either way
            // nothing ran.
            Err(AnalyticsError::Query { .. }) if sql.starts_with("DELETE") => {}
            other => panic!("{sql}: {other:?}"),
        }
    }
    assert!(!target.exists());
    let err = query(&config, "DROP TABLE records", OutputFormat::Table).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("refused: only read-only queries"),
        "{err}"
    );
    // The tables are all still there and whole.
    assert!(query(&config, COUNTS, OutputFormat::Csv)
        .unwrap()
        .ends_with("us,2026-03-02,4"));
    // Files cannot be named as tables.
    assert!(query(&config, "SELECT * FROM '/etc/passwd'", OutputFormat::Table).is_err());
    // Reading is fine: EXPLAIN, SHOW, DESCRIBE.
    for sql in [
        "EXPLAIN SELECT count(*) FROM records",
        "SHOW TABLES",
        "SHOW COLUMNS FROM detections",
        "DESCRIBE cases",
        "WITH x AS (SELECT day FROM records) SELECT count(*) FROM x",
    ] {
        query(&config, sql, OutputFormat::Table).unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

#[test]
fn bad_queries_name_the_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let config = config(tmp.path());
    let err = query(&config, "SELEC 1", OutputFormat::Table).unwrap_err();
    assert!(matches!(err, AnalyticsError::Query { .. }), "{err}");
    let err = query(
        &config,
        "SELECT no_such_column FROM records",
        OutputFormat::Table,
    )
    .unwrap_err();
    assert!(err.to_string().contains("no_such_column"), "{err}");
    let err = query(&config, "SELECT * FROM no_such_table", OutputFormat::Table).unwrap_err();
    assert!(err.to_string().contains("no_such_table"), "{err}");
}

#[test]
fn a_fresh_install_has_every_table_empty() {
    let tmp = tempfile::tempdir().unwrap();
    // The export directory does not even exist: queries still work, and create nothing.
    let config = config(tmp.path());
    for table in Table::ALL {
        let sql = format!("SELECT count(*) AS n FROM {table}");
        assert_eq!(query(&config, &sql, OutputFormat::Csv).unwrap(), "n\n0");
    }
    assert!(!config.export_dir.exists());
    let columns = query(&config, "SELECT * FROM verdicts", OutputFormat::Csv).unwrap();
    assert_eq!(
        columns,
        "case_id,request_id,resource_id,reviewed_at,route,reason,violation,categories,severity,\
         confidence,model,policy_version,attempts,in_flight,geography,day"
    );
    assert_eq!(
        query(&config, "SELECT * FROM cases", OutputFormat::Json).unwrap(),
        ""
    );
    // An opened but empty export directory, and one table with data: the others stay empty.
    let exports = Exports::open(&config).unwrap();
    write(&exports, "eu", DAY1, &[record("eu", DAY1, 0)]);
    for table in Table::ALL {
        let sql = format!("SELECT count(*) AS n FROM {table}");
        let expected = if table == Table::Records {
            "n\n1"
        } else {
            "n\n0"
        };
        assert_eq!(query(&config, &sql, OutputFormat::Csv).unwrap(), expected);
    }
    let detections = query(&config, "SELECT * FROM detections", OutputFormat::Table).unwrap();
    for column in [
        "resource_id",
        "any_harm",
        "self_harm",
        "classifier_model",
        "geography",
        "day",
    ] {
        assert!(detections.contains(column), "{column}");
    }
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files
}

fn decision(request: Option<&str>, note: &str) -> DecisionRow {
    DecisionRow {
        decision: Decision {
            decision_id: Decision::new_id(datetime!(2026-03-01 12:00 UTC)),
            case_id: "case-eu-u1".into(),
            request_id: request.map(|r| RequestId::parse(r).unwrap()),
            resource_id: ResourceId::parse("res-eu-0").unwrap(),
            geography: geo("eu"),
            reviewer: "rita".into(),
            outcome: DecisionOutcome::FalsePositive,
            note: note.into(),
            decided_at: datetime!(2026-03-01 12:00 UTC),
            access_request: "acc-00000000000000aa".into(),
        },
    }
}

#[test]
fn rationales_and_decision_notes_never_reach_the_exports() {
    const MARKER: &str = "RATIONALE-MARKER-7f3a91";
    // A value that is exported, to show the scans would find a marker.
    const CONTROL: &str = "CONTROL-MODEL-7f3a91";
    let tmp = tempfile::tempdir().unwrap();
    let config = config(tmp.path());
    let exports = Exports::open(&config).unwrap();
    let mut rows: Vec<VerdictRow> = (0..50)
        .map(|i| verdict(&format!("req-{i}"), &format!("{MARKER} {i}"), true))
        .collect();
    rows[0].verdict.model = CONTROL.into();
    write(&exports, "eu", DAY1, &rows);
    // Nor the notes of human decisions.
    write(
        &exports,
        "eu",
        DAY1,
        &[
            decision(Some("req-1"), &format!("{MARKER} note")),
            decision(None, MARKER),
        ],
    );
    write(&exports, "eu", DAY1, &[record("eu", DAY1, 0)]);
    write(&exports, "eu", DAY1, &[case("eu", Some("u1"))]);
    write(
        &exports,
        "eu",
        DAY1,
        &[detection(&record("eu", DAY1, 0), true)],
    );

    // Every byte of every file (the footer's statistics are not compressed)...
    let files = files_under(&config.export_dir);
    assert_eq!(files.len(), 5);
    let mut control_seen = false;
    for file in &files {
        let bytes = fs::read(file).unwrap();
        let contains = |needle: &str| bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
        assert!(!contains(MARKER), "{}", file.display());
        control_seen |= contains(CONTROL);
    }
    assert!(control_seen, "the byte scan finds exported values");
    // ...and every decoded value of every table.
    for table in Table::ALL {
        let all = query(
            &config,
            &format!("SELECT * FROM {table}"),
            OutputFormat::Json,
        )
        .unwrap();
        assert!(!all.contains(MARKER), "{table}");
        assert_eq!(all.contains(CONTROL), table == Table::Verdicts);
    }
}

#[test]
fn files_hold_the_table_schema_without_partition_columns() {
    let tmp = tempfile::tempdir().unwrap();
    let config = config(tmp.path());
    let exports = Exports::open(&config).unwrap();
    write(&exports, "eu", DAY1, &[record("eu", DAY1, 0)]);
    write(
        &exports,
        "eu",
        DAY1,
        &[detection(&record("eu", DAY1, 0), false)],
    );
    write(&exports, "eu", DAY1, &[case("eu", None)]);
    write(&exports, "eu", DAY1, &[verdict("req-a", "x", true)]);
    write(&exports, "eu", DAY1, &[decision(None, "n")]);
    write(
        &exports,
        "eu",
        DAY1,
        &[AuditRow {
            geography: geo("eu"),
            seq: 1,
            at: DAY1.midnight().assume_utc(),
            actor: "rita".into(),
            role: Some("reviewer".into()),
            action: "record.read".into(),
            outcome: Some("refused".into()),
            reason: Some("no_grant".into()),
            case_id: Some("case-1".into()),
            request_id: Some("req-a".into()),
            resource_id: Some("res-eu".into()),
            access_request: None,
            workstation: None,
        }],
    );
    for table in Table::ALL {
        let file = exports
            .partition_dir(table, &geo("eu"), DAY1)
            .join(PART_FILE);
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&file).unwrap()).unwrap();
        let schema = reader.schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert!(
            !names.contains(&"geography") && !names.contains(&"day"),
            "{table}: {names:?}"
        );
        let expected = table.schema();
        let expected: Vec<&str> = expected
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        assert_eq!(names, expected, "{table}");
        let rows: usize = reader.build().unwrap().map(|b| b.unwrap().num_rows()).sum();
        assert_eq!(rows, 1);
    }
    let detections = Table::Detections.schema();
    let categories: Vec<&str> = Category::ALL.iter().map(|c| c.name()).collect();
    for name in categories {
        assert!(detections.field_with_name(name).is_ok(), "{name}");
    }
}

#[cfg(unix)]
#[test]
fn directories_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let config = config(tmp.path());
    let exports = Exports::open(&config).unwrap();
    write(&exports, "eu", DAY1, &[record("eu", DAY1, 0)]);
    let dir = exports.partition_dir(Table::Records, &geo("eu"), DAY1);
    for path in [
        config.export_dir.clone(),
        exports.table_dir(Table::Records),
        dir.parent().unwrap().to_owned(),
        dir.clone(),
    ] {
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o077, 0, "{}: {mode:o}", path.display());
    }
    let mode = fs::metadata(dir.join(PART_FILE))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode & 0o077, 0, "{mode:o}");
}
