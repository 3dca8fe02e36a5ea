// SPDX-License-Identifier: MIT OR Apache-2.0
//! nofail is switched on when memory is short, and then its own reads of
//! the kernel's counts can fail: a map lookup's copy buffer
//! (bpf_map_copy_value() allocates for per-CPU values), /proc/kallsyms'
//! seq_file buffer, an output file's pages. Such a failure must not end a
//! run that has been counting for hours: it is said in one line, naming
//! what failed, and the run carries on; the final read is retried.

use std::time::Duration;

use anyhow::Result;

use crate::{bpf::one_line, output::stdout};

/// Says in one line that `what` failed, and why; the caller carries on.
pub fn warn(what: &str, err: &anyhow::Error) {
    stdout::say(&format!(
        "nofail: warning: {what} failed: {}; carrying on",
        one_line(&format!("{err:#}"))
    ));
}

/// How often, and how far apart, a read that must succeed (the final
/// report) is tried before its error ends the run.
const TRIES: u32 = 20;
const APART: Duration = Duration::from_millis(100);

/// `f`, tried again while it fails (each failure said), up to `TRIES`
/// times: the end-of-run report is what a whole run was for.
pub fn retried<T>(what: &str, mut f: impl FnMut() -> Result<T>) -> Result<T> {
    let mut tries = 1;
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if tries < TRIES => {
                warn(&format!("{what} (try {tries} of {TRIES})"), &e);
                std::thread::sleep(APART);
                tries += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retried_until_it_succeeds() {
        let mut calls = 0;
        let v = retried("read", || {
            calls += 1;
            if calls < 3 {
                anyhow::bail!("Cannot allocate memory (os error 12)")
            }
            Ok(calls)
        })
        .unwrap();
        assert_eq!((v, calls), (3, 3));
    }

    #[test]
    fn retried_gives_up_with_the_last_error() {
        let mut calls = 0;
        let e = retried("read", || -> Result<()> {
            calls += 1;
            anyhow::bail!("failure {calls}")
        })
        .unwrap_err();
        assert_eq!(calls, TRIES);
        assert_eq!(e.to_string(), format!("failure {TRIES}"));
    }
}
