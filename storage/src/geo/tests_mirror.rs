//! Tests of the changelog: what a store mirrors, a store rebuilt from it on another node, and
//! the ratchet that the purge moves on and deletions puncture.

use std::sync::{Arc, Mutex};

use vigil_core::Geography;

use super::tests_lifecycle::{
    all_bytes, contains, decision, eu, ids, open_case, put, registry, req, resource, stores_at, NOW,
};
use crate::changelog::{Change, ChangeSink, ChangelogError, RatchetState, Retirement};
use crate::retention::Cutoffs;
use crate::{RetentionConfig, Stores};

/// A changelog in memory: every change, in order, and every retirement published.
#[derive(Default)]
struct Memory {
    changes: Mutex<Vec<Change>>,
    retired: Mutex<Vec<Retirement>>,
}

impl ChangeSink for Memory {
    fn send(&self, geography: &Geography, changes: Vec<Change>) -> Result<(), ChangelogError> {
        assert_eq!(geography, &eu());
        self.changes.lock().unwrap().extend(changes);
        Ok(())
    }

    fn flush(&self) -> Result<(), ChangelogError> {
        Ok(())
    }

    fn retired(
        &self,
        geography: &Geography,
        retirements: &[Retirement],
    ) -> Result<(), ChangelogError> {
        assert_eq!(geography, &eu());
        self.retired.lock().unwrap().extend_from_slice(retirements);
        Ok(())
    }
}

impl Memory {
    /// The changes as a consumer reads them back: key and value.
    fn read_back(&self) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        let changes = self.changes.lock().unwrap();
        changes
            .iter()
            .map(|c| (c.key.clone(), c.value.clone()))
            .collect()
    }
}

fn cutoffs(stores: &Stores) -> Cutoffs {
    let reg = registry(&[&resource("a"), &resource("b")]);
    Cutoffs::new(
        &RetentionConfig::default(),
        &reg,
        &eu(),
        stores.clock().today(),
    )
}

/// A node at `days_ago` mirroring to `sink`, with ratchet `state`.
fn mirrored(
    dir: &std::path::Path,
    days_ago: i64,
    state: &RatchetState,
    sink: &Arc<Memory>,
) -> Stores {
    let stores = stores_at(dir, days_ago);
    let geo = stores.geo(&eu()).unwrap();
    geo.install_ratchet(state).unwrap();
    geo.mirror_to(sink.clone()).unwrap();
    stores
}

