// SPDX-License-Identifier: MIT OR Apache-2.0
//! What a guest run of fstests left in its directory, read strictly: a
//! field the checks need that is missing is an error, never a zero.
//!
//! - `check.out`: what `./check` printed;
//! - `xfs-stats.before`, `xfs-stats.after`: `/sys/fs/xfs/stats/stats`;
//! - `summary`: `key value` lines from testing/fstests/guest.sh;
//! - `nofail.json`: nofail's report (traced runs).

use std::collections::BTreeMap;

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

/// One test's outcome in one run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    /// fstests' `[not run]`, with its reason.
    NotRun(String),
    /// With fstests' message.
    Fail(String),
}

impl Outcome {
    pub fn word(&self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::NotRun(_) => "notrun",
            Outcome::Fail(_) => "FAIL",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestResult {
    pub name: String,
    /// Seconds, as fstests timed it (empty for a test not run).
    pub secs: Option<u64>,
    pub outcome: Outcome,
}

/// Each test's outcome from what `./check` printed: its closing lists
/// (`Ran:`, `Not run:`, `Failures:`) say which tests ran, were not run
/// or failed; each test's own line gives its time, its `[not run]`
/// reason or its failure. (fstests' xunit report, `-R xunit`, would say
/// the same but rewrites itself after every test: 11 to 12 s each under
/// TCG.)
pub fn check_output(text: &str) -> Result<Vec<TestResult>> {
    let list = |prefix: &str| -> Option<Vec<&str>> {
        text.lines()
            .filter_map(|l| l.strip_prefix(prefix))
            .next_back()
            .map(|rest| rest.split_whitespace().collect())
    };
    if text.lines().any(|l| l.trim() == "Interrupted!") {
        bail!("fstests was interrupted");
    }
    let Some(ran) = list("Ran: ") else {
        bail!("fstests printed no list of the tests it ran (no Ran: line)");
    };
    let notrun = list("Not run: ").unwrap_or_default();
    let failed = list("Failures: ").unwrap_or_default();
    let mut out = Vec::new();
    for name in ran {
        // The test's own line: its name, padded, then what became of it.
        let rest = text
            .lines()
            .filter_map(|l| l.strip_prefix(name))
            .find(|r| r.is_empty() || r.starts_with(' '))
            .unwrap_or("")
            .trim();
        let secs = rest
            .split_whitespace()
            .filter_map(|w| w.strip_suffix('s')?.parse().ok())
            .next_back();
        let outcome = if failed.contains(&name) {
            Outcome::Fail(if rest.is_empty() {
                "failed".into()
            } else {
                rest.to_string()
            })
        } else if notrun.contains(&name) {
            Outcome::NotRun(
                rest.split_once("[not run]")
                    .map_or(rest, |(_, why)| why)
                    .trim()
                    .to_string(),
            )
        } else {
            Outcome::Pass
        };
        out.push(TestResult {
            name: name.to_string(),
            secs: match outcome {
                Outcome::Pass => secs,
                _ => None,
            },
            outcome,
        });
    }
    Ok(out)
}

/// The `buf` line of /sys/fs/xfs/stats/stats, in the kernel's order
/// (`struct __xfsstats`, fs/xfs/xfs_stats.h, from `xb_get`).
pub const BUF_FIELDS: [&str; 9] = [
    "xb_get",
    "xb_create",
    "xb_get_locked",
    "xb_get_locked_waited",
    "xb_busy_locked",
    "xb_miss_locked",
    "xb_page_retries",
    "xb_page_found",
    "xb_get_read",
];

/// XFS's counters: one line per group, a name and its values.
#[derive(Clone, Debug, Default)]
pub struct XfsStats {
    lines: BTreeMap<String, Vec<u64>>,
}

impl XfsStats {
    /// Lines whose values are not all numbers (7.2 has `gc xpc 0`) are
    /// left out: asking for them fails.
    pub fn parse(text: &str) -> Result<Self> {
        let mut lines = BTreeMap::new();
        for line in text.lines() {
            let mut words = line.split_whitespace();
            let Some(name) = words.next() else { continue };
            if let Ok(values) = words
                .map(|w| w.parse::<u64>())
                .collect::<Result<Vec<_>, _>>()
            {
                lines.insert(name.to_string(), values);
            }
        }
        if lines.is_empty() {
            bail!("no counters in the xfs stats");
        }
        Ok(Self { lines })
    }

    /// A `buf` counter by its kernel name (BUF_FIELDS).
    pub fn buf(&self, field: &str) -> Result<u64> {
        let i = BUF_FIELDS
            .iter()
            .position(|f| *f == field)
            .with_context(|| format!("{field} is not a buf counter"))?;
        let buf = self
            .lines
            .get("buf")
            .context("no buf line in /sys/fs/xfs/stats/stats")?;
        buf.get(i)
            .copied()
            .with_context(|| format!("the buf line has {} values, no {field}", buf.len()))
    }
}

/// How much a `buf` counter rose between two readings.
pub fn buf_delta(before: &XfsStats, after: &XfsStats, field: &str) -> Result<u64> {
    let (b, a) = (before.buf(field)?, after.buf(field)?);
    a.checked_sub(b)
        .with_context(|| format!("{field} went down: {b} -> {a}"))
}

/// `key value` lines (the value is the rest of the line).
#[derive(Clone, Debug, Default)]
pub struct Summary {
    map: BTreeMap<String, String>,
}

impl Summary {
    pub fn parse(text: &str) -> Self {
        let map = text
            .lines()
            .filter_map(|l| {
                let (k, v) = l.split_once(' ').unwrap_or((l, ""));
                (!k.is_empty()).then(|| (k.to_string(), v.trim().to_string()))
            })
            .collect();
        Self { map }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.map.get(key).map(String::as_str)
    }

    pub fn num(&self, key: &str) -> Result<u64> {
        self.get(key)
            .with_context(|| format!("the guest wrote no {key}"))?
            .parse()
            .with_context(|| format!("the guest's {key} is not a number"))
    }
}

/// The guest's `failed-slab`: `SITE COUNT` lines, the call sites of
/// failed slab allocations (kmem events with ptr 0) and how many failed.
pub fn failed_slab(text: &str) -> Result<Vec<(String, u64)>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (site, n) = l
                .rsplit_once(' ')
                .with_context(|| format!("failed-slab line {l:?}"))?;
            Ok((
                site.trim().to_string(),
                n.trim()
                    .parse()
                    .with_context(|| format!("failed-slab line {l:?}"))?,
            ))
        })
        .collect()
}

