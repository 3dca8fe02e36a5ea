// SPDX-License-Identifier: MIT OR Apache-2.0
//! Where vmalloc's `caller` sits relative to the return address the core
//! saved, for the programs that read it back from the stack
//! (nofail-ebpf/src/frames.rs: tracepoint and sentinel modes).
//!
//! x86-64: `call` pushes the return address right below the stack
//! arguments, so `caller` (argument 9, the third on the stack) is 24 bytes
//! above it on every kernel. arm64: the return address arrives in the link
//! register and the core's prologue saves it in its frame record, wherever
//! that function's frame puts the record; `caller` (argument 9, the first
//! on the stack) sits at the entry's stack pointer. The distance is read
//! from the core's own prologue in the running kernel's text
//! (/proc/kcore), never assumed.

use anyhow::{Context as _, Result, bail, ensure};

/// The load-time globals of frames.rs for this kernel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallFrame {
    /// `caller` above the saved return address, in bytes (CALLER_OFF).
    pub caller_off: u64,
    /// Bits OR-ed into a saved return address to compare it with an
    /// unwound one (RET_ADDR_TAG): arm64's pointer-authentication code.
    pub ret_addr_tag: u64,
    /// Where `caller_off` came from, as `nofail doctor` says it.
    pub source: &'static str,
}

/// Reads `n` instruction words of kernel text at an address: the BPF
/// reader (bpf/textread.rs), where /proc/kcore is refused.
pub type TextReader = fn(u64, usize) -> Result<Vec<u32>>;

/// The call frame of the core at `core` (its address in kallsyms); on
/// arm64 its prologue is read from /proc/kcore, else with `fallback`.
pub fn of_core(core: u64, fallback: TextReader) -> Result<CallFrame> {
    #[cfg(target_arch = "x86_64")]
    {
        let _ = (core, fallback);
        Ok(CallFrame {
            caller_off: 24,
            ret_addr_tag: 0,
            source: "the x86-64 calling convention",
        })
    }
    #[cfg(target_arch = "aarch64")]
    {
        let (insns, source) = match read_kcore(
            std::path::Path::new("/proc/kcore"),
            core,
            4 * PROLOGUE_INSNS,
        ) {
            Ok(text) => (words(&text), "its prologue, read from /proc/kcore"),
            Err(kcore) => (
                fallback(core, PROLOGUE_INSNS)
                    .map_err(|bpf| anyhow::anyhow!("{kcore:#}; through BPF: {bpf:#}"))?,
                "its prologue, read through BPF (/proc/kcore refused)",
            ),
        };
        let caller_off = arm64_caller_off(&insns).with_context(|| {
            format!(
                "the prologue of vmalloc's core at {core:#x} saves no frame record nofail can read"
            )
        })?;
        Ok(CallFrame {
            caller_off,
            ret_addr_tag: ARM64_PAC_BITS,
            source,
        })
    }
}

/// Bits 63..48: a kernel address has them all set; a signed one carries
/// its pointer-authentication code there (48-bit virtual addresses).
pub const ARM64_PAC_BITS: u64 = 0xffff_0000_0000_0000;

/// Instructions looked at for the frame record: BTI or PACIASP, the
/// ftrace patch site (two NOPs, or `mov x9, x30` and a `bl` when traced),
/// then the stack setup.
pub const PROLOGUE_INSNS: usize = 16;

/// Little-endian instruction words.
pub fn words(text: &[u8]) -> Vec<u32> {
    text.chunks_exact(4)
        .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
        .collect()
}

