// SPDX-License-Identifier: MIT OR Apache-2.0
//! `--chains`: who is behind a generic caller. The kernel folds the calls
//! that matter per (call site, kernel stack) into `CHAINS`; here each stack
//! is cut to the frames from the call site outwards, `depth` deep, and
//! stacks that agree on those frames are added up.

use serde::{Deserialize, Serialize};

use crate::model::counters::Counts;

/// One call chain behind one call site, with the calls that matter made
/// through it (NOFAIL, failed, NULL, slept, open-coded retries).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChainRow {
    /// `symbol+0xoff` of the call site (the row of `callers` it refines).
    pub caller: String,
    /// Return addresses from the call site outwards, `symbol+0xoff`;
    /// `["(stack lost)"]` when the kernel could not store the stack.
    pub chain: Vec<String>,
    /// Over the calls that mattered made through this chain (an object
    /// of its own: a bad value in a read-back report is named by path).
    pub counts: Counts,
}

impl ChainRow {
    /// The chain as a Prometheus label value: function names, outermost
    /// last, joined by `;` (offsets dropped to bound cardinality).
    pub fn label(&self) -> String {
        self.chain
            .iter()
            .map(|f| f.split('+').next().unwrap_or(f))
            .collect::<Vec<_>>()
            .join(";")
    }
}

/// A chain row with zero counts, for tests.
#[cfg(test)]
pub fn sample(caller: &str, chain: &[&str]) -> ChainRow {
    ChainRow {
        caller: caller.into(),
        chain: chain.iter().map(|s| s.to_string()).collect(),
        counts: Counts::default(),
    }
}

/// The frames of `stack` that show who is behind `caller`: from the frame
/// returning into the call site outwards, `depth` of them. Where the
/// call site is not on the stack (a tail call), the frames after the last
/// one inside vmalloc's own code.
pub fn cut(stack: &[u64], caller: u64, depth: usize, in_vmalloc: impl Fn(u64) -> bool) -> Vec<u64> {
    let from = match stack.iter().position(|&ip| ip == caller) {
        Some(i) => i,
        None => stack
            .iter()
            .rposition(|&ip| in_vmalloc(ip))
            .map_or(0, |i| i + 1),
    };
    stack.iter().skip(from).take(depth).copied().collect()
}

/// Most retries first, then most calls.
pub fn sort(rows: &mut [ChainRow]) {
    rows.sort_by(|a, b| {
        let (a_, b_) = (&a.counts, &b.counts);
        b_.all_retries()
            .cmp(&a_.all_retries())
            .then(b_.calls.cmp(&a_.calls))
            .then_with(|| (&a.caller, &a.chain).cmp(&(&b.caller, &b.chain)))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_starts_at_the_call_site() {
        let stack = [0x10, 0x20, 0x30, 0x40, 0x50];
        assert_eq!(cut(&stack, 0x30, 2, |_| false), vec![0x30, 0x40]);
        assert_eq!(cut(&stack, 0x30, 9, |_| false), vec![0x30, 0x40, 0x50]);
        // Call site not on the stack: after the last vmalloc frame.
        assert_eq!(cut(&stack, 0x99, 2, |ip| ip <= 0x20), vec![0x30, 0x40]);
        assert_eq!(cut(&stack, 0x99, 1, |_| false), vec![0x10]);
    }

    #[test]
    fn label_drops_offsets() {
        let row = sample("a+0x1", &["a+0x1", "b+0x20"]);
        assert_eq!(row.label(), "a;b");
    }
}
