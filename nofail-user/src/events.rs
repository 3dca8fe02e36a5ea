// SPDX-License-Identifier: MIT OR Apache-2.0
//! `--events`: the per-event view of nofail-ebpf/src/events.rs. A line per
//! injected failure (inject), per NOFAIL retry sleep (trace) and per call
//! turning STUCK (both), printed as the records arrive from the `EVENTS`
//! ring buffer; the same as JSON lines with `--events-json`; the records
//! the kernel side left out counted, at the end and in the JSON health.
//!
//! aya-log was the first candidate and does not fit: its records are text
//! formatted in the kernel, so the caller could not be symbolised nor the
//! JSON lines built from fields, and a full log buffer drops records
//! without counting them. A ring buffer of `Event` structs does all three.

use std::{
    fs::File,
    io::{BufWriter, Write as _},
    path::PathBuf,
    time::Duration,
};

use anyhow::{Context as _, Result};
use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, PerCpuArray, RingBuf, StackTraceMap},
};
use nofail_common::{
    EVENT_INJECTED, EVENT_RETRY, EVENT_STACK, EVENT_STUCK, Event, EventCounter, REASON_DRY_RUN,
    REASON_EVERY, REASON_FAIL_FIRST, REASON_PROBABILITY, REASON_TIMES, STAGE_AREA, STAGE_MAPPING,
};
use serde::{Deserialize, Serialize};
use tokio::io::unix::AsyncFd;

use crate::{symbols::Kallsyms, tracer::Globals};

/// Records per second the kernel side sends at most, unless told.
const DEFAULT_RATE: u64 = 1000;

#[derive(Debug, Clone, clap::Args)]
pub struct EventArgs {
    /// Print a line per event as it happens: each injected failure
    /// (inject), each NOFAIL retry sleep (trace), and a call turning STUCK
    /// (both). Full mode only (kprobe or fentry). Bounded by --events-rate
    /// and a 256 KiB ring buffer; events left out are counted, at the end
    /// and in the JSON report's health.
    #[arg(long)]
    pub events: bool,
    /// With each event, the kernel stack (implies --events).
    #[arg(long)]
    pub events_stack: bool,
    /// Also write the events as JSON lines to this file (implies --events).
    #[arg(long, value_name = "FILE")]
    pub events_json: Option<PathBuf>,
    /// At most this many events per second; the rest are dropped and
    /// counted.
    #[arg(long, default_value_t = DEFAULT_RATE, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub events_rate: u64,
}

impl EventArgs {
    pub fn on(&self) -> bool {
        self.events || self.events_stack || self.events_json.is_some()
    }

    /// The `EVENT_KINDS` bits to load: `command` (`EVENT_INJECTED` or
    /// `EVENT_RETRY`) plus STUCK, and stacks if asked; 0 when off.
    pub fn kinds(&self, command: u32) -> u32 {
        if !self.on() {
            return 0;
        }
        command | EVENT_STUCK | if self.events_stack { EVENT_STACK } else { 0 }
    }

    /// Creates the JSON lines file before anything is loaded, so a bad path
    /// fails with nothing attached.
    pub fn open_json(&self) -> Result<Option<BufWriter<File>>> {
        self.events_json
            .as_ref()
            .map(|p| {
                File::create(p)
                    .map(BufWriter::new)
                    .with_context(|| format!("cannot write --events-json {}", p.display()))
            })
            .transpose()
    }
}

impl EventArgs {
    /// The tracer's load-time constants for a command whose own events are
    /// `command` (`EVENT_INJECTED`, `EVENT_RETRY`).
    pub fn globals(&self, command: u32, retry_window: Duration, stuck_after: Duration) -> Globals {
        Globals {
            retry_window_ns: retry_window.as_nanos() as u64,
            event_kinds: self.kinds(command),
            events_rate: self.events_rate,
            stuck_after_ns: stuck_after.as_nanos() as u64,
        }
    }

