// SPDX-License-Identifier: MIT OR Apache-2.0
//! Kernel text read through BPF, where /proc/kcore is refused (it needs
//! CAP_SYS_RAWIO, which the packaged unit does not have; CAP_BPF and
//! CAP_PERFMON are what this needs). A raw-tracepoint program, never
//! attached, is run with BPF_PROG_TEST_RUN
//! (`bpf_prog_test_run_raw_tp()`): its one argument is an address, and it
//! returns the 32-bit word there (`bpf_probe_read_kernel`), or 0 when the
//! read fails. The arm64 prologue reader (kernel/callframe.rs) takes its
//! instructions one word per run.

use std::os::fd::{AsRawFd as _, OwnedFd};

use anyhow::{Result, anyhow, ensure};

use crate::bpf::{
    asm::{self, Insn, call, insn},
    sys::{bpf, bpf_cmd, bpf_prog_type, zeroed_attr},
};

const HELPER_PROBE_READ_KERNEL: i32 = 113;

/// The program: `*(u32 *)args[0]`, or 0.
fn program() -> [Insn; 11] {
    [
        insn(0xbf, 6, 1, 0, 0),  // r6 = r1 (the arguments)
        insn(0x79, 3, 6, 0, 0),  // r3 = *(u64 *)(r6 + 0): the address
        insn(0xbf, 1, 10, 0, 0), // r1 = r10
        insn(0x07, 1, 0, 0, -8), // r1 += -8: the destination
        insn(0xb7, 2, 0, 0, 4),  // r2 = 4: the size
        call(HELPER_PROBE_READ_KERNEL),
        insn(0x55, 0, 0, 2, 0),   // if r0 != 0 goto +2 (return 0)
        insn(0x61, 0, 10, -8, 0), // r0 = *(u32 *)(r10 - 8)
        insn(0x95, 0, 0, 0, 0),   // exit
        insn(0xb7, 0, 0, 0, 0),   // r0 = 0
        insn(0x95, 0, 0, 0, 0),   // exit
    ]
}

fn load() -> Result<OwnedFd> {
    asm::load(
        &asm::Load {
            prog_type: bpf_prog_type::BPF_PROG_TYPE_RAW_TRACEPOINT,
            expected_attach_type: None,
            insns: &program(),
            name: "nofail_text",
            log_size: 16 * 1024,
        },
        "the text-reading BPF program",
    )
}

/// `words` 32-bit words of kernel text from `addr`.
pub fn read_words(addr: u64, words: usize) -> Result<Vec<u32>> {
    let prog = load()?;
    (0..words as u64)
        .map(|i| {
            let arg = addr + 4 * i;
            let mut attr = zeroed_attr();
            attr.test.prog_fd = prog.as_raw_fd() as u32;
            attr.test.ctx_in = &arg as *const u64 as u64;
            attr.test.ctx_size_in = 8;
            bpf(bpf_cmd::BPF_PROG_TEST_RUN, &mut attr)
                .map_err(|e| anyhow!("BPF_PROG_TEST_RUN of the text reader: {e}"))?;
            // SAFETY: the kernel wrote the program's return value there.
            let word = unsafe { attr.test.retval };
            ensure!(
                word != 0,
                "kernel text at {arg:#x} is unreadable through BPF"
            );
            Ok(word)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_failed_read_returns_zero_and_the_read_word_otherwise() {
        let p = program();
        let jne = p.iter().position(|i| i.code == 0x55).unwrap();
        let target = jne + 1 + p[jne].off as usize;
        assert_eq!(p[target], insn(0xb7, 0, 0, 0, 0));
        assert_eq!(p[target + 1].code, 0x95);
        // Without the jump: the word read, then exit.
        assert_eq!(p[jne + 1], insn(0x61, 0, 10, -8, 0));
        assert_eq!(p[jne + 2].code, 0x95);
        // The helper's destination is the slot the word is loaded from.
        assert_eq!(p[3].imm, -8);
    }
}
