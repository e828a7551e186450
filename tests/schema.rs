//! The published JSON Schema and the decoder describe the same record.

use serde_json::Value;
use vigil_core::record::{FIELDS, REQUIRED_FIELDS};
use vigil_core::LogRecord;

use crate::util::{record, repo};

fn schema() -> Value {
    let text = std::fs::read_to_string(repo().join("schema/log-record.schema.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn fields_and_required_fields_agree() {
    let schema = schema();
    let mut props: Vec<&str> = schema["properties"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut fields = FIELDS.to_vec();
    props.sort_unstable();
    fields.sort_unstable();
    assert_eq!(props, fields);
    let mut required: Vec<&str> = schema["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let mut want = REQUIRED_FIELDS.to_vec();
    required.sort_unstable();
    want.sort_unstable();
    assert_eq!(required, want);
}

#[test]
fn enums_agree() {
    let schema = schema();
    for field in ["deployment", "operation"] {
        let allowed: Vec<&str> = schema["properties"][field]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        for value in allowed.iter().copied().chain(["other"]) {
            let mut rec: Value = serde_json::from_str(&record("r", "a", "us", "p")).unwrap();
            rec[field] = Value::from(value);
            let ok = LogRecord::from_json(&rec.to_string()).is_ok();
            assert_eq!(ok, allowed.contains(&value), "{field} = {value}");
        }
    }
}

#[test]
fn lengths_agree() {
    let schema = schema();
    let pattern = schema["properties"]["request_id"]["pattern"]
        .as_str()
        .unwrap();
    assert!(pattern.ends_with("{1,128}$"));
    for (len, ok) in [(128, true), (129, false)] {
        let rec = record(&"r".repeat(len), "a", "us", "p");
        assert_eq!(LogRecord::from_json(&rec).is_ok(), ok);
    }
}