/// A caller's counts from nofail's report (the fields the checks read).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallerCounts {
    pub caller: String,
    pub calls: u64,
    pub nofail_calls: u64,
    pub null_returns: u64,
    pub injected: u64,
    pub area_failures: u64,
    pub mapping_failures: u64,
    pub open_coded_retries: u64,
    pub area_retries: u64,
    pub mapping_retries: u64,
}

/// nofail's account of one caller's injected failures.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Behaviour {
    pub caller: String,
    pub nofail: bool,
    pub injected: u64,
    pub null_returned: u64,
    pub open_coded_retries: u64,
    pub error_to_userspace: u64,
    pub absorbed: u64,
    pub area_retries: u64,
    pub mapping_retries: u64,
    pub still_looping: u64,
    /// System call -> -ENOMEM returns seen after this caller's NULLs.
    pub syscalls: BTreeMap<String, u64>,
}

/// One call chain of the calls that mattered (`--chains`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Chain {
    pub caller: String,
    pub frames: Vec<String>,
    pub calls: u64,
    pub null_returns: u64,
    pub open_coded_retries: u64,
    pub injected: u64,
}

/// What the checks and the table read from nofail's JSON report.
#[derive(Clone, Debug, Default)]
pub struct NofailReport {
    pub command: String,
    pub callers: Vec<CallerCounts>,
    pub chains: Vec<Chain>,
    /// `injection.counts.injected` (inject reports only).
    pub injected_total: Option<u64>,
    pub behaviour: Vec<Behaviour>,
    /// BPF program runs the kernel skipped (it was running another BPF
    /// program on that CPU), per program that skipped any.
    pub missed: Vec<(String, u64)>,
    pub in_flight: u64,
}

fn u(v: &Value, key: &str) -> Result<u64> {
    v.get(key)
        .with_context(|| format!("no field {key}"))?
        .as_u64()
        .with_context(|| format!("field {key} is not a count"))
}

fn s(v: &Value, key: &str) -> Result<String> {
    Ok(v.get(key)
        .with_context(|| format!("no field {key}"))?
        .as_str()
        .with_context(|| format!("field {key} is not a string"))?
        .to_string())
}

