// SPDX-License-Identifier: MIT OR Apache-2.0
//! Report files: written atomically (a reader never sees half a file, a
//! failed write leaves nothing behind) and read back with every field
//! checked, since a report may come from anywhere.

use std::{
    fs,
    io::{Read as _, Write as _},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};

use crate::model::{
    counters::COUNTERS,
    derived,
    report::{Report, SCHEMA, SCHEMA_VERSION, Totals},
};

/// Larger than any report nofail writes by orders of magnitude (the caller
/// map holds 4096 sites); anything bigger is not one.
const MAX_REPORT_BYTES: u64 = 64 << 20;

/// A temporary sibling of `path`, removed on drop unless persisted.
struct Temp {
    path: PathBuf,
    armed: bool,
}

impl Drop for Temp {
    fn drop(&mut self) {
        if self.armed {
            let _ = fs::remove_file(&self.path);
        }
    }
}

fn temp_for(path: &Path) -> Result<(Temp, fs::File)> {
    let name = path
        .file_name()
        .with_context(|| format!("{} is not a file path", path.display()))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .or_else(|e| {
            // A temp left by a killed nofail with our pid: ours to replace.
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                fs::remove_file(&tmp)?;
                fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&tmp)
            } else {
                Err(e)
            }
        })
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok((
        Temp {
            path: tmp,
            armed: true,
        },
        file,
    ))
}

/// Writes `bytes` to a temporary file next to `path`, syncs it and renames
/// it over `path` (the node_exporter textfile convention).
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    if path.is_dir() {
        bail!("cannot write {}: it is a directory", path.display());
    }
    let (mut temp, mut file) = temp_for(path)?;
    file.write_all(bytes)
        .and_then(|_| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))?;
    drop(file);
    fs::rename(&temp.path, path).with_context(|| format!("cannot write {}", path.display()))?;
    temp.armed = false;
    Ok(())
}

/// Fails now, not after a long trace, when `path` cannot be written.
pub fn check_writable(path: &Path) -> Result<()> {
    if path.is_dir() {
        bail!("cannot write {}: it is a directory", path.display());
    }
    let (_temp, _file) = temp_for(path)?;
    Ok(())
}

pub fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    atomic_write(
        path,
        (serde_json::to_string_pretty(value)? + "\n").as_bytes(),
    )
}

/// Reads a report back, refusing anything that is not a complete report
/// of this schema version with histograms nofail could have written.
pub fn read_report(path: &Path) -> Result<Report> {
    let shown = path.display();
    let file = fs::File::open(path).with_context(|| format!("cannot read {shown}"))?;
    let mut text = String::new();
    file.take(MAX_REPORT_BYTES + 1)
        .read_to_string(&mut text)
        .with_context(|| format!("cannot read {shown}"))?;
    if text.len() as u64 > MAX_REPORT_BYTES {
        bail!(
            "{shown} is larger than {} MiB: not a nofail report",
            MAX_REPORT_BYTES >> 20
        );
    }
    parse_report(&text).with_context(|| format!("{shown}"))
}

/// Counters added within version 2 (`--what-if`): absent from the
/// version 2 reports written before them, read as 0 there.
const ADDED_IN_V2: &[&str] = &[
    "futile_retries",
    "freed_retries",
    "wake_delay_ns",
    "whatif_slept_ns",
];

