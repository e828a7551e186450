//! Tests of a geography store on real sled databases in temporary directories.

use std::fs;
use std::path::Path;

use vigil_core::{Content, Geography, KeyRef, LogRecord, RequestId, Resource, ResourceId};

use crate::{GeoStore, StorageConfig, StorageError, Stores, WriteOutcome};

fn record(resource: &str, request: &str, prompt: &str) -> LogRecord {
    LogRecord::from_json(&format!(
        r#"{{"request_id":"{request}","resource_id":"{resource}","geography":"eu","deployment":"datazone","timestamp":"2026-11-20T10:00:00Z","operation":"chat","model":"m","end_user":"u1","prompt":"{prompt}","completion":"answer to {prompt}"}}"#
    ))
    .unwrap()
}

fn resource(id: &str) -> Resource {
    Resource::new(
        ResourceId::parse(id).unwrap(),
        Geography::parse("eu").unwrap(),
    )
}

fn with_key(id: &str, key_file: &str) -> Resource {
    let mut r = resource(id);
    r.customer_key = Some(KeyRef::parse(format!("file:{key_file}")).unwrap());
    r
}

fn stores(dir: &Path) -> Stores {
    let config = StorageConfig {
        data_dir: dir.join("data"),
        master_key: dir.join("keys/master.key"),
        ..StorageConfig::default()
    };
    Stores::open(&config, dir).unwrap()
}

fn eu() -> Geography {
    Geography::parse("eu").unwrap()
}

fn req(id: &str) -> RequestId {
    RequestId::parse(id).unwrap()
}

fn put(stores: &Stores, res: &Resource, rec: &LogRecord) -> WriteOutcome {
    let geo = stores.geo(&eu()).unwrap();
    let sealed = geo.seal(rec, res).unwrap();
    geo.write_batch(&[sealed]).unwrap()[0]
}

/// The content of a record that must be stored.
fn content_of(geo: &GeoStore, res: &Resource, id: &str) -> Option<Content> {
    geo.get(res, &req(id))
        .unwrap()
        .expect("the record is stored")
        .content
}

fn write_key(dir: &Path, name: &str, byte: u8) {
    fs::write(dir.join(name), hex::encode([byte; 32])).unwrap();
}

#[test]
fn stores_and_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let stores = stores(dir.path());
    let res = resource("a");
    let rec = record("a", "r1", "hello");
    assert_eq!(put(&stores, &res, &rec), WriteOutcome::Stored);
    let geo = stores.geo(&eu()).unwrap();
    let back = geo.get(&res, &req("r1")).unwrap().unwrap();
    assert_eq!(back.meta, rec.meta);
    assert_eq!(back.content, Some(rec.content));
    assert_eq!(geo.resource_of("r1").unwrap().unwrap().as_str(), "a");
    assert_eq!(geo.get(&res, &req("nope")).unwrap(), None);
}

#[test]
fn a_detection_is_stored_in_its_records_value_and_survives_a_content_strip() {
    let dir = tempfile::tempdir().unwrap();
    let stores = stores(dir.path());
    let res = resource("a");
    let geo = stores.geo(&eu()).unwrap();
    let detection = vigil_core::Detection {
        scores: vigil_core::HarmScores {
            any_harm: 0.75,
            ..Default::default()
        },
        harmful: true,
        model: "m@1".into(),
    };
    let mut scored = geo.seal(&record("a", "r1", "hello"), &res).unwrap();
    scored.detection = Some(detection.clone());
    let unscored = geo.seal(&record("a", "r2", "hi"), &res).unwrap();
    geo.write_batch(&[scored, unscored]).unwrap();
    assert_eq!(
        geo.detection(&res.id, &req("r1")).unwrap(),
        Some(detection.clone())
    );
    assert_eq!(geo.detection(&res.id, &req("r2")).unwrap(), None);
    assert_eq!(
        content_of(&geo, &res, "r1").unwrap().prompt.as_deref(),
        Some("hello")
    );

    // Stripping the content keeps the detection.
    let bytes = geo.stored_value("a", "r1").unwrap().unwrap();
    let stripped = crate::layout::without_content(&bytes)
        .unwrap()
        .expect("it had content");
    assert_eq!(
        crate::layout::detection_in(&stripped).unwrap(),
        Some(detection)
    );
    assert!(crate::layout::without_content(&stripped).unwrap().is_none());
}