#[test]
fn a_store_rebuilt_from_the_changelog_reads_like_the_original() {
    let (a, b) = (resource("a"), resource("b"));
    let one = tempfile::tempdir().unwrap();
    let sink = Arc::new(Memory::default());
    let first_day = stores_at(one.path(), 0).clock().today().minus(29);
    let state = RatchetState::create(first_day);
    {
        let stores = mirrored(one.path(), 2, &state, &sink);
        put(&stores, &a, &ids("a-old", 5), "u1", "two days ago");
    }
    let stores = mirrored(one.path(), 0, &state, &sink);
    put(&stores, &a, &ids("a-new", 5), "u1", "today");
    put(&stores, &b, &ids("b", 3), "u2", "another resource");
    open_case(&stores, &a, "case-a", "a-new-00001");
    let geo = stores.geo(&eu()).unwrap();
    // A deletion re-keys the day: the changelog gets the new key, the re-sealed segment
    // without the record, and no copy of the deleted one in any later version.
    geo.delete_request(&a.id, &req("a-new-00002")).unwrap();
    assert!(!sink.read_back().is_empty());

    // Another node, with the same ratchet (as a peer hands it over), imports it all.
    let two = tempfile::tempdir().unwrap();
    let rebuilt = stores_at(two.path(), 0);
    let copy = rebuilt.geo(&eu()).unwrap();
    copy.install_ratchet(&RatchetState::from_wire(&state.to_wire()).unwrap())
        .unwrap();
    let changes = sink.read_back();
    let imported = copy.import(&changes, &cutoffs(&rebuilt)).unwrap();
    assert_eq!(imported.records, 5 + 5 + 3 - 1, "{imported:?}");
    assert_eq!(imported.foreign_keys, 0);
    for res in [&a, &b] {
        assert_eq!(
            copy.request_ids(&res.id).unwrap(),
            geo.request_ids(&res.id).unwrap()
        );
        for id in geo.request_ids(&res.id).unwrap() {
            let original = geo.get(res, &id).unwrap().unwrap();
            assert_eq!(copy.get(res, &id).unwrap().unwrap(), original);
            assert!(original.content.is_some());
        }
    }
    assert!(copy.get(&a, &req("a-new-00002")).unwrap().is_none());
    assert_eq!(copy.cases().unwrap(), geo.cases().unwrap());
    assert_eq!(
        copy.verdicts(Some("case-a")).unwrap(),
        geo.verdicts(Some("case-a")).unwrap()
    );
    assert_eq!(copy.decisions(Some("case-a")).unwrap().len(), 2);
    assert_eq!(
        copy.window_state(&a.id, Some("u1")).unwrap(),
        geo.window_state(&a.id, Some("u1")).unwrap()
    );

    // Importing twice changes nothing, and the copy stores new records beside the imported
    // ones without taking their segments.
    copy.import(&changes, &cutoffs(&rebuilt)).unwrap();
    assert_eq!(copy.len(), geo.len());
    put(&rebuilt, &a, &ids("a-later", 2), "u1", "after the rebuild");
    assert_eq!(copy.count(&a.id).unwrap(), geo.count(&a.id).unwrap() + 2);

    // The original gives resource b away: gone here, and nothing said to the changelog. The
    // copy, which held nothing mirrored from its start, keeps what it has.
    let sent = sink.read_back().len();
    let forgotten = geo.forget_resource(&b.id).unwrap().unwrap();
    assert_eq!(forgotten.records, 3);
    assert_eq!(geo.count(&b.id).unwrap(), 0);
    assert_eq!(sink.read_back().len(), sent);
    assert!(copy.forget_resource(&b.id).unwrap().is_none());
    assert_eq!(copy.count(&b.id).unwrap(), 3);
    assert_eq!(crate::changelog::resource_of(&changes[0].0), Some("a"));

    // The ratchet state outlives the store's reopening (which sweeps orphaned keyring slots).
    // The import retired the generation the deletion replaced.
    let held = copy.ratchet_state().unwrap().unwrap();
    assert_eq!(held.live_generation(stores.clock().today(), "a"), 1);
    assert_eq!(held, geo.ratchet_state().unwrap().unwrap());
    drop(rebuilt);
    drop(copy);
    let reopened = stores_at(two.path(), 0);
    assert_eq!(
        reopened.geo(&eu()).unwrap().ratchet_state().unwrap(),
        Some(held)
    );

    // A node with another ratchet imports the records but opens none of their keys.
    let three = tempfile::tempdir().unwrap();
    let stranger = stores_at(three.path(), 0);
    let other = stranger.geo(&eu()).unwrap();
    other
        .install_ratchet(&RatchetState::create(first_day))
        .unwrap();
    // It mirrors to a changelog of its own, which the import does not write to, tombstones
    // included.
    let echo = Arc::new(Memory::default());
    other.mirror_to(echo.clone()).unwrap();
    let mut changes = changes.clone();
    let day = stores.clock().today();
    let key = crate::changelog::data_key_key(&crate::layout::data_key_id("a", day));
    changes.push((key, None));
    let imported = other.import(&changes, &cutoffs(&stranger)).unwrap();
    assert!(echo.read_back().is_empty());
    assert_eq!(imported.data_keys, 0);
    assert!(imported.foreign_keys > 0);
    assert!(
        other.get(&a, &req("a-new-00001")).is_err()
            || other
                .get(&a, &req("a-new-00001"))
                .unwrap()
                .unwrap()
                .content
                .is_none()
    );
    let _ = NOW;
}

