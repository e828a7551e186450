//! Tests of retention purge, deletion and compaction, with an injected clock, on real sled
//! databases in temporary directories.

use std::ops::ControlFlow;
use std::path::Path;

use time::macros::datetime;
use time::{Duration, OffsetDateTime};
use vigil_core::{
    Case, CaseSignals, Clock, Day, Decision, FlagScores, FlagSubject, FlagWindow, Geography,
    LogRecord, RequestId, Resource, ResourceId, ResourceRegistry, Route, RouteReason, Verdict,
};

use super::{Annex, ExportPart, ReviewTask, ReviewText};
use crate::retention::Cutoffs;
use crate::{layout, RetentionConfig, StorageConfig, StorageError, Stores};

pub(super) const NOW: OffsetDateTime = datetime!(2026-11-23 12:00 UTC);

pub(super) fn eu() -> Geography {
    Geography::parse("eu").unwrap()
}

pub(super) fn resource(id: &str) -> Resource {
    Resource::new(ResourceId::parse(id).unwrap(), eu())
}

pub(super) fn registry(resources: &[&Resource]) -> ResourceRegistry {
    let mut registry = ResourceRegistry::default();
    for r in resources {
        registry.add((*r).clone()).unwrap();
    }
    registry
}

pub(super) fn config(dir: &Path) -> StorageConfig {
    StorageConfig {
        data_dir: dir.join("data"),
        master_key: dir.join("keys/master.key"),
        ..StorageConfig::default()
    }
}

/// The stores as they are `days_ago` days before [`NOW`].
pub(super) fn stores_at(dir: &Path, days_ago: i64) -> Stores {
    Stores::open_with_clock(
        &config(dir),
        dir,
        Clock::starting_at(NOW - Duration::days(days_ago)),
    )
    .unwrap()
}

pub(super) fn record(resource: &str, request: &str, end_user: &str, prompt: &str) -> LogRecord {
    LogRecord::from_json(&format!(
        r#"{{"request_id":"{request}","resource_id":"{resource}","geography":"eu","deployment":"standard","timestamp":"2026-11-20T10:00:00Z","operation":"chat","model":"m","end_user":"{end_user}","prompt":"{prompt}","completion":"ok"}}"#
    ))
    .unwrap()
}

pub(super) fn req(id: &str) -> RequestId {
    RequestId::parse(id).unwrap()
}

/// Stores `ids` for `res` in one batch, with a window checkpoint for `end_user`.
pub(super) fn put(stores: &Stores, res: &Resource, ids: &[String], end_user: &str, prompt: &str) {
    let geo = stores.geo(&eu()).unwrap();
    let sealed: Vec<_> = ids
        .iter()
        .map(|id| {
            geo.seal(&record(res.id.as_str(), id, end_user, prompt), res)
                .unwrap()
        })
        .collect();
    geo.write_batch_with(&sealed, |_| {
        Ok(vec![Annex::Window {
            resource_id: res.id.clone(),
            end_user: Some(end_user.into()),
            state: b"state".to_vec(),
        }])
    })
    .unwrap();
}

pub(super) fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i:05}")).collect()
}

/// Opens a case on `res` sampling `request`, with a queued review task, a verdict, and two
/// human decisions: one on the record, one on the whole case.
pub(super) fn open_case(stores: &Stores, res: &Resource, case_id: &str, request: &str) {
    let geo = stores.geo(&eu()).unwrap();
    let case = case_of(res, case_id, request);
    let task = ReviewTask {
        case_id: case_id.into(),
        request_id: req(request),
        resource_id: res.id.clone(),
        queued_at: NOW,
    };
    geo.write_batch_with(&[], |_| {
        Ok(vec![Annex::Case(Box::new(case)), Annex::Review(task)])
    })
    .unwrap();
    geo.store_verdict(
        &Verdict {
            case_id: case_id.into(),
            request_id: req(request),
            reviewed_at: NOW,
            route: Route::Escalated,
            reason: RouteReason::LowConfidence,
            assessment: None,
            model: "m".into(),
            policy_version: "p".into(),
            attempts: 1,
            in_flight: false,
        },
        Some(res),
    )
    .unwrap();
    for about in [Some(req(request)), None] {
        assert!(geo
            .store_decision(&decision(res, case_id, about), res)
            .unwrap());
    }
}

/// A reviewer's decision on `case_id` of `res`, about one record or (`None`) the whole case.
pub(super) fn decision(
    res: &Resource,
    case_id: &str,
    about: Option<RequestId>,
) -> vigil_core::Decision {
    vigil_core::Decision {
        decision_id: vigil_core::Decision::new_id(NOW),
        case_id: case_id.into(),
        request_id: about,
        resource_id: res.id.clone(),
        geography: eu(),
        reviewer: "rita".into(),
        outcome: vigil_core::DecisionOutcome::AbuseConfirmed,
        note: "a note".into(),
        decided_at: NOW,
        access_request: "acc-0000000000000001".into(),
    }
}

fn purge_all(stores: &Stores, registry: &ResourceRegistry) -> crate::PurgeReport {
    let mut reports = stores
        .purge(&RetentionConfig::default(), registry, &mut |_| {
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(reports.len(), 1);
    reports.remove(0)
}

/// Every file under `dir`, concatenated.
pub(super) fn all_bytes(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(all_bytes(&path));
        } else {
            out.extend(std::fs::read(&path).unwrap());
        }
    }
    out
}

pub(super) fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn a_purge_removes_what_is_past_retention_and_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (resource("a"), resource("b"));
    let mut short = resource("short");
    short.retention_days = Some(7);
    let reg = registry(&[&a, &b, &short]);
    {
        let old = stores_at(dir.path(), 31);
        put(&old, &a, &ids("old", 10), "u-old", "forty days");
        put(&old, &short, &ids("short-old", 3), "u-short", "kept a week");
        open_case(&old, &a, "case-old", "old-00001");
    }
    {
        let recent = stores_at(dir.path(), 10);
        put(&recent, &b, &ids("recent", 5), "u-recent", "ten days");
        put(
            &recent,
            &short,
            &ids("short-recent", 2),
            "u-short2",
            "ten days",
        );
        open_case(&recent, &b, "case-recent", "recent-00001");
    }
    // 29 days ago is the oldest day kept (30 days, today included): its record stays.
    put(
        &stores_at(dir.path(), 29),
        &a,
        &ids("edge", 1),
        "u-edge",
        "edge",
    );

    let stores = stores_at(dir.path(), 0);
    let report = purge_all(&stores, &reg);
    assert!(report.complete);
    // 10 of a (31 days old), 3 + 2 of `short` (kept 7 days).
    assert_eq!(report.records, 15);
    assert_eq!(report.data_keys, 3);
    assert_eq!(report.windows, 3);
    assert_eq!(
        (
            report.cases,
            report.review_tasks,
            report.verdicts,
            report.decisions
        ),
        (1, 0, 1, 2)
    );

    let geo = stores.geo(&eu()).unwrap();
    for id in ids("old", 10).iter().chain(&ids("short-old", 3)) {
        assert_eq!(geo.resource_of(id).unwrap(), None, "index entry of {id}");
        assert!(geo.get_meta(&a, &req(id)).unwrap().is_none());
    }
    assert!(geo.case("case-old").unwrap().is_none());
    assert!(geo.verdicts(Some("case-old")).unwrap().is_empty());
    assert!(geo.decisions(Some("case-old")).unwrap().is_empty());
    // A decision arriving after its case was purged is not stored.
    let mut late = geo.decisions(Some("case-recent")).unwrap().remove(0);
    late.case_id = "case-old".into();
    assert!(!geo.store_decision(&late, &a).unwrap());
    assert!(geo.decisions(Some("case-old")).unwrap().is_empty());
    assert_eq!(geo.window_state(&a.id, Some("u-old")).unwrap(), None);
    assert!(geo.data_key_days(&a.id).unwrap().len() == 1);
    // What is inside retention is intact and readable.
    for id in ids("recent", 5) {
        let got = geo.get(&b, &req(&id)).unwrap().unwrap();
        assert_eq!(got.content.unwrap().prompt.as_deref(), Some("ten days"));
    }
    assert!(has_content(&geo, &a, "edge-00000"));
    assert!(geo.case("case-recent").unwrap().is_some());
    assert_eq!(geo.verdicts(Some("case-recent")).unwrap().len(), 1);
    assert_eq!(geo.decisions(Some("case-recent")).unwrap().len(), 2);
    assert!(geo.window_state(&b.id, Some("u-recent")).unwrap().is_some());
    assert_eq!(geo.len(), 6);
    // The exports of the purged days are marked for rewriting.
    let backlog = geo.export_backlog().unwrap();
    let old_day = Day::of(NOW - Duration::days(31));
    assert!(backlog
        .iter()
        .any(|s| s.part == ExportPart::Records && s.day == old_day));
    assert!(backlog
        .iter()
        .any(|s| s.part == ExportPart::Cases && s.day == old_day));
    // A second purge finds nothing.
    let again = purge_all(&stores, &reg);
    assert_eq!((again.records, again.data_keys, again.windows), (0, 0, 0));
}

