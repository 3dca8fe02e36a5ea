// SPDX-License-Identifier: MIT OR Apache-2.0
//! Export formats against real clients, on reports recorded in the test VM
//! (testing/reports/, written by the vm-tests `export_*` scenarios): Debian's
//! promtool on the file output and on a scrape of `nofail serve`, a real
//! Prometheus server scraping `serve` and answering histogram_quantile, the
//! baseline gate both ways, and every kind of bad input.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

fn nofail() -> Command {
    Command::new(env!("CARGO_BIN_EXE_nofail"))
}

fn recorded(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testing/reports")
        .join(name)
}

/// An empty directory of this test's own.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nofail-export-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn promtool_check(text: &[u8]) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool not found: run cargo xtask setup (Debian package prometheus)");
    child.stdin.take().unwrap().write_all(text).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
}

/// `nofail serve --report FILE` on an ephemeral port; killed on drop.
struct Serve {
    child: Child,
    port: u16,
}

impl Serve {
    fn start(report: &Path) -> Self {
        let mut child = nofail()
            .args(["serve", "--listen", "127.0.0.1:0", "--report"])
            .arg(report)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let line = lines.next().expect("serve said nothing").unwrap();
        let port = line
            .split("127.0.0.1:")
            .nth(1)
            .and_then(|s| s.split('/').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {line:?}"));
        Self { child, port }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http_get(port: u16, target: &str) -> (u32, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("HTTP head");
    let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (code, body.to_string())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn promtool_accepts_file_and_scrape() {
    let dir = scratch("promtool");
    let prom = dir.join("nofail.prom");
    for report in [
        "export_live.json",
        "export_base.json",
        "export_spin.json",
        "inject_fmod_ret_mapping.json",
        "real_xfs_nofail.json",
        "real_xfs_inject.json",
    ] {
        let out = nofail()
            .arg("report")
            .arg(recorded(report))
            .arg("--prometheus")
            .arg(&prom)
            .output()
            .unwrap();
        assert!(out.status.success(), "{report}: {}", stderr(&out));
        let text = std::fs::read(&prom).unwrap();
        promtool_check(&text);
        if report == "real_xfs_inject.json" {
            // --chains: the XFS buffer retries by the chain behind them.
            let text = String::from_utf8_lossy(&text);
            assert!(
                text.contains(
                    "nofail_chain_open_coded_retries_total{caller=\"xfs_buf_alloc+0x336\",chain=\"xfs_buf_alloc;xfs_buf_get_map;xfs_attr_rmtval_set_value;xfs_attr_set_iter\"} 3\n"
                ),
                "{text}"
            );
        }
        if report.starts_with("inject") {
            let text = String::from_utf8_lossy(&text);
            assert!(
                text.contains("nofail_injection_decisions_total{outcome=\"injected\"} 3\n"),
                "{text}"
            );
        }
    }
    let serve = Serve::start(&recorded("export_live.json"));
    let (code, body) = http_get(serve.port, "/metrics");
    assert_eq!(code, 200);
    promtool_check(body.as_bytes());
    assert!(body.contains(
        "nofail_vmalloc_retries_total{caller=\"site_vmalloc_nofail+0x13\",stage=\"area\"} 4\n"
    ));
    assert_eq!(http_get(serve.port, "/nope").0, 404);
    assert_eq!(entries(&dir), vec!["nofail.prom"]);
}

/// Prometheus' histogram_quantile (promql/quantile.go, bucketQuantile) on
/// the explicit buckets of the report file: linear interpolation inside
/// the bucket holding the rank, the lowest bucket starting at 0.
fn expected_quantile(q: f64, caller: &Value) -> f64 {
    let buckets = caller["histograms"]["retries_per_call"]["buckets"]
        .as_array()
        .unwrap();
    // (le, cumulative count) over nofail's bucket bounds: le = hi - 1.
    let mut cumulative = Vec::new();
    let mut total = 0.0;
    for b in buckets {
        total += b["count"].as_f64().unwrap();
        cumulative.push((b["hi"].as_f64().unwrap() - 1.0, total));
    }
    let rank = q * total;
    let i = cumulative.iter().position(|(_, c)| *c >= rank).unwrap();
    let (le, count) = cumulative[i];
    let lo = buckets[i]["lo"].as_f64().unwrap();
    if lo == 0.0 {
        // The le="0" bucket: Prometheus answers its upper bound.
        return 0.0;
    }
    // Prometheus sees every le: the one below this bucket is lo - 1, with
    // the cumulative count of the previous non-empty bucket.
    let lower = lo - 1.0;
    let below = if i == 0 { 0.0 } else { cumulative[i - 1].1 };
    lower + (le - lower) * (rank - below) / (count - below)
}

#[test]
fn real_prometheus_scrapes_serve_and_agrees_on_quantiles() {
    let report_path = recorded("export_spin.json");
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
    let caller = &report["callers"][0];
    let name = caller["caller"].as_str().unwrap();
    let serve = Serve::start(&report_path);

    let dir = scratch("prometheus");
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: nofail\n    static_configs:\n      - targets: ['127.0.0.1:{}']\n",
            serve.port
        ),
    )
    .unwrap();
    let port = free_port();
    let mut prometheus = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
        .spawn()
        .expect("prometheus not found: run cargo xtask setup (Debian package prometheus)");

    let q = 0.99;
    let query = format!(
        "histogram_quantile({q}, nofail_vmalloc_retries_per_call_bucket{{caller=\"{name}\"}})"
    );
    let encoded: String = query
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    let value = loop {
        let answer = TcpStream::connect(("127.0.0.1", port))
            .ok()
            .map(|_| http_get(port, &format!("/api/v1/query?query={encoded}")));
        if let Some((200, body)) = answer {
            let v: Value = serde_json::from_str(&body).unwrap();
            if let Some(sample) = v["data"]["result"][0]["value"][1].as_str() {
                break sample.parse::<f64>().unwrap();
            }
        }
        if Instant::now() > deadline {
            let _ = prometheus.kill();
            panic!(
                "prometheus gave no answer in 120 s; log: {}",
                std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let _ = prometheus.kill();
    let _ = prometheus.wait();

    let expected = expected_quantile(q, caller);
    assert!(
        (value - expected).abs() < 1e-9,
        "Prometheus says p99 retries per call {value}, the report's buckets give {expected}"
    );
    // And it lies in the bucket whose upper bound the report gives as p99.
    let p99 = caller["p99_retries"].as_f64().unwrap();
    assert!(
        value <= p99 && value > (p99 + 1.0) / 2.0 - 1.0,
        "{value} outside the report's p99 bucket (<= {p99})"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn baseline_gate_both_ways() {
    let gate = |new: &str, old: &str, extra: &[&str]| {
        let out = nofail()
            .arg("report")
            .arg(recorded(new))
            .arg("--baseline")
            .arg(recorded(old))
            .args(extra)
            .output()
            .unwrap();
        (
            out.status.code(),
            stderr(&out),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let increase = ["--fail-if-retries-increase", "50"];
    let (code, err, table) = gate("export_spin.json", "export_base.json", &increase);
    assert_eq!(code, Some(3), "{err}");
    assert!(
        err.contains("site_vmalloc_nofail+0x13: retries per call 0.10 -> 0.90 (+800.0%)"),
        "{err}"
    );
    assert!(table.contains("+800.0%"), "{table}");
    let (code, err, _) = gate("export_base.json", "export_spin.json", &increase);
    assert_eq!(code, Some(0), "a run that spins less failed: {err}");
    let (code, err, _) = gate("export_base.json", "export_base.json", &increase);
    assert_eq!(code, Some(0), "{err}");

    let p99 = |file: &str, limit: &str| {
        nofail()
            .arg("report")
            .arg(recorded(file))
            .args(["--fail-if-p99-retries-above", limit])
            .output()
            .unwrap()
            .status
            .code()
    };
    // export_spin: 3 of 10 calls retried 3 times, so p99 is in [2, 3].
    assert_eq!(p99("export_spin.json", "1"), Some(3));
    assert_eq!(p99("export_spin.json", "3"), Some(0));
    assert_eq!(p99("export_base.json", "1"), Some(0));
}

/// The picture of the run recorded in the VM: one row for the trigger's
/// NOFAIL site, its titles carrying that run's ground truth (7 calls, 4
/// retries, 4 sleeps, 5 calls that never slept), one bar per non-empty
/// bucket (retries 0, 1, 2-3; stall 4-8 ms, 16-33 ms).
#[test]
fn svg_picture_shows_the_recorded_run() {
    let dir = scratch("svg");
    let svg = dir.join("r.svg");
    let out = nofail()
        .arg("report")
        .arg(recorded("export_live.json"))
        .arg("--svg")
        .arg(&svg)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let picture = std::fs::read_to_string(&svg).unwrap();
    assert!(picture.starts_with("<svg") && picture.trim_end().ends_with("</svg>"));
    for want in [
        "site_vmalloc_nofail+0x13: retries per call (7 calls, 4 retries)",
        "site_vmalloc_nofail+0x13: stall per call (4 sleeps, 26.0 ms; 5 calls never slept)",
    ] {
        assert!(picture.contains(want), "lacks {want:?}");
    }
    let bars = picture.matches("fill=\"#2B6CB0\"").count();
    assert_eq!(bars, 5, "bars drawn");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn json_read_back_and_written_again_is_the_same_report() {
    let dir = scratch("roundtrip");
    let copy = dir.join("copy.json");
    let out = nofail()
        .arg("report")
        .arg(recorded("export_live.json"))
        .arg("--json")
        .arg(&copy)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let read =
        |p: &Path| -> Value { serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap() };
    // A report recorded before --chains and --module existed: read back,
    // it is the same report with those fields at their defaults.
    let mut again = read(&copy);
    let recorded_report = read(&recorded("export_live.json"));
    // Written as version 2: the same fields, and totals with every counter
    // (version 1 had a subset; those it had are unchanged).
    assert_eq!(again["schema_version"], 2);
    again["schema_version"] = 1.into();
    let totals = again["totals"].as_object_mut().unwrap();
    for key in [
        "sleep_jiffies",
        "max_retries",
        "open_coded_retry_sleeps",
        "max_slept_ns",
        "total_latency_ns",
    ] {
        assert!(totals.remove(key).is_some(), "totals lack {key}");
    }
    assert_eq!(again["chains"], serde_json::json!([]));
    assert_eq!(again["health"]["stacks_lost"], 0);
    assert_eq!(again["health"]["chains_full"], 0);
    assert_eq!(again["health"]["caller_unread"], 0);
    assert!(again["filters"]["module"].is_null() && again["filters"]["chains"].is_null());
    again.as_object_mut().unwrap().remove("chains");
    for (obj, key) in [
        ("health", "stacks_lost"),
        ("health", "chains_full"),
        ("health", "caller_unread"),
        ("filters", "module"),
        ("filters", "chains"),
    ] {
        again[obj].as_object_mut().unwrap().remove(key);
    }
    for p in again["health"]["programs"].as_array_mut().unwrap() {
        assert_eq!(p["run_time_ns"], 0);
        assert_eq!(p["insns"], 0);
        p.as_object_mut().unwrap().remove("run_time_ns");
        p.as_object_mut().unwrap().remove("insns");
    }
    assert_eq!(again, recorded_report);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("site_vmalloc_nofail+0x13 (7 calls, 7 NOFAIL)"),
        "{text}"
    );
}

/// One line on stderr, exit status 1, and no output file left behind.
fn assert_refused(args: &[&str], dir: &Path, needle: &str) {
    let out = nofail().args(args).output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
    assert_eq!(err.lines().count(), 1, "{args:?}: not one line: {err}");
    assert!(err.starts_with("nofail: error: "), "{err}");
    assert!(err.contains(needle), "{args:?}: {err:?} lacks {needle:?}");
    assert!(
        entries(dir).iter().all(|e| e.ends_with(".json")),
        "{:?}",
        entries(dir)
    );
}

#[test]
fn bad_reports_are_one_line_errors_with_no_output() {
    let dir = scratch("bad");
    let good = std::fs::read_to_string(recorded("export_live.json")).unwrap();
    let bad = [
        (
            "truncated.json",
            good[..good.len() / 2].to_string(),
            "not valid JSON",
        ),
        ("empty.json", String::new(), "not valid JSON"),
        (
            "other.json",
            "{\"status\": \"ok\"}".into(),
            "not a nofail report",
        ),
        (
            "future.json",
            good.replace("\"schema_version\": 1", "\"schema_version\": 9"),
            "schema version 9",
        ),
        (
            "negative.json",
            good.replacen("\"calls\": 7", "\"calls\": -7", 1),
            "not a valid report: totals.calls: invalid value -7, expected a count",
        ),
        (
            "huge.json",
            good.replacen("\"calls\": 7", "\"calls\": 1e400", 1),
            "not valid JSON",
        ),
        (
            "bounds.json",
            good.replacen("\"lo\": 2,", "\"lo\": 3,", 1),
            "not a power of two",
        ),
        (
            "deep.json",
            format!("{}{}", "[".repeat(1 << 20), "]".repeat(1 << 20)),
            "recursion limit",
        ),
        (
            "binary.json",
            "\u{0}\u{1}\u{fffd}garbage".into(),
            "not valid JSON",
        ),
    ];
    for (name, text, needle) in &bad {
        std::fs::write(dir.join(name), text).unwrap();
        let file = dir.join(name);
        let svg = dir.join("out.svg");
        let prom = dir.join("out.prom");
        assert_refused(
            &[
                "report",
                file.to_str().unwrap(),
                "--svg",
                svg.to_str().unwrap(),
                "--prometheus",
                prom.to_str().unwrap(),
            ],
            &dir,
            needle,
        );
    }
    // Larger than any report: refused without parsing it.
    let big = dir.join("big.json");
    let f = std::fs::File::create(&big).unwrap();
    f.set_len(65 << 20).unwrap();
    assert_refused(
        &["report", big.to_str().unwrap()],
        &dir,
        "larger than 64 MiB",
    );
    let missing = dir.join("missing.json");
    assert_refused(&["report", missing.to_str().unwrap()], &dir, "cannot read");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unwritable_outputs_busy_ports_and_remote_addresses_are_refused() {
    let dir = scratch("outputs");
    let live = recorded("export_live.json");
    let live = live.to_str().unwrap();
    let nowhere = dir.join("no/such/dir/out.svg");
    assert_refused(
        &["report", live, "--svg", nowhere.to_str().unwrap()],
        &dir,
        "cannot write",
    );
    assert_refused(
        &["report", live, "--prometheus", dir.to_str().unwrap()],
        &dir,
        "is a directory",
    );
    // trace checks its outputs before loading anything.
    let json = dir.join("no/such/dir/r.json");
    assert_refused(
        &[
            "trace",
            "--duration",
            "1s",
            "--json",
            json.to_str().unwrap(),
        ],
        &dir,
        "cannot write",
    );
    assert_refused(
        &["report", live, "--fail-if-retries-increase", "10"],
        &dir,
        "needs --baseline",
    );

    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    assert_refused(
        &["serve", "--report", live, "--listen", &addr],
        &dir,
        "cannot listen on",
    );
    assert_refused(
        &["serve", "--report", live, "--listen", "0.0.0.0:0"],
        &dir,
        "--allow-remote",
    );
    assert!(entries(&dir).is_empty(), "{:?}", entries(&dir));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Raw bytes in, the status code of the answer out (0: closed unanswered).
fn raw_status(port: u16, request: &[u8]) -> u32 {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let _ = s.write_all(request);
    let mut text = Vec::new();
    let _ = s.read_to_end(&mut text);
    String::from_utf8_lossy(&text)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// 50 connections that send half a request line and stop do not hold up
/// 100 concurrent scrapes: all are answered while every stalled connection
/// is still open; the stalled ones are then cut off by the head deadline.
/// Oversized and malformed requests get 4xx; keep-alive serves several
/// scrapes on one connection.
#[test]
fn serve_holds_up_under_stalled_and_concurrent_clients() {
    let serve = Serve::start(&recorded("export_live.json"));
    let port = serve.port;
    let mut stalled: Vec<TcpStream> = (0..50)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.write_all(b"GET /met").unwrap();
            s
        })
        .collect();
    let want =
        "nofail_vmalloc_retries_total{caller=\"site_vmalloc_nofail+0x13\",stage=\"area\"} 4\n";
    let scrapes: Vec<_> = (0..100)
        .map(|_| {
            std::thread::spawn(move || {
                let t = std::time::Instant::now();
                let (code, body) = http_get(port, "/metrics");
                (code, body.contains(want), t.elapsed())
            })
        })
        .collect();
    let results: Vec<_> = scrapes.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(results.iter().all(|(code, ok, _)| *code == 200 && *ok));
    let slowest = results.iter().map(|r| r.2).max().unwrap();
    // Every stalled connection is still open (nothing was cut off to let
    // the scrapes through): a read would block, not see EOF.
    for s in &mut stalled {
        s.set_nonblocking(true).unwrap();
        let mut b = [0u8; 1];
        let r = s.read(&mut b);
        assert!(
            matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "a stalled connection was closed before the scrapes finished: {r:?}"
        );
    }
    eprintln!("100 concurrent scrapes next to 50 stalled connections: slowest {slowest:?}");
    // The head deadline then ends each stalled connection.
    for s in &mut stalled {
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut rest = Vec::new();
        let r = s.read_to_end(&mut rest);
        assert!(r.is_ok() || rest.is_empty(), "{r:?}");
    }
    let big = format!(
        "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let code = raw_status(port, big.as_bytes());
    assert!((400..500).contains(&code), "oversized head answered {code}");
    assert_eq!(raw_status(port, b"BLAH\r\n\r\n"), 400);
    assert_eq!(
        raw_status(
            port,
            b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ),
        405
    );
    // Keep-alive: two scrapes on one connection.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\nGET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    assert_eq!(
        text.matches("HTTP/1.1 200 OK").count(),
        2,
        "{}",
        &text[..200.min(text.len())]
    );
}