#[test]
fn after_the_purge_no_purged_record_opens_from_the_changelog_bytes() {
    let a = resource("a");
    let reg = registry(&[&a]);
    let one = tempfile::tempdir().unwrap();
    let sink = Arc::new(Memory::default());
    let state = RatchetState::create(stores_at(one.path(), 40).clock().today().minus(29));
    {
        let old = mirrored(one.path(), 40, &state, &sink);
        put(&old, &a, &ids("old", 4), "u1", "forty days ago");
    }
    let stores = mirrored(one.path(), 0, &state, &sink);
    put(&stores, &a, &ids("new", 2), "u1", "today");
    let before_purge = sink.read_back();
    stores
        .purge(&RetentionConfig::default(), &reg, &mut |_| {
            std::ops::ControlFlow::Continue(())
        })
        .unwrap();
    let geo = stores.geo(&eu()).unwrap();
    let advanced = geo.ratchet_state().unwrap().unwrap();
    assert_eq!(advanced.day(), stores.clock().today().minus(29));
    // The purge wrote tombstones for what it removed: the old days' keys and segments.
    let after = sink.read_back();
    let tombstones = after[before_purge.len()..]
        .iter()
        .filter(|(_, v)| v.is_none())
        .count();
    assert!(tombstones >= 2, "{tombstones} tombstones");
    // The state on disk is the advanced one: the keyring no longer holds the old chain key.
    let data = all_bytes(&one.path().join("data"));
    assert!(!contains(&data, &state.to_bytes()[..32]));

    // Someone holding every byte the changelog ever held, before compaction, and the node's
    // current state: the old records' keys do not open, even with retention ignored.
    let two = tempfile::tempdir().unwrap();
    let thief = stores_at(two.path(), 40);
    let geo = thief.geo(&eu()).unwrap();
    geo.install_ratchet(&advanced).unwrap();
    let imported = geo.import(&before_purge, &cutoffs(&thief)).unwrap();
    // Every record comes in, but only today's key opens: the old day's is purged.
    assert_eq!(imported.records, 4 + 2);
    assert_eq!(imported.data_keys, 1, "{imported:?}");
    assert!(geo
        .get(&a, &req("new-00000"))
        .unwrap()
        .unwrap()
        .content
        .is_some());
    for id in ids("old", 4) {
        let read = geo.get(&a, &req(&id));
        assert!(read.is_err() || read.unwrap().unwrap().content.is_none());
    }
}

/// Whether `read` (a record read back) shows no content: the key did not open.
fn unreadable(read: crate::Result<Option<crate::StoredRecord>>) -> bool {
    read.is_err() || read.unwrap().unwrap().content.is_none()
}

/// A store at `dir` holding ratchet `state`, as a node's (or a thief's with that node's
/// state) into which changes are imported: what opens?
fn thief(dir: &std::path::Path, state: &RatchetState) -> Stores {
    let stores = stores_at(dir, 0);
    stores.geo(&eu()).unwrap().install_ratchet(state).unwrap();
    stores
}

/// A node at `dir` mirroring to a new changelog with a new ratchet, with five records of
/// `a` and three of `b` stored today.
fn node_with_records(dir: &std::path::Path) -> (Stores, Arc<Memory>, RatchetState) {
    let sink = Arc::new(Memory::default());
    let state = RatchetState::create(stores_at(dir, 0).clock().today().minus(29));
    let stores = mirrored(dir, 0, &state, &sink);
    put(&stores, &resource("a"), &ids("a", 5), "u1", "today");
    put(
        &stores,
        &resource("b"),
        &ids("b", 3),
        "u2",
        "another resource",
    );
    (stores, sink, state)
}

#[test]
fn a_deleted_records_old_key_in_the_changelog_opens_on_no_node_once_retired() {
    let (a, b) = (resource("a"), resource("b"));
    let one = tempfile::tempdir().unwrap();
    let (stores, sink, state) = node_with_records(one.path());
    let before = sink.read_back();
    let geo = stores.geo(&eu()).unwrap();
    geo.delete_request(&a.id, &req("a-00002")).unwrap();

    // The deletion retired a's key of today, and said so.
    let retired = sink.retired.lock().unwrap().clone();
    let today = stores.clock().today();
    assert_eq!(
        retired,
        vec![Retirement {
            resource_id: "a".into(),
            day: today.number(),
            below: 1
        }]
    );
    let current = geo.ratchet_state().unwrap().unwrap();
    assert_eq!(current.live_generation(today, "a"), 1);

    // Every byte the changelog held before the deletion, with the node's current state: the
    // deleted record's old key (and so the record) does not open; b's key does.
    let dir = tempfile::tempdir().unwrap();
    let stolen = thief(dir.path(), &current);
    let imported = stolen
        .geo(&eu())
        .unwrap()
        .import(&before, &cutoffs(&stolen))
        .unwrap();
    assert_eq!(imported.records, 8);
    assert_eq!(imported.data_keys, 1, "{imported:?}");
    let took = stolen.geo(&eu()).unwrap();
    assert!(unreadable(took.get(&a, &req("a-00002"))));
    assert!(!unreadable(took.get(&b, &req("b-00000"))));

    // Another node with the ratchet as it was could still open it, until it applies what
    // the deleting node published; then it cannot either.
    let peer = tempfile::tempdir().unwrap();
    let other = thief(peer.path(), &state);
    let geo_two = other.geo(&eu()).unwrap();
    assert_eq!(
        geo_two.import(&before, &cutoffs(&other)).unwrap().data_keys,
        2
    );
    assert_eq!(geo_two.apply_retirements(&retired).unwrap(), 1);
    assert_eq!(geo_two.apply_retirements(&retired).unwrap(), 0);
    assert_eq!(geo_two.ratchet_state().unwrap().unwrap(), current);
    let again = tempfile::tempdir().unwrap();
    let later = thief(again.path(), &geo_two.ratchet_state().unwrap().unwrap());
    let imported = later
        .geo(&eu())
        .unwrap()
        .import(&before, &cutoffs(&later))
        .unwrap();
    assert_eq!(imported.data_keys, 1);

    // The whole changelog still rebuilds the live records, under the new generation.
    let full = tempfile::tempdir().unwrap();
    let rebuilt = thief(full.path(), &current);
    let copy = rebuilt.geo(&eu()).unwrap();
    copy.import(&sink.read_back(), &cutoffs(&rebuilt)).unwrap();
    for id in ["a-00000", "a-00001", "a-00003", "a-00004"] {
        assert_eq!(
            copy.get(&a, &req(id)).unwrap().unwrap(),
            geo.get(&a, &req(id)).unwrap().unwrap()
        );
    }
    assert!(copy.get(&a, &req("a-00002")).unwrap().is_none());
    // A node that rebuilt from an unretired state retires the old generation on import.
    let stale = tempfile::tempdir().unwrap();
    let stale = thief(stale.path(), &state);
    stale
        .geo(&eu())
        .unwrap()
        .import(&sink.read_back(), &cutoffs(&stale))
        .unwrap();
    assert_eq!(
        stale
            .geo(&eu())
            .unwrap()
            .ratchet_state()
            .unwrap()
            .unwrap()
            .live_generation(today, "a"),
        1
    );
}

