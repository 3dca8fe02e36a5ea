// SPDX-License-Identifier: MIT OR Apache-2.0
//! An optional bound on the guests running at once across threads: where
//! two stages share the lanes (`xtask ci` runs the test kernel's
//! scenarios and fstests side by side), each keeps its own `in_lanes`
//! and this keeps the machine at `VM_LANES` guests, as one stage alone.

use std::sync::{Condvar, Mutex};

struct State {
    running: usize,
    limit: Option<usize>,
}

static STATE: Mutex<State> = Mutex::new(State {
    running: 0,
    limit: None,
});
static FREED: Condvar = Condvar::new();

/// Sets (Some) or lifts (None) the bound; guests already running keep
/// their slots.
pub fn limit(n: Option<usize>) {
    let mut s = STATE.lock().unwrap_or_else(|e| e.into_inner());
    s.limit = n;
    FREED.notify_all();
}

/// A guest's place, held while its QEMU runs.
pub struct Slot;

/// Waits until a guest may start under the bound (at once without one).
pub fn take() -> Slot {
    let mut s = STATE.lock().unwrap_or_else(|e| e.into_inner());
    while s.limit.is_some_and(|n| s.running >= n) {
        s = FREED.wait(s).unwrap_or_else(|e| e.into_inner());
    }
    s.running += 1;
    Slot
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut s = STATE.lock().unwrap_or_else(|e| e.into_inner());
        s.running -= 1;
        FREED.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::atomic::{AtomicUsize, Ordering},
        time::Duration,
    };

    use super::*;

    /// Six "guests" from three threads pairs under a bound of 2: never
    /// more than 2 at once, and every one runs.
    #[test]
    fn never_more_than_the_bound() {
        limit(Some(2));
        let (now, most, ran) = (
            AtomicUsize::new(0),
            AtomicUsize::new(0),
            AtomicUsize::new(0),
        );
        std::thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| {
                    for _ in 0..2 {
                        let _slot = take();
                        let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(n, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(20));
                        now.fetch_sub(1, Ordering::SeqCst);
                        ran.fetch_add(1, Ordering::SeqCst);
                    }
                });
            }
        });
        limit(None);
        assert_eq!(ran.load(Ordering::SeqCst), 6);
        assert_eq!(most.load(Ordering::SeqCst), 2);
    }
}