fn arr<'a>(v: &'a Value, key: &str) -> Result<&'a Vec<Value>> {
    v.get(key)
        .with_context(|| format!("no field {key}"))?
        .as_array()
        .with_context(|| format!("field {key} is not an array"))
}

impl NofailReport {
    pub fn parse(text: &str) -> Result<Self> {
        let v: Value = serde_json::from_str(text).context("nofail's report is not JSON")?;
        let command = s(&v, "command")?;
        let callers = arr(&v, "callers")?
            .iter()
            .map(|r| -> Result<CallerCounts> {
                let caller = s(r, "caller")?;
                Ok(CallerCounts {
                    calls: u(r, "calls")?,
                    nofail_calls: u(r, "nofail_calls")?,
                    null_returns: u(r, "null_returns")?,
                    injected: u(r, "injected")?,
                    area_failures: u(r, "area_failures")?,
                    mapping_failures: u(r, "mapping_failures")?,
                    open_coded_retries: u(r, "open_coded_retries")?,
                    area_retries: u(r, "area_retries")?,
                    mapping_retries: u(r, "mapping_retries")?,
                    caller,
                })
            })
            .collect::<Result<Vec<_>>>()
            .context("a caller row of nofail's report")?;
        let chains = match v.get("chains") {
            None | Some(Value::Null) => Vec::new(),
            Some(_) => arr(&v, "chains")?
                .iter()
                .map(|c| {
                    let counts = c.get("counts").context("no field counts")?;
                    Ok(Chain {
                        caller: s(c, "caller")?,
                        frames: arr(c, "chain")?
                            .iter()
                            .map(|f| f.as_str().unwrap_or("?").to_string())
                            .collect(),
                        calls: u(counts, "calls")?,
                        null_returns: u(counts, "null_returns")?,
                        open_coded_retries: u(counts, "open_coded_retries")?,
                        injected: u(counts, "injected")?,
                    })
                })
                .collect::<Result<Vec<_>>>()
                .context("a chain of nofail's report")?,
        };
        let (injected_total, behaviour) = if command == "inject" {
            let inj = v
                .get("injection")
                .context("an inject report without its injection section")?;
            let counts = inj.get("counts").context("no field injection.counts")?;
            let behaviour = arr(inj, "behaviour")?
                .iter()
                .map(|b| {
                    let syscalls = match b.get("syscalls") {
                        Some(Value::Object(m)) => m
                            .iter()
                            .map(|(k, n)| (k.clone(), n.as_u64().unwrap_or(0)))
                            .collect(),
                        _ => bail!("no field syscalls"),
                    };
                    Ok(Behaviour {
                        caller: s(b, "caller")?,
                        nofail: b
                            .get("nofail")
                            .and_then(Value::as_bool)
                            .context("no field nofail")?,
                        injected: u(b, "injected")?,
                        null_returned: u(b, "null_returned")?,
                        open_coded_retries: u(b, "open_coded_retries")?,
                        error_to_userspace: u(b, "error_to_userspace")?,
                        absorbed: u(b, "absorbed")?,
                        area_retries: u(b, "area_retries")?,
                        mapping_retries: u(b, "mapping_retries")?,
                        still_looping: u(b, "still_looping")?,
                        syscalls,
                    })
                })
                .collect::<Result<Vec<_>>>()
                .context("a behaviour line of nofail's report")?;
            (Some(u(counts, "injected")?), behaviour)
        } else {
            (None, Vec::new())
        };
        let health = v.get("health").context("no field health")?;
        Ok(Self {
            command,
            callers,
            chains,
            injected_total,
            behaviour,
            missed: {
                let total = u(health, "missed_runs")?;
                let mut per: Vec<(String, u64)> = Vec::new();
                for p in arr(health, "programs")? {
                    let n = u(p, "recursion_misses")?;
                    if n > 0 {
                        per.push((s(p, "program")?, n));
                    }
                }
                let sum: u64 = per.iter().map(|(_, n)| n).sum();
                if sum != total {
                    bail!(
                        "health.missed_runs is {total}, its programs' recursion_misses add up to {sum}"
                    );
                }
                per
            },
            in_flight: arr(&v, "in_flight")?.len() as u64,
        })
    }
}

