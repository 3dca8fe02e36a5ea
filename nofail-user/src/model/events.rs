// SPDX-License-Identifier: MIT OR Apache-2.0
//! One event (`--events`) as nofail shows it and writes it as a JSON line.

use nofail_common::{REASON_EVERY, REASON_FAIL_FIRST, REASON_PROBABILITY, REASON_TIMES};
use serde::{Deserialize, Serialize};

/// One event as a JSON line (docs in the README, next to the report schema).
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct EventLine {
    /// "injected", "retry" or "stuck".
    pub event: String,
    pub unix_ns: u64,
    pub ktime_ns: u64,
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    pub caller: String,
    pub address: String,
    pub size: u64,
    pub nofail: bool,
    /// "area", "mapping", or absent (a STUCK call that never failed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    pub attempt: u32,
    /// Injected: the rule's terms that picked it ("fail-first", "every",
    /// "probability", "times"; none: every eligible allocation fails).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<Vec<String>>,
    /// Injected: the eligible allocation's number in the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eligible_seq: Option<u64>,
    /// Injected with --times: failures spent, this one included.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub times_spent: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
    /// Retry: jiffies the loop asked to sleep.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sleep_jiffies: Option<u64>,
    /// STUCK: the call's age and failures so far.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub age_ns: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failures: Option<u64>,
    /// --events-stack: innermost frame first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stack: Option<Vec<String>>,
}

/// The rule's terms (`REASON_*` bits) that picked an injected failure.
pub fn rule_terms(reason: u32) -> Vec<String> {
    [
        (REASON_FAIL_FIRST, "fail-first"),
        (REASON_EVERY, "every"),
        (REASON_PROBABILITY, "probability"),
        (REASON_TIMES, "times"),
    ]
    .iter()
    .filter(|(bit, _)| reason & bit != 0)
    .map(|(_, name)| name.to_string())
    .collect()
}

/// A line with the fields every kind has, for tests.
#[cfg(test)]
pub fn line(event: &str) -> EventLine {
    EventLine {
        event: event.into(),
        unix_ns: 0,
        ktime_ns: 0,
        pid: 7,
        tid: 8,
        comm: "xfsaild".into(),
        caller: "site+0x1".into(),
        address: "0x1".into(),
        size: 65536,
        nofail: true,
        stage: Some("area".into()),
        attempt: 2,
        rule: None,
        eligible_seq: None,
        times_spent: None,
        dry_run: None,
        sleep_jiffies: None,
        age_ns: None,
        failures: None,
        stack: None,
    }
}

/// One line of each kind with every field set, for the schema doc test.
#[cfg(test)]
pub fn sample_lines() -> Vec<EventLine> {
    let full = |event: &str| EventLine {
        rule: Some(vec![]),
        eligible_seq: Some(1),
        times_spent: Some(1),
        dry_run: Some(false),
        sleep_jiffies: Some(1),
        age_ns: Some(1),
        failures: Some(1),
        stack: Some(vec![]),
        ..line(event)
    };
    vec![full("injected"), full("retry"), full("stuck")]
}
