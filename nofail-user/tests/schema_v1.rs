// SPDX-License-Identifier: MIT OR Apache-2.0
//! A version 1 report (recorded in the VM before the names were unified)
//! read by `nofail report` and written again as version 2: the injection
//! behaviour's `retried_by_hand`/`retry_sleeps_by_hand` come back as
//! `open_coded_retries`/`open_coded_retry_sleeps` with their values, and
//! the text names the concept the same way.

use std::{path::PathBuf, process::Command};

use serde_json::Value;

fn recorded(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../testing/reports")
        .join(name)
}

fn read(path: &std::path::Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn version_1_behaviour_fields_read_under_their_version_2_names() {
    let old = read(&recorded("legacy/real_xfs_inject_v1.json"));
    assert_eq!(
        old["schema_version"], 1,
        "the fixture is a version 1 report"
    );
    let old_b = &old["injection"]["behaviour"][0];
    let by_hand = old_b["retried_by_hand"].as_u64().expect("v1 field present");
    let sleeps = old_b["retry_sleeps_by_hand"]
        .as_u64()
        .expect("v1 field present");
    assert!(by_hand > 0, "the fixture retried by hand");

    let dir = std::env::temp_dir().join(format!("nofail-v1-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out_json = dir.join("v2.json");
    let out = Command::new(env!("CARGO_BIN_EXE_nofail"))
        .arg("report")
        .arg(recorded("legacy/real_xfs_inject_v1.json"))
        .arg("--json")
        .arg(&out_json)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let new = read(&out_json);
    assert_eq!(new["schema_version"], 2);
    let b = &new["injection"]["behaviour"][0];
    assert_eq!(b["open_coded_retries"].as_u64(), Some(by_hand));
    assert_eq!(b["open_coded_retry_sleeps"].as_u64(), Some(sleeps));
    assert!(b.get("retried_by_hand").is_none() && b.get("retry_sleeps_by_hand").is_none());
    // Totals now carry every counter, equal to the sums over the rows.
    let rows = new["callers"].as_array().unwrap();
    let sum = |k: &str| rows.iter().map(|r| r[k].as_u64().unwrap()).sum::<u64>();
    for k in [
        "calls",
        "open_coded_retries",
        "open_coded_retry_sleeps",
        "sleep_jiffies",
    ] {
        assert_eq!(new["totals"][k].as_u64(), Some(sum(k)), "totals.{k}");
    }
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("open-coded retries {by_hand} ({sleeps} sleeps)")),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