#[test]
fn a_shorter_resource_retention_retires_its_keys_in_the_changelog() {
    let (long, mut short) = (resource("long"), resource("short"));
    short.retention_days = Some(7);
    let reg = registry(&[&long, &short]);
    let one = tempfile::tempdir().unwrap();
    let sink = Arc::new(Memory::default());
    let state = RatchetState::create(stores_at(one.path(), 10).clock().today().minus(29));
    {
        let old = mirrored(one.path(), 10, &state, &sink);
        put(&old, &long, &ids("long", 2), "u1", "kept a month");
        put(&old, &short, &ids("short", 2), "u2", "kept a week");
    }
    let before = sink.read_back();
    let stores = mirrored(one.path(), 0, &state, &sink);
    stores
        .purge(&RetentionConfig::default(), &reg, &mut |_| {
            std::ops::ControlFlow::Continue(())
        })
        .unwrap();
    let current = stores.geo(&eu()).unwrap().ratchet_state().unwrap().unwrap();
    assert_eq!(sink.retired.lock().unwrap().len(), 1);
    let dir = tempfile::tempdir().unwrap();
    let stolen = thief(dir.path(), &current);
    let geo = stolen.geo(&eu()).unwrap();
    let everything = Cutoffs::new(
        &RetentionConfig::default(),
        &registry(&[&long, &resource("short")]),
        &eu(),
        stolen.clock().today(),
    );
    let imported = geo.import(&before, &everything).unwrap();
    assert_eq!(imported.records, 4);
    assert_eq!(imported.data_keys, 1, "{imported:?}");
    assert!(!unreadable(geo.get(&long, &req("long-00000"))));
    assert!(unreadable(geo.get(&short, &req("short-00000"))));
}