#[test]
fn a_purge_cut_short_leaves_the_content_unreadable_and_the_next_one_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let a = resource("a");
    let reg = registry(&[&a]);
    put(
        &stores_at(dir.path(), 40),
        &a,
        &ids("old", 3000),
        "u",
        "old",
    );
    let stores = stores_at(dir.path(), 0);
    // Stopped after its first chunk, as a kill between two chunks would leave it.
    let reports = stores
        .purge(&RetentionConfig::default(), &reg, &mut |_| {
            ControlFlow::Break(())
        })
        .unwrap();
    assert!(!reports[0].complete);
    assert_eq!(reports[0].records, super::lifecycle::CHUNK);
    let geo = stores.geo(&eu()).unwrap();
    assert_eq!(geo.len(), 3000 - super::lifecycle::CHUNK);
    // The day's key went first: what is left cannot be decrypted.
    assert!(matches!(
        geo.get(&a, &req("old-02999")),
        Err(StorageError::Decrypt { .. })
    ));
    drop(geo);
    drop(stores);
    let stores = stores_at(dir.path(), 0);
    let report = purge_all(&stores, &reg);
    assert!(report.complete);
    assert_eq!(report.records, 3000 - super::lifecycle::CHUNK);
    assert_eq!(stores.geo(&eu()).unwrap().len(), 0);
}

#[test]
fn ingest_during_a_purge_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let a = resource("a");
    let reg = registry(&[&a]);
    put(
        &stores_at(dir.path(), 40),
        &a,
        &ids("old", 20_000),
        "u",
        "old",
    );
    let stores = stores_at(dir.path(), 0);
    let new_ids: Vec<Vec<String>> = (0..40).map(|b| ids(&format!("new{b}"), 100)).collect();
    let report = std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            for batch in &new_ids {
                put(&stores, &a, batch, "u-new", "new");
            }
        });
        let report = purge_all(&stores, &reg);
        writer.join().unwrap();
        report
    });
    assert_eq!(report.records, 20_000);
    let geo = stores.geo(&eu()).unwrap();
    assert_eq!(geo.len(), 4000);
    for id in new_ids.iter().flatten() {
        assert!(has_content(&geo, &a, id));
    }
}

#[test]
fn after_a_purge_no_copy_of_the_disk_unwraps_the_purged_day_and_compaction_removes_its_ids() {
    let dir = tempfile::tempdir().unwrap();
    let a = resource("a");
    let reg = registry(&[&a]);
    let old_day = Day::of(NOW - Duration::days(40));
    put(
        &stores_at(dir.path(), 40),
        &a,
        &ids("purgemarker", 200),
        "enduser-purgemarker",
        "x",
    );
    put(
        &stores_at(dir.path(), 1),
        &a,
        &ids("keptmarker", 50),
        "enduser-keptmarker",
        "y",
    );
    let data = dir.path().join("data");
    let aad = crate::crypto::data_key_aad("eu", "a", old_day);
    // The old day's wrapped data key as it lies in the keyring: nonce, then ciphertext.
    let wrapped = {
        let stores = stores_at(dir.path(), 0);
        let geo = stores.geo(&eu()).unwrap();
        let entry = geo
            .data_keys()
            .get(layout::data_key_id("a", old_day))
            .unwrap()
            .expect("the old day has a key");
        let entry: crate::keys::KeyEntry = postcard::from_bytes(&entry).unwrap();
        let sealed = geo
            .keyring
            .get(entry.slot, crate::keyring::owner(&aad))
            .unwrap()
            .expect("its slot is live");
        [sealed.nonce.as_slice(), &sealed.ciphertext].concat()
    };
    let before = all_bytes(&data);
    assert!(
        contains(&before, b"purgemarker-00199"),
        "the scan can see IDs"
    );
    assert!(
        contains(&before, &wrapped),
        "the scan can see the wrapped key"
    );

    let stores = stores_at(dir.path(), 0);
    assert_eq!(purge_all(&stores, &reg).records, 200);
    // A disk image taken now, before any compaction: every file of the data directory and
    // the master key, which vigil still holds.
    let image = tempfile::tempdir().unwrap();
    copy_tree(&data, &image.path().join("data"));
    let master = master_key(dir.path());
    let copied = all_bytes(&image.path().join("data"));
    assert!(
        contains(&copied, b"purgemarker-00199"),
        "sled still holds the purged records' bytes: only the key makes them unreadable"
    );
    assert!(!contains(&copied, &wrapped), "the wrapped key is nowhere");
    // Every wrapped-key blob in the copy, tried against the master key for the purged day:
    // each slot of the keyring, and each place in the other files where a wrapped key of
    // the previous layout would lie (a nonce, a length byte, 48 bytes of ciphertext).
    assert!(
        data_keys_in_image(image.path(), &master, &aad).is_empty(),
        "no keyring slot opens"
    );
    let opens = |(nonce, ciphertext): (Vec<u8>, Vec<u8>)| {
        let sealed = crate::crypto::Sealed {
            nonce: nonce.try_into().unwrap(),
            ciphertext,
        };
        crate::crypto::open(&master, &aad, &sealed).is_ok()
    };
    let mut framed = copied
        .windows(12 + 1 + 48)
        .filter(|w| w[12] == 48)
        .map(|w| (w[..12].to_vec(), w[13..].to_vec()));
    assert!(!framed.any(&opens), "no blob in sled's files opens");
    // The kept day still decrypts, from the store itself.
    let geo = stores.geo(&eu()).unwrap();
    assert!(has_content(&geo, &a, "keptmarker-00010"));
    drop(geo);

    let compacted = stores.compact(&eu()).unwrap();
    assert!(compacted.bytes_after < compacted.bytes_before);
    let after = all_bytes(&data);
    assert!(!contains(&after, b"purgemarker"));
    assert!(contains(&after, b"keptmarker-00049"));
    // The store still works after compaction: kept records read back, new ones are written.
    let geo = stores.geo(&eu()).unwrap();
    assert!(has_content(&geo, &a, "keptmarker-00010"));
    put(&stores, &a, &ids("later", 1), "u", "z");
    assert_eq!(geo.len(), 51);
}

