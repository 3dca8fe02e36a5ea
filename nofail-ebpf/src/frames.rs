// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! vmalloc's `caller` read back from the stack, for hooks that fire deep
//! inside a call without its arguments (tracepoints).
//!
//! The kernel stack (`bpf_get_stack`) names the frames; the first one
//! inside `__vmalloc_node_range_noprof()` is followed by that function's
//! return address into its caller. Where that return address sits in stack
//! memory is the slot the call pushed (x86-64) or the core's prologue
//! saved (arm64), and `caller` is a fixed distance above it (CALLER_OFF).
//! Userspace passes that distance and the text ranges (kallsyms) as
//! load-time globals.

use core::ffi::c_void;

use aya_ebpf::helpers::{bpf_get_stack, bpf_loop, bpf_probe_read_kernel};

use nofail_common::{COMM_LEN, Health};

use crate::{
    config::selected,
    maps::{CAPTURE_WRITING, CAPTURE_WRITTEN, CAPTURES, FRAMES, FRAMES_BUF, fetch_add, health},
    task::current_tgid,
};

/// `__vmalloc_node_range_noprof` (or 6.1's `__vmalloc_node_range`): its
/// body and its `.cold` part, `[start, end)` pairs; 0 when absent.
#[unsafe(no_mangle)]
static CORE_TEXT: [u64; 4] = [0; 4];
/// `__vmalloc_area_node` when the compiler kept it out of line (it holds
/// the mapping loop), body and `.cold` part; 0 when inlined.
#[unsafe(no_mangle)]
static AREA_NODE_TEXT: [u64; 4] = [0; 4];
/// `schedule_timeout_uninterruptible`, the retry sleep, and
/// `schedule_timeout`, which it may tail-call (leaving no frame of its
/// own); then `vmap_nofail_wait`, the area stage's wait on a kernel with
/// testing/patches/vmalloc-nofail-event-wait.patch (0 elsewhere).
#[unsafe(no_mangle)]
static SLEEP_TEXT: [u64; 6] = [0; 6];

/// `warn_alloc`, to tell sentinel mode's kprobe there from the sleeps'.
#[unsafe(no_mangle)]
static WARN_TEXT: [u64; 2] = [0; 2];

/// The core kernel's text, `[_stext, _etext)`: a frame outside it (and
/// outside modules, which never sit between vmalloc and its sleep) is a
/// BPF program or trampoline.
#[unsafe(no_mangle)]
static KERNEL_TEXT: [u64; 2] = [0; 2];

/// `arch_rethook_trampoline` and `__kretprobe_trampoline`: a kretprobe's
/// entry handler puts one of them in the link register (arm64) in place
/// of the return address, for the function's return to come to it.
#[unsafe(no_mangle)]
static RETURN_TRAMPOLINES: [u64; 2] = [0; 2];

/// `caller` above the core's saved return address, in bytes; 0 when
/// userspace could not tell (callers then go unread). x86-64: 24, as
/// `call` pushes the return address right below arguments 7, 8, 9. arm64:
/// the core's prologue saves the link register in its frame record, and
/// `caller` (argument 9, the first on the stack) sits at the entry's `sp`,
/// the frame's size above: derived per kernel by userspace.
#[unsafe(no_mangle)]
static CALLER_OFF: u64 = 0;
/// Bits OR-ed into a saved return address before it is compared with the
/// unwound one: arm64 signs the link register it saves (pointer
/// authentication puts the code in bits 63..48, which are all ones in a
/// kernel address), and the unwinder strips it. 0 on x86-64.
#[unsafe(no_mangle)]
static RET_ADDR_TAG: u64 = 0;

/// How far up from the hook's own frame the return-address slot is looked
/// for (8-byte slots; a kernel stack is 16 KiB).
const SCAN_SLOTS: u32 = 1024;

#[inline(always)]
fn global<const N: usize>(g: &[u64; N], i: usize) -> u64 {
    // Volatile: rewritten in .rodata after compilation.
    unsafe { core::ptr::read_volatile(&g[i]) }
}

#[inline(always)]
fn in_text<const N: usize>(g: &[u64; N], addr: u64) -> bool {
    let mut i = 0;
    while i + 1 < N {
        let (start, end) = (global(g, i), global(g, i + 1));
        if start != 0 && addr >= start && addr < end {
            return true;
        }
        i += 2;
    }
    false
}

