// SPDX-License-Identifier: MIT OR Apache-2.0
//! Any kernel symbol name round-trips through Prometheus' own parser: a
//! report whose call sites carry hundreds of generated names (quotes,
//! backslashes, newlines, `{}=,`, non-ASCII, control characters, the
//! `sym+0x1a/0x40 [mod]` forms) is served by `nofail serve --report`,
//! `promtool check metrics` accepts the exposition, and a real Prometheus
//! server that scraped it gives back every caller label byte-equal to the
//! name in the report. (The fuzz target prometheus_labels checks the same
//! against a strict reader of the format, millions of times.)

use std::{
    collections::BTreeSet,
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use nofail_test_support::{
    http::http_get,
    prom::{Server, promtool_check},
};
use nofail_user::{
    model::report::{Report, Totals},
    output::json,
};

/// xorshift64*: deterministic, so a failure names the same names again.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Pieces symbol names are made of: identifiers, offsets, module tags,
/// and every character the format escapes or could trip on.
const PIECES: &[&str] = &[
    "xfs_buf_alloc",
    "__vmalloc_node_range_noprof",
    "kvmalloc_node",
    "_",
    "+0x",
    "1a",
    "/0x40",
    " [xfs]",
    " [nofail_trigger]",
    "[",
    "]",
    ".cold",
    ".isra.0",
    "\"",
    "\\",
    "\\n",
    "\\\"",
    "\n",
    "\r",
    "\t",
    "\0",
    "{",
    "}",
    "=",
    ",",
    " ",
    "#",
    "é",
    "ß",
    "中文",
    "🦀",
    "\u{7f}",
    "\u{200b}",
    "le=\"+Inf\"",
    "} 1\n",
    "\\\\\"",
];

/// A name: two to eight pieces, never empty (Prometheus treats an empty
/// label value as no label).
fn name(rng: &mut Rng) -> String {
    (0..2 + rng.below(7))
        .map(|_| PIECES[rng.below(PIECES.len())])
        .collect()
}

fn names() -> Vec<String> {
    let mut rng = Rng(0x6e6f_6661_696c);
    let mut fixed: Vec<String> = [
        "site_vmalloc_nofail+0x13 [nofail_trigger]",
        "xfs_buf_alloc+0x1a/0x40 [xfs]",
        "a\"b",
        "a\\b",
        "a\nb",
        "\\",
        "\"",
        "\n",
        "\\n",
        "{caller=\"x\"}",
        "a=b,c=d",
    ]
    .map(String::from)
    .to_vec();
    let mut seen: BTreeSet<String> = fixed.iter().cloned().collect();
    // Distinct names (one row per call site), "other" left out: it is the
    // label of the callers beyond --top.
    while fixed.len() < 300 {
        let n = name(&mut rng);
        if n != "other" && seen.insert(n.clone()) {
            fixed.push(n);
        }
    }
    fixed
}

/// A recorded report with one row per name (the first row's counts),
/// totals made to agree.
fn report_with(names: &[String]) -> Report {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testing/reports/export_spin.json");
    let mut report = json::read_report(&path).unwrap();
    let row = report.callers[0].clone();
    report.callers = names
        .iter()
        .map(|n| {
            let mut r = row.clone();
            r.caller = n.clone();
            r
        })
        .collect();
    report.totals = Totals::of(&report.callers);
    report
}

#[test]
fn any_symbol_name_round_trips_through_prometheus() {
    let names = names();
    let dir = std::env::temp_dir().join(format!("nofail-labels-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("report.json");
    json::write_json(&file, &report_with(&names)).unwrap();

    let mut serve = Command::new(env!("CARGO_BIN_EXE_nofail"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--top",
            "1000",
            "--report",
        ])
        .arg(&file)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let line = BufReader::new(serve.stderr.take().unwrap())
        .lines()
        .next()
        .expect("serve said nothing")
        .unwrap();
    let port: u16 = line
        .split("127.0.0.1:")
        .nth(1)
        .and_then(|s| s.split('/').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));

    // (a) promtool's parser and linter accept the exposition.
    let (code, body) = http_get(port, "/metrics").unwrap();
    assert_eq!(code, 200);
    promtool_check(body.as_bytes()).unwrap();

    // (b) Prometheus scrapes it and gives back every name, byte-equal.
    let prometheus = Server::start(port, &dir.join("prometheus")).unwrap();
    let series = prometheus
        .query_until("nofail_vmalloc_calls_total", Duration::from_secs(60))
        .unwrap();
    let got: BTreeSet<String> = series
        .iter()
        .map(|(metric, _)| {
            metric["caller"]
                .as_str()
                .unwrap_or_else(|| panic!("a series without a caller: {metric}"))
                .to_string()
        })
        .collect();
    let want: BTreeSet<String> = names.iter().cloned().collect();
    let missing: Vec<&String> = want.difference(&got).collect();
    let extra: Vec<&String> = got.difference(&want).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "not read back: {missing:?}\nnot in the report: {extra:?}"
    );
    assert_eq!(series.len(), names.len(), "one series per name");
    drop(prometheus);
    let _ = serve.kill();
    let _ = serve.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
