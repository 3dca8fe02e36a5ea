// SPDX-License-Identifier: MIT OR Apache-2.0
//! `--events`: the reader of nofail-ebpf/src/events.rs. Records of each
//! injected failure (inject), NOFAIL retry sleep (trace) and call turning
//! STUCK (both) from the `EVENTS` ring buffer, as `EventLine`s; and the
//! kernel side's tally of records it left out.
//!
//! aya-log was the first candidate and does not fit: its records are text
//! formatted in the kernel, so the caller could not be symbolised nor the
//! JSON lines built from fields, and a full log buffer drops records
//! without counting them. A ring buffer of `Event` structs does all three.

use anyhow::{Context as _, Result};
use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, PerCpuArray, RingBuf, StackTraceMap},
};
use nofail_common::{
    EVENT_INJECTED, EVENT_RETRY, EVENT_STUCK, Event, EventCounter, REASON_DRY_RUN, REASON_TIMES,
    STAGE_AREA, STAGE_MAPPING, map_names,
};
use tokio::io::unix::AsyncFd;

use crate::{
    kernel::symbols::SymbolCache,
    model::{
        events::{EventLine, rule_terms},
        health::EventHealth,
    },
};

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

/// The reader of the `EVENTS` ring buffer.
pub struct EventStream {
    ring: AsyncFd<RingBuf<MapData>>,
    gfp_nofail: u32,
    rate: u64,
    /// CLOCK_REALTIME minus CLOCK_MONOTONIC, to date kernel timestamps.
    realtime_offset_ns: i128,
}

impl EventStream {
    /// Takes the ring buffer out of `ebpf` (the programs keep writing to it).
    pub fn open(ebpf: &mut Ebpf, gfp_nofail: u32, rate: u64) -> Result<Self> {
        let map = ebpf
            .take_map(map_names::EVENTS)
            .context("EVENTS map missing")?;
        let ring = RingBuf::try_from(map)?;
        // SAFETY: RingBuf owns its map fd and returns the same one until
        // dropped, which is when the AsyncFd is dropped.
        let ring = unsafe { AsyncFd::register(ring) }
            .map_err(|e| anyhow::anyhow!("cannot poll the EVENTS ring buffer: {e}"))?;
        Ok(Self {
            ring,
            gfp_nofail,
            rate,
            realtime_offset_ns: crate::kernel::realtime_ns() as i128
                - crate::kernel::monotonic_ns() as i128,
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

    /// Hands every waiting record to `each`, as a line.
    pub fn drain(
        &mut self,
        ebpf: &Ebpf,
        names: &mut SymbolCache,
        mut each: impl FnMut(EventLine) -> Result<()>,
    ) -> Result<()> {
        let stacks = ebpf
            .map(map_names::STACKS)
            .and_then(|m| StackTraceMap::try_from(m).ok());
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
                    Ok(trace) => trace.frames().iter().map(|f| names.name(f.ip)).collect(),
                    Err(_) => vec!["(stack lost)".to_string()],
                },
                None => vec!["(stack lost)".to_string()],
            });
            each(self.line_of(&ev, names, stack))?;
        }
        Ok(())
    }

    fn line_of(
        &self,
        ev: &Event,
        names: &mut SymbolCache,
        stack: Option<Vec<String>>,
    ) -> EventLine {
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
            caller: names.name(ev.caller),
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

    /// The kernel side's tally (`shown` is the reader's to fill in).
    pub fn tally(&self, ebpf: &Ebpf) -> Result<EventHealth> {
        let stats: PerCpuArray<_, u64> = PerCpuArray::try_from(
            ebpf.map(map_names::EVENT_STATS)
                .context("EVENT_STATS missing")?,
        )?;
        let sum = |c: EventCounter| -> Result<u64> { Ok(stats.get(&(c as u32), 0)?.iter().sum()) };
        let (over_rate, ring_full) = (sum(EventCounter::OverRate)?, sum(EventCounter::RingFull)?);
        Ok(EventHealth {
            shown: 0,
            sent: sum(EventCounter::Sent)?,
            dropped: over_rate + ring_full,
            over_rate,
            ring_full,
            rate_per_s: self.rate,
        })
    }
}
