// SPDX-License-Identifier: MIT OR Apache-2.0
//! Stopping a run: the signals every long-running subcommand listens to.

use anyhow::Result;
use tokio::signal::unix::{Signal, SignalKind, signal};

/// SIGINT/SIGTERM, listened to from the start: whoever waits for nofail's
/// "(Ctrl-C to stop early)" line may signal right away.
/// SIGHUP is ignored (said once on stderr): nofail has nothing to reload,
/// and a terminal hanging up must not lose the report. A second signal
/// while the outputs are written changes nothing: the handlers stay
/// installed and the files are written atomically.
pub struct Stop {
    interrupt: Signal,
    terminate: Signal,
    hangup: Signal,
}

impl Stop {
    pub fn listen() -> Result<Self> {
        Ok(Self {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
            hangup: signal(SignalKind::hangup())?,
        })
    }

    /// Resolves on the first SIGINT or SIGTERM, with its number.
    pub async fn signalled(&mut self) -> i32 {
        loop {
            tokio::select! {
                _ = self.interrupt.recv() => return libc::SIGINT,
                _ = self.terminate.recv() => return libc::SIGTERM,
                _ = self.hangup.recv() => eprintln!(
                    "nofail: SIGHUP ignored (the report is written when nofail stops: SIGINT, SIGTERM or --duration)"
                ),
            }
        }
    }
}