pub fn in_core(addr: u64) -> bool {
    in_text(&CORE_TEXT, addr)
}

pub fn in_area_node(addr: u64) -> bool {
    in_text(&AREA_NODE_TEXT, addr)
}

pub fn in_sleep(addr: u64) -> bool {
    in_text(&SLEEP_TEXT, addr)
}

pub fn in_warn(addr: u64) -> bool {
    in_text(&WARN_TEXT, addr)
}

/// Takes the kernel stack of the current event into this CPU's frame
/// buffer (`maps::FRAMES_BUF`), innermost frame first; unused entries are 0
/// (bpf_get_stack() zeroes what it does not fill). On an error the first
/// frame is set to 0, which ends every search as an empty stack would: the
/// kprobe flavour zeroes the whole buffer then, but the raw-tracepoint
/// one (tracepoints, fentry) returns -EBUSY past three nested programs on
/// a CPU without touching it. Not zeroed beforehand: the BPF target does
/// that through a `memset` subprogram (zero.rs). None when there is no
/// buffer.
///
/// The buffer is the CPU's, and on a kernel that preempts BPF programs
/// another task's capture can write it at any point: during this one's
/// write, or before this one is read. [`Capture::still_own`] tells: it
/// holds when no other capture finished a write during this one's, none
/// finished one since, and none is writing at the check (one preempted
/// inside its write may have resumed during the reading). Every
/// interleaving of three captures is checked against this in a model
/// (`nofail-common/src/capture_model.rs`), each check found needed.
#[inline(always)]
pub fn capture(ctx: *mut c_void) -> Option<Capture> {
    let buf = FRAMES_BUF.get_ptr_mut(0)?;
    let writing = CAPTURES.get_ptr_mut(CAPTURE_WRITING)?;
    let written = CAPTURES.get_ptr_mut(CAPTURE_WRITTEN)?;
    fetch_add(writing, 1);
    let before = unsafe { core::ptr::read_volatile(written) };
    let taken = unsafe { bpf_get_stack(ctx, buf as *mut c_void, (FRAMES * 8) as u32, 0) } >= 0;
    if !taken {
        unsafe { (*buf)[0] = 0 };
    }
    let at_write = fetch_add(written, 1);
    fetch_add(writing, u64::MAX);
    Some(Capture {
        taken,
        written: if at_write == before { at_write + 1 } else { 0 },
    })
}

/// One capture into this CPU's frame buffer ([`capture`]).
pub struct Capture {
    /// bpf_get_stack() filled the buffer.
    pub taken: bool,
    /// The CPU's written count with this capture's write the last one; 0
    /// when another capture finished a write during this one's.
    written: u64,
}

impl Capture {
    /// The buffer still holds this capture's stack, whole: checked after
    /// reading it.
    #[inline(always)]
    pub fn still_own(&self) -> bool {
        let count = |slot| {
            CAPTURES
                .get(slot)
                .map_or(u64::MAX, |n| unsafe { core::ptr::read_volatile(n) })
        };
        self.written != 0 && count(CAPTURE_WRITTEN) == self.written && count(CAPTURE_WRITING) == 0
    }
}

/// Frame `i` (< FRAMES) of the last capture.
#[inline(always)]
pub fn frame(i: usize) -> u64 {
    // Masked, not compared: the compiler drops a mask that a comparison
    // makes redundant, and then bounds-checks a different register than
    // the one it indexes with, which the verifier refuses.
    match FRAMES_BUF.get(0) {
        Some(f) => f[i & (FRAMES - 1)],
        None => 0,
    }
}

/// A pointer the verifier tracks (the context, on the kernel stack) as a
/// plain number: copied out through memory, since it refuses arithmetic
/// on pointers.
#[inline(always)]
pub fn address_of(ptr: *mut c_void) -> u64 {
    let slot = ptr as u64;
    unsafe { bpf_probe_read_kernel(&slot as *const u64) }.unwrap_or(0)
}

/// A vmalloc call found in a stack.
#[derive(Clone, Copy)]
pub struct Call {
    /// Index of the first frame in vmalloc code (core or area node).
    pub first: usize,
    /// Stack address of the core's return-address slot.
    pub slot: u64,
    pub caller: u64,
    /// A second core frame further out: this is the nested page-array
    /// allocation (`__vmalloc_area_node` -> `__vmalloc_node_noprof`).
    pub nested: bool,
}

