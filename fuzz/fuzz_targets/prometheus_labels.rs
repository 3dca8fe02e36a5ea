// SPDX-License-Identifier: MIT OR Apache-2.0
//! The Prometheus writer's label escaping: a recorded report whose call
//! sites (and `nofail_info`'s kernel and command) carry fuzzer-chosen
//! names is written as a textfile and read back by a strict reader of the
//! text format (fuzz/src/promtext.rs); every caller label reads back
//! byte-equal to the name given, each name has its own series, and no
//! other caller label appears. Input: names split at NUL.
#![no_main]

use std::{collections::BTreeSet, sync::OnceLock};

use libfuzzer_sys::fuzz_target;
use nofail_fuzz::promtext;
use nofail_user::{
    model::report::Report,
    output::{json, prometheus},
};

fn template() -> &'static Report {
    static REPORT: OnceLock<Report> = OnceLock::new();
    REPORT.get_or_init(|| {
        json::parse_report(include_str!("../../testing/reports/export_spin.json"))
            .expect("the recorded report reads")
    })
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\0');
    let (kernel, command) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    // Call sites are distinct (one row per address): duplicates dropped.
    // Four rows show any escaping problem; more only slow each input.
    let mut seen = BTreeSet::new();
    let names: Vec<&str> = parts.filter(|n| seen.insert(*n)).take(4).collect();

    let mut report = template().clone();
    let row = report.callers[0].clone();
    report.callers = names
        .iter()
        .map(|n| {
            let mut r = row.clone();
            r.caller = n.to_string();
            r
        })
        .collect();
    report.kernel = kernel.to_string();
    report.command = command.to_string();
    let mut sticky = prometheus::Sticky::new(names.len().max(1));
    let exposition = prometheus::render_file(&report, &mut sticky, 1.5e9);

    let samples = promtext::parse(&exposition)
        .unwrap_or_else(|e| panic!("not the text format: {e}\n{exposition}"));
    let label = |s: &promtext::Sample, name: &str| {
        s.labels
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let callers: BTreeSet<String> = samples.iter().filter_map(|s| label(s, "caller")).collect();
    assert_eq!(
        callers,
        names.iter().map(|n| n.to_string()).collect::<BTreeSet<_>>(),
        "{exposition}"
    );
    for name in &names {
        let calls = samples.iter().find(|s| {
            s.name == "nofail_vmalloc_calls_total" && label(s, "caller").as_deref() == Some(name)
        });
        assert!(calls.is_some(), "no calls series for {name:?}");
    }
    let info = samples
        .iter()
        .find(|s| s.name == "nofail_info")
        .expect("nofail_info");
    assert_eq!(label(info, "kernel").as_deref(), Some(kernel));
    assert_eq!(label(info, "command").as_deref(), Some(command));
});
