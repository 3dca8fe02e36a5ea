// SPDX-License-Identifier: MIT OR Apache-2.0
//! A model check of the frame-buffer capture protocol of
//! `nofail-ebpf/src/frames.rs` (`capture` and `Capture::still_own`).
//!
//! One CPU, one stack buffer, up to three captures by programs of
//! different tasks: on a kernel that preempts BPF programs (7.2) a task can
//! be preempted at any step and another task's program run on that CPU in
//! between, so every interleaving of their steps is explored (depth first,
//! states remembered). A capture that finds itself still owning the
//! buffer must have read its own stack, whole, at every step of its
//! reading. The protocol fe142b9 shipped (a count taken after the write)
//! is checked too, and must be found unsound: the check has teeth.

extern crate std;

use std::{collections::HashSet, vec::Vec};

/// What the CPU's frame buffer holds.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Buf {
    Empty,
    /// Capture `i` is inside bpf_get_stack().
    Partial(u8),
    Whole(u8),
    /// Two writes interleaved.
    Mixed,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
struct Task {
    pc: u8,
    before: u64,
    at_write: u64,
    /// Every read step so far saw this capture's stack whole.
    read_ok: bool,
}

#[derive(Clone, PartialEq, Eq, Hash, Debug)]
struct State {
    /// `CAPTURES[CAPTURE_WRITING]` (fe142b9: its one count).
    writing: u64,
    /// `CAPTURES[CAPTURE_WRITTEN]`.
    written: u64,
    buf: Buf,
    tasks: Vec<Task>,
}

#[derive(Clone, Copy)]
enum Protocol {
    /// frames.rs now; a `false` leaves that check out.
    Current {
        during_write: bool,
        writing_at_end: bool,
    },
    /// fe142b9: one count, bumped before the write, read after it.
    CountAfterWrite,
}

/// The result of one step of task `i`.
enum Step {
    Next,
    /// The capture is over; `Err` if it claimed a buffer it did not read
    /// whole.
    Done(Result<(), ()>),
}

fn write_begin(s: &mut State, i: u8) {
    s.buf = Buf::Partial(i);
}

fn write_end(s: &mut State, i: u8) {
    s.buf = if s.buf == Buf::Partial(i) {
        Buf::Whole(i)
    } else {
        Buf::Mixed
    };
}

fn read(s: &mut State, i: u8) {
    let ok = s.buf == Buf::Whole(i);
    s.tasks[i as usize].read_ok &= ok;
}

fn step(p: Protocol, s: &mut State, i: u8) -> Step {
    let pc = s.tasks[i as usize].pc;
    s.tasks[i as usize].pc += 1;
    let claim = |s: &State, own: bool| {
        Step::Done(if own && !s.tasks[i as usize].read_ok {
            Err(())
        } else {
            Ok(())
        })
    };
    match p {
        Protocol::Current {
            during_write,
            writing_at_end,
        } => match pc {
            // fetch_add(writing, 1)
            0 => s.writing += 1,
            1 => s.tasks[i as usize].before = s.written,
            2 => write_begin(s, i),
            3 => write_end(s, i),
            // fetch_add(written, 1)
            4 => {
                s.tasks[i as usize].at_write = s.written;
                s.written += 1;
            }
            5 => s.writing -= 1,
            6 | 7 => read(s, i),
            _ => {
                let t = s.tasks[i as usize];
                let alone = !during_write || t.at_write == t.before;
                let own =
                    alone && s.written == t.at_write + 1 && (!writing_at_end || s.writing == 0);
                return claim(s, own);
            }
        },
        Protocol::CountAfterWrite => match pc {
            0 => s.writing += 1,
            1 => write_begin(s, i),
            2 => write_end(s, i),
            3 => s.tasks[i as usize].before = s.writing,
            4 | 5 => read(s, i),
            _ => {
                let own = s.writing == s.tasks[i as usize].before;
                return claim(s, own);
            }
        },
    }
    Step::Next
}

/// Explores every interleaving of `n` captures; false if one of them
/// claimed a buffer it did not read whole.
fn sound(p: Protocol, n: u8) -> bool {
    let start = State {
        writing: 0,
        written: 0,
        buf: Buf::Empty,
        tasks: (0..n)
            .map(|_| Task {
                read_ok: true,
                ..Default::default()
            })
            .collect(),
    };
    const DONE: u8 = u8::MAX;
    let mut seen = HashSet::new();
    let mut todo = std::vec![start];
    while let Some(s) = todo.pop() {
        if !seen.insert(s.clone()) {
            continue;
        }
        for i in 0..n {
            if s.tasks[i as usize].pc == DONE {
                continue;
            }
            let mut next = s.clone();
            match step(p, &mut next, i) {
                Step::Next => {}
                Step::Done(Err(())) => return false,
                Step::Done(Ok(())) => next.tasks[i as usize].pc = DONE,
            }
            todo.push(next);
        }
    }
    true
}

const CURRENT: Protocol = Protocol::Current {
    during_write: true,
    writing_at_end: true,
};

#[test]
fn capture_protocol_is_sound_under_preemption() {
    for n in 1..=3 {
        assert!(sound(CURRENT, n), "{n} captures");
    }
}

/// Each of the two checks is needed: without either, two captures can
/// take each other's stack. (A third, "no other capture was writing at
/// this one's start", was found redundant here and left out: a capture
/// preempted inside its write that resumes during this one's reading is
/// still writing at its end.)
#[test]
fn each_check_is_needed() {
    for (during_write, writing_at_end) in [(false, true), (true, false)] {
        let p = Protocol::Current {
            during_write,
            writing_at_end,
        };
        assert!(
            !sound(p, 2),
            "sound without a check: {during_write} {writing_at_end}"
        );
    }
}

#[test]
fn fe142b9_protocol_is_found_unsound() {
    // One capture alone is fine; two can take each other's stack.
    assert!(sound(Protocol::CountAfterWrite, 1));
    assert!(!sound(Protocol::CountAfterWrite, 2));
}