impl Call {
    /// No call (every field written, see `read_call`).
    const NONE: Call = Call {
        first: FRAMES,
        slot: 0,
        caller: 0,
        nested: false,
    };
}

/// Shared with `scan_step` through `bpf_loop`.
#[repr(C)]
struct Scan {
    base: u64,
    /// The core's return address.
    want: u64,
    /// RET_ADDR_TAG.
    tag: u64,
    found: u64,
}

/// One slot of the upward scan (a `bpf_loop` callback, so the verifier
/// checks it once). Returns 1 to stop.
#[inline(never)]
extern "C" fn scan_step(index: u32, ctx: *mut c_void) -> i64 {
    let s = unsafe { &mut *(ctx as *mut Scan) };
    let addr = s.base + 8 * index as u64;
    match unsafe { bpf_probe_read_kernel(addr as *const u64) } {
        Ok(v) if v | s.tag == s.want => {
            s.found = addr;
            1
        }
        Ok(_) => 0,
        // Ran off the top of the stack.
        Err(_) => 1,
    }
}

/// Shared with `find_step` through `bpf_loop`.
#[repr(C)]
struct Find {
    first: u32,
    core: u32,
    nested: u32,
    /// The address of frame `core`.
    core_ret: u64,
}

/// One frame of the search for vmalloc's frames (a `bpf_loop` callback:
/// unrolled, the data-dependent branches of 16 frames made the verifier
/// walk too many paths on some kernels). Returns 1 to stop.
#[inline(never)]
extern "C" fn find_step(index: u32, ctx: *mut c_void) -> i64 {
    let s = unsafe { &mut *(ctx as *mut Find) };
    // bpf_loop runs this FRAMES times: index < FRAMES.
    let f = frame(index as usize);
    if f == 0 {
        return 1;
    }
    let c = in_core(f) && !is_patched_entry(f);
    if s.first == FRAMES as u32 && (c || in_area_node(f)) {
        s.first = index;
    }
    if c {
        if s.core == FRAMES as u32 {
            s.core = index;
            s.core_ret = f;
        } else if index > s.core + 1 || f != s.core_ret {
            // A core frame further out, or right above with another
            // address: the core called itself for the page array, straight
            // or through an inlined `__vmalloc_node_noprof` (arm64 test
            // kernel). The same address twice is one frame reported twice.
            s.nested = 1;
        }
    }
    0
}

/// How far into the core its ftrace call site reaches: a BPF trampoline
/// on the core (another nofail's, or another tool's fentry/fexit) calls
/// the core from a frame record it makes for it, whose return address is
/// right after that call (arm64 `prepare_trampoline()`: core + 8, past
/// `mov x9, x30; bl`). Such a frame is no call from the core: with fexit
/// on the core, every call looked nested.
const PATCHED_ENTRY: u64 = 16;

/// `f` is the return address of a trampoline's record for the core.
#[inline(always)]
fn is_patched_entry(f: u64) -> bool {
    f.wrapping_sub(global(&CORE_TEXT, 0)) < PATCHED_ENTRY
}

/// vmalloc's frames in the last capture (`FRAMES` where none).
#[inline(always)]
fn find_frames() -> Find {
    let mut find = Find {
        first: FRAMES as u32,
        core: FRAMES as u32,
        nested: 0,
        core_ret: 0,
    };
    unsafe {
        bpf_loop(
            FRAMES as u32,
            find_step as *mut c_void,
            &mut find as *mut Find as *mut c_void,
            0,
        )
    };
    find
}

/// Sleep function frames right below vmalloc's first frame `first`: one,
/// or two when a BPF trampoline (fentry/fexit on the sleep) sits between.
#[inline(always)]
fn sleep_below(first: usize) -> bool {
    let below = |n: usize| first.checked_sub(n).map(frame).is_some_and(in_sleep);
    below(1) || below(2)
}

/// Frames of the hook's own below vmalloc's: the sleep function (a kprobe
/// reports it as the first frame) or BPF code (an fentry program, its
/// subprograms and its trampoline, which stands in for the sleep
/// function's frame). On the arm64 test kernel an fentry program's walk
/// has more of them than x86-64's: with 4 here the fentry mode counted 0
/// of 3 retry sleeps there (`sentinel_matches_full`), with 8 all 3. Only
/// the count is bounded here: every frame below vmalloc's must still be
/// BPF code or the sleep function.
const HOOK_FRAMES: usize = 8;