/// `caller` above the saved link register, from an arm64 prologue: the
/// frame record (`stp x29, x30, ...`) stored either by a pre-indexed
/// `stp x29, x30, [sp, #-N]!` (the record at the new sp: N bytes below
/// the entry's sp) or by `sub sp, sp, #N` then `stp x29, x30, [sp, #M]`.
/// The link register's slot is the record's second word, so `caller`, at
/// the entry's sp, is `frame - M - 8` above it. None when no frame record
/// is stored in the first [`PROLOGUE_INSNS`] instructions, or sp is moved
/// in a way this does not follow.
pub fn arm64_caller_off(insns: &[u32]) -> Option<u64> {
    const FP: u32 = 29;
    const LR: u32 = 30;
    const SP: u32 = 31;
    // Bytes below the entry's sp that the prologue has allocated.
    let mut frame: i64 = 0;
    for &insn in insns.iter().take(PROLOGUE_INSNS) {
        let (rt, rn, rt2) = (insn & 0x1f, (insn >> 5) & 0x1f, (insn >> 10) & 0x1f);
        let imm7 = (((insn >> 15) & 0x7f) as i32) << 25 >> 25;
        match insn & 0xffc0_0000 {
            // STP (64-bit), pre-index: sp moves by imm7*8 first.
            0xa980_0000 if rn == SP => {
                frame -= imm7 as i64 * 8;
                if (rt, rt2) == (FP, LR) {
                    return u64::try_from(frame - 8).ok();
                }
                continue;
            }
            // STP (64-bit), signed offset: sp does not move.
            0xa900_0000 if rn == SP && (rt, rt2) == (FP, LR) => {
                return u64::try_from(frame - imm7 as i64 * 8 - 8).ok();
            }
            _ => {}
        }
        // SUB (immediate, 64-bit) sp, sp, #imm{, lsl #12}.
        if insn & 0xff80_0000 == 0xd100_0000 && rn == SP && rt == SP {
            let imm = ((insn >> 10) & 0xfff) as i64;
            frame += if insn & (1 << 22) != 0 {
                imm << 12
            } else {
                imm
            };
            continue;
        }
        // Anything else that writes sp is not followed.
        if rt == SP && writes_sp(insn) {
            return None;
        }
    }
    None
}

/// Instructions of a prologue that may write sp besides the two above:
/// ADD/SUB (immediate) with sp as destination, MOV to sp.
fn writes_sp(insn: u32) -> bool {
    // ADD/SUB (immediate), 64-bit, any flags-free form.
    matches!(insn & 0x7f80_0000, 0x1100_0000 | 0x5100_0000) && insn & (1 << 31) != 0
}

