// SPDX-License-Identifier: MIT OR Apache-2.0
//! The architecture nofail was built for, and so traces (its eBPF object
//! follows the binary's target: nofail-ebpf/src/regs.rs), and what its
//! programs do there otherwise than on x86-64, as `nofail doctor` says it.

use super::callframe::CallFrame;

/// `x86_64` or `aarch64`.
pub const NAME: &str = std::env::consts::ARCH;

/// What differs from x86-64 on this architecture, a line each; none on
/// x86-64. `frame` is the call frame the programs were loaded with (None:
/// kallsyms hides addresses).
pub fn differences(frame: Option<CallFrame>) -> Vec<String> {
    if cfg!(target_arch = "x86_64") {
        return Vec::new();
    }
    let caller = match frame {
        None => "vmalloc's caller in tracepoint and sentinel modes: unread, kallsyms hides the core's address".to_string(),
        Some(f) if f.caller_off == 0 => "vmalloc's caller in tracepoint and sentinel modes: unread, the core's prologue could not be read or followed (counted as caller_unread)".to_string(),
        Some(f) => format!(
            "vmalloc's caller in tracepoint and sentinel modes: {} bytes above the saved link register, from {} (x86-64: 24, fixed)",
            f.caller_off, f.source
        ),
    };
    vec![
        "vmalloc's arguments: x0-x7, then the stack (`caller`, the ninth, at the entry's sp; x86-64: six registers, then sp+8)".to_string(),
        caller,
        "saved return addresses: signed by pointer authentication, compared with bits 63..48 set".to_string(),
        "system call numbers (inject's -ENOMEM report): the asm-generic table".to_string(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x86_64_differs_in_nothing_and_aarch64_names_the_frame() {
        let frame = CallFrame {
            caller_off: 88,
            ret_addr_tag: 0,
            source: "its prologue, read from /proc/kcore",
        };
        let lines = differences(Some(frame));
        if cfg!(target_arch = "x86_64") {
            assert!(lines.is_empty());
        } else {
            assert!(lines.iter().any(|l| l.contains(
                "88 bytes above the saved link register, from its prologue, read from /proc/kcore"
            )));
            let unread = differences(Some(CallFrame::default()));
            assert!(unread.iter().any(|l| l.contains("unread")));
        }
    }
}