/// The master key, as vigil holds it.
fn master_key(dir: &Path) -> aes_gcm::Aes256Gcm {
    let master = std::fs::read_to_string(dir.join("keys/master.key")).unwrap();
    let mut key = [0u8; crate::crypto::KEY_LEN];
    hex::decode_to_slice(master.trim(), &mut key).unwrap();
    crate::crypto::cipher(&key)
}

/// Every data key that the keyring in a disk image holds for `aad` (one resource-day) and
/// that `master` unwraps: each slot of the file is tried.
fn data_keys_in_image(
    image: &Path,
    master: &aes_gcm::Aes256Gcm,
    aad: &[u8],
) -> Vec<aes_gcm::Aes256Gcm> {
    let ring = std::fs::read(image.join("data/eu.keyring")).unwrap();
    ring.chunks_exact(crate::keyring::SLOT)
        .skip(1)
        .filter_map(|slot| {
            let sealed = crate::crypto::Sealed {
                nonce: slot[17..29].try_into().unwrap(),
                ciphertext: slot[29..77].to_vec(),
            };
            let key = crate::crypto::open(master, aad, &sealed).ok()?;
            Some(crate::crypto::cipher(key.as_slice().try_into().ok()?))
        })
        .collect()
}

/// A stored record's sealed content, as it lies in its segment.
fn sealed_content(geo: &super::GeoStore, resource: &str, id: &str) -> crate::crypto::Sealed {
    let bytes = geo.stored_value(resource, id).unwrap().unwrap();
    match layout::split_value(&bytes).unwrap().0.content {
        layout::StoredContent::Sealed(sealed) => sealed,
        layout::StoredContent::NotLogged => panic!("{id} has no content"),
    }
}

#[test]
fn after_deleting_a_request_or_a_resource_no_copy_of_the_disk_decrypts_them() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (resource("a"), resource("b"));
    let stores = stores_at(dir.path(), 0);
    put(&stores, &a, &ids("delmarker", 300), "u", "x");
    put(&stores, &b, &ids("resmarker", 20), "u", "y");
    let geo = stores.geo(&eu()).unwrap();
    let today = Day::of(NOW);
    let (aad_a, aad_b) = (
        crate::crypto::data_key_aad("eu", "a", today),
        crate::crypto::data_key_aad("eu", "b", today),
    );
    let master = master_key(dir.path());
    let doomed = sealed_content(&geo, "a", "delmarker-00007");
    let content_aad = crate::crypto::content_aad("eu", "a", "delmarker-00007");
    let b_sealed = sealed_content(&geo, "b", "resmarker-00003");
    let b_aad = crate::crypto::content_aad("eu", "b", "resmarker-00003");
    let opened_by = |keys: &[aes_gcm::Aes256Gcm], sealed: &crate::crypto::Sealed, aad: &[u8]| {
        keys.iter()
            .any(|k| crate::crypto::open(k, aad, sealed).is_ok())
    };
    // Before: the disk holds a key that opens both.
    let image = tempfile::tempdir().unwrap();
    copy_tree(&dir.path().join("data"), &image.path().join("data"));
    assert!(opened_by(
        &data_keys_in_image(image.path(), &master, &aad_a),
        &doomed,
        &content_aad
    ));
    assert!(opened_by(
        &data_keys_in_image(image.path(), &master, &aad_b),
        &b_sealed,
        &b_aad
    ));

    stores
        .delete_request(&a, &req("delmarker-00007"))
        .unwrap()
        .unwrap();
    geo.delete_resource(&b.id).unwrap();
    // The rest of the day reads as before, under its new key.
    for id in ["delmarker-00000", "delmarker-00008", "delmarker-00299"] {
        assert!(has_content(&geo, &a, id), "{id}");
    }
    assert_eq!(geo.len(), 299);
    let image = tempfile::tempdir().unwrap();
    copy_tree(&dir.path().join("data"), &image.path().join("data"));
    let copied = all_bytes(&image.path().join("data"));
    assert!(
        contains(&copied, &doomed.ciphertext),
        "sled still holds the deleted ciphertext: only the key makes it unreadable"
    );
    let keys_a = data_keys_in_image(image.path(), &master, &aad_a);
    assert_eq!(keys_a.len(), 1, "one key for the day: the new one");
    assert!(
        !opened_by(&keys_a, &doomed, &content_aad),
        "the deleted record does not open"
    );
    assert!(data_keys_in_image(image.path(), &master, &aad_b).is_empty());
    // Nor does any key of another resource-day (the content's associated data binds it).
    drop(geo);
    // Reopened from disk, everything left still reads.
    drop(stores);
    let stores = stores_at(dir.path(), 0);
    let geo = stores.geo(&eu()).unwrap();
    assert!(has_content(&geo, &a, "delmarker-00150"));
    drop(geo);

    stores.compact(&eu()).unwrap();
    let after = all_bytes(&dir.path().join("data"));
    assert!(!contains(&after, b"delmarker-00007"));
    assert!(!contains(&after, b"resmarker"));
    assert!(contains(&after, b"delmarker-00299"));
}

#[test]
fn a_record_sealed_before_its_day_was_re_keyed_is_written_with_its_content() {
    let dir = tempfile::tempdir().unwrap();
    let a = resource("a");
    let stores = stores_at(dir.path(), 0);
    put(&stores, &a, &ids("a", 3), "u", "x");
    let geo = stores.geo(&eu()).unwrap();
    // Sealed under the day's key, then the day is re-keyed before the batch is written.
    let in_flight = geo
        .seal(&record("a", "late", "u", "late prompt"), &a)
        .unwrap();
    stores.delete_request(&a, &req("a-00001")).unwrap().unwrap();
    assert_eq!(
        geo.write_batch(&[in_flight]).unwrap(),
        [super::WriteOutcome::Stored]
    );
    let content = geo.get(&a, &req("late")).unwrap().unwrap().content.unwrap();
    assert_eq!(content.prompt.as_deref(), Some("late prompt"));
    // Sealed under the new key, which is the only one left on disk.
    drop(geo);
    drop(stores);
    let stores = stores_at(dir.path(), 0);
    assert!(has_content(&stores.geo(&eu()).unwrap(), &a, "late"));
}