/// Full mode, a sleep inside a tracked call: is it vmalloc's own NOFAIL
/// retry sleep, called straight from vmalloc's frame? The OOM path
/// sleeping inside a call (`__alloc_pages_may_oom`) has page-allocator
/// frames in between. Without text ranges (kallsyms unreadable) every
/// such sleep counts. `link`: the sleep function's return address when
/// the hook has it in a register and the stack walk does not
/// (`regs::entry_link`; 0 otherwise): vmalloc's code there answers.
#[inline(always)]
pub fn is_retry_sleep(ctx: *mut c_void, link: u64) -> bool {
    if global(&CORE_TEXT, 0) == 0 {
        return true;
    }
    let mut link_taken = false;
    if link != 0 {
        // Signed by pointer authentication if the prologue already ran.
        let link = link | unsafe { core::ptr::read_volatile(&RET_ADDR_TAG) };
        if in_core(link) || in_area_node(link) {
            return true;
        }
        link_taken = is_return_trampoline(link);
    }
    if capture(ctx).is_none() {
        return true;
    }
    let first = find_frames().first as usize;
    if link_taken {
        return direct_from_vmalloc(first);
    }
    if first == 0 || first > HOOK_FRAMES {
        return false;
    }
    let (text_start, text_end) = (global(&KERNEL_TEXT, 0), global(&KERNEL_TEXT, 1));
    let mut i = 0;
    while i < HOOK_FRAMES {
        if i >= first {
            break;
        }
        let f = frame(i);
        let kernel = f >= text_start && f < text_end;
        if kernel && !in_sleep(f) {
            return false;
        }
        i += 1;
    }
    true
}

/// `link` is where a kretprobe's entry handler sent the function's return.
#[inline(always)]
fn is_return_trampoline(link: u64) -> bool {
    link != 0 && (link == global(&RETURN_TRAMPOLINES, 0) || link == global(&RETURN_TRAMPOLINES, 1))
}

/// arm64, a kprobe at the sleep's entry whose link register a kretprobe
/// on the same function took first (its entry handler ran before this
/// program: two tools, or two nofails, on the function). The walk starts
/// at the direct caller's frame record, whose return address is into the
/// direct caller's caller: no frame returning into vmalloc at all means
/// vmalloc's core called the sleep (the core is no frame's caller then);
/// the first frame returning into the core means the core called the
/// direct caller, an out-of-line `__vmalloc_area_node` or the page array's
/// nested core. The OOM path's sleeps have the page allocator's frames
/// there. An empty walk tells nothing: not counted.
#[inline(always)]
fn direct_from_vmalloc(first: usize) -> bool {
    frame(0) != 0 && (first == FRAMES || (first == 1 && in_core(frame(1))))
}

/// Finds the vmalloc call in the captured frames and reads its `caller`;
/// `from` is a stack address inside the hook's own frame (the scan goes up
/// from it). None when the stack holds no vmalloc call; Some with `caller`
/// 0 when the slot was not found (a kretprobe on the core, another tool's,
/// replaces the return address in its slot: counted as `CallerUnread`).
/// `link`: `regs::entry_link` of a kprobe at the entry of a function the
/// core calls (0 otherwise). On arm64 the core is then in the link
/// register and not in the walk, whose frame 0 is the probed function and
/// frame 1 the return address into the core's caller; a core frame the
/// walk does have is an outer call's: this one is nested.
#[inline(always)]
pub fn vmalloc_call(from: u64, link: u64) -> Option<Call> {
    let find = find_frames();
    let (mut first, mut core, mut nested) =
        (find.first as usize, find.core as usize, find.nested != 0);
    if link != 0 && in_core(link | unsafe { core::ptr::read_volatile(&RET_ADDR_TAG) }) {
        nested = core < FRAMES;
        (first, core) = (1, 0);
    } else if core == FRAMES && is_return_trampoline(link) && frame(0) != 0 {
        // A kretprobe took the link register (see direct_from_vmalloc):
        // no frame returns into the core, so the core is the direct caller.
        (first, core) = (1, 0);
    }
    if core + 1 >= FRAMES {
        return None;
    }
    let ret = frame(core + 1);
    let mut scan = Scan {
        base: from & !7,
        // Volatile: where the compiler knows it 0, it zeroes `want` and
        // `found` together through a `memset` call (crate::zero).
        want: unsafe { core::ptr::read_volatile(&ret) },
        tag: unsafe { core::ptr::read_volatile(&RET_ADDR_TAG) },
        found: 0,
    };
    if ret != 0 {
        unsafe {
            bpf_loop(
                SCAN_SLOTS,
                scan_step as *mut c_void,
                &mut scan as *mut Scan as *mut c_void,
                0,
            )
        };
    }
    let off = unsafe { core::ptr::read_volatile(&CALLER_OFF) };
    let caller = if scan.found == 0 || off == 0 {
        0
    } else {
        unsafe { bpf_probe_read_kernel((scan.found + off) as *const u64) }.unwrap_or(0)
    };
    Some(Call {
        first,
        slot: scan.found,
        caller,
        nested,
    })
}