/// The counters of each caller row (all of them) and of the totals (those
/// present: older versions had fewer) are counts, named by their path when
/// not: the rows flatten them, which leaves serde's path at the row.
fn check_counters(report: &serde_json::Value) -> Result<()> {
    let rows = report["callers"].as_array().into_iter().flatten();
    let places = rows
        .enumerate()
        .map(|(i, r)| (format!("callers[{i}]"), r, true))
        .chain([("totals".to_string(), &report["totals"], false)]);
    for (path, obj, required) in places {
        for c in COUNTERS {
            match obj.get(c.name) {
                Some(v) if v.as_u64().is_none() => {
                    bail!(
                        "not a valid report: {path}.{}: invalid value {v}, expected a count",
                        c.name
                    )
                }
                None if required && obj.is_object() && !ADDED_IN_V2.contains(&c.name) => {
                    bail!("not a valid report: {path}: missing field `{}`", c.name)
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// The totals as written (the counters present: older versions had fewer)
/// against the sums over the caller rows, by each counter's merge rule.
fn check_totals(report: &Report, written: &Option<serde_json::Value>) -> Result<()> {
    let Some(serde_json::Value::Object(written)) = written else {
        return Ok(());
    };
    let sums = serde_json::to_value(Totals::of(&report.callers))?;
    for (key, value) in written {
        if let Some(sum) = sums.get(key).filter(|sum| *sum != value) {
            bail!(
                "not a valid report: totals.{key} is {value}, but the caller rows add up to {sum}"
            );
        }
    }
    Ok(())
}

pub fn parse_report(text: &str) -> Result<Report> {
    // The envelope first, so another tool's JSON or another schema version
    // is named as such rather than as a missing field.
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| anyhow::anyhow!("not valid JSON: {e}"))?;
    if value.get("schema").and_then(|s| s.as_str()) != Some(SCHEMA) {
        bail!("not a nofail report (no \"schema\": \"{SCHEMA}\")");
    }
    match value.get("schema_version").and_then(|v| v.as_u64()) {
        Some(v) if (1..=SCHEMA_VERSION as u64).contains(&v) => {}
        Some(v) => {
            bail!("report schema version {v}; this nofail reads versions 1 to {SCHEMA_VERSION}")
        }
        None => bail!("report has no schema_version"),
    }
    check_counters(&value)?;
    let totals = value.get("totals").cloned();
    let mut report: Report = serde_path_to_error::deserialize(value)
        .map_err(|e| anyhow::anyhow!("not a valid report: {}: {}", e.path(), e.inner()))?;
    if !report.duration_s.is_finite() || report.duration_s < 0.0 {
        bail!("not a valid report: duration_s is {}", report.duration_s);
    }
    for row in &report.callers {
        let h = &row.histograms;
        for (name, hist) in [
            ("retries_per_call", &h.retries_per_call),
            ("latency_ns", &h.latency_ns),
            ("slept_per_call_ns", &h.slept_per_call_ns),
        ]
        .into_iter()
        .chain(
            [
                ("wake_delay_ns", &h.wake_delay_ns),
                ("whatif_slept_per_call_ns", &h.whatif_slept_per_call_ns),
            ]
            .into_iter()
            .filter_map(|(n, h)| Some((n, h.as_ref()?))),
        ) {
            hist.to_log2()
                .with_context(|| format!("caller {:?}, histogram {name}", row.caller))?;
        }
    }
    // Derived fields are recomputed and must agree with what they derive
    // from: a report that disagrees with its own counts is not believed.
    check_totals(&report, &totals)?;
    if let Some(why) = derived::disagreement(&report) {
        bail!("not a valid report: {why}");
    }
    // Counters an older version's totals lacked are added.
    report.totals = Totals::of(&report.callers);
    // Read into this version's form (version 1 names taken by alias), so
    // it is written back as this version.
    report.schema_version = SCHEMA_VERSION;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use nofail_common::CallerStats;

    use super::*;
    use crate::model::report::{sample, sample_row};

    /// A directory of this test's own (tests run in parallel).
    fn dir(test: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("nofail-file-{test}-{}", std::process::id()));
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn round_trip_and_refusals() {
        let mut s = CallerStats {
            calls: 2,
            ..Default::default()
        };
        s.latency_hist[12] = 2;
        s.retries_hist[0] = 2;
        s.slept_hist[0] = 2;
        let report = sample(vec![sample_row("a+0x1", &s)]);
        let path = dir("round_trip").join("r.json");
        write_json(&path, &report).unwrap();
        let back = read_report(&path).unwrap();
        assert_eq!(back.callers, report.callers);
        assert_eq!(back.totals, report.totals);

        let text = fs::read_to_string(&path).unwrap();
        let err = |t: &str| format!("{:#}", parse_report(t).unwrap_err());
        assert!(err(&text[..text.len() / 2]).starts_with("not valid JSON"));
        assert!(err("{\"a\": 1}").starts_with("not a nofail report"));
        assert!(
            err(&text.replace("\"schema_version\": 2", "\"schema_version\": 9"))
                .contains("schema version 9")
        );
        assert!(
            err(&text.replace("\"calls\": 2", "\"calls\": -2")).starts_with("not a valid report")
        );
        assert!(err(&text.replace("\"lo\": 2048", "\"lo\": 2047")).contains("power of two"));
        // Derived fields that disagree with what they derive from.
        assert_eq!(
            err(&text.replacen("\"calls\": 2", "\"calls\": 3", 1)),
            "not a valid report: totals.calls is 3, but the caller rows add up to 2"
        );
        assert_eq!(
            err(&text.replace("\"p99_retries\": 0", "\"p99_retries\": null")),
            "not a valid report: callers[0] (a+0x1): p99_retries is null, but histogram retries_per_call gives 0"
        );
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(err(&deep).starts_with("not valid JSON"));
        let _ = fs::remove_dir_all(dir("round_trip"));
    }

    /// Found by the report_json fuzz target: serde_json's default float
    /// parser is not correctly rounded, so `duration_s` read, written and
    /// read again came back one ulp off.
    #[test]
    fn floats_read_back_exactly() {
        let text = include_str!("../../../testing/reports/whatif_area.json");
        let at = text.find("\"duration_s\": ").unwrap() + "\"duration_s\": ".len();
        let end = at + text[at..].find(',').unwrap();
        let text = format!("{}1.4038628499999998{}", &text[..at], &text[end..]);
        let read = parse_report(&text).unwrap();
        assert_eq!(read.duration_s, 1.4038628499999998);
        let again = parse_report(&serde_json::to_string_pretty(&read).unwrap()).unwrap();
        assert_eq!(again.duration_s, read.duration_s);
    }

    #[test]
    fn failed_writes_leave_nothing() {
        let d = dir("failed_writes");
        fs::create_dir_all(&d).unwrap();
        assert!(atomic_write(&d.join("missing/x.prom"), b"x").is_err());
        assert!(atomic_write(&d, b"x").is_err());
        atomic_write(&d.join("ok.prom"), b"1").unwrap();
        atomic_write(&d.join("ok.prom"), b"2").unwrap();
        let names: Vec<_> = fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("ok.prom")]);
        assert_eq!(fs::read(d.join("ok.prom")).unwrap(), b"2");
        let _ = fs::remove_dir_all(&d);
    }

    /// Every field a report can carry is documented in docs/report-schema.md.
    #[test]
    fn schema_doc_names_every_field() {
        use std::collections::BTreeMap;

        use crate::model::{
            Mode,
            health::{EventHealth, ProgStats},
            inject::{Behaviour, InjectCounts, InjectMode, InjectRuleView, Injection},
            mode::Attached,
            report::InflightRow,
        };

        let mut report = sample(vec![sample_row("a+0x1", &CallerStats::default())]);
        report
            .chains
            .push(crate::model::chains::sample("a+0x1", &["a+0x1", "b+0x2"]));
        report.attached.push(Attached {
            role: "vmalloc-core".into(),
            function: "f".into(),
            mode: Mode::Kprobe,
            fallback_reason: Some("why".into()),
        });
        report.in_flight.push(InflightRow {
            tid: 1,
            pid: 1,
            comm: "c".into(),
            caller: "a+0x1".into(),
            size: 1,
            age_ns: 1,
            area_failures: 0,
            mapping_failures: 0,
            pt_failures: BTreeMap::new(),
            sleeps_so_far: 0,
            slept_ns: 0,
            stuck: false,
        });
        report.health.programs.push(ProgStats::default());
        report.health.events = Some(EventHealth::default());
        report.injection = Some(Injection {
            rule: InjectRuleView::always_area(InjectMode::FmodRet),
            counts: InjectCounts::default(),
            behaviour: vec![Behaviour {
                caller: "a+0x1".into(),
                nofail: true,
                injected: 0,
                calls: 0,
                area_retries: 0,
                mapping_retries: 0,
                sleeps: 0,
                stall_ms: 0.0,
                max_stall_ms: 0.0,
                still_looping: 0,
                null_returned: 0,
                open_coded_retries: 0,
                open_coded_retry_sleeps: 0,
                error_to_userspace: 0,
                syscalls: BTreeMap::new(),
                absorbed: 0,
            }],
        });
        fn keys(v: &serde_json::Value, out: &mut Vec<String>) {
            match v {
                serde_json::Value::Object(m) => {
                    for (k, v) in m {
                        out.push(k.clone());
                        keys(v, out);
                    }
                }
                serde_json::Value::Array(a) => a.iter().for_each(|v| keys(v, out)),
                _ => {}
            }
        }
        let mut all = Vec::new();
        keys(&serde_json::to_value(&report).unwrap(), &mut all);
        keys(
            &serde_json::to_value(crate::model::events::sample_lines()).unwrap(),
            &mut all,
        );
        let doc = include_str!("../../../docs/report-schema.md");
        let missing: Vec<&String> = all
            .iter()
            .filter(|k| !doc.contains(&format!("`{k}`")))
            .collect();
        assert!(
            missing.is_empty(),
            "not in docs/report-schema.md: {missing:?}"
        );
    }
}
