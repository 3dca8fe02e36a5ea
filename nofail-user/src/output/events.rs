// SPDX-License-Identifier: MIT OR Apache-2.0
//! `--events` as the user sees it: a text line per event on stdout, the
//! same as JSON lines in a file, and the tally at the end.

use std::{
    fs::File,
    io::{BufWriter, Write as _},
    path::Path,
};

use anyhow::{Context as _, Result};

use crate::model::{events::EventLine, health::EventHealth};

/// Where event lines go: stdout, and a JSON lines file if asked.
pub struct EventSink {
    json: Option<BufWriter<File>>,
    pub shown: u64,
}

impl EventSink {
    /// Creates the JSON lines file before anything is loaded, so a bad path
    /// fails with nothing attached.
    pub fn create(json: Option<&Path>) -> Result<Self> {
        let json = json
            .map(|p| {
                File::create(p)
                    .map(BufWriter::new)
                    .with_context(|| format!("cannot write --events-json {}", p.display()))
            })
            .transpose()?;
        Ok(Self { json, shown: 0 })
    }

    /// Shows one event (and its stack, one frame a line).
    pub fn show(&mut self, line: &EventLine) -> Result<()> {
        let mut text = render(line) + "\n";
        for f in line.stack.iter().flatten() {
            text += &format!("    {f}\n");
        }
        crate::output::stdout::print(&text)?;
        if let Some(json) = &mut self.json {
            serde_json::to_writer(&mut *json, line)?;
            json.write_all(b"\n")?;
        }
        self.shown += 1;
        Ok(())
    }

    /// Flushes what was shown since the last call.
    pub fn flush(&mut self) -> Result<()> {
        crate::output::stdout::print("")?;
        if let Some(json) = &mut self.json {
            json.flush()?;
        }
        Ok(())
    }
}

/// The closing line: what was shown and what was left out, and why.
pub fn render_tally(h: &EventHealth) -> String {
    format!(
        "events: {} shown, {} dropped ({} over --events-rate {}/s, {} with the ring buffer full)\n",
        h.shown, h.dropped, h.over_rate, h.rate_per_s, h.ring_full
    )
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

/// HH:MM:SS.micros in local time, as libbpf-tools' -T.
pub fn clock_of(unix_ns: u64) -> String {
    // time_t is 64-bit on x86-64 with glibc and musl alike (libc's alias
    // is deprecated for musl's 32-bit targets).
    let secs = (unix_ns / 1_000_000_000) as i64;
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    unsafe { libc::localtime_r((&secs as *const i64).cast(), &mut tm) };
    format!(
        "{:02}:{:02}:{:02}.{:06}",
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        (unix_ns % 1_000_000_000) / 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::events::{line, rule_terms};
    use nofail_common::{REASON_FAIL_FIRST, REASON_TIMES};

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
