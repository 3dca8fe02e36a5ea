// SPDX-License-Identifier: MIT OR Apache-2.0
//! Minimal reader of the kernel's BTF (`/sys/kernel/btf/vmlinux`): which
//! functions exist (fentry needs them) and enumerator values such as
//! `___GFP_NOFAIL_BIT`, which the kernel defines in an anonymous enum that
//! aya's BTF API cannot look up by name.

use std::collections::HashMap;

use anyhow::{Context as _, Result, bail};

const BTF_MAGIC: u16 = 0xeb9f;
const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_ENUM64: u32 = 19;
/// The enumerators kept (`KernelBtf::enumerators`).
const GFP_PREFIX: &[u8] = b"___GFP_";

#[derive(Debug, Default)]
pub struct KernelBtf {
    /// FUNC names and their type ids (fmod_ret attaches by id).
    pub funcs: HashMap<String, u32>,
    /// The gfp bits' enumerators (`___GFP_*`), the only ones nofail
    /// reads: a Debian kernel has tens of thousands, and this parse runs
    /// at every start.
    pub enumerators: HashMap<String, i64>,
}

impl KernelBtf {
    pub fn from_sys_fs() -> Result<Self> {
        let path = "/sys/kernel/btf/vmlinux";
        let data = std::fs::read(path).with_context(|| format!("cannot read {path}"))?;
        Self::parse(&data)
    }

    pub fn parse(data: &[u8]) -> Result<Self> {
        let u16_at = |off: usize| -> Result<u16> {
            let b = data.get(off..off + 2).context("BTF truncated")?;
            Ok(u16::from_le_bytes([b[0], b[1]]))
        };
        let u32_at = |off: usize| -> Result<u32> {
            let b = data.get(off..off + 4).context("BTF truncated")?;
            Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        };
        if u16_at(0)? != BTF_MAGIC {
            bail!("not little-endian BTF (bad magic)");
        }
        let hdr_len = u32_at(4)? as usize;
        let type_off = hdr_len + u32_at(8)? as usize;
        let type_len = u32_at(12)? as usize;
        let str_off = hdr_len + u32_at(16)? as usize;
        let str_len = u32_at(20)? as usize;
        let strings = data
            .get(str_off..str_off + str_len)
            .context("BTF string section out of range")?;
        let name = |off: u32| -> &[u8] {
            let s = strings.get(off as usize..).unwrap_or_default();
            let end = s.iter().position(|&c| c == 0).unwrap_or(s.len());
            &s[..end]
        };
        let owned = |b: &[u8]| String::from_utf8_lossy(b).into_owned();

        let mut btf = KernelBtf::default();
        let mut pos = type_off;
        let end = type_off + type_len;
        // Type ids count from 1 in section order.
        let mut id = 0u32;
        while pos < end {
            id += 1;
            let name_off = u32_at(pos)?;
            let info = u32_at(pos + 4)?;
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            pos += 12;
            match kind {
                KIND_FUNC => {
                    btf.funcs.insert(owned(name(name_off)), id);
                }
                KIND_ENUM => {
                    for i in 0..vlen {
                        let e = pos + i * 8;
                        let val = u32_at(e + 4)? as i32 as i64;
                        let n = name(u32_at(e)?);
                        if n.starts_with(GFP_PREFIX) {
                            btf.enumerators.insert(owned(n), val);
                        }
                    }
                }
                KIND_ENUM64 => {
                    for i in 0..vlen {
                        let e = pos + i * 12;
                        let val = (u32_at(e + 4)? as u64 | ((u32_at(e + 8)? as u64) << 32)) as i64;
                        let n = name(u32_at(e)?);
                        if n.starts_with(GFP_PREFIX) {
                            btf.enumerators.insert(owned(n), val);
                        }
                    }
                }
                _ => {}
            }
            pos += match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => vlen * 12,
                KIND_ENUM | KIND_FUNC_PROTO => vlen * 8,
                _ => 0,
            };
        }
        Ok(btf)
    }

    /// `1 << ___GFP_NOFAIL_BIT` as built into this kernel.
    pub fn gfp_flag(&self, bit_name: &str) -> Option<u32> {
        let bit = *self.enumerators.get(bit_name)?;
        (0..32).contains(&bit).then(|| 1u32 << bit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a BTF blob with one anonymous enum and one FUNC.
    fn sample() -> Vec<u8> {
        let strings = b"\0___GFP_NOFAIL_BIT\0___GFP_IO_BIT\0vmalloc\0";
        let mut types = Vec::new();
        let mut push = |v: u32| types.extend_from_slice(&v.to_le_bytes());
        // anonymous enum, 2 values, size 4
        push(0);
        push((KIND_ENUM << 24) | 2);
        push(4);
        push(1);
        push(15);
        push(19);
        push(6);
        // FUNC "vmalloc" -> type 0
        push(33);
        push(KIND_FUNC << 24);
        push(0);
        let mut out = Vec::new();
        out.extend_from_slice(&BTF_MAGIC.to_le_bytes());
        out.extend_from_slice(&[1, 0]);
        for v in [
            24u32,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&types);
        out.extend_from_slice(strings);
        out
    }

    #[test]
    fn reads_enumerators_and_funcs() {
        let btf = KernelBtf::parse(&sample()).unwrap();
        assert_eq!(btf.gfp_flag("___GFP_NOFAIL_BIT"), Some(0x8000));
        assert_eq!(btf.gfp_flag("___GFP_IO_BIT"), Some(0x40));
        assert_eq!(btf.funcs.get("vmalloc"), Some(&2));
        assert_eq!(btf.gfp_flag("missing"), None);
    }

    #[test]
    fn rejects_garbage() {
        assert!(KernelBtf::parse(b"\0\0\0\0").is_err());
        assert!(KernelBtf::parse(&sample()[..10]).is_err());
    }
}
