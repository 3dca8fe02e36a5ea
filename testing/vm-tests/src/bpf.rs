// SPDX-License-Identifier: MIT OR Apache-2.0
//! bpf(2) from the test process: array maps whose vmalloc is a known call
//! from array_map_alloc, and map and program ids as a ground truth for
//! "nothing was loaded" (the kernel hands out ids in increasing order).

use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};

use anyhow::{Result, ensure};

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<i64> {
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, std::mem::size_of::<T>()) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(rc)
}

/// A BPF array map of `entries` values of `value_size` bytes.
pub fn array_map(value_size: u32, entries: u32) -> std::io::Result<OwnedFd> {
    let mut attr = [0u32; 32];
    attr[0] = 2; // BPF_MAP_TYPE_ARRAY
    attr[1] = 4; // key_size
    attr[2] = value_size;
    attr[3] = entries;
    let fd = bpf(BPF_MAP_CREATE, &mut attr)?;
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// A 16 MiB array: one vmalloc from array_map_alloc (plus the nested
/// page-array vmalloc, which must not count).
pub fn create_big_array_map() -> Result<()> {
    array_map(4096, 4096)
        .map(drop)
        .map_err(|e| anyhow::anyhow!("BPF_MAP_CREATE failed: {e}"))
}

/// `id` of the map or program behind `fd` (second u32 of both
/// `struct bpf_map_info` and `struct bpf_prog_info`).
fn id_of(fd: &OwnedFd) -> Result<u32> {
    let mut info = [0u32; 64];
    #[repr(C)]
    struct InfoAttr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    let mut attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: std::mem::size_of_val(&info) as u32,
        info: info.as_mut_ptr() as u64,
    };
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    ensure!(info[1] != 0, "object without an id");
    Ok(info[1])
}

/// The id the kernel gives a map created now.
pub fn next_map_id() -> Result<u32> {
    id_of(&array_map(4, 1)?)
}

/// The id the kernel gives a program loaded now (a socket filter
/// returning 0).
pub fn next_prog_id() -> Result<u32> {
    // r0 = 0; exit
    let insns: [u64; 2] = [0x0000_0000_0000_00b7, 0x0000_0000_0000_0095];
    let license = c"GPL";
    let mut attr = [0u64; 16];
    attr[0] = 1 | ((insns.len() as u64) << 32); // SOCKET_FILTER, insn_cnt
    attr[1] = insns.as_ptr() as u64;
    attr[2] = license.as_ptr() as u64;
    let fd = bpf(BPF_PROG_LOAD, &mut attr)?;
    id_of(&unsafe { OwnedFd::from_raw_fd(fd as i32) })
}
