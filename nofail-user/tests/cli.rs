// SPDX-License-Identifier: MIT OR Apache-2.0
//! The command-line habits of the tools people already use, on this
//! machine's kernel (tracepoint mode): `trace` without `--duration` runs
//! until a signal, `--json -` puts the report on stdout, `--ready-file`
//! appears once everything is attached, `--interval` with `--count` prints
//! timestamped changes and stops on its own. Counted against the maps this
//! test makes. Bad values are one-line errors with nothing loaded.
//!
//! Root is needed (BPF): with `NOFAIL_CI=1` (.ci/run) its absence fails
//! the test, elsewhere the test prints `skipped: <reason>`.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

use nofail_test_support::{
    bpf::{Snapshot, create_big_array_map},
    ci::{is_root, require},
};
use serde_json::Value;

/// One BPF-loading test at a time, so each counts only its own maps.
static BPF: Mutex<()> = Mutex::new(());

fn nofail() -> Command {
    Command::new(env!("CARGO_BIN_EXE_nofail"))
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("nofail-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Waits for `path` to exist, for up to a minute.
fn wait_for(path: &std::path::Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The calls counted for the row whose caller starts with `symbol+`.
fn calls_at(report: &Value, symbol: &str) -> u64 {
    let rows = report["callers"].as_array().expect("callers");
    let row = rows
        .iter()
        .find(|r| {
            r["caller"]
                .as_str()
                .is_some_and(|c| c.starts_with(&format!("{symbol}+")))
        })
        .unwrap_or_else(|| panic!("no {symbol} row in {report}"));
    row["calls"].as_u64().expect("calls is a count")
}

#[test]
fn trace_without_duration_runs_until_sigint_and_json_goes_to_stdout() {
    let _bpf = BPF.lock().unwrap_or_else(|e| e.into_inner());
    if !require(is_root(), "tracing needs root") {
        return;
    }
    let dir = scratch("until");
    let ready = dir.join("ready");
    let pid = std::process::id().to_string();
    let child = nofail()
        .args(["trace", "--pid", &pid, "--json", "-", "--ready-file"])
        .arg(&ready)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let said = wait_for(&ready);
    assert_eq!(
        said.trim(),
        child.id().to_string(),
        "the ready file holds nofail's pid"
    );
    for _ in 0..3 {
        create_big_array_map().unwrap();
    }
    // Past any duration a default would have set, it is still running.
    std::thread::sleep(Duration::from_secs(1));
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("tracing until Ctrl-C or SIGTERM"),
        "{stderr}"
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("stdout is the JSON report");
    assert_eq!(calls_at(&report, "array_map_alloc"), 3);
    // The text report went to stderr, not into the JSON.
    assert!(stderr.contains("CALLER"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn interval_count_prints_changes_and_stops() {
    let _bpf = BPF.lock().unwrap_or_else(|e| e.into_inner());
    if !require(is_root(), "tracing needs root") {
        return;
    }
    let dir = scratch("interval");
    let ready = dir.join("ready");
    let pid = std::process::id().to_string();
    let started = Instant::now();
    let child = nofail()
        .args(["trace", "--pid", &pid, "--interval", "2s", "--count", "2"])
        .arg("--ready-file")
        .arg(&ready)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&ready);
    create_big_array_map().unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "it did not stop on its own"
    );
    // Two intervals, each stamped HH:MM:SS.micros.
    let stamps: Vec<&str> = stdout.lines().filter(|l| l.starts_with("--- ")).collect();
    assert_eq!(stamps.len(), 2, "{stdout}");
    for s in &stamps {
        let clock = s.split_whitespace().nth(1).unwrap();
        assert!(
            clock.len() == 15 && clock.as_bytes()[2] == b':' && clock.as_bytes()[8] == b'.',
            "{s}"
        );
    }
    // The one map shows in the interval it was made in (a change of one
    // call), not in the other, and once more in the totals at the end.
    let rows: Vec<Vec<&str>> = stdout
        .lines()
        .filter(|l| l.starts_with("array_map_alloc+"))
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 2, "{stdout}");
    assert!(rows.iter().all(|r| r[1] == "1"), "{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_values_are_one_line_errors_with_nothing_loaded() {
    let _bpf = BPF.lock().unwrap_or_else(|e| e.into_inner());
    for (args, code, needle) in [
        (
            &["trace", "--interval", "1s", "--count", "0"][..],
            2,
            "--count",
        ),
        (&["trace", "--count", "3"][..], 2, "--interval"),
        (
            &["trace", "--ready-file", "/nonexistent/dir/ready"][..],
            1,
            "/nonexistent/dir/ready",
        ),
        (
            &["serve", "--ready-file", "/nonexistent/dir/ready"][..],
            1,
            "/nonexistent/dir/ready",
        ),
        // This kernel has neither kprobes nor fentry: auto traces with
        // tracepoints, which cannot follow a call to its retry. Refused
        // after loading: what was attached must be gone.
        (
            &["trace", "--what-if", "--duration", "1s"][..],
            1,
            "--what-if needs the full mode",
        ),
    ] {
        let before = is_root().then(|| Snapshot::take().unwrap());
        let out = nofail().args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        if let Some(before) = before {
            let left = before.left_after(Duration::from_secs(1)).unwrap();
            assert!(left.is_empty(), "{args:?} left {left}");
        }
    }
}

/// `doctor --strict`: 0 when the plan can trace (auto chooses tracepoints
/// on this kernel), 1 with one line naming the role when the mode asked
/// for cannot (kprobes on a kernel without them); without --strict the
/// same report exits 0. The preemption model is named with its source.
#[test]
fn doctor_strict_fails_only_when_the_plan_cannot_trace() {
    let _bpf = BPF.lock().unwrap_or_else(|e| e.into_inner());
    if !require(is_root(), "attaching needs root")
        || !require(
            !nofail_test_support::kernel::has_kprobes(),
            "this kernel has kprobes: the kprobe-mode refusal is checked where they are absent",
        )
    {
        return;
    }
    let run = |args: &[&str]| nofail().arg("doctor").args(args).output().unwrap();
    let auto = run(&["--strict"]);
    assert_eq!(
        auto.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&auto.stderr)
    );
    let first = String::from_utf8_lossy(&auto.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    assert!(
        ["(debugfs)", "(kernel command line)", "(kernel config)"]
            .iter()
            .any(|s| first.contains("preempt ") && first.contains(s)),
        "{first}"
    );
    let kprobe = run(&["--strict", "--mode", "kprobe"]);
    let stderr = String::from_utf8_lossy(&kprobe.stderr);
    assert_eq!(kprobe.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("--strict: kprobe mode cannot trace here")
            && stderr.contains("vmalloc-core"),
        "{stderr}"
    );
    assert!(
        String::from_utf8_lossy(&kprobe.stdout).contains("ROLE"),
        "the report is still printed"
    );
    assert_eq!(run(&["--mode", "kprobe"]).status.code(), Some(0));
}

/// `--version` names the build: the git revision this was built from
/// (when built in a checkout), the aya version of Cargo.lock, and the
/// sha256 of the embedded eBPF object; `-V` stays one line. The same
/// revision and hash prefix label `nofail_info`.
#[test]
fn long_version_names_revision_aya_and_object() {
    let out = nofail().arg("--version").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {text}"))
            .trim()
            .to_string()
    };
    let rev = field("git revision:");
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    if let Some(head) = head {
        // Built from this checkout (perhaps with changes not committed).
        assert!(
            rev.trim_end_matches("-dirty") == head,
            "{rev} vs HEAD {head}"
        );
    }
    let lock =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.lock")).unwrap();
    assert!(
        lock.contains(&format!("name = \"aya\"\nversion = \"{}\"", field("aya:"))),
        "{text}"
    );
    let sha = field("eBPF object sha256:");
    assert!(
        sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit()),
        "{sha}"
    );
    let short = nofail().arg("-V").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&short.stdout).trim(),
        format!("nofail {}", env!("CARGO_PKG_VERSION"))
    );
    // nofail_info carries the same revision and hash prefix.
    let dir = scratch("version");
    let prom = dir.join("r.prom");
    let report = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../testing/reports/export_live.json"
    );
    let conv = nofail()
        .args(["report", report, "--prometheus"])
        .arg(&prom)
        .output()
        .unwrap();
    assert!(
        conv.status.success(),
        "{}",
        String::from_utf8_lossy(&conv.stderr)
    );
    let info = std::fs::read_to_string(&prom).unwrap();
    let info = info
        .lines()
        .find(|l| l.starts_with("nofail_info{"))
        .unwrap()
        .to_string();
    assert!(
        info.contains(&format!("git=\"{rev}\""))
            && info.contains(&format!("object_sha256=\"{}\"", &sha[..12])),
        "{info}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `trace --interval --prometheus FILE` rewrites the file every interval
/// for a textfile collector: counters never go down between rewrites,
/// `nofail_last_run_timestamp_seconds` moves forward, the file always
/// passes promtool, and the last one counts every map made.
#[test]
fn prometheus_file_is_rewritten_every_interval_and_only_grows() {
    let _bpf = BPF.lock().unwrap_or_else(|e| e.into_inner());
    if !require(is_root(), "tracing needs root") {
        return;
    }
    let dir = scratch("textfile");
    let (ready, prom) = (dir.join("ready"), dir.join("nofail.prom"));
    let pid = std::process::id().to_string();
    let child = nofail()
        .args(["trace", "--pid", &pid, "--interval", "1s", "--count", "4"])
        .arg("--ready-file")
        .arg(&ready)
        .arg("--prometheus")
        .arg(&prom)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&ready);
    let value = |text: &str, prefix: &str| -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    };
    let mut seen: Vec<(f64, f64)> = Vec::new(); // (timestamp, array calls)
    let mut made = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline && seen.len() < 4 {
        if let Ok(text) = std::fs::read_to_string(&prom) {
            let stamp = value(&text, "nofail_last_run_timestamp_seconds ").expect("timestamp");
            if seen.last().is_none_or(|(t, _)| stamp > *t) {
                nofail_test_support::prom::promtool_check(text.as_bytes()).unwrap();
                let calls = value(
                    &text,
                    "nofail_vmalloc_calls_total{caller=\"array_map_alloc+",
                )
                .unwrap_or(0.0);
                seen.push((stamp, calls));
                if made < 2 {
                    create_big_array_map().unwrap();
                    made += 1;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        seen.len() >= 3,
        "only {} rewrites seen: {seen:?}",
        seen.len()
    );
    assert!(
        seen.windows(2).all(|w| w[1].0 > w[0].0 && w[1].1 >= w[0].1),
        "went back: {seen:?}"
    );
    // The file as nofail left it at the end counts both maps.
    let last = std::fs::read_to_string(&prom).unwrap();
    assert_eq!(
        value(
            &last,
            "nofail_vmalloc_calls_total{caller=\"array_map_alloc+"
        ),
        Some(2.0),
        "{last}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A reader that leaves early (`nofail report ... | head -1`) ends what is
/// shown, not the run: exit 0 and every file output still written; Rust's
/// `print!` panicked there (exit 101) before the files were written.
#[test]
fn closed_stdout_is_not_a_crash() {
    let dir = std::env::temp_dir().join(format!("nofail-epipe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let svg = dir.join("out.svg");
    let (reader, writer) = std::io::pipe().unwrap();
    // The pipe has no reader from the start: the first write gets EPIPE.
    drop(reader);
    let report = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../testing/reports/export_live.json"
    );
    let out = nofail()
        .args(["report", report, "--svg"])
        .arg(&svg)
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(svg.exists(), "the SVG was not written");
    let _ = std::fs::remove_dir_all(&dir);
}