/// The vmalloc call whose own retry sleep this is: schedule_timeout_uninterruptible
/// (or the schedule_timeout it tail-calls) right below vmalloc's first
/// frame, or one frame further when a BPF trampoline (fexit on the sleep)
/// sits in between. Reclaim sleeping inside a call is deeper: None.
#[inline(always)]
pub fn retry_sleep_call(from: u64, link: u64) -> Option<Call> {
    let call = vmalloc_call(from, link)?;
    sleep_below(call.first).then_some(call)
}

/// The vmalloc call of an event that fires inside it, when nofail follows
/// it: frames captured from `ctx`, the call found and its caller read
/// (scan from `from`, a stack address in the hook's frame), then the
/// runtime filters (`size`, `gfp` as far as the hook knows them).
/// `retry_sleep`: only vmalloc's own retry sleep. `link`: as for
/// [`vmalloc_call`].
#[inline(always)]
pub fn tracked_call(
    ctx: *mut c_void,
    from: u64,
    retry_sleep: bool,
    size: u64,
    gfp: u32,
    link: u64,
) -> Option<Call> {
    let mut read = read_call(ctx, from, retry_sleep, link)?;
    if !read.own {
        // Once more: this event's stack is still there to capture.
        read = read_call(ctx, from, retry_sleep, link)?;
    }
    if !read.own {
        health(Health::CallerUnread);
        return None;
    }
    if !read.found {
        return None;
    }
    let call = read.call;
    if call.caller == 0 {
        health(Health::CallerUnread);
        return None;
    }
    const _: () = assert!(COMM_LEN.is_multiple_of(8));
    let mut comm = core::mem::MaybeUninit::<[u64; COMM_LEN / 8]>::uninit();
    let words = crate::zero::words(&mut comm);
    let comm = unsafe { &mut *(words.as_mut_ptr() as *mut [u8; COMM_LEN]) };
    selected(current_tgid(), comm, call.caller, size, gfp).then_some(call)
}

/// A capture and what it shows, and whether that was this event's stack:
/// on 7.2 (lazy preemption) a tracepoint program is preemptible, and the
/// tracepoint mode lost a trigger call in 5 of 96 rounds of 40 calls with
/// a fentry tracer beside it (the buffer then held rcu_gp_kthread's
/// `timer_start` stack, captured by the retry-sleep program while the
/// vmap-area one was preempted). `own` is false as well when
/// bpf_get_stack() failed: the event may have been a vmalloc call.
struct Read {
    /// `call` is the event's vmalloc call (false: the stack shows none).
    found: bool,
    call: Call,
    own: bool,
}

#[inline(always)]
fn read_call(ctx: *mut c_void, from: u64, retry_sleep: bool, link: u64) -> Option<Read> {
    let capture = capture(ctx)?;
    let call = if retry_sleep {
        retry_sleep_call(from, link)
    } else {
        vmalloc_call(from, link)
    };
    let own = capture.taken && capture.still_own();
    // Every field written on both paths: a `None` moved into the struct
    // copies its payload uninitialized, which the verifier refuses to
    // read (`R3 !read_ok` on arm64, where it was copied).
    Some(match call {
        Some(call) => Read {
            found: true,
            call,
            own,
        },
        None => Read {
            found: false,
            call: Call::NONE,
            own,
        },
    })
}