#[test]
fn a_re_key_cut_short_by_a_crash_is_finished_at_the_next_open() {
    let dir = tempfile::tempdir().unwrap();
    let a = resource("a");
    put(&stores_at(dir.path(), 0), &a, &ids("a", 200), "u", "x");
    let today = Day::of(NOW);
    let aad = crate::crypto::data_key_aad("eu", "a", today);
    {
        // What the first step of a re-key leaves: a new key in the keyring, named by the
        // marker; a crash before any segment was re-sealed.
        let stores = stores_at(dir.path(), 0);
        let geo = stores.geo(&eu()).unwrap();
        let (_, wrapped) = geo
            .keys
            .new_data_key_under("a", crate::keys::KekRef::Master, &aad)
            .unwrap();
        let entry = crate::keys::KeyEntry {
            kek: wrapped.kek,
            slot: geo
                .keyring
                .put(crate::keyring::owner(&aad), &wrapped.sealed)
                .unwrap(),
        };
        // It names the request whose deletion started it.
        let marker = super::rekey::marker_value(&entry, Some("a-00007"));
        geo.data_keys()
            .insert(layout::rekey_marker("a", today), marker)
            .unwrap();
        geo.flush().unwrap();
    }
    let stores = stores_at(dir.path(), 0);
    let geo = stores.geo(&eu()).unwrap();
    assert_eq!(
        geo.data_keys()
            .scan_prefix(layout::rekey_markers_prefix())
            .count(),
        0
    );
    // The deletion that started it is finished too.
    assert_eq!(geo.resource_of("a-00007").unwrap(), None);
    assert_eq!(geo.len(), 199);
    for id in ["a-00000", "a-00100", "a-00199"] {
        assert!(has_content(&geo, &a, id), "{id}");
    }
    // One key for the day is left on disk, and it is the one that opens the records.
    let master = master_key(dir.path());
    let image = tempfile::tempdir().unwrap();
    copy_tree(&dir.path().join("data"), &image.path().join("data"));
    let keys = data_keys_in_image(image.path(), &master, &aad);
    assert_eq!(keys.len(), 1);
    let sealed = sealed_content(&geo, "a", "a-00100");
    let content_aad = crate::crypto::content_aad("eu", "a", "a-00100");
    assert!(crate::crypto::open(&keys[0], &content_aad, &sealed).is_ok());
}

/// Whether the stored record `id` of `res` reads back with its content.
fn has_content(geo: &super::GeoStore, res: &Resource, id: &str) -> bool {
    geo.get(res, &req(id))
        .unwrap()
        .expect("the record is stored")
        .content
        .is_some()
}

/// Copies the files under `from` to `to`, as a disk image would hold them.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        let kind = entry.file_type().unwrap();
        if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path()).unwrap(), target).unwrap();
        } else if kind.is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn records_written_after_a_compaction_never_overwrite_older_segments() {
    let dir = tempfile::tempdir().unwrap();
    let a = resource("a");
    let stores = stores_at(dir.path(), 0);
    put(&stores, &a, &ids("before", 300), "u", "x");
    stores.compact(&eu()).unwrap();
    // The same resource and day again: new segments, whose sequence numbers must not reuse
    // the ones the compacted copy holds.
    put(&stores, &a, &ids("after", 300), "u", "y");
    stores.compact(&eu()).unwrap();
    put(&stores, &a, &ids("later", 300), "u", "z");
    let geo = stores.geo(&eu()).unwrap();
    assert_eq!(geo.request_ids(&a.id).unwrap().len(), 900);
    assert_eq!(geo.len(), 900);
    for id in [
        "before-00000",
        "before-00299",
        "after-00000",
        "after-00299",
        "later-00150",
    ] {
        assert!(has_content(&geo, &a, id), "{id}");
    }
}

#[test]
fn compaction_runs_while_records_are_written_and_read_and_a_cut_short_one_is_tidied() {
    let dir = tempfile::tempdir().unwrap();
    let a = resource("a");
    put(&stores_at(dir.path(), 0), &a, &ids("r", 3), "u", "x");
    put(
        &stores_at(dir.path(), 40),
        &a,
        &ids("gonemarker", 2_000),
        "u",
        "x",
    );
    let stores = stores_at(dir.path(), 0);
    purge_all(&stores, &registry(&[&a]));
    let held = stores.geo(&eu()).unwrap();
    let done = std::sync::atomic::AtomicBool::new(false);
    let compacted = std::thread::scope(|scope| {
        // Ingest and reads go on through the same handle while the store is compacted.
        let writer = scope.spawn(|| {
            let mut batches = 0;
            while !done.load(std::sync::atomic::Ordering::Acquire) || batches < 3 {
                let batch = ids(&format!("during{batches:03}"), 50);
                put(&stores, &a, &batch, "u", "y");
                let read = held.get(&a, &req(&batch[7])).unwrap();
                assert!(
                    read.is_some_and(|r| r.content.is_some()),
                    "{} not read back (index entry: {:?})",
                    batch[7],
                    held.locate(&batch[7]).unwrap()
                );
                batches += 1;
            }
            batches
        });
        let compacted = stores.compact(&eu()).unwrap();
        done.store(true, std::sync::atomic::Ordering::Release);
        (compacted, writer.join().unwrap())
    });
    let (compacted, batches) = compacted;
    assert!(
        compacted.bytes_after < compacted.bytes_before,
        "{compacted:?}"
    );
    // Everything written before and during the compaction is there, once.
    assert_eq!(held.len(), 3 + 50 * batches);
    assert_eq!(held.request_ids(&a.id).unwrap().len(), 3 + 50 * batches);
    for batch in 0..batches {
        assert!(has_content(&held, &a, &format!("during{batch:03}-00049")));
    }
    assert!(has_content(&held, &a, "r-00002"));
    assert!(!contains(
        &all_bytes(&dir.path().join("data")),
        b"gonemarker"
    ));
    drop(held);
    drop(stores);
    // Reopened from disk, the same.
    let stores = stores_at(dir.path(), 0);
    assert_eq!(stores.geo(&eu()).unwrap().len(), 3 + 50 * batches);
    drop(stores);
    // The store's path now links to the compacted generation; nothing else is left beside it.
    let data = dir.path().join("data");
    assert_eq!(
        std::fs::read_link(data.join("eu")).unwrap(),
        Path::new("eu.gen1")
    );
    assert_eq!(store_entries(&data), ["eu", "eu.gen1", "eu.keyring"]);
    // A crash during the next compaction, before its link took the store's name: the copy and
    // the link are removed at the next open.
    std::fs::create_dir(data.join("eu.gen2")).unwrap();
    std::os::unix::fs::symlink("eu.gen2", data.join("eu.link")).unwrap();
    let stores = stores_at(dir.path(), 0);
    assert_eq!(stores.geo(&eu()).unwrap().len(), 3 + 50 * batches);
    drop(stores);
    assert_eq!(store_entries(&data), ["eu", "eu.gen1", "eu.keyring"]);
    // A crash during a first compaction, after the plain directory was moved aside and before
    // the link took its name: the store is moved back, the copy removed (and so is a copy left
    // by a compaction before generations).
    std::fs::remove_file(data.join("eu")).unwrap();
    std::fs::rename(data.join("eu.gen1"), data.join("eu.old")).unwrap();
    std::fs::create_dir(data.join("eu.gen1")).unwrap();
    std::fs::create_dir(data.join("eu.compact")).unwrap();
    let stores = stores_at(dir.path(), 0);
    assert_eq!(stores.geo(&eu()).unwrap().len(), 3 + 50 * batches);
    assert_eq!(store_entries(&data), ["eu", "eu.keyring"]);
    assert!(data.join("eu").symlink_metadata().unwrap().is_dir());
}

/// The names under the data directory that belong to the `eu` store, sorted.
fn store_entries(data: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(data)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n == "eu" || n.starts_with("eu."))
        .collect();
    names.sort();
    names
}

#[test]
fn an_open_that_waited_for_a_retired_generation_opens_the_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new, store) = (
        dir.path().join("eu.gen1"),
        dir.path().join("eu.gen2"),
        dir.path().join("eu"),
    );
    super::open_db(&new)
        .unwrap()
        .insert(b"generation", b"2")
        .unwrap();
    std::fs::create_dir(&old).unwrap();
    std::os::unix::fs::symlink("eu.gen1", &store).unwrap();
    let held = super::open_db(&store).unwrap();
    held.insert(b"generation", b"1").unwrap();
    // As a compaction does: the link moves on, then the retired generation is let go.
    let retire = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(300));
        let link = dir.path().join("eu.link");
        std::os::unix::fs::symlink("eu.gen2", &link).unwrap();
        std::fs::rename(&link, dir.path().join("eu")).unwrap();
        drop(held);
        dir
    });
    // Waits for the lock on generation 1, then finds the link moved.
    let opened = super::open_db(&store).unwrap();
    assert_eq!(
        opened.get(b"generation").unwrap().as_deref(),
        Some(&b"2"[..])
    );
    let _dir = retire.join().unwrap();
    assert!(old.exists());
}