#[test]
fn writes_made_while_detached_reach_the_changelog_when_it_is_attached_again() {
    let (a, b) = (resource("a"), resource("b"));
    let one = tempfile::tempdir().unwrap();
    let (stores, sink, state) = node_with_records(one.path());
    drop(stores);
    // Offline (`vigil delete` with the node stopped): no changelog attached.
    {
        let offline = stores_at(one.path(), 0);
        let geo = offline.geo(&eu()).unwrap();
        geo.delete_request(&a.id, &req("a-00002")).unwrap();
        geo.delete_resource(&b.id).unwrap();
    }
    let sent_before = sink.read_back().len();
    let retired_before = sink.retired.lock().unwrap().len();
    // The node starts again and attaches its changelog: what the offline commands wrote
    // goes first, then nothing more is kept aside.
    let stores = mirrored(one.path(), 0, &state, &sink);
    let history = sink.read_back();
    assert!(history.len() > sent_before);
    assert!(sink.retired.lock().unwrap().len() > retired_before);
    put(&stores, &a, &ids("later", 1), "u1", "after");
    assert!(sink.read_back().len() > history.len());
    drop(stores);
    let reopened = stores_at(one.path(), 0);
    assert!(keeps_nothing(&reopened));

    // A node rebuilding from the changelog gets the offline deletions too: the deleted
    // record and resource do not come back.
    let two = tempfile::tempdir().unwrap();
    let rebuilt = thief(
        two.path(),
        &reopened
            .geo(&eu())
            .unwrap()
            .ratchet_state()
            .unwrap()
            .unwrap(),
    );
    let copy = rebuilt.geo(&eu()).unwrap();
    copy.import(&sink.read_back(), &cutoffs(&rebuilt)).unwrap();
    assert!(copy.get(&a, &req("a-00002")).unwrap().is_none());
    assert_eq!(copy.count(&b.id).unwrap(), 0);
    assert_eq!(copy.count(&a.id).unwrap(), 5);
    assert!(!unreadable(copy.get(&a, &req("a-00003"))));

    // A store never mirrored keeps nothing aside.
    let three = tempfile::tempdir().unwrap();
    let plain = stores_at(three.path(), 0);
    put(&plain, &a, &ids("p", 2), "u1", "never mirrored");
    assert!(keeps_nothing(&plain));
}

/// Whether the store keeps nothing aside for the changelog.
fn keeps_nothing(stores: &Stores) -> bool {
    stores
        .geo(&eu())
        .unwrap()
        .data_keys()
        .scan_prefix(super::mirror::PENDING)
        .next()
        .is_none()
}

#[test]
fn a_moving_resource_is_written_by_neither_node_to_the_changelog() {
    use crate::changelog::Moving;
    let (leaving, arriving, staying) = (resource("a"), resource("b"), resource("c"));
    let one = tempfile::tempdir().unwrap();
    let sink = Arc::new(Memory::default());
    let state = RatchetState::create(stores_at(one.path(), 0).clock().today().minus(29));
    let stores = mirrored(one.path(), 0, &state, &sink);
    put(&stores, &leaving, &ids("a", 3), "u1", "leaving");
    open_case(&stores, &leaving, "case-a", "a-00000");
    put(&stores, &arriving, &ids("b", 3), "u2", "arriving");
    let geo = stores.geo(&eu()).unwrap();
    let arrived = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let check = arrived.clone();
    geo.watch_moves(Arc::new(move |resource: &str| match resource {
        "a" => Some(Moving::Leaving),
        "b" if !check.load(std::sync::atomic::Ordering::Acquire) => Some(Moving::Arriving),
        _ => None,
    }));
    let sent = sink.read_back().len();
    let of = |resource: &str| {
        sink.read_back()[sent..]
            .iter()
            .filter(|(key, _)| crate::changelog::resource_of(key) == Some(resource))
            .count()
    };

    // The copy that is leaving: a deletion is carried out here only, no decision is taken.
    assert!(geo
        .delete_request(&leaving.id, &req("a-00001"))
        .unwrap()
        .is_some());
    assert!(geo.get(&leaving, &req("a-00001")).unwrap().is_none());
    assert_eq!(of("a"), 0);
    assert!(sink.retired.lock().unwrap().is_empty());
    let refused = geo
        .store_decision(&decision(&leaving, "case-a", None), &leaving)
        .unwrap_err();
    assert!(
        matches!(
            refused,
            crate::StorageError::Moving {
                moving: Moving::Leaving,
                ..
            }
        ),
        "{refused}"
    );
    // Reads of the leaving copy are served.
    assert!(!unreadable(geo.get(&leaving, &req("a-00002"))));

    // The copy being rebuilt takes no deletion yet; whatever is written of it is kept until
    // it has arrived, and then sent.
    let refused = geo
        .delete_request(&arriving.id, &req("b-00000"))
        .unwrap_err();
    assert!(matches!(
        refused,
        crate::StorageError::Moving {
            moving: Moving::Arriving,
            ..
        }
    ));
    put(
        &stores,
        &arriving,
        &ids("b-more", 2),
        "u2",
        "written while it arrives",
    );
    assert_eq!(of("b"), 0);
    arrived.store(true, std::sync::atomic::Ordering::Release);
    assert!(geo.send_arrived().unwrap() > 0);
    assert!(of("b") > 0);
    assert_eq!(geo.send_arrived().unwrap(), 0);

    // Everything else is mirrored as ever.
    put(&stores, &staying, &ids("c", 2), "u3", "staying");
    assert!(of("c") > 0);
}