    /// The reader of an attached session's events, if `--events` is on.
    pub fn stream(
        &self,
        session: &mut crate::session::Session,
        json: Option<BufWriter<File>>,
    ) -> Result<Option<EventStream>> {
        if !self.on() {
            return Ok(None);
        }
        let gfp_nofail = session.view.gfp_nofail();
        EventStream::open(&mut session.tracer.ebpf, json, gfp_nofail, self.events_rate).map(Some)
    }
}

/// Load-time constants of the kernel side (nofail-ebpf/src/events.rs).
pub fn apply_globals<'a>(
    loader: &mut EbpfLoader<'a>,
    kinds: &'a u32,
    rate: &'a u64,
    stuck_after_ns: &'a u64,
) {
    loader
        .override_global("EVENT_KINDS", kinds, true)
        .override_global("EVENT_RATE", rate, true)
        .override_global("STUCK_AFTER_NS", stuck_after_ns, true);
}

/// What happened to the events of a run (JSON health `events`).
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct EventHealth {
    /// Lines printed (and JSON lines written).
    pub shown: u64,
    /// Records the kernel side sent; equal to `shown` once drained.
    pub sent: u64,
    /// Left out: over `rate_per_s` plus with the ring buffer full.
    pub dropped: u64,
    pub over_rate: u64,
    pub ring_full: u64,
    pub rate_per_s: u64,
}

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

/// The reader of the `EVENTS` ring buffer.
pub struct EventStream {
    ring: AsyncFd<RingBuf<MapData>>,
    json: Option<BufWriter<File>>,
    gfp_nofail: u32,
    rate: u64,
    /// CLOCK_REALTIME minus CLOCK_MONOTONIC, to date kernel timestamps.
    realtime_offset_ns: i128,
    shown: u64,
}

impl EventStream {
    /// Takes the ring buffer out of `ebpf` (the programs keep writing to it).
    pub fn open(
        ebpf: &mut Ebpf,
        json: Option<BufWriter<File>>,
        gfp_nofail: u32,
        rate: u64,
    ) -> Result<Self> {
        let map = ebpf.take_map("EVENTS").context("EVENTS map missing")?;
        let ring = RingBuf::try_from(map)?;
        // SAFETY: RingBuf owns its map fd and returns the same one until
        // dropped, which is when the AsyncFd is dropped.
        let ring = unsafe { AsyncFd::register(ring) }
            .map_err(|e| anyhow::anyhow!("cannot poll the EVENTS ring buffer: {e}"))?;
        Ok(Self {
            ring,
            json,
            gfp_nofail,
            rate,
            realtime_offset_ns: realtime_ns() as i128 - crate::report::monotonic_ns() as i128,
            shown: 0,
        })
    }

    /// Resolves when records are waiting (call `drain` next).
    pub async fn ready(&mut self) -> Result<()> {
        let mut guard = self.ring.readable_mut().await?;
        // Cleared before draining: a record arriving from here on wakes
        // the next wait.
        guard.clear_ready();
        Ok(())
    }

    /// Prints every waiting record.
    pub fn drain(&mut self, ebpf: &Ebpf, syms: &Kallsyms) -> Result<()> {
        let stacks = ebpf
            .map("STACKS")
            .and_then(|m| StackTraceMap::try_from(m).ok());
        let mut out = std::io::stdout().lock();
        loop {
            let ring = self.ring.get_mut();
            let Some(item) = ring.next() else { break };
            if item.len() < size_of::<Event>() {
                continue;
            }
            // The ring buffer aligns records to 8 bytes; read unaligned
            // anyway (no assumption about the mapping's base).
            let ev: Event = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
            drop(item);
            let stack = (ev.stack_id >= 0).then(|| match &stacks {
                Some(map) => match map.get(&(ev.stack_id as u32), 0) {
                    Ok(trace) => trace.frames().iter().map(|f| syms.resolve(f.ip)).collect(),
                    Err(_) => vec!["(stack lost)".to_string()],
                },
                None => vec!["(stack lost)".to_string()],
            });
            let line = self.line_of(&ev, syms, stack);
            writeln!(out, "{}", render(&line))?;
            if let Some(frames) = &line.stack {
                for f in frames {
                    writeln!(out, "    {f}")?;
                }
            }
            if let Some(json) = &mut self.json {
                serde_json::to_writer(&mut *json, &line)?;
                json.write_all(b"\n")?;
            }
            self.shown += 1;
        }
        out.flush()?;
        if let Some(json) = &mut self.json {
            json.flush()?;
        }
        Ok(())
    }