/// Writes `value` as `request`'s entry in a segment of its own under `resource`, and points
/// the request's index entry at it: what someone who can write to the store could do.
fn plant(geo: &GeoStore, resource: &str, request: &str, value: &[u8]) {
    let mut segment = crate::segment::SegmentWriter::new();
    segment.push(request, value);
    let mut batch = crate::changelog::Batch::default();
    geo.put_segment(
        &mut batch,
        resource,
        geo.clock().today(),
        None,
        segment.finish(),
    )
    .unwrap();
    geo.raw().apply_batch(batch.into_sled()).unwrap();
}

#[test]
fn writes_are_idempotent_by_request_id() {
    let dir = tempfile::tempdir().unwrap();
    let stores = stores(dir.path());
    let (a, b) = (resource("a"), resource("b"));
    let geo = stores.geo(&eu()).unwrap();
    let first = geo.seal(&record("a", "r1", "x"), &a).unwrap();
    // Twice within one batch, then again in a later batch.
    let outcomes = geo.write_batch(&[first.clone(), first.clone()]).unwrap();
    assert_eq!(outcomes, [WriteOutcome::Stored, WriteOutcome::Duplicate]);
    assert_eq!(
        put(&stores, &a, &record("a", "r1", "x")),
        WriteOutcome::Duplicate
    );
    assert_eq!(
        put(&stores, &b, &record("b", "r1", "y")),
        WriteOutcome::Conflict
    );
    assert_eq!(geo.len(), 1);
    assert_eq!(geo.request_ids(&b.id).unwrap(), vec![]);
}

#[test]
fn resources_are_contiguous_key_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let stores = stores(dir.path());
    for (res, reqs) in [
        ("res1", ["a", "b"]),
        ("res10", ["c", "d"]),
        ("res", ["e", "f"]),
    ] {
        for r in reqs {
            put(&stores, &resource(res), &record(res, r, "p"));
        }
    }
    let geo = stores.geo(&eu()).unwrap();
    let ids = |r: &str| -> Vec<String> {
        geo.request_ids(&ResourceId::parse(r).unwrap())
            .unwrap()
            .into_iter()
            .map(|r| r.to_string())
            .collect()
    };
    assert_eq!(ids("res1"), ["a", "b"]);
    assert_eq!(ids("res10"), ["c", "d"]);
    assert_eq!(ids("res"), ["e", "f"]);
}

#[test]
fn ciphertext_moved_to_another_record_or_resource_fails_to_decrypt() {
    let dir = tempfile::tempdir().unwrap();
    let stores = stores(dir.path());
    let (a, b) = (resource("a"), resource("b"));
    put(&stores, &a, &record("a", "r1", "one"));
    put(&stores, &a, &record("a", "r2", "two"));
    put(&stores, &b, &record("b", "r3", "three"));
    let geo = stores.geo(&eu()).unwrap();
    let stolen = geo.stored_value("a", "r1").unwrap().unwrap();

    // Same resource, another request ID.
    plant(&geo, "a", "r2", &stolen);
    assert!(matches!(
        geo.get(&a, &req("r2")),
        Err(StorageError::Decrypt { .. })
    ));
    // Another resource.
    plant(&geo, "b", "r3", &stolen);
    assert!(matches!(
        geo.get(&b, &req("r3")),
        Err(StorageError::Decrypt { .. })
    ));
    // Another resource under the same request ID.
    plant(&geo, "b", "r1", &stolen);
    assert!(matches!(
        geo.get(&b, &req("r1")),
        Err(StorageError::Decrypt { .. })
    ));
    // Put back where it belongs, it still opens: the bytes were not what failed.
    plant(&geo, "a", "r1", &stolen);
    assert!(content_of(&geo, &a, "r1").is_some());
}

#[test]
fn content_logging_off_keeps_metadata_only() {
    let dir = tempfile::tempdir().unwrap();
    let stores = stores(dir.path());
    let mut quiet = resource("quiet");
    quiet.content_logging = false;
    let rec = record("quiet", "r1", "whisper");
    let geo = stores.geo(&eu()).unwrap();
    let sealed = geo.seal(&rec, &quiet).unwrap();
    assert!(!sealed.content_logged);
    geo.write_batch(&[sealed]).unwrap();
    let back = geo.get(&quiet, &req("r1")).unwrap().unwrap();
    assert_eq!(back.meta, rec.meta);
    assert_eq!(back.content, None);
    // No data key was even created for it.
    assert!(geo.data_key_days(&quiet.id).unwrap().is_empty());

    // Content stored while logging was on is not returned once it is off, even before it is
    // destroyed.
    let loud = resource("loud");
    put(&stores, &loud, &record("loud", "r2", "said"));
    let mut turned_off = loud.clone();
    turned_off.content_logging = false;
    assert!(content_of(&geo, &loud, "r2").is_some());
    assert_eq!(content_of(&geo, &turned_off, "r2"), None);
}