#[test]
fn a_compaction_that_cannot_swap_leaves_the_store_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let a = resource("a");
    let stores = stores_at(dir.path(), 0);
    put(&stores, &a, &ids("before", 100), "u", "x");
    // Something in the way of the new link: the swap fails before anything moved.
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("eu.link/in-the-way")).unwrap();
    let err = stores.compact(&eu()).unwrap_err().to_string();
    assert!(err.contains("eu.link"), "{err}");
    assert!(!data.join("eu.gen1").exists());
    assert!(data.join("eu").symlink_metadata().unwrap().is_dir());
    // The store goes on reading and writing where the next open looks.
    put(&stores, &a, &ids("after", 100), "u", "y");
    assert!(has_content(&stores.geo(&eu()).unwrap(), &a, "before-00007"));
    drop(stores);
    std::fs::remove_dir_all(data.join("eu.link")).unwrap();
    let stores = stores_at(dir.path(), 0);
    assert_eq!(stores.geo(&eu()).unwrap().len(), 200);
    // With the way clear, it compacts, and compacts again onto the next generation.
    stores.compact(&eu()).unwrap();
    put(&stores, &a, &ids("later", 100), "u", "z");
    stores.compact(&eu()).unwrap();
    assert_eq!(store_entries(&data), ["eu", "eu.gen2", "eu.keyring"]);
    assert_eq!(stores.geo(&eu()).unwrap().len(), 300);
}

#[test]
fn deleting_a_request_removes_it_and_its_reviews_only() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (resource("a"), resource("b"));
    let stores = stores_at(dir.path(), 0);
    put(&stores, &a, &ids("a", 3), "u", "x");
    put(&stores, &b, &ids("b", 3), "u", "y");
    open_case(&stores, &a, "case-a", "a-00001");
    // Named with another resource, the request is not that resource's: nothing is deleted.
    assert!(stores
        .delete_request(&b, &req("a-00001"))
        .unwrap()
        .is_none());
    assert!(has_content(&stores.geo(&eu()).unwrap(), &a, "a-00001"));
    let deleted = stores.delete_request(&a, &req("a-00001")).unwrap().unwrap();
    // The verdict and the decision on the record; the decision on the whole case stays.
    assert_eq!((deleted.resource_id.as_str(), deleted.reviews), ("a", 2));
    let geo = stores.geo(&eu()).unwrap();
    assert!(geo.get(&a, &req("a-00001")).unwrap().is_none());
    assert_eq!(geo.resource_of("a-00001").unwrap(), None);
    assert!(geo.verdicts(Some("case-a")).unwrap().is_empty());
    let left = geo.decisions(Some("case-a")).unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].request_id, None);
    assert_eq!(geo.len(), 5);
    assert!(has_content(&geo, &a, "a-00002"));
    assert!(stores
        .delete_request(&a, &req("a-00001"))
        .unwrap()
        .is_none());
    // The same request ID can be stored again afterwards (a new record).
    put(&stores, &a, &["a-00001".to_owned()], "u", "again");
    assert_eq!(geo.len(), 6);
}

#[test]
fn deleting_a_resource_destroys_its_keys_first_and_leaves_others_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (resource("a"), resource("b"));
    {
        let old = stores_at(dir.path(), 3);
        put(&old, &a, &ids("a-old", 4), "u", "x");
    }
    let stores = stores_at(dir.path(), 0);
    put(&stores, &a, &ids("a", 3), "u", "x");
    put(&stores, &b, &ids("b", 3), "u", "y");
    open_case(&stores, &a, "case-a", "a-00001");
    open_case(&stores, &b, "case-b", "b-00001");
    let geo = stores.geo(&eu()).unwrap();
    // A record sealed before the deletion and written after it keeps no ciphertext.
    let late = geo.seal(&record("a", "a-late", "u", "late"), &a).unwrap();
    let report = geo.delete_resource(&a.id).unwrap();
    assert_eq!((report.data_keys, report.records, report.cases), (2, 7, 1));
    assert_eq!(report.windows, 1);
    assert_eq!(geo.count(&a.id).unwrap(), 0);
    assert!(geo.data_key_days(&a.id).unwrap().is_empty());
    assert!(geo.case("case-a").unwrap().is_none());
    assert!(geo.window_state(&a.id, Some("u")).unwrap().is_none());
    geo.write_batch(&[late]).unwrap();
    assert_eq!(geo.get(&a, &req("a-late")).unwrap().unwrap().content, None);
    // The other resource is untouched.
    assert_eq!(geo.count(&b.id).unwrap(), 3);
    assert!(geo.case("case-b").unwrap().is_some());
    assert!(has_content(&geo, &b, "b-00002"));
    assert!(geo.window_state(&b.id, Some("u")).unwrap().is_some());
}

#[test]
fn a_deletion_cut_short_by_a_crash_is_finished_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let a = resource("a");
    {
        let stores = stores_at(dir.path(), 0);
        put(&stores, &a, &ids("a", 5), "u", "x");
        // The crash: keys destroyed and the job marked, records not yet removed.
        let geo = stores.geo(&eu()).unwrap();
        assert_eq!(
            geo.start_job(&a.id, super::JobKind::DeleteData).unwrap(),
            Some(1)
        );
        assert!(matches!(
            geo.get(&a, &req("a-00001")),
            Err(StorageError::Decrypt { .. })
        ));
    }
    let stores = stores_at(dir.path(), 0);
    let done = stores.reconcile(&registry(&[&a])).unwrap();
    assert_eq!(done.deletions_finished.len(), 1);
    assert_eq!(done.deletions_finished[0].records, 5);
    let geo = stores.geo(&eu()).unwrap();
    assert_eq!(geo.count(&a.id).unwrap(), 0);
    assert!(geo.pending_jobs().unwrap().is_empty());
}

/// Rewrites a store into what layout 3 wrote: one `R` entry per record with a `B` entry
/// beside it, index entries holding the resource ID, detections of the records `apart` names
/// in `D` entries of their own (as before they went into the record's value).
fn downgrade_to_layout_3(geo: &super::GeoStore, apart: &[&str]) {
    use crate::layout::v3;
    let mut batch = sled::Batch::default();
    for entry in geo.raw().scan_prefix(layout::all_segments_prefix()) {
        let (key, bytes) = entry.unwrap();
        let (resource, day, _) = layout::segment_of(&key).unwrap();
        for entry in crate::segment::entries(&bytes).unwrap() {
            let (value, rest) = layout::split_value(entry.value).unwrap();
            let mut record = postcard::to_stdvec(&value).unwrap();
            if apart.contains(&entry.request) && !rest.is_empty() {
                batch.insert(v3::detection_key(resource, entry.request), rest);
            } else {
                record.extend_from_slice(rest);
            }
            batch.insert(v3::record_key(resource, entry.request), record);
            batch.insert(v3::bucket_key(resource, day, entry.request), &[]);
            batch.insert(layout::index_key(entry.request), resource.as_bytes());
        }
        batch.remove(key);
    }
    // A bucket entry a deletion left behind.
    batch.insert(v3::bucket_key("a", Day::of(NOW), "gone"), &[]);
    geo.raw().apply_batch(batch).unwrap();
    geo.data_keys().insert(layout::LAYOUT_KEY, &[3]).unwrap();
    geo.flush().unwrap();
}

