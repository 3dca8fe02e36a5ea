// SPDX-License-Identifier: MIT OR Apache-2.0
//! Following a session for trace and inject: the `--events` flags, the
//! kernel side's constants they set, the glue from the ring buffer reader
//! (bpf) to the lines shown (output), and the loop that runs until the
//! duration ends or a signal.

use std::{path::PathBuf, time::Duration};

use super::{carry_on, flags::LiveArgs, wrap::Ending};

use anyhow::Result;
use nofail_common::{EVENT_STACK, EVENT_STUCK};

use crate::{
    bpf::{events::EventStream, session::Session, tracer::Globals},
    kernel::duration_ns,
    model::health::EventHealth,
    output::events::{EventSink, render_tally},
};

/// Records per second the kernel side sends at most, unless told.
const DEFAULT_RATE: u64 = 1000;

#[derive(Debug, Clone, clap::Args)]
#[command(group(clap::ArgGroup::new("events_on").args(["events", "events_stack", "events_json"]).multiple(true)))]
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
    /// counted (with --events, --events-stack or --events-json).
    #[arg(long, default_value_t = DEFAULT_RATE, value_name = "N", requires = "events_on",
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

    /// Where the lines go; made before anything is loaded, so a bad
    /// `--events-json` path fails with nothing attached.
    pub fn sink(&self) -> Result<EventSink> {
        EventSink::create(self.events_json.as_deref())
    }
}

impl EventArgs {
    /// The tracer's load-time constants for a command whose own events are
    /// `command` (`EVENT_INJECTED`, `EVENT_RETRY`).
    pub fn globals(&self, command: u32, live: &LiveArgs) -> Globals {
        Globals {
            retry_window_ns: duration_ns(live.retry_window),
            event_kinds: self.kinds(command),
            events_rate: self.events_rate,
            stuck_after_ns: duration_ns(live.stuck_after),
            what_if: live.what_if,
        }
    }

    /// The reader of an attached session's events, if `--events` is on.
    pub fn stream(&self, session: &mut Session, sink: EventSink) -> Result<Events> {
        if !self.on() {
            return Ok(Events(None));
        }
        let gfp_nofail = session.view.gfp_nofail();
        let stream = EventStream::open(&mut session.tracer.ebpf, gfp_nofail, self.events_rate)?;
        Ok(Events(Some((stream, sink))))
    }
}

/// The events of a session, if `--events` is on.
pub struct Events(Option<(EventStream, EventSink)>);

impl Events {
    /// Resolves when records are waiting, or never when `--events` is off
    /// (for `select!`).
    pub async fn ready(&mut self) -> Result<()> {
        match &mut self.0 {
            Some((stream, _)) => stream.ready().await,
            None => std::future::pending().await,
        }
    }

    /// Shows what is waiting.
    pub fn drain(&mut self, session: &mut Session) -> Result<()> {
        let Some((stream, sink)) = &mut self.0 else {
            return Ok(());
        };
        stream.drain(&session.tracer.ebpf, &mut session.names, |line| {
            sink.show(&line)
        })?;
        sink.flush()
    }

    /// Shows what is left and the tally; the tally for the report's health.
    pub fn finish(mut self, session: &mut Session) -> Result<Option<EventHealth>> {
        self.drain(session)?;
        let Some((stream, sink)) = self.0 else {
            return Ok(None);
        };
        let health = EventHealth {
            shown: sink.shown,
            ..stream.tally(&session.tracer.ebpf)?
        };
        crate::output::stdout::print(&render_tally(&health))?;
        Ok(Some(health))
    }
}

/// Follows an attached session until `duration` ends (if given) or the
/// `ending` comes (a signal, or the wrapped command's exit):
/// names call sites about once a second (while their code is there),
/// shows events as they arrive, and runs `every` each `interval` (which
/// ends the run by returning false).
pub async fn follow(
    session: &mut Session,
    events: &mut Events,
    ending: &mut Ending<'_>,
    duration: Option<Duration>,
    interval: Option<Duration>,
    mut every: impl FnMut(&mut Session) -> Result<bool>,
) -> Result<()> {
    // No duration: until a signal (as bpftrace and the libbpf tools).
    let deadline = async {
        match duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    let mut ticker = tokio::time::interval(interval.unwrap_or(Duration::from_secs(3600)));
    ticker.tick().await;
    let mut naming = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = &mut deadline => return Ok(()),
            ended = ending.reached() => return ended,
            _ = naming.tick() => {
                if let Err(e) = session.learn_names() {
                    carry_on::warn("naming call sites", &e);
                }
            }
            ready = events.ready() => {
                ready?;
                events.drain(session)?;
            }
            _ = ticker.tick(), if interval.is_some() => {
                match every(session) {
                    Ok(true) => {}
                    Ok(false) => return Ok(()),
                    // The interval's table or file is missed; the counts
                    // go on in the kernel and the next interval has them.
                    Err(e) => carry_on::warn("the interval's read or output", &e),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nofail_common::{EVENT_INJECTED, EVENT_RETRY};

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
}