/// Opens the stores afresh (no cached data keys) and reads one record's prompt.
fn fresh_prompt(dir: &Path, res: &Resource, id: &str) -> crate::Result<Option<String>> {
    let stores = stores(dir);
    let geo = stores.geo(&eu()).unwrap();
    Ok(geo
        .get(res, &req(id))?
        .and_then(|r| r.content)
        .and_then(|c| c.prompt))
}

#[test]
fn wrong_or_missing_customer_key_makes_only_that_resource_unreadable() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    write_key(dir, "cust.key", 1);
    let cust = with_key("cust", "cust.key");
    let plain = resource("plain");
    {
        let stores = stores(dir);
        put(&stores, &cust, &record("cust", "r1", "secret"));
        put(&stores, &plain, &record("plain", "r2", "other"));
    }
    let other_still_readable =
        || assert_eq!(fresh_prompt(dir, &plain, "r2").unwrap().unwrap(), "other");
    // The right key reads it.
    assert_eq!(fresh_prompt(dir, &cust, "r1").unwrap().unwrap(), "secret");

    // A wrong key: unreadable, and new content for it cannot be sealed.
    write_key(dir, "cust.key", 2);
    assert!(matches!(
        fresh_prompt(dir, &cust, "r1"),
        Err(StorageError::Key(crate::KeyError::Unwrap { .. }))
    ));
    let geo = stores(dir).geo(&eu()).unwrap();
    assert!(geo.seal(&record("cust", "r9", "x"), &cust).is_err());
    drop(geo);
    other_still_readable();

    // A missing key (revoked): unreadable; other resources unaffected.
    fs::remove_file(dir.join("cust.key")).unwrap();
    assert!(matches!(
        fresh_prompt(dir, &cust, "r1"),
        Err(StorageError::Key(
            crate::KeyError::CustomerKeyUnavailable { .. }
        ))
    ));
    other_still_readable();

    // Restoring the key restores access.
    write_key(dir, "cust.key", 1);
    assert_eq!(fresh_prompt(dir, &cust, "r1").unwrap().unwrap(), "secret");
}

#[test]
fn deleting_a_request_while_its_customer_key_is_unavailable_fails_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    write_key(dir, "cust.key", 1);
    let cust = with_key("cust", "cust.key");
    {
        let stores = stores(dir);
        put(&stores, &cust, &record("cust", "r1", "secret"));
        put(&stores, &cust, &record("cust", "r2", "kept"));
    }
    // Without the key the day cannot be re-keyed, so the deletion is refused: removing the
    // entry alone would leave the record's ciphertext under a key that still opens it.
    fs::remove_file(dir.join("cust.key")).unwrap();
    let refused = stores(dir).delete_request(&cust, &req("r1"));
    assert!(
        matches!(
            refused,
            Err(StorageError::Key(crate::KeyError::CustomerKeyUnavailable { ref resource_id, .. }))
                if resource_id == "cust"
        ),
        "{refused:?}"
    );
    // Nothing was half done: with the key back, both records read, and the deletion works.
    write_key(dir, "cust.key", 1);
    assert_eq!(fresh_prompt(dir, &cust, "r1").unwrap().unwrap(), "secret");
    assert!(stores(dir)
        .delete_request(&cust, &req("r1"))
        .unwrap()
        .is_some());
    assert_eq!(fresh_prompt(dir, &cust, "r1").unwrap(), None);
    assert_eq!(fresh_prompt(dir, &cust, "r2").unwrap().unwrap(), "kept");
}

#[test]
fn adding_a_customer_key_rewraps_the_data_key() {
    let dir = tempfile::tempdir().unwrap();
    let res = resource("a");
    {
        let stores = stores(dir.path());
        put(&stores, &res, &record("a", "r1", "before"));
    }
    write_key(dir.path(), "a.key", 5);
    let keyed = with_key("a", "a.key");
    {
        let stores = stores(dir.path());
        let geo = stores.geo(&eu()).unwrap();
        assert!(geo.get(&keyed, &req("r1")).unwrap().is_some());
    }
    // Now the master key alone no longer opens it: the customer key wraps the data key.
    fs::remove_file(dir.path().join("a.key")).unwrap();
    let stores = stores(dir.path());
    let geo = stores.geo(&eu()).unwrap();
    assert!(geo.get(&keyed, &req("r1")).is_err());
}

