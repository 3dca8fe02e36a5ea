// SPDX-License-Identifier: MIT OR Apache-2.0
//! bpf(2) from a test process, with aya's generated kernel bindings: the
//! kernel's own lists of loaded programs and maps (the ground truth of
//! "nothing left attached"), array maps whose vmalloc is a known call from
//! `array_map_alloc`, and the next ids the kernel hands out.

use std::{
    collections::BTreeSet,
    io,
    mem::{offset_of, size_of},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    time::{Duration, Instant},
};

use aya_obj::generated::{
    BPF_ALU64, BPF_EXIT, BPF_JMP, BPF_K, BPF_MOV, bpf_attr, bpf_cmd, bpf_insn, bpf_map_info,
    bpf_map_type, bpf_prog_info, bpf_prog_type,
};

fn sys_bpf(cmd: bpf_cmd, attr: &mut bpf_attr) -> io::Result<i64> {
    // The whole union: the kernel accepts a larger attr whose tail is zero.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            attr as *mut bpf_attr,
            size_of::<bpf_attr>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc)
}

fn zeroed_attr() -> bpf_attr {
    // SAFETY: bpf_attr is plain old data; all zero is its "unset" value.
    unsafe { std::mem::zeroed() }
}

fn owned(fd: i64) -> OwnedFd {
    // SAFETY: a descriptor bpf(2) just returned, owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(fd as i32) }
}

/// A program or map the kernel has loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Object {
    pub id: u32,
    /// As the kernel keeps it: at most 15 bytes (BPF_OBJ_NAME_LEN).
    pub name: String,
    /// `bpf_prog_type` or `bpf_map_type`, as a number.
    pub kind: u32,
}

#[derive(Clone, Copy)]
enum Kind {
    Prog,
    Map,
    /// Listed by id only (BPF links: fentry, raw tracepoints, and kprobes
    /// attached through bpf_link_create).
    Link,
}

impl Kind {
    fn next_id(self) -> bpf_cmd {
        match self {
            Kind::Prog => bpf_cmd::BPF_PROG_GET_NEXT_ID,
            Kind::Map => bpf_cmd::BPF_MAP_GET_NEXT_ID,
            Kind::Link => bpf_cmd::BPF_LINK_GET_NEXT_ID,
        }
    }

    fn fd_by_id(self) -> bpf_cmd {
        match self {
            Kind::Prog => bpf_cmd::BPF_PROG_GET_FD_BY_ID,
            Kind::Map => bpf_cmd::BPF_MAP_GET_FD_BY_ID,
            Kind::Link => bpf_cmd::BPF_LINK_GET_FD_BY_ID,
        }
    }
}

/// Every id of `kind` the kernel has now, in order.
fn ids(kind: Kind) -> io::Result<Vec<u32>> {
    let mut out = Vec::new();
    let mut id = 0;
    loop {
        let mut attr = zeroed_attr();
        attr.__bindgen_anon_6.__bindgen_anon_1.start_id = id;
        match sys_bpf(kind.next_id(), &mut attr) {
            // SAFETY: the kernel filled the union member it was asked for.
            Ok(_) => id = unsafe { attr.__bindgen_anon_6.next_id },
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(out),
            Err(e) => return Err(e),
        }
        out.push(id);
    }
}