    fn line_of(&self, ev: &Event, syms: &Kallsyms, stack: Option<Vec<String>>) -> EventLine {
        let comm_len = ev
            .comm
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(ev.comm.len());
        let injected = ev.kind == EVENT_INJECTED;
        let stuck = ev.kind == EVENT_STUCK;
        EventLine {
            event: match ev.kind {
                EVENT_INJECTED => "injected",
                EVENT_RETRY => "retry",
                EVENT_STUCK => "stuck",
                _ => "unknown",
            }
            .into(),
            unix_ns: (ev.ktime_ns as i128 + self.realtime_offset_ns).max(0) as u64,
            ktime_ns: ev.ktime_ns,
            pid: ev.tgid,
            tid: ev.tid,
            comm: String::from_utf8_lossy(&ev.comm[..comm_len]).into_owned(),
            caller: syms.resolve(ev.caller),
            address: format!("{:#x}", ev.caller),
            size: ev.size,
            nofail: ev.gfp & self.gfp_nofail != 0,
            stage: match ev.stage {
                STAGE_AREA => Some("area".into()),
                STAGE_MAPPING => Some("mapping".into()),
                _ => None,
            },
            attempt: ev.attempt,
            rule: injected.then(|| rule_terms(ev.reason)),
            eligible_seq: injected.then_some(ev.seq),
            times_spent: (injected && ev.reason & REASON_TIMES != 0).then_some(ev.spent),
            dry_run: injected.then_some(ev.reason & REASON_DRY_RUN != 0),
            sleep_jiffies: (ev.kind == EVENT_RETRY).then_some(ev.spent),
            age_ns: stuck.then_some(ev.spent),
            failures: stuck.then_some(ev.seq),
            stack,
        }
    }

    /// Drains what is left, prints the tally and returns it.
    pub fn finish(mut self, ebpf: &Ebpf, syms: &Kallsyms) -> Result<EventHealth> {
        self.drain(ebpf, syms)?;
        let stats: PerCpuArray<_, u64> =
            PerCpuArray::try_from(ebpf.map("EVENT_STATS").context("EVENT_STATS missing")?)?;
        let sum = |c: EventCounter| -> Result<u64> { Ok(stats.get(&(c as u32), 0)?.iter().sum()) };
        let (over_rate, ring_full) = (sum(EventCounter::OverRate)?, sum(EventCounter::RingFull)?);
        let health = EventHealth {
            shown: self.shown,
            sent: sum(EventCounter::Sent)?,
            dropped: over_rate + ring_full,
            over_rate,
            ring_full,
            rate_per_s: self.rate,
        };
        println!(
            "events: {} shown, {} dropped ({} over --events-rate {}/s, {} with the ring buffer full)",
            health.shown, health.dropped, health.over_rate, health.rate_per_s, health.ring_full
        );
        Ok(health)
    }
}

