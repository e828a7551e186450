//! Crash safety: `kill -9` in the middle of a large run, then run again. Every stored record
//! decrypts, none is stored twice, none of the input is missing.

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use vigil_core::LogRecord;
use vigil_sample::{fixed_size, FixedSizeSpec};

use crate::util::{count, total, Workdir};

fn bytes_under(wd: &Workdir, rel: &str) -> u64 {
    wd.files_under(rel)
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}

#[test]
fn kill_9_midway_then_rerun_loses_and_duplicates_nothing() {
    let wd = Workdir::new();
    let sample = fixed_size(FixedSizeSpec {
        records: 60_000,
        record_bytes: 700,
        seed: 9,
    });
    sample.registry.save(&wd.path("resources.toml")).unwrap();
    for key in &sample.key_files {
        wd.write(&key.relative_path, &key.hex);
    }
    wd.write("big.jsonl", sample.traffic());

    let mut child = wd
        .command(&["run", "--input", "big.jsonl"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the run has written a good part of its data, then kill it without warning.
    let started = Instant::now();
    while bytes_under(&wd, "var/data") < 4 << 20 && started.elapsed() < Duration::from_secs(60) {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run finished before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(
        status.signal(),
        Some(9),
        "the run ended by itself: {status}"
    );

    let rerun = wd.run("big.jsonl");
    let stored_now = total(&rerun, "stored");
    let sent = sample.lines.len() as u64;
    assert_eq!(count(&rerun, &["read"]), sent);
    assert!(
        count(&rerun, &["duplicates"]) > 0,
        "the killed run stored nothing: {rerun:#}"
    );
    assert_eq!(
        stored_now + count(&rerun, &["duplicates"]),
        sent,
        "{rerun:#}"
    );

    // Every input record is on disk exactly once and decrypts to what was sent.
    let (registry, stores) = wd.open_stores();
    let mut expected: HashMap<String, LogRecord> = sample
        .lines
        .iter()
        .map(|l| {
            let r = LogRecord::from_json(std::str::from_utf8(l).unwrap()).unwrap();
            (r.meta.request_id.to_string(), r)
        })
        .collect();
    let mut seen = 0usize;
    for geo in stores.geographies_on_disk().unwrap() {
        let store = stores.geo(&geo).unwrap();
        let mut in_geo = 0;
        for resource in registry.iter().filter(|r| r.geography == geo) {
            for request in store.request_ids(&resource.id).unwrap() {
                let want = expected
                    .remove(request.as_str())
                    .unwrap_or_else(|| panic!("{request} stored twice or never sent"));
                let got = store
                    .get(resource, &request)
                    .unwrap()
                    .expect("listed, so present");
                assert_eq!(got.meta, want.meta);
                assert_eq!(got.content.as_ref(), Some(&want.content));
                in_geo += 1;
            }
        }
        assert_eq!(
            store.len(),
            in_geo,
            "{geo}: records outside any resource range"
        );
        seen += in_geo;
    }
    assert!(
        expected.is_empty(),
        "{} input records missing",
        expected.len()
    );
    assert_eq!(seen as u64, sent);
}