/// `len` bytes of kernel memory at `addr`, from an ELF core file such as
/// /proc/kcore (its PT_LOAD segments map kernel virtual addresses).
pub fn read_kcore(path: &std::path::Path, addr: u64, len: usize) -> Result<Vec<u8>> {
    use std::{io::Read as _, os::unix::fs::FileExt as _};

    let mut f = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut head = [0u8; 64];
    f.read_exact(&mut head)
        .with_context(|| format!("read {}", path.display()))?;
    ensure!(
        head[..4] == *b"\x7fELF" && head[4] == 2 && head[5] == 1,
        "{} is not an ELF64 little-endian core",
        path.display()
    );
    let u16_at = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as u64;
    let u32_at = |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().expect("4"));
    let u64_at = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8"));
    let (phoff, phentsize, phnum) = (
        u64_at(&head, 0x20),
        u16_at(&head, 0x36),
        u16_at(&head, 0x38),
    );
    ensure!(
        phentsize >= 56,
        "{}: program headers too small",
        path.display()
    );
    let mut ph = vec![0u8; (phentsize * phnum) as usize];
    f.read_exact_at(&mut ph, phoff)
        .with_context(|| format!("read the program headers of {}", path.display()))?;
    for i in 0..phnum as usize {
        let h = &ph[i * phentsize as usize..];
        // PT_LOAD, covering [addr, addr + len).
        let (offset, vaddr, filesz) = (u64_at(h, 8), u64_at(h, 16), u64_at(h, 32));
        if u32_at(h, 0) == 1 && addr >= vaddr && addr + len as u64 <= vaddr + filesz {
            let mut out = vec![0u8; len];
            f.read_exact_at(&mut out, offset + (addr - vaddr))
                .with_context(|| format!("read {addr:#x} from {}", path.display()))?;
            return Ok(out);
        }
    }
    bail!("{}: no segment maps {addr:#x}", path.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PACIASP: u32 = 0xd503_233f;
    const BTI_C: u32 = 0xd503_245f;
    const NOP: u32 = 0xd503_201f;
    /// `mov x9, x30`, ftrace's patch site when the function is traced.
    const MOV_X9_LR: u32 = 0xaa1e_03e9;

    /// `stp x29, x30, [sp, #imm]!`
    fn stp_pre(imm: i32) -> u32 {
        0xa980_0000 | ((((imm / 8) as u32) & 0x7f) << 15) | (30 << 10) | (31 << 5) | 29
    }

    /// `stp x29, x30, [sp, #imm]`
    fn stp_off(imm: i32) -> u32 {
        0xa900_0000 | ((((imm / 8) as u32) & 0x7f) << 15) | (30 << 10) | (31 << 5) | 29
    }

    /// `sub sp, sp, #imm`
    fn sub_sp(imm: u32) -> u32 {
        0xd100_0000 | (imm << 10) | (31 << 5) | 31
    }

    #[test]
    fn encodings_are_the_assembler_s() {
        // As GNU as assembles them (objdump of a Debian arm64 kernel).
        assert_eq!(stp_pre(-96), 0xa9ba_7bfd);
        assert_eq!(stp_off(16), 0xa901_7bfd);
        assert_eq!(sub_sp(0x80), 0xd102_03ff);
    }

    #[test]
    fn a_pre_indexed_frame_record() {
        // 6.12's core: `caller` 88 bytes above the saved link register.
        let p = [BTI_C, NOP, NOP, PACIASP, stp_pre(-96), 0x9100_03fd];
        assert_eq!(arm64_caller_off(&p), Some(88));
        assert_eq!(arm64_caller_off(&[PACIASP, stp_pre(-16)]), Some(8));
    }

    #[test]
    fn a_frame_record_inside_a_larger_frame() {
        // sub sp, sp, #128; stp x29, x30, [sp, #16]: the record 112 below
        // the entry's sp, the link register's slot 104 below.
        let p = [PACIASP, sub_sp(128), stp_off(16)];
        assert_eq!(arm64_caller_off(&p), Some(104));
        // The patch site of a traced function moves nothing.
        let p = [MOV_X9_LR, 0x9400_0000, PACIASP, sub_sp(128), stp_off(16)];
        assert_eq!(arm64_caller_off(&p), Some(104));
    }

    #[test]
    fn callee_saved_pairs_before_the_record_count_toward_the_frame() {
        // stp x19, x20, [sp, #-32]!; stp x29, x30, [sp, #-16]!
        let stp_x19 = 0xa9be_53f3;
        assert_eq!(arm64_caller_off(&[stp_x19, stp_pre(-16)]), Some(40));
    }

    #[test]
    fn no_frame_record_is_none() {
        assert_eq!(arm64_caller_off(&[NOP; 20]), None);
        // The record past the instructions looked at.
        let mut p = vec![NOP; PROLOGUE_INSNS];
        p.push(stp_pre(-96));
        assert_eq!(arm64_caller_off(&p), None);
        // `add sp, sp, #16` before the record: not followed.
        assert_eq!(arm64_caller_off(&[0x9100_43ff, stp_pre(-96)]), None);
    }

    #[test]
    fn kcore_segments_map_kernel_addresses() {
        // An ELF64 core with one PT_LOAD: vaddr 0xffff800080000000 at
        // file offset 0x1000, 0x100 bytes.
        let mut core = vec![0u8; 0x1100];
        core[..4].copy_from_slice(b"\x7fELF");
        core[4] = 2;
        core[5] = 1;
        core[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        core[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        core[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        let ph = 64;
        core[ph..ph + 4].copy_from_slice(&1u32.to_le_bytes());
        core[ph + 8..ph + 16].copy_from_slice(&0x1000u64.to_le_bytes());
        core[ph + 16..ph + 24].copy_from_slice(&0xffff_8000_8000_0000u64.to_le_bytes());
        core[ph + 32..ph + 40].copy_from_slice(&0x100u64.to_le_bytes());
        core[0x1010..0x1014].copy_from_slice(&stp_pre(-96).to_le_bytes());
        let dir = std::env::temp_dir().join(format!("nofail-kcore-{}", std::process::id()));
        std::fs::write(&dir, &core).unwrap();
        let text = read_kcore(&dir, 0xffff_8000_8000_0010, 4).unwrap();
        assert_eq!(words(&text), vec![stp_pre(-96)]);
        let err = read_kcore(&dir, 0xffff_8000_8000_00fe, 4).unwrap_err();
        assert!(err.to_string().contains("no segment maps"), "{err}");
        std::fs::remove_file(&dir).unwrap();
    }
}
