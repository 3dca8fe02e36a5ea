// SPDX-License-Identifier: MIT OR Apache-2.0
//! Sizes (`--min-size`), durations (`--duration`, `--interval`,
//! `--stuck-after`, `--retry-window`) and `serve --listen`: any string is
//! an error or a value, never a panic or a wrapped number; a value
//! written the way the help shows it (`64K`, `500ms`, `1.5s`) reads back
//! as itself; an accepted value, written out, reads back the same.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use nofail_user::cmd::{
    flags::{parse_duration, parse_size},
    serve::parse_listen,
};

/// The units the help names, in nanoseconds.
const UNITS: [(&str, u128); 4] = [
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];
const SUFFIXES: [(&str, u128); 7] = [
    ("", 1),
    ("K", 1 << 10),
    ("k", 1 << 10),
    ("M", 1 << 20),
    ("m", 1 << 20),
    ("G", 1 << 30),
    ("g", 1 << 30),
];

fn number(data: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = data.len().min(8);
    b[..n].copy_from_slice(&data[..n]);
    // Small numbers as often as large ones: shift by the first byte.
    u64::from_le_bytes(b) >> (data.first().copied().unwrap_or(0) % 64)
}

fuzz_target!(|data: &[u8]| {
    // Any string.
    let s = String::from_utf8_lossy(data);
    if let Ok(d) = parse_duration(&s) {
        assert!(
            d > Duration::ZERO && d.as_nanos() <= u64::MAX as u128,
            "{s:?}: {d:?}"
        );
        // Written as seconds with nine decimals: the same duration.
        let again = format!("{}.{:09}s", d.as_secs(), d.subsec_nanos());
        assert_eq!(parse_duration(&again), Ok(d), "{s:?} -> {again}");
    }
    if let Ok(n) = parse_size(&s) {
        assert_eq!(parse_size(&n.to_string()), Ok(n), "{s:?}");
    }
    if let Ok(addr) = parse_listen(&s) {
        assert_eq!(parse_listen(&addr.to_string()), Ok(addr), "{s:?}");
    }

    // A number and a unit, as the help writes them.
    let n = number(data.get(1..).unwrap_or_default());
    let pick = data.first().copied().unwrap_or(0) as usize;
    let (unit, unit_ns) = UNITS[pick % UNITS.len()];
    let text = format!("{n}{unit}");
    let want = n as u128 * unit_ns;
    match parse_duration(&text) {
        Ok(d) => assert_eq!(d.as_nanos(), want, "{text}"),
        Err(_) => assert!(want == 0 || want > u64::MAX as u128, "{text} refused"),
    }
    let (suffix, mult) = SUFFIXES[(pick / 4) % SUFFIXES.len()];
    let text = format!("{n}{suffix}");
    let want = n as u128 * mult;
    match parse_size(&text) {
        Ok(v) => assert_eq!(v as u128, want, "{text}"),
        Err(_) => assert!(want > u64::MAX as u128, "{text} refused"),
    }
});