/// `struct bpf_*_info` of the object behind `fd`; fails unless the kernel
/// filled at least the fields up to the end of `name`.
fn info<T>(fd: &OwnedFd, name_end: usize) -> io::Result<T> {
    // SAFETY: both info structs are plain old data.
    let mut info: T = unsafe { std::mem::zeroed() };
    let mut attr = zeroed_attr();
    attr.info.bpf_fd = fd.as_raw_fd() as u32;
    attr.info.info_len = size_of::<T>() as u32;
    attr.info.info = &mut info as *mut T as u64;
    sys_bpf(bpf_cmd::BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    // SAFETY: the kernel wrote back how much of `info` it filled.
    let filled = unsafe { attr.info.info_len } as usize;
    if filled < name_end {
        return Err(io::Error::other(format!(
            "the kernel filled {filled} bytes of info, fewer than {name_end}"
        )));
    }
    Ok(info)
}

fn name_of(raw: &[libc::c_char]) -> String {
    let bytes: Vec<u8> = raw
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

fn object(kind: Kind, fd: &OwnedFd) -> io::Result<Object> {
    Ok(match kind {
        Kind::Prog => {
            let end = offset_of!(bpf_prog_info, name) + size_of::<[libc::c_char; 16]>();
            let i: bpf_prog_info = info(fd, end)?;
            Object {
                id: i.id,
                name: name_of(&i.name),
                kind: i.type_,
            }
        }
        Kind::Map => {
            let end = offset_of!(bpf_map_info, name) + size_of::<[libc::c_char; 16]>();
            let i: bpf_map_info = info(fd, end)?;
            Object {
                id: i.id,
                name: name_of(&i.name),
                kind: i.type_,
            }
        }
        Kind::Link => return Err(io::Error::other("links are listed by id only")),
    })
}

/// The kernel's objects of `kind` now; one unloaded between listing and
/// opening is left out. Needs CAP_SYS_ADMIN (root).
fn list(kind: Kind) -> io::Result<Vec<Object>> {
    let mut out = Vec::new();
    for id in ids(kind)? {
        let mut attr = zeroed_attr();
        attr.__bindgen_anon_6.__bindgen_anon_1.prog_id = id;
        let fd = match sys_bpf(kind.fd_by_id(), &mut attr) {
            Ok(fd) => owned(fd),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(e) => return Err(e),
        };
        out.push(object(kind, &fd)?);
    }
    Ok(out)
}

/// Every program loaded in the kernel.
pub fn programs() -> io::Result<Vec<Object>> {
    list(Kind::Prog)
}

/// The id of every BPF link in the kernel.
pub fn link_ids() -> io::Result<Vec<u32>> {
    ids(Kind::Link)
}

/// Every map in the kernel.
pub fn maps() -> io::Result<Vec<Object>> {
    list(Kind::Map)
}

/// How many of `objects` have a name starting with one of `prefixes`
/// (names longer than 15 bytes are cut short by the kernel: match on a
/// prefix of at most 15).
pub fn count_named(objects: &[Object], prefixes: &[&str]) -> usize {
    objects
        .iter()
        .filter(|o| prefixes.iter().any(|p| o.name.starts_with(p)))
        .count()
}

/// The ids of every program and map at one moment: what was created after
/// it and is still there is a leftover (the kernel never reuses an id
/// before its 31-bit space wraps).
#[derive(Debug)]
pub struct Snapshot {
    programs: BTreeSet<u32>,
    maps: BTreeSet<u32>,
    links: BTreeSet<u32>,
}

/// Programs, maps and links created after a snapshot and still there.
#[derive(Debug, Default)]
pub struct Leftovers {
    pub programs: Vec<Object>,
    pub maps: Vec<Object>,
    /// Link ids.
    pub links: Vec<u32>,
}

impl Leftovers {
    pub fn is_empty(&self) -> bool {
        self.programs.is_empty() && self.maps.is_empty() && self.links.is_empty()
    }
}

impl std::fmt::Display for Leftovers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names = |v: &[Object]| {
            v.iter()
                .map(|o| format!("{} (id {})", o.name, o.id))
                .collect::<Vec<_>>()
                .join(", ")
        };
        write!(
            f,
            "{} programs [{}], {} maps [{}], {} links {:?}",
            self.programs.len(),
            names(&self.programs),
            self.maps.len(),
            names(&self.maps),
            self.links.len(),
            self.links
        )
    }
}

impl Snapshot {
    pub fn take() -> io::Result<Self> {
        Ok(Self {
            programs: ids(Kind::Prog)?.into_iter().collect(),
            maps: ids(Kind::Map)?.into_iter().collect(),
            links: ids(Kind::Link)?.into_iter().collect(),
        })
    }

    /// What was created since the snapshot and is loaded now.
    pub fn created_since(&self) -> io::Result<Leftovers> {
        let new = |all: Vec<Object>, old: &BTreeSet<u32>| -> Vec<Object> {
            all.into_iter().filter(|o| !old.contains(&o.id)).collect()
        };
        Ok(Leftovers {
            programs: new(programs()?, &self.programs),
            maps: new(maps()?, &self.maps),
            links: ids(Kind::Link)?
                .into_iter()
                .filter(|id| !self.links.contains(id))
                .collect(),
        })
    }