#[test]
fn a_layout_3_store_is_packed_into_segments_when_opened() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (resource("a"), resource("b"));
    let detection = vigil_core::Detection {
        scores: vigil_core::HarmScores {
            any_harm: 0.9,
            ..Default::default()
        },
        harmful: true,
        model: "m@1".into(),
    };
    {
        let old = stores_at(dir.path(), 3);
        put(&old, &a, &ids("three", 100), "u", "x");
        let geo = old.geo(&eu()).unwrap();
        let mut scored = geo.seal(&record("b", "b-scored", "u", "y"), &b).unwrap();
        scored.detection = Some(detection.clone());
        let mut in_value = geo.seal(&record("b", "b-in-value", "u", "y"), &b).unwrap();
        in_value.detection = Some(detection.clone());
        geo.write_batch(&[scored, in_value]).unwrap();
    }
    put(&stores_at(dir.path(), 0), &a, &ids("today", 5), "u", "z");
    let before = {
        let stores = stores_at(dir.path(), 0);
        let geo = stores.geo(&eu()).unwrap();
        let before = (
            geo.request_ids(&a.id).unwrap(),
            geo.request_ids(&b.id).unwrap(),
        );
        downgrade_to_layout_3(&geo, &["b-scored"]);
        before
    };

    let stores = stores_at(dir.path(), 0);
    let geo = stores.geo(&eu()).unwrap();
    assert_eq!(
        geo.data_keys()
            .get(layout::LAYOUT_KEY)
            .unwrap()
            .unwrap()
            .as_ref(),
        [layout::LAYOUT_VERSION]
    );
    for kind in [b'R', b'B', b'D'] {
        assert_eq!(geo.raw().scan_prefix([kind]).count(), 0, "{}", kind as char);
    }
    assert_eq!(
        (
            geo.request_ids(&a.id).unwrap(),
            geo.request_ids(&b.id).unwrap()
        ),
        before
    );
    assert_eq!(geo.len(), 107);
    for id in ["three-00000", "three-00099", "today-00004"] {
        assert!(has_content(&geo, &a, id), "{id}");
    }
    for id in ["b-scored", "b-in-value"] {
        assert!(has_content(&geo, &b, id), "{id}");
        assert_eq!(
            geo.detection(&b.id, &req(id)).unwrap().as_ref(),
            Some(&detection),
            "{id}"
        );
    }
    // 100 records of one resource and day fill more than one segment.
    let segments = geo
        .raw()
        .scan_prefix(layout::segments_prefix("a", None))
        .count();
    assert!(segments >= 2, "{segments} segments");
    // And the lifecycle works on what was migrated: the day 3 days back expires at 2 days.
    let retention = RetentionConfig {
        max_days: 2,
        ..RetentionConfig::default()
    };
    let report = geo
        .purge(
            &Cutoffs::new(&retention, &registry(&[&a, &b]), &eu(), Day::of(NOW)),
            &mut |_| ControlFlow::Continue(()),
        )
        .unwrap();
    assert_eq!(report.records, 102);
    assert_eq!(geo.request_ids(&a.id).unwrap().len(), 5);
    assert_eq!(geo.len(), 5);
}

#[test]
fn a_layout_2_store_is_migrated_into_the_keyring_when_opened() {
    let dir = tempfile::tempdir().unwrap();
    let a = resource("a");
    put(&stores_at(dir.path(), 3), &a, &ids("three", 2), "u", "x");
    put(&stores_at(dir.path(), 0), &a, &ids("today", 2), "u", "y");
    // Turn it into what layout 2 wrote: the wrapped keys in the tree, no keyring.
    {
        let stores = stores_at(dir.path(), 0);
        let geo = stores.geo(&eu()).unwrap();
        for entry in geo.data_keys().iter() {
            let (key, value) = entry.unwrap();
            let Some((resource, day)) = layout::data_key_of(&key) else {
                continue;
            };
            let entry: crate::keys::KeyEntry = postcard::from_bytes(&value).unwrap();
            let aad = crate::crypto::data_key_aad("eu", resource, day);
            let sealed = geo.keyring.get(entry.slot, crate::keyring::owner(&aad));
            let wrapped = crate::keys::WrappedKey {
                kek: entry.kek,
                sealed: sealed.unwrap().unwrap(),
            };
            geo.data_keys()
                .insert(key, postcard::to_stdvec(&wrapped).unwrap())
                .unwrap();
        }
        downgrade_to_layout_3(&geo, &[]);
        geo.data_keys().insert(layout::LAYOUT_KEY, &[2]).unwrap();
        geo.flush().unwrap();
    }
    std::fs::remove_file(dir.path().join("data/eu.keyring")).unwrap();

    let stores = stores_at(dir.path(), 0);
    let geo = stores.geo(&eu()).unwrap();
    for id in ["three-00001", "today-00001"] {
        assert!(has_content(&geo, &a, id), "{id}");
    }
    assert_eq!(
        geo.data_keys()
            .get(layout::LAYOUT_KEY)
            .unwrap()
            .unwrap()
            .as_ref(),
        [layout::LAYOUT_VERSION]
    );
    drop(geo);
    drop(stores);
    // Opened again: nothing left to migrate, and everything still reads.
    let stores = stores_at(dir.path(), 0);
    let geo = stores.geo(&eu()).unwrap();
    assert!(has_content(&geo, &a, "three-00000"));
}

#[test]
fn a_store_whose_keyring_was_left_behind_is_refused_not_given_an_empty_one() {
    let dir = tempfile::tempdir().unwrap();
    let a = resource("a");
    put(&stores_at(dir.path(), 0), &a, &ids("a", 2), "u", "x");
    let ring = dir.path().join("data/eu.keyring");
    let saved = std::fs::read(&ring).unwrap();
    std::fs::remove_file(&ring).unwrap();
    let err = stores_at(dir.path(), 0).geo(&eu()).err().unwrap();
    assert!(
        matches!(
            err,
            StorageError::Keyring(crate::keyring::KeyringError::Missing { .. })
        ),
        "{err}"
    );
    assert!(!ring.exists(), "no empty keyring was put in its place");
    // Put back, everything reads again.
    std::fs::write(&ring, saved).unwrap();
    let stores = stores_at(dir.path(), 0);
    assert!(has_content(&stores.geo(&eu()).unwrap(), &a, "a-00001"));
}

