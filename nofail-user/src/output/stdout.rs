// SPDX-License-Identifier: MIT OR Apache-2.0
//! Standard output for people, where a reader may leave early
//! (`nofail trace | head`). Rust ignores SIGPIPE, so `print!` panics on
//! EPIPE (exit 101) and would end a session before it detached and wrote
//! its files. Here a closed pipe only ends what is shown: the session goes
//! on, and its JSON, Prometheus and SVG outputs are still written.

use std::{
    io,
    sync::atomic::{AtomicBool, Ordering},
};

/// The reader of stdout went away: nothing more is written there.
static CLOSED: AtomicBool = AtomicBool::new(false);

/// One line to stderr, for what a long run says as it goes (warnings).
/// When stderr cannot take it (the journal's socket under memory
/// pressure: ENOBUFS), the line is lost, not the run: `eprintln!` panics
/// there, and did, in `nofail serve` under fail_page_alloc.
pub fn say(line: &str) {
    use io::Write as _;
    let _ = writeln!(io::stderr().lock(), "{line}");
}

/// Writes `text` to stdout and flushes; a closed pipe is not an error.
pub fn print(text: &str) -> io::Result<()> {
    write_to(&mut io::stdout().lock(), text)
}

fn write_to(out: &mut impl io::Write, text: &str) -> io::Result<()> {
    if CLOSED.load(Ordering::Relaxed) {
        return Ok(());
    }
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
            CLOSED.store(true, Ordering::Relaxed);
            Ok(())
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Closed;

    impl io::Write for Closed {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    struct Full;

    impl io::Write for Full {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::from_raw_os_error(libc::ENOSPC))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_closed_pipe_ends_the_output_not_the_run() {
        assert!(
            write_to(&mut Full, "x").is_err(),
            "other errors still count"
        );
        assert!(write_to(&mut Closed, "x").is_ok());
        // Once closed, nothing is tried again.
        assert!(write_to(&mut Full, "x").is_ok());
    }
}
