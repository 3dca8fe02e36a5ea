// SPDX-License-Identifier: MIT OR Apache-2.0
//! Timed exhaustion runs (vm-tests `whatif_timed_*` on the stock test
//! kernel, `event_wait_*` on the kernel with
//! testing/patches/vmalloc-nofail-event-wait.patch): a series of runs per
//! kind, written by the guest as `timed_<kind>.json`, read by `cargo xtask
//! event-wait` and CI, which put the two kernels' medians side by side.
//! The trigger's clock gives the truth, nofail's `--what-if` the rest.

use serde::{Deserialize, Serialize};

/// The scenarios' kinds, in table order: the window freed once, the same
/// with areas outside it freed before, the mapping stage.
pub const KINDS: [&str; 3] = ["area", "decoys", "mapping"];

/// Runs of one kind: a run under TCG can lose milliseconds to the host
/// (a vCPU not scheduled), so the comparison takes medians.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Series {
    pub kind: String,
    pub runs: Vec<Timed>,
}

impl Series {
    /// The median of `f` over the runs (the lower one of an even count);
    /// 0 for no run.
    pub fn median(&self, f: impl Fn(&Timed) -> u64) -> u64 {
        let mut v: Vec<u64> = self.runs.iter().map(f).collect();
        v.sort_unstable();
        v.get(v.len().saturating_sub(1) / 2).copied().unwrap_or(0)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timed {
    pub kind: String,
    pub hz: u64,
    /// When the trigger freed what ends the failures, after the first
    /// retry sleep began, ns.
    pub free_after_ns: u64,
    /// Retry sleeps (trigger) = NOFAIL retries (nofail).
    pub retries: u64,
    /// nofail --what-if: retries after which nothing the stage needs was
    /// freed, and the others.
    pub futile: u64,
    pub freed: u64,
    /// The stall: the first retry sleep's start to the call's return
    /// (trigger).
    pub stall_ns: u64,
    /// The retry sleeps as nofail measured them, and as --what-if says
    /// they would have been with a wake at the first relevant free.
    pub slept_ns: u64,
    pub whatif_slept_ns: u64,
    /// --what-if's wake delay (first relevant free to wake), summed.
    pub wake_delay_ns: u64,
    /// The trigger's: the end of its free to the wake of the sleep it
    /// fell in.
    pub truth_wake_delay_ns: u64,
}

impl Timed {
    /// --what-if's stall had the first relevant free woken the task: the
    /// measured stall less the sleep the wake would have cut
    /// (`slept - whatif_slept`). The failed attempts between futile
    /// sleeps stay in it: an event-driven wait sleeps through them, but
    /// they are time the free had not come yet either way.
    pub fn predicted_stall_ns(&self) -> u64 {
        self.stall_ns
            .saturating_sub(self.slept_ns.saturating_sub(self.whatif_slept_ns))
    }

    pub fn jiffy_ns(&self) -> u64 {
        1_000_000_000 / self.hz.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run() -> Timed {
        Timed {
            kind: "area".into(),
            hz: 250,
            free_after_ns: 40_000_000,
            retries: 6,
            futile: 5,
            freed: 1,
            stall_ns: 47_000_000,
            slept_ns: 45_000_000,
            whatif_slept_ns: 39_000_000,
            wake_delay_ns: 6_000_000,
            truth_wake_delay_ns: 6_000_000,
        }
    }

    #[test]
    fn prediction_cuts_what_the_wake_saves() {
        assert_eq!(run().predicted_stall_ns(), 41_000_000);
        assert_eq!(run().jiffy_ns(), 4_000_000);
    }

    #[test]
    fn medians_of_odd_and_even_series() {
        let mut s = Series {
            kind: "area".into(),
            runs: [47, 56, 42]
                .map(|ms| Timed {
                    stall_ns: ms,
                    ..run()
                })
                .to_vec(),
        };
        assert_eq!(s.median(|t| t.stall_ns), 47);
        s.runs.pop();
        assert_eq!(s.median(|t| t.stall_ns), 47);
        s.runs.clear();
        assert_eq!(s.median(|t| t.stall_ns), 0);
    }

    #[test]
    fn a_missing_field_is_an_error() {
        let mut v = serde_json::to_value(run()).unwrap();
        v.as_object_mut().unwrap().remove("futile");
        assert!(serde_json::from_value::<Timed>(v).is_err());
    }
}