#[test]
fn a_store_of_the_older_layout_is_refused_with_the_way_out() {
    let dir = tempfile::tempdir().unwrap();
    put(
        &stores_at(dir.path(), 0),
        &resource("a"),
        &ids("a", 1),
        "u",
        "x",
    );
    {
        let stores = stores_at(dir.path(), 0);
        let geo = stores.geo(&eu()).unwrap();
        geo.data_keys().remove(layout::LAYOUT_KEY).unwrap();
        geo.flush().unwrap();
    }
    let err = stores_at(dir.path(), 0).geo(&eu()).err().unwrap();
    assert!(
        matches!(err, StorageError::Layout { found: 1, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("re-ingest"));
}

#[test]
fn cutoffs_follow_the_clock() {
    let cut = Cutoffs::new(
        &RetentionConfig::default(),
        &ResourceRegistry::default(),
        &eu(),
        Day::of(NOW),
    );
    assert!(cut.expired("x", Day::of(NOW - Duration::days(30))));
    assert!(!cut.expired("x", Day::of(NOW - Duration::days(29))));
}

/// What a reviewer might write after reading a record: it quotes the record.
const QUOTE: &str = "quotedmarker: the user asked for the napalm recipe twice";

/// A verdict on `request` of `case_id` whose rationale is `rationale`.
fn verdict_with(case_id: &str, request: &str, rationale: &str, in_flight: bool) -> Verdict {
    Verdict {
        case_id: case_id.into(),
        request_id: req(request),
        reviewed_at: NOW,
        route: Route::Escalated,
        reason: RouteReason::Violation,
        assessment: Some(vigil_core::Assessment {
            violation: true,
            categories: vec![],
            severity: vigil_core::Severity::High,
            confidence: 0.9,
            rationale: rationale.into(),
        }),
        model: "m".into(),
        policy_version: "p".into(),
        attempts: 1,
        in_flight,
    }
}

/// A decision on `about` (the whole case when `None`) of `case_id` with `note`.
fn decision_with(res: &Resource, case_id: &str, about: Option<&str>, note: &str) -> Decision {
    Decision {
        decision_id: Decision::new_id(NOW),
        case_id: case_id.into(),
        request_id: about.map(req),
        resource_id: res.id.clone(),
        geography: eu(),
        reviewer: "rita".into(),
        outcome: vigil_core::DecisionOutcome::AbuseConfirmed,
        note: note.into(),
        decided_at: NOW,
        access_request: "acc-0000000000000001".into(),
    }
}

/// Opens a case on `res` sampling `requests`, with a verdict quoting [`QUOTE`] on each, a
/// decision quoting it on the first, and one on the whole case.
fn open_case_with_texts(stores: &Stores, res: &Resource, case_id: &str, requests: &[&str]) {
    let geo = stores.geo(&eu()).unwrap();
    let mut case = case_of(res, case_id, requests[0]);
    case.sample = requests.iter().map(|r| req(r)).collect();
    geo.write_batch_with(&[], |_| Ok(vec![Annex::Case(Box::new(case))]))
        .unwrap();
    for request in requests {
        let verdict = verdict_with(case_id, request, &format!("{QUOTE} ({request})"), false);
        geo.store_verdict(&verdict, Some(res)).unwrap();
    }
    for about in [Some(requests[0]), None] {
        let decision = decision_with(res, case_id, about, &format!("{QUOTE} ({about:?})"));
        assert!(geo.store_decision(&decision, res).unwrap());
    }
}

fn case_of(res: &Resource, case_id: &str, request: &str) -> Case {
    Case {
        case_id: case_id.into(),
        opened_at: NOW,
        geography: eu(),
        resource_id: res.id.clone(),
        subject: FlagSubject::Resource,
        window: FlagWindow {
            start: NOW,
            end: NOW,
        },
        scores: FlagScores {
            abuse: 0.9,
            categories: Default::default(),
        },
        categories: vec![],
        signals: CaseSignals::default(),
        pattern_families: vec![],
        sample: vec![req(request)],
        policy_version: "p".into(),
    }
}

/// The rationales of a case's verdicts, by request ID, as `res` reads them.
fn rationales(geo: &super::GeoStore, res: &Resource, case_id: &str) -> Vec<(String, ReviewText)> {
    geo.verdicts_with_rationales(case_id, res)
        .unwrap()
        .into_iter()
        .map(|(v, text)| {
            assert_eq!(
                v.assessment.unwrap().rationale,
                "",
                "the verdict itself holds none"
            );
            (v.request_id.to_string(), text)
        })
        .collect()
}

/// The notes of a case's decisions, by record (`None`: the whole case, first), as `res`
/// reads them.
fn notes(
    geo: &super::GeoStore,
    res: &Resource,
    case_id: &str,
) -> Vec<(Option<String>, ReviewText)> {
    let mut notes: Vec<_> = geo
        .decisions_with_notes(case_id, res)
        .unwrap()
        .into_iter()
        .map(|(d, text)| {
            assert_eq!(d.note, "", "the decision itself holds none");
            (d.request_id.map(|r| r.to_string()), text)
        })
        .collect::<Vec<_>>();
    notes.sort_by(|x, y| x.0.cmp(&y.0));
    notes
}

fn quote(suffix: &str) -> ReviewText {
    ReviewText::Read(format!("{QUOTE} ({suffix})"))
}

#[test]
fn notes_and_rationales_are_sealed_at_rest_and_go_with_what_they_describe() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (resource("a"), resource("b"));
    let reg = registry(&[&a, &b]);
    // A case stored 31 days ago (purged whole), and records of then that a live case samples.
    {
        let old = stores_at(dir.path(), 31);
        put(&old, &a, &ids("old", 3), "u-old", "then");
        open_case_with_texts(&old, &a, "case-old", &["old-00000"]);
    }
    let stores = stores_at(dir.path(), 0);
    put(&stores, &a, &ids("new", 3), "u", "now");
    put(&stores, &b, &ids("b", 2), "u", "b's");
    open_case_with_texts(
        &stores,
        &a,
        "case-live",
        &["new-00000", "new-00001", "old-00001"],
    );
    open_case_with_texts(&stores, &b, "case-b", &["b-00000"]);
    let geo = stores.geo(&eu()).unwrap();
    geo.flush().unwrap();

    // Nowhere on disk in the clear.
    let data = dir.path().join("data");
    assert!(
        contains(&all_bytes(&data), b"u-old"),
        "the scan sees the store"
    );
    assert!(!contains(&all_bytes(&data), b"quotedmarker"));
    // Without a key, nothing of them: the plain listings leave them out.
    assert!(geo.verdicts(None).unwrap().iter().all(|v| v
        .assessment
        .as_ref()
        .unwrap()
        .rationale
        .is_empty()));
    assert!(geo
        .decisions(None)
        .unwrap()
        .iter()
        .all(|d| d.note.is_empty()));
    // With the resource's keys, every one reads back.
    assert_eq!(
        rationales(&geo, &a, "case-live"),
        [
            ("new-00000".into(), quote("new-00000")),
            ("new-00001".into(), quote("new-00001")),
            ("old-00001".into(), quote("old-00001")),
        ]
    );
    assert_eq!(
        notes(&geo, &a, "case-live"),
        [
            (None, quote("None")),
            (Some("new-00000".into()), quote("Some(\"new-00000\")")),
        ]
    );
    // Another resource's keys open nothing of this case, nor a ciphertext moved to it.
    assert!(rationales(&geo, &b, "case-live")
        .iter()
        .all(|(_, t)| *t == ReviewText::Unreadable));
    {
        let value = |request: &str| -> serde_json::Value {
            let bytes = geo.raw().get(layout::verdict_key("case-live", request));
            serde_json::from_slice(&bytes.unwrap().unwrap()).unwrap()
        };
        let mut target = value("new-00001");
        target["sealed"] = value("new-00000")["sealed"].clone();
        geo.raw()
            .insert(
                layout::verdict_key("case-live", "new-00001"),
                serde_json::to_vec(&target).unwrap(),
            )
            .unwrap();
        assert_eq!(
            rationales(&geo, &a, "case-live")[1],
            ("new-00001".into(), ReviewText::Unreadable),
            "the rationale's associated data binds it to its verdict"
        );
        let verdict = verdict_with(
            "case-live",
            "new-00001",
            &format!("{QUOTE} (new-00001)"),
            false,
        );
        geo.store_verdict(&verdict, Some(&a)).unwrap();
    }

    // Deleting a record: its verdict and decision go; the day's other texts, re-sealed
    // under the day's new key, still read.
    let deleted = stores
        .delete_request(&a, &req("new-00000"))
        .unwrap()
        .unwrap();
    assert_eq!(deleted.reviews, 2);
    // Read by a fresh process, which holds only the day's new key.
    drop((geo, stores));
    let stores = stores_at(dir.path(), 0);
    let geo = stores.geo(&eu()).unwrap();
    assert_eq!(
        rationales(&geo, &a, "case-live"),
        [
            ("new-00001".into(), quote("new-00001")),
            ("old-00001".into(), quote("old-00001")),
        ]
    );
    assert_eq!(notes(&geo, &a, "case-live"), [(None, quote("None"))]);

    // A purge: the old case goes whole; the live case's rationale about a purged record
    // goes with that record's day (its key is destroyed), the rest stays readable.
    purge_all(&stores, &reg);
    assert!(geo.verdicts(Some("case-old")).unwrap().is_empty());
    assert!(geo.decisions(Some("case-old")).unwrap().is_empty());
    assert_eq!(
        rationales(&geo, &a, "case-live"),
        [
            ("new-00001".into(), quote("new-00001")),
            ("old-00001".into(), ReviewText::Empty),
        ]
    );

    // Content logging off: the resource's texts are destroyed with its content; the
    // verdicts and decisions keep their fields.
    let mut b_off = b.clone();
    b_off.content_logging = false;
    assert_eq!(rationales(&geo, &b, "case-b")[0].1, quote("b-00000"));
    stores.reconcile(&registry(&[&a, &b_off])).unwrap();
    assert_eq!(
        rationales(&geo, &b, "case-b"),
        [("b-00000".into(), ReviewText::Empty)],
        "removed, not only hidden: not even the old keys' resource reads it"
    );
    assert_eq!(
        notes(&geo, &b, "case-b"),
        [
            (None, ReviewText::Empty),
            (Some("b-00000".into()), ReviewText::Empty)
        ]
    );
    let verdicts = geo.verdicts(Some("case-b")).unwrap();
    assert_eq!(
        verdicts[0].assessment.as_ref().unwrap().severity,
        vigil_core::Severity::High
    );
    // Still readable for the resource that logs content; and nothing in the clear, ever.
    assert_eq!(notes(&geo, &a, "case-live"), [(None, quote("None"))]);
    geo.flush().unwrap();
    assert!(!contains(&all_bytes(&data), b"quotedmarker"));
}

#[test]
fn a_logging_off_resource_keeps_no_rationale_or_note() {
    let dir = tempfile::tempdir().unwrap();
    let (a, mut quiet) = (resource("a"), resource("quiet"));
    quiet.content_logging = false;
    let stores = stores_at(dir.path(), 0);
    put(&stores, &a, &ids("a", 2), "u", "x");
    put(&stores, &quiet, &ids("q", 2), "u", "y");
    let geo = stores.geo(&eu()).unwrap();
    let case = case_of(&quiet, "case-q", "q-00000");
    // In flight, with the case; then the review's verdict overwrites it.
    let in_flight = verdict_with("case-q", "q-00000", QUOTE, true);
    geo.write_batch_with(&[], |_| {
        Ok(vec![
            Annex::Case(Box::new(case)),
            Annex::Verdict(Box::new(in_flight.clone())),
        ])
    })
    .unwrap();
    geo.store_verdict(&in_flight, Some(&quiet)).unwrap();
    geo.store_verdict(
        &verdict_with("case-q", "q-00001", QUOTE, false),
        Some(&quiet),
    )
    .unwrap();
    assert!(geo
        .store_decision(&decision_with(&quiet, "case-q", None, QUOTE), &quiet)
        .unwrap());
    // An in-flight verdict keeps none even when its resource is named as logging content.
    open_case_with_texts(&stores, &a, "case-a", &["a-00000"]);
    geo.store_verdict(&verdict_with("case-a", "a-00001", QUOTE, true), Some(&a))
        .unwrap();
    // And without the resource, none.
    geo.store_verdict(&verdict_with("case-a", "a-00000", QUOTE, false), None)
        .unwrap();
    geo.flush().unwrap();

    assert!(!contains(
        &all_bytes(&dir.path().join("data")),
        b"quotedmarker"
    ));
    let mut quiet_on = quiet.clone();
    quiet_on.content_logging = true;
    assert_eq!(
        rationales(&geo, &quiet_on, "case-q"),
        [
            ("q-00000".into(), ReviewText::Empty),
            ("q-00001".into(), ReviewText::Empty)
        ]
    );
    assert_eq!(
        notes(&geo, &quiet_on, "case-q"),
        [(None, ReviewText::Empty)]
    );
    assert_eq!(
        rationales(&geo, &a, "case-a"),
        [
            ("a-00000".into(), ReviewText::Empty),
            ("a-00001".into(), ReviewText::Empty)
        ]
    );
    // Verdict fields are kept.
    let verdicts = geo.verdicts(Some("case-q")).unwrap();
    assert_eq!(verdicts.len(), 2);
    assert!(verdicts
        .iter()
        .all(|v| v.assessment.as_ref().unwrap().violation));
    // No data key was made for the resource that logs no content.
    assert!(geo.data_key_days(&quiet.id).unwrap().is_empty());
}

#[test]
fn a_note_or_rationale_stored_in_the_clear_by_an_older_vigil_still_decodes_and_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let a = resource("a");
    let stores = stores_at(dir.path(), 0);
    put(&stores, &a, &ids("a", 2), "u", "x");
    let geo = stores.geo(&eu()).unwrap();
    geo.write_batch_with(&[], |_| {
        Ok(vec![Annex::Case(Box::new(case_of(
            &a, "case-a", "a-00000",
        )))])
    })
    .unwrap();
    // As the previous version stored them: the item's JSON, its text in it.
    let verdict = verdict_with("case-a", "a-00000", QUOTE, false);
    let decision = decision_with(&a, "case-a", Some("a-00000"), QUOTE);
    geo.raw()
        .insert(
            layout::verdict_key("case-a", "a-00000"),
            serde_json::to_vec(&verdict).unwrap(),
        )
        .unwrap();
    geo.raw()
        .insert(
            layout::decision_key("case-a", &decision.decision_id),
            serde_json::to_vec(&decision).unwrap(),
        )
        .unwrap();
    let read = ReviewText::Read(QUOTE.into());
    assert_eq!(
        rationales(&geo, &a, "case-a"),
        [("a-00000".into(), read.clone())]
    );
    assert_eq!(notes(&geo, &a, "case-a"), [(Some("a-00000".into()), read)]);
    assert_eq!(
        geo.verdicts(None).unwrap()[0]
            .assessment
            .as_ref()
            .unwrap()
            .rationale,
        ""
    );
    assert_eq!(geo.decisions(None).unwrap()[0].note, "");
    // Content logging off: never returned, and removed with the content.
    let mut off = a.clone();
    off.content_logging = false;
    assert_eq!(
        rationales(&geo, &off, "case-a")[0].1,
        ReviewText::Unreadable
    );
    stores.reconcile(&registry(&[&off])).unwrap();
    assert_eq!(rationales(&geo, &a, "case-a")[0].1, ReviewText::Empty);
    assert_eq!(notes(&geo, &a, "case-a")[0].1, ReviewText::Empty);
    assert!(!contains(
        &geo.raw()
            .get(layout::verdict_key("case-a", "a-00000"))
            .unwrap()
            .unwrap(),
        b"quotedmarker"
    ));
}