fn rule_terms(reason: u32) -> Vec<String> {
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

/// One text line: local time, kind, stage, attempt, task, caller, detail.
pub fn render(l: &EventLine) -> String {
    let what = match l.event.as_str() {
        "injected" => {
            let rule = l.rule.as_deref().unwrap_or_default();
            let mut why = if rule.is_empty() {
                "every eligible allocation".to_string()
            } else {
                rule.join(", ")
            };
            if let Some(spent) = l.times_spent {
                why += &format!(" ({spent} spent)");
            }
            if l.dry_run == Some(true) {
                why += ", dry run: not failed";
            }
            format!(
                "failure injected by {why}, eligible #{}",
                l.eligible_seq.unwrap_or(0)
            )
        }
        "retry" => {
            let j = l.sleep_jiffies.unwrap_or(0);
            format!(
                "attempt failed, sleeping {j} jiff{} before the next",
                if j == 1 { "y" } else { "ies" }
            )
        }
        "stuck" => format!(
            "{:.1} s in vmalloc, {} failures so far",
            l.age_ns.unwrap_or(0) as f64 / 1e9,
            l.failures.unwrap_or(0)
        ),
        _ => String::new(),
    };
    format!(
        "{} {:<8} {:<7} attempt {:<3} pid {} tid {} ({}) {}{} {} B: {what}",
        clock_of(l.unix_ns),
        l.event.to_uppercase(),
        l.stage.as_deref().unwrap_or("-"),
        l.attempt,
        l.pid,
        l.tid,
        l.comm,
        l.caller,
        if l.nofail { " [NOFAIL]" } else { "" },
        l.size,
    )
}

fn realtime_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// HH:MM:SS.micros in local time, as libbpf-tools' -T.
fn clock_of(unix_ns: u64) -> String {
    let secs = (unix_ns / 1_000_000_000) as libc::time_t;
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    unsafe { libc::localtime_r(&secs, &mut tm) };
    format!(
        "{:02}:{:02}:{:02}.{:06}",
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        (unix_ns % 1_000_000_000) / 1000
    )
}

/// `stream.ready()`, or never when `--events` is off (for `select!`).
pub async fn ready(stream: &mut Option<EventStream>) -> Result<()> {
    match stream {
        Some(s) => s.ready().await,
        None => std::future::pending().await,
    }
}

/// Prints what is waiting, if `--events` is on.
pub fn drain(stream: &mut Option<EventStream>, session: &crate::session::Session) -> Result<()> {
    match stream {
        Some(s) => s.drain(&session.tracer.ebpf, &session.syms),
        None => Ok(()),
    }
}

/// The tally for the report's health, if `--events` is on.
pub fn finish(
    stream: Option<EventStream>,
    session: &crate::session::Session,
) -> Result<Option<EventHealth>> {
    stream
        .map(|s| s.finish(&session.tracer.ebpf, &session.syms))
        .transpose()
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
        ..tests::line(event)
    };
    vec![full("injected"), full("retry"), full("stuck")]
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn kinds_follow_the_flags() {
        let mut a = EventArgs {
            events: false,
            events_stack: false,
            events_json: None,
            events_rate: DEFAULT_RATE,
        };
        assert_eq!(a.kinds(EVENT_INJECTED), 0);
        a.events_json = Some("x".into());
        assert_eq!(a.kinds(EVENT_INJECTED), EVENT_INJECTED | EVENT_STUCK);
        a.events_stack = true;
        assert_eq!(
            a.kinds(EVENT_RETRY),
            EVENT_RETRY | EVENT_STUCK | EVENT_STACK
        );
    }

    #[test]
    fn lines_say_what_happened() {
        let mut l = line("injected");
        l.rule = Some(rule_terms(REASON_FAIL_FIRST | REASON_TIMES));
        l.times_spent = Some(3);
        l.eligible_seq = Some(4);
        let text = render(&l);
        assert!(
            text.contains("INJECTED area    attempt 2   pid 7 tid 8 (xfsaild) site+0x1 [NOFAIL] 65536 B: failure injected by fail-first, times (3 spent), eligible #4"),
            "{text}"
        );
        let mut r = line("retry");
        r.sleep_jiffies = Some(1);
        assert!(render(&r).ends_with("attempt failed, sleeping 1 jiffy before the next"));
        let mut s = line("stuck");
        s.age_ns = Some(1_500_000_000);
        s.failures = Some(300);
        let text = render(&s);
        assert!(
            text.contains(" STUCK    area ")
                && text.ends_with("1.5 s in vmalloc, 300 failures so far"),
            "{text}"
        );
        // JSON lines leave out what does not apply to the kind.
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["sleep_jiffies"], 1);
        assert!(json.get("rule").is_none() && json.get("age_ns").is_none());
    }
}