fn registry_of(resources: &[&Resource]) -> vigil_core::ResourceRegistry {
    let mut registry = vigil_core::ResourceRegistry::default();
    for r in resources {
        registry.add((*r).clone()).unwrap();
    }
    registry
}

#[test]
fn a_content_destruction_cut_short_by_a_crash_is_finished_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let res = resource("a");
    {
        let stores = stores(dir.path());
        for i in 0..5 {
            put(&stores, &res, &record("a", &format!("r{i}"), "said"));
        }
        // The crash: key deleted and marker set, ciphertexts not yet stripped.
        let geo = stores.geo(&eu()).unwrap();
        geo.start_job(&res.id, super::JobKind::StripContent)
            .unwrap();
    }
    // Content logging is back on by the time vigil restarts: the destruction still finishes.
    let stores = stores(dir.path());
    let done = stores.reconcile(&registry_of(&[&res])).unwrap();
    assert_eq!(done.content_forgotten, vec![(res.id.clone(), 5)]);
    let geo = stores.geo(&eu()).unwrap();
    assert_eq!(content_of(&geo, &res, "r2"), None);
    assert!(geo.pending_jobs().unwrap().is_empty());
    // New content gets a new key and is readable.
    put(&stores, &res, &record("a", "r9", "new"));
    assert!(content_of(&geo, &res, "r9").is_some());
    // And a resource that never logged content costs no scan and reports nothing.
    let mut quiet = resource("q");
    quiet.content_logging = false;
    assert!(stores
        .reconcile(&registry_of(&[&res, &quiet]))
        .unwrap()
        .content_forgotten
        .is_empty());
}

#[test]
fn a_missing_check_value_is_only_rewritten_for_the_right_master_key() {
    let dir = tempfile::tempdir().unwrap();
    let res = resource("a");
    put(&stores(dir.path()), &res, &record("a", "r1", "x"));
    let check = dir
        .path()
        .join("data")
        .join(super::super::MASTER_CHECK_FILE);
    let master = dir.path().join("keys/master.key");
    let right = fs::read(&master).unwrap();
    fs::remove_file(&check).unwrap();
    // A wrong key is refused, and records no check value that would lock the right one out.
    fs::write(&master, hex::encode([9u8; 32])).unwrap();
    let config = StorageConfig {
        data_dir: dir.path().join("data"),
        master_key: master.clone(),
        ..StorageConfig::default()
    };
    assert!(matches!(
        Stores::open(&config, dir.path()),
        Err(StorageError::Key(crate::KeyError::MasterMismatch { .. }))
    ));
    assert!(!check.exists());
    fs::write(&master, right).unwrap();
    let stores = Stores::open(&config, dir.path()).unwrap();
    assert!(check.exists());
    assert!(stores
        .geo(&eu())
        .unwrap()
        .get(&res, &req("r1"))
        .unwrap()
        .is_some());
}

#[test]
fn a_revoked_customer_key_is_noticed_while_the_store_is_open() {
    let dir = tempfile::tempdir().unwrap();
    write_key(dir.path(), "a.key", 7);
    let keyed = with_key("a", "a.key");
    let config = StorageConfig {
        data_dir: dir.path().join("data"),
        master_key: dir.path().join("keys/master.key"),
        customer_key_check_secs: 1,
        ..StorageConfig::default()
    };
    let stores = Stores::open(&config, dir.path()).unwrap();
    put(&stores, &keyed, &record("a", "r1", "before"));
    let geo = stores.geo(&eu()).unwrap();
    assert!(content_of(&geo, &keyed, "r1").is_some());

    // Revoked: the next point query finds it gone, though its data key is in the cache.
    fs::remove_file(dir.path().join("a.key")).unwrap();
    assert!(matches!(
        geo.get(&keyed, &req("r1")),
        Err(StorageError::Key(_))
    ));
    // And once the check interval has passed, nothing more is sealed for the resource.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert!(matches!(
        geo.seal(&record("a", "r2", "after"), &keyed),
        Err(StorageError::Key(_))
    ));

    // Back: sealed and read again. A different key in its place opens nothing.
    write_key(dir.path(), "a.key", 7);
    assert!(content_of(&geo, &keyed, "r1").is_some());
    write_key(dir.path(), "a.key", 8);
    assert!(geo.get(&keyed, &req("r1")).is_err());
    assert!(Stores::open(
        &StorageConfig {
            customer_key_check_secs: 61,
            ..config
        },
        dir.path()
    )
    .is_err());
}