/// A call site in XFS's buffer allocation (`xfs_buf_alloc+0x...`), where
/// `xfs_buf_alloc_vmalloc()` is inlined: the site the tracepoint
/// `xfs:xfs_buf_backing_vmalloc` and `xb_page_retries` speak of.
pub fn is_buf_alloc(caller: &str) -> bool {
    caller
        .split_whitespace()
        .next()
        .is_some_and(|c| c.starts_with("xfs_buf_alloc+"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHECK_OUT: &str = "\
FSTYP         -- xfs (non-debug)
MKFS_OPTIONS  -- -f -n size=65536 /dev/loop1

generic/006         19s
generic/020        [not run] attr not supported by \"this\" fs
generic/050        - output mismatch (see /x/results/generic/050.out.bad)
    --- tests/generic/050.out\t2026-01-01
    ...
generic/117 18s ...  20s
Ran: generic/006 generic/020 generic/050 generic/117
Not run: generic/020
Failures: generic/050
Failed 1 of 4 tests
";

    #[test]
    fn check_output_outcomes_in_order() {
        let r = check_output(CHECK_OUT).unwrap();
        assert_eq!(r.len(), 4);
        assert_eq!(r[0].name, "generic/006");
        assert_eq!(r[0].secs, Some(19));
        assert_eq!(r[0].outcome, Outcome::Pass);
        assert_eq!(r[1].secs, None);
        assert_eq!(
            r[1].outcome,
            Outcome::NotRun("attr not supported by \"this\" fs".into())
        );
        assert!(matches!(&r[2].outcome, Outcome::Fail(m) if m.contains("output mismatch")));
        // A time from an earlier run comes first; this run's is last.
        assert_eq!(r[3].secs, Some(20));
        assert_eq!(r[3].outcome, Outcome::Pass);
    }

    #[test]
    fn check_output_without_its_lists_fails() {
        // Cut short (a timeout, a crash): no Ran: line, no results.
        assert!(check_output("generic/006         19s\n").is_err());
        let interrupted = CHECK_OUT.replace("Failed 1 of 4 tests", "Interrupted!");
        assert!(check_output(&interrupted).is_err());
        // A failure is a failure even when its line is missing.
        let r = check_output("Ran: xfs/021\nFailures: xfs/021\n").unwrap();
        assert!(matches!(r[0].outcome, Outcome::Fail(_)));
    }

    const STATS: &str = "extent_alloc 4 32 4 32\n\
        buf 100 20 90 0 0 10 7 0 5\n\
        xpc 1 2 3\n\
        gc xpc 0\n";

    #[test]
    fn buf_counters_by_name() {
        let before = XfsStats::parse(STATS).unwrap();
        assert_eq!(before.buf("xb_get").unwrap(), 100);
        assert_eq!(before.buf("xb_page_retries").unwrap(), 7);
        assert_eq!(before.buf("xb_get_read").unwrap(), 5);
        let after = XfsStats::parse(&STATS.replace("10 7 0 5", "10 180 0 5")).unwrap();
        assert_eq!(buf_delta(&before, &after, "xb_page_retries").unwrap(), 173);
        // Going down is not a delta.
        assert!(buf_delta(&after, &before, "xb_page_retries").is_err());
    }

    #[test]
    fn missing_stats_fail() {
        let short = XfsStats::parse("buf 1 2 3\n").unwrap();
        assert!(short.buf("xb_page_retries").is_err());
        let none = XfsStats::parse("xpc 1 2 3\n").unwrap();
        assert!(none.buf("xb_get").is_err());
        assert!(none.buf("not_a_counter").is_err());
        let bad = XfsStats::parse("buf 1 x 3 4 5 6 7 8 9\ngc xpc 0\nxpc 1\n").unwrap();
        assert!(bad.buf("xb_get").is_err());
        assert!(XfsStats::parse("").is_err());
    }

    #[test]
    fn failed_slab_sites() {
        let f = failed_slab("__get_vm_area_node+0x85 691\nalloc_vmap_area+0xa67 9\n").unwrap();
        assert_eq!(
            f,
            [
                ("__get_vm_area_node+0x85".into(), 691),
                ("alloc_vmap_area+0xa67".into(), 9)
            ]
        );
        assert!(failed_slab("").unwrap().is_empty());
        assert!(failed_slab("alloc_vmap_area+0xa67 x\n").is_err());
        assert!(failed_slab("alloc_vmap_area+0xa67\n").is_err());
    }

    #[test]
    fn summary_values() {
        let s = Summary::parse("status 0\ntp_vmalloc 94\nerror no tree at /x\n");
        assert_eq!(s.num("tp_vmalloc").unwrap(), 94);
        assert_eq!(s.get("error"), Some("no tree at /x"));
        assert!(s.num("tp_fallback").is_err());
        assert!(Summary::parse("status x\n").num("status").is_err());
    }

    fn row(caller: &str) -> Value {
        serde_json::json!({
            "caller": caller, "calls": 10, "nofail_calls": 0, "null_returns": 2,
            "injected": 2, "area_failures": 2, "mapping_failures": 0,
            "open_coded_retries": 1, "area_retries": 0, "mapping_retries": 0
        })
    }

    fn inject_report() -> Value {
        serde_json::json!({
            "command": "inject",
            "callers": [row("xfs_buf_alloc+0x336")],
            "chains": [{
                "caller": "xfs_buf_alloc+0x336",
                "chain": ["xfs_buf_alloc+0x336", "xfs_buf_get_map+0x1f8", "xfs_buf_readahead_map+0x2a"],
                "counts": {"calls": 1, "null_returns": 1, "open_coded_retries": 0, "injected": 1}
            }],
            "injection": {
                "counts": {"eligible": 10, "injected": 2},
                "behaviour": [{
                    "caller": "xfs_buf_alloc+0x336", "nofail": false, "injected": 2,
                    "null_returned": 2, "open_coded_retries": 1, "error_to_userspace": 0,
                    "absorbed": 1, "area_retries": 0, "mapping_retries": 0,
                    "still_looping": 0, "syscalls": {}
                }]
            },
            "in_flight": [],
            "health": {"missed_runs": 0, "programs": [
                {"program": "vmalloc_core", "recursion_misses": 0}
            ]}
        })
    }

    #[test]
    fn nofail_report_read() {
        let r = NofailReport::parse(&inject_report().to_string()).unwrap();
        assert_eq!(r.command, "inject");
        assert_eq!(r.callers[0].calls, 10);
        assert_eq!(r.injected_total, Some(2));
        assert_eq!(r.behaviour[0].absorbed, 1);
        assert_eq!(r.chains[0].frames[2], "xfs_buf_readahead_map+0x2a");
        assert!(is_buf_alloc(&r.callers[0].caller));
        assert!(!is_buf_alloc("xfs_buf_alloc_kmem+0x1"));
    }

    /// Every field the checks read, removed one at a time, fails the
    /// read instead of reading as 0.
    #[test]
    fn nofail_report_missing_field_fails() {
        for field in [
            "calls",
            "nofail_calls",
            "null_returns",
            "injected",
            "area_failures",
            "mapping_failures",
            "open_coded_retries",
            "area_retries",
            "mapping_retries",
        ] {
            let mut v = inject_report();
            v["callers"][0].as_object_mut().unwrap().remove(field);
            assert!(
                NofailReport::parse(&v.to_string()).is_err(),
                "caller row without {field} was read"
            );
        }
        for field in [
            "injected",
            "null_returned",
            "open_coded_retries",
            "error_to_userspace",
            "absorbed",
            "still_looping",
            "nofail",
            "syscalls",
        ] {
            let mut v = inject_report();
            v["injection"]["behaviour"][0]
                .as_object_mut()
                .unwrap()
                .remove(field);
            assert!(
                NofailReport::parse(&v.to_string()).is_err(),
                "behaviour without {field} was read"
            );
        }
        let mut v = inject_report();
        v["injection"]["counts"]
            .as_object_mut()
            .unwrap()
            .remove("injected");
        assert!(NofailReport::parse(&v.to_string()).is_err());
        let mut v = inject_report();
        v.as_object_mut().unwrap().remove("injection");
        assert!(NofailReport::parse(&v.to_string()).is_err());
        let mut v = inject_report();
        v["health"].as_object_mut().unwrap().remove("missed_runs");
        assert!(NofailReport::parse(&v.to_string()).is_err());
        let mut v = inject_report();
        v["health"]["programs"][0]
            .as_object_mut()
            .unwrap()
            .remove("recursion_misses");
        assert!(NofailReport::parse(&v.to_string()).is_err());
        // The total and its parts disagree.
        let mut v = inject_report();
        v["health"]["missed_runs"] = 2.into();
        assert!(NofailReport::parse(&v.to_string()).is_err());
        let mut v = inject_report();
        v["chains"][0]["counts"]
            .as_object_mut()
            .unwrap()
            .remove("open_coded_retries");
        assert!(NofailReport::parse(&v.to_string()).is_err());
    }
}
