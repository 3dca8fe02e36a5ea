// SPDX-License-Identifier: MIT OR Apache-2.0
//! Tracepoint mode, userspace side: the kernel text ranges the programs
//! need to read vmalloc's `caller` from the stack (nofail-ebpf/src/frames.rs)
//! and the attachment of the raw tracepoints (attach::TRACEPOINT_ROLES).

use anyhow::{Result, anyhow};
use aya::{EbpfLoader, programs::RawTracePoint};

use crate::{
    bpf::attach::{ROLES, TRACEPOINT_BLIND, TRACEPOINT_ROLES},
    bpf::one_line,
    kernel::{callframe::CallFrame, symbols::Kallsyms},
    model::{Mode, mode::Attached},
};

/// Load-time globals of frames.rs and tracepoints.rs (the full mode's
/// retry-sleep check uses them too).
#[derive(Debug, Default)]
pub struct TextGlobals {
    core: [u64; 4],
    area_node: [u64; 4],
    sleep: [u64; 6],
    /// `warn_alloc`, which sentinel mode's shared kprobe tells apart.
    warn: [u64; 2],
    process_timeout: u64,
    kernel_text: [u64; 2],
    /// Where a kretprobe (another tool's, or another nofail's) sends the
    /// functions it watches back to: `arch_rethook_trampoline` (kernels
    /// whose kretprobes run on rethook) and `__kretprobe_trampoline`; 0
    /// when absent.
    return_trampolines: [u64; 2],
    /// Where `caller` sits above the core's saved return address.
    pub frame: CallFrame,
}

/// A function and its `.cold` part (GCC moves unlikely blocks, such as
/// vmalloc's retry paths, there), as `[start, end)` pairs.
fn with_cold(k: &Kallsyms, name: &str) -> Option<[u64; 4]> {
    let (s, e) = k.extent(name)?;
    let (cs, ce) = k.extent(&format!("{name}.cold")).unwrap_or((0, 0));
    Some([s, e, cs, ce])
}

impl TextGlobals {
    /// None when kallsyms hides addresses or lacks vmalloc's core. When
    /// the core's call frame cannot be read (arm64: its prologue), callers
    /// go unread, said once here and counted as `caller_unread`.
    pub fn from_kallsyms(k: &Kallsyms) -> Option<Self> {
        let core = ROLES[0]
            .candidates
            .iter()
            .find_map(|name| with_cold(k, name))?;
        let (ss, se) = k.extent("schedule_timeout_uninterruptible")?;
        let (ts, te) = k.extent("schedule_timeout")?;
        // The event-wait patch's area-stage wait (testing/patches).
        let (ws, we) = k.extent("vmap_nofail_wait").unwrap_or((0, 0));
        let frame = crate::kernel::callframe::of_core(core[0], crate::bpf::textread::read_words)
            .unwrap_or_else(|e| {
                eprintln!("nofail: warning: callers read from the stack go unread: {e:#}");
                CallFrame::default()
            });
        Some(Self {
            core,
            area_node: with_cold(k, "__vmalloc_area_node").unwrap_or_default(),
            sleep: [ss, se, ts, te, ws, we],
            warn: k.extent("warn_alloc").map_or([0; 2], |(s, e)| [s, e]),
            process_timeout: k.extent("process_timeout")?.0,
            kernel_text: [
                k.extent("_stext").map_or(0, |e| e.0),
                k.extent("_etext").map_or(0, |e| e.0),
            ],
            return_trampolines: [
                k.extent("arch_rethook_trampoline").map_or(0, |e| e.0),
                k.extent("__kretprobe_trampoline").map_or(0, |e| e.0),
            ],
            frame,
        })
    }

    pub fn has_warn_alloc(&self) -> bool {
        self.warn[0] != 0
    }

    pub fn apply<'a>(&'a self, loader: &mut EbpfLoader<'a>) {
        loader
            .override_global("CORE_TEXT", &self.core, true)
            .override_global("AREA_NODE_TEXT", &self.area_node, true)
            .override_global("SLEEP_TEXT", &self.sleep, true)
            .override_global("WARN_TEXT", &self.warn, true)
            .override_global("PROCESS_TIMEOUT", &self.process_timeout, true)
            .override_global("KERNEL_TEXT", &self.kernel_text, true)
            .override_global("RETURN_TRAMPOLINES", &self.return_trampolines, true)
            .override_global("CALLER_OFF", &self.frame.caller_off, true)
            .override_global("RET_ADDR_TAG", &self.frame.ret_addr_tag, true);
    }
}

/// Attaches every tracepoint role; `reason` says why this mode was chosen
/// when auto fell back to it.
pub fn attach(
    ebpf: &mut aya::Ebpf,
    globals: Option<&TextGlobals>,
    reason: Option<String>,
) -> Result<Vec<Attached>> {
    if globals.is_none() {
        return Err(anyhow!(
            "tracepoint mode needs kernel addresses from /proc/kallsyms (run as root; kptr_restrict hides them otherwise)"
        ));
    }
    let mut attached = Vec::new();
    for role in TRACEPOINT_ROLES {
        let prog: &mut RawTracePoint = ebpf
            .program_mut(role.program)
            .ok_or_else(|| anyhow!("program {} missing from the eBPF object", role.program))?
            .try_into()?;
        prog.load()
            .and_then(|()| prog.attach(role.event).map(|_| ()))
            .map_err(|e| {
                anyhow!(
                    "cannot attach to tracepoint {}:{} ({}): {}",
                    role.category,
                    role.event,
                    role.name,
                    one_line(&e)
                )
            })?;
        attached.push(Attached {
            role: role.name.to_string(),
            function: format!("{}:{}", role.category, role.event),
            mode: Mode::Tracepoint,
            fallback_reason: reason.clone(),
        });
    }
    Ok(attached)
}

/// The report's warnings in tracepoint mode.
pub fn warnings() -> Vec<String> {
    TRACEPOINT_BLIND
        .iter()
        .map(|w| format!("tracepoint mode does not see {w}"))
        .collect()
}