    /// Like `created_since`, waiting up to `settle` for objects to go:
    /// the kernel frees programs and maps after an RCU grace period or
    /// from a work queue, shortly after their last reference is dropped.
    pub fn left_after(&self, settle: Duration) -> io::Result<Leftovers> {
        let deadline = Instant::now() + settle;
        loop {
            let left = self.created_since()?;
            if left.is_empty() || Instant::now() >= deadline {
                return Ok(left);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A BPF map of `kind` with 4-byte keys and `entries` values of
/// `value_size` bytes.
fn map(kind: bpf_map_type, value_size: u32, entries: u32) -> io::Result<OwnedFd> {
    let mut attr = zeroed_attr();
    // SAFETY: writing plain integers into the MAP_CREATE member.
    unsafe {
        let a = &mut attr.__bindgen_anon_1;
        a.map_type = kind as u32;
        a.key_size = 4;
        a.value_size = value_size;
        a.max_entries = entries;
    }
    sys_bpf(bpf_cmd::BPF_MAP_CREATE, &mut attr).map(owned)
}

/// A BPF array map of `entries` values of `value_size` bytes.
pub fn array_map(value_size: u32, entries: u32) -> io::Result<OwnedFd> {
    map(bpf_map_type::BPF_MAP_TYPE_ARRAY, value_size, entries)
}

/// A preallocated BPF hash map of `entries` values of `value_size` bytes:
/// its elements come from one bpf_map_area_alloc in prealloc_init, a call
/// site other than an array map's.
pub fn hash_map(value_size: u32, entries: u32) -> io::Result<OwnedFd> {
    map(bpf_map_type::BPF_MAP_TYPE_HASH, value_size, entries)
}

/// A 16 MiB array: one vmalloc from array_map_alloc (plus the nested
/// page-array vmalloc, which must not count).
pub fn create_big_array_map() -> anyhow::Result<()> {
    array_map(4096, 4096)
        .map(drop)
        .map_err(|e| anyhow::anyhow!("BPF_MAP_CREATE failed: {e}"))
}

/// The caller the kernel records for a big array map's vmalloc area, as
/// /proc/vmallocinfo names it (the function, without its offset): the
/// area a held map adds there. `array_map_alloc` where the compiler
/// inlines `__bpf_map_area_alloc()` into `bpf_map_area_alloc()` (Debian's
/// x86-64 kernels), `bpf_map_area_alloc` where it does not (arm64): its
/// `__builtin_return_address(0)` is then one frame lower. Read once.
pub fn array_map_caller() -> anyhow::Result<&'static str> {
    static CALLER: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    if let Some(c) = CALLER.get() {
        return Ok(c);
    }
    let areas = || -> anyhow::Result<Vec<String>> {
        Ok(std::fs::read_to_string("/proc/vmallocinfo")?
            .lines()
            .map(str::to_string)
            .collect())
    };
    let before = areas()?;
    let held = array_map(4096, 4096)?;
    let after = areas()?;
    drop(held);
    // `0xstart-0xend  size caller+off/len pages=N vmalloc ...`: the new
    // area of at least the map's 16 MiB.
    let caller = after
        .iter()
        .filter(|l| !before.contains(l))
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let size: u64 = f.nth(1)?.parse().ok()?;
            let caller = f.next()?;
            (size >= 4096 * 4096).then(|| caller.split('+').next().unwrap_or(caller).to_string())
        })
        .next()
        .ok_or_else(|| {
            anyhow::anyhow!("no new area of 16 MiB in /proc/vmallocinfo for a held array map")
        })?;
    Ok(CALLER.get_or_init(|| caller))
}

fn id_of(kind: Kind, fd: &OwnedFd) -> io::Result<u32> {
    let id = object(kind, fd)?.id;
    if id == 0 {
        return Err(io::Error::other("object without an id"));
    }
    Ok(id)
}

/// The id the kernel gives a map created now.
pub fn next_map_id() -> io::Result<u32> {
    id_of(Kind::Map, &array_map(4, 1)?)
}

/// The id the kernel gives a program loaded now (a socket filter
/// returning 0).
pub fn next_prog_id() -> io::Result<u32> {
    let insn = |code: u32| bpf_insn {
        code: code as u8,
        _bitfield_align_1: [],
        _bitfield_1: bpf_insn::new_bitfield_1(0, 0),
        off: 0,
        imm: 0,
    };
    // r0 = 0; exit
    let insns = [insn(BPF_ALU64 | BPF_MOV | BPF_K), insn(BPF_JMP | BPF_EXIT)];
    let license = c"GPL";
    let mut attr = zeroed_attr();
    // SAFETY: writing plain integers into the PROG_LOAD member.
    unsafe {
        let a = &mut attr.__bindgen_anon_3;
        a.prog_type = bpf_prog_type::BPF_PROG_TYPE_SOCKET_FILTER as u32;
        a.insn_cnt = insns.len() as u32;
        a.insns = insns.as_ptr() as u64;
        a.license = license.as_ptr() as u64;
    }
    let fd = sys_bpf(bpf_cmd::BPF_PROG_LOAD, &mut attr).map(owned)?;
    id_of(Kind::Prog, &fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_end_at_the_first_nul() {
        let mut raw = [0 as libc::c_char; 16];
        for (i, b) in b"vmalloc_core_kr".iter().enumerate() {
            raw[i] = *b as libc::c_char;
        }
        assert_eq!(name_of(&raw), "vmalloc_core_kr");
        assert_eq!(name_of(&[0; 16]), "");
    }

    #[test]
    fn count_named_matches_prefixes() {
        let o = |name: &str| Object {
            id: 1,
            name: name.into(),
            kind: 0,
        };
        let objs = [o("vmalloc_core_kr"), o("area_stage_fent"), o("other")];
        assert_eq!(count_named(&objs, &["vmalloc_core", "area_stage"]), 2);
        assert_eq!(count_named(&objs, &[]), 0);
    }

    /// The lists see what this process makes, and a snapshot sees it as
    /// created since and gone once closed. Root only (CAP_SYS_ADMIN); a
    /// run without it says so.
    #[test]
    fn snapshot_sees_a_map_made_and_dropped() {
        if unsafe { libc::geteuid() } != 0 {
            crate::ci::skip_or_fail("listing BPF objects needs root");
            return;
        }
        let snap = Snapshot::take().unwrap();
        let map = array_map(4, 1).unwrap();
        let left = snap.created_since().unwrap();
        assert_eq!(left.maps.len(), 1, "{left}");
        let id = left.maps[0].id;
        assert!(maps().unwrap().iter().any(|m| m.id == id));
        drop(map);
        let left = snap.left_after(Duration::from_secs(5)).unwrap();
        assert!(left.is_empty(), "{left}");
        assert!(next_prog_id().unwrap() > 0);
        assert!(next_map_id().unwrap() > id);
    }
}
