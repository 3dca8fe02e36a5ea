// SPDX-License-Identifier: MIT OR Apache-2.0
//! The JSON report reader (`nofail report`, `serve --report`, baselines):
//! any bytes are refused with an error or read; a report it reads is
//! written back as this version and reads back to the same report (a
//! legacy version 1 report is migrated once), and every output that
//! renders a read report does so without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nofail_user::output::{baseline, json, prometheus, text};

fuzz_target!(|data: &[u8]| {
    // read_report reads the file as UTF-8 text: other bytes never reach
    // the parser.
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(report) = json::parse_report(input) else {
        return;
    };
    let written = serde_json::to_string_pretty(&report).expect("a read report serialises");
    let back = json::parse_report(&written)
        .unwrap_or_else(|e| panic!("a report nofail wrote is refused: {e:#}\n{written}"));
    let as_value = |r| serde_json::to_value(r).expect("serialises");
    assert_eq!(as_value(&report), as_value(&back), "not the same report");
    let _ = text::render_report(&report, 20);
    let _ = prometheus::render_sticky(&report, &mut prometheus::Sticky::new(20));
    let _ = baseline::render(&baseline::diff(&report, &back));
});
