// SPDX-License-Identifier: MIT OR Apache-2.0
//! Real-workload scenarios: real kernel code (XFS, ext4, BPF maps), no
//! trigger module. The ground truth comes from the kernel itself: a
//! subsystem's tracepoint counted in its own trace instance, its own
//! statistics (`/sys/fs/xfs/stats/stats`), or what a system call returned;
//! filters are checked against a second, unfiltered nofail run over the
//! same window.

use std::{
    ffi::CString,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail, ensure};
use nofail_test_support::{bpf, json, outcome::skip};
use serde_json::Value;

use crate::harness::{Ctx, Kmsg, Trace, expect_fields, field, row};

/// A filesystem of `kind` made on a sparse file in /tmp, attached to a
/// loop device and mounted; undone on drop.
pub struct LoopFs {
    pub mnt: PathBuf,
    image: PathBuf,
    dev: String,
}

fn sh(cmd: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {cmd}"))?;
    ensure!(
        out.status.success(),
        "{cmd} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

impl LoopFs {
    /// `mkfs` arguments come before the image path.
    pub fn new(name: &str, kind: &str, size_mib: u64, mkfs: &[&str]) -> Result<Self> {
        let image = PathBuf::from(format!("/tmp/{name}.img"));
        let mnt = PathBuf::from(format!("/tmp/{name}.mnt"));
        let _ = std::fs::remove_file(&image);
        std::fs::File::create(&image)?.set_len(size_mib << 20)?;
        std::fs::create_dir_all(&mnt)?;
        let mut args: Vec<&str> = mkfs.to_vec();
        let image_s = image.to_string_lossy().to_string();
        args.push(&image_s);
        sh(&format!("mkfs.{kind}"), &args)?;
        let dev = sh("losetup", &["-f", "--show", &image_s])?;
        // mount(2) from this process, so that a `--pid` trace of it sees
        // the filesystem's mount-time allocations too.
        let (src, target, fstype) = (
            CString::new(dev.as_str())?,
            CString::new(mnt.as_os_str().as_encoded_bytes())?,
            CString::new(kind)?,
        );
        let rc = unsafe {
            libc::mount(
                src.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            let _ = sh("losetup", &["-d", &dev]);
            bail!("mount -t {kind} {dev}: {e}");
        }
        Ok(Self { mnt, image, dev })
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        if let Ok(target) = CString::new(self.mnt.as_os_str().as_encoded_bytes()) {
            unsafe { libc::umount(target.as_ptr()) };
        }
        let _ = sh("losetup", &["-d", &self.dev]);
        let _ = std::fs::remove_file(&self.image);
    }
}

/// One tracepoint counted in a trace instance of its own, for this process
/// only (`common_pid` filter): the kernel's count of the event.
pub struct TpCount {
    dir: PathBuf,
    event: String,
}

impl TpCount {
    /// `None` when the kernel has no such event (told by the caller).
    pub fn start(name: &str, event: &str) -> Result<Option<Self>> {
        let root = Path::new("/sys/kernel/tracing");
        if !root.join("events").join(event).exists() {
            return Ok(None);
        }
        let dir = root.join("instances").join(name);
        let _ = std::fs::remove_dir(&dir);
        // An instance with record-cmd on registers a comm recorder on
        // sched_switch when its event is enabled and unregisters it when
        // disabled (tracing_start_cmdline_record()): each flips the
        // sched_switch static key, live-patching the jump site in
        // __schedule() that every CPU runs. Under TCG one such flip ended
        // a CI run with "Oops: int3" at __schedule+0x323, the
        // sched_switch site in the test kernel's __jump_table. The counts
        // filter on common_pid and need no comm. record-cmd is a top-level
        // option an instance copies when created (trace_array_create()),
        // so it is off only while this instance is made.
        let record_cmd = root.join("options").join("record-cmd");
        let was = std::fs::read_to_string(&record_cmd)
            .with_context(|| format!("read {}", record_cmd.display()))?;
        std::fs::write(&record_cmd, "0")?;
        let made = std::fs::create_dir(&dir).with_context(|| format!("mkdir {}", dir.display()));
        std::fs::write(&record_cmd, was.trim())?;
        made?;
        let ev = dir.join("events").join(event);
        std::fs::write(
            ev.join("filter"),
            format!("common_pid == {}", std::process::id()),
        )?;
        std::fs::write(dir.join("buffer_size_kb"), "4096")?;
        std::fs::write(ev.join("enable"), "1")?;
        Ok(Some(Self {
            dir,
            event: event.into(),
        }))
    }

    /// Stops counting and returns how many events the kernel recorded.
    pub fn finish(self) -> Result<u64> {
        Ok(self.finish_lines()?.len() as u64)
    }

    /// Stops counting and returns the events the kernel recorded.
    pub fn finish_lines(self) -> Result<Vec<String>> {
        let ev = self.dir.join("events").join(&self.event);
        std::fs::write(ev.join("enable"), "0")?;
        let text = std::fs::read_to_string(self.dir.join("trace"))?;
        let mut overrun = false;
        for cpu in std::fs::read_dir(self.dir.join("per_cpu"))?.flatten() {
            overrun |= std::fs::read_to_string(cpu.path().join("stats"))
                .unwrap_or_default()
                .lines()
                .any(|l| l.starts_with("overrun:") && !l.ends_with(" 0"));
        }
        let lines = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(str::to_string)
            .collect();
        let _ = std::fs::remove_dir(&self.dir);
        ensure!(
            !overrun,
            "trace instance overran: the event count is incomplete"
        );
        Ok(lines)
    }
}

/// XFS's own counter of NULLs it retried by hand in
/// `xfs_buf_alloc_backing_mem()`: `xb_page_retries`, the 7th value of the
/// `buf` line of /sys/fs/xfs/stats/stats.
pub fn xb_page_retries() -> Result<u64> {
    let text = std::fs::read_to_string("/sys/fs/xfs/stats/stats")?;
    let line = text
        .lines()
        .find(|l| l.starts_with("buf "))
        .context("no buf line in /sys/fs/xfs/stats/stats")?;
    line.split_whitespace()
        .nth(7)
        .context("short buf line")?
        .parse()
        .context("xb_page_retries")
}

/// setxattr(path, "user.big", `len` bytes): large enough that XFS keeps
/// the value in remote blocks, read and written through an XFS buffer
/// larger than a page.
pub fn set_big_xattr(path: &Path, len: usize) -> Result<()> {
    let p = CString::new(path.as_os_str().as_encoded_bytes())?;
    let value = vec![0x5a_u8; len];
    let rc = unsafe {
        libc::setxattr(
            p.as_ptr(),
            c"user.big".as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc != 0 {
        bail!(
            "setxattr {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// Makes `n` files under `dir`, each with a 60000-byte xattr, and syncs.
pub fn xattr_files(dir: &Path, prefix: &str, n: usize) -> Result<()> {
    for i in 0..n {
        let f = dir.join(format!("{prefix}{i}"));
        std::fs::write(&f, b"x")?;
        set_big_xattr(&f, 60000)?;
    }
    unsafe { libc::sync() };
    Ok(())
}

fn rows(report: &Value) -> Result<Vec<(String, u64)>> {
    report["callers"]
        .as_array()
        .context("no callers array")?
        .iter()
        .map(|r| {
            let caller = r["caller"].as_str().context("a row without a caller")?;
            Ok((caller.to_string(), field(r, "calls")?))
        })
        .collect()
}

/// The filtered run saw exactly the control run's rows inside the
/// subsystem (same calls each) and nothing outside it.
fn same_rows_inside(
    filtered: &Value,
    control: &Value,
    inside: impl Fn(&str) -> bool,
) -> Result<()> {
    let f = rows(filtered)?;
    let want: Vec<(String, u64)> = rows(control)?
        .into_iter()
        .filter(|(c, _)| inside(c))
        .collect();
    for (caller, _) in &f {
        ensure!(
            inside(caller),
            "filtered run counted {caller}, outside the target"
        );
    }
    let (mut f, mut want) = (f, want);
    f.sort();
    want.sort();
    ensure!(
        f == want,
        "filtered run {f:?} != control run's rows inside the target {want:?}"
    );
    Ok(())
}

/// XFS remote xattrs, traced with `--caller 'xfs_*'` next to an unfiltered
/// control run: the XFS buffer call site's calls equal the kernel's count
/// of `xfs:xfs_buf_backing_vmalloc`; BPF maps made in the same window are
/// in the control run only; every XFS row is the same in both runs.
pub fn xfs_remote_xattrs_traced(ctx: &Ctx) -> Result<()> {
    const FILES: usize = 8;
    const MAPS: u64 = 3;
    let Some(tp) = TpCount::start("nofail_xfs_trace", "xfs/xfs_buf_backing_vmalloc")? else {
        return Err(skip(
            "this kernel's XFS has no xfs_buf_backing_vmalloc tracepoint (it maps buffers with vm_map_ram, not vmalloc)",
        ));
    };
    let fs = LoopFs::new("xfs_trace", "xfs", 600, &["-f", "-q"])?;
    let pid = std::process::id().to_string();
    let filtered = Trace::start(
        ctx,
        "real_xfs_filtered",
        &["--pid", &pid, "--caller", "xfs_*"],
    )?;
    // Where XFS is a loadable module (Debian's kernels), --module xfs.
    let xfs_is_module = std::fs::read_to_string("/proc/kallsyms")?.contains("\t[xfs]");
    let module = if xfs_is_module {
        Some(Trace::start(
            ctx,
            "real_xfs_module",
            &["--pid", &pid, "--module", "xfs"],
        )?)
    } else {
        None
    };
    // Thousands of address ranges: every function with an 'a' in its name.
    let wide = Trace::start(ctx, "real_xfs_wide", &["--pid", &pid, "--caller", "*a*"])?;
    let control = Trace::start(ctx, "real_xfs_control", &["--pid", &pid])?;
    let work = (|| {
        xattr_files(&fs.mnt, "f", FILES)?;
        for _ in 0..MAPS {
            bpf::create_big_array_map()?;
        }
        Ok::<_, anyhow::Error>(())
    })();
    let control = control.finish()?;
    let wide = wide.finish()?;
    let module = module.map(Trace::finish).transpose()?;
    let filtered = filtered.finish()?;
    let events = tp.finish()?;
    work?;
    println!(
        "  xfs_buf_backing_vmalloc events: {events}; filtered rows: {:?}",
        rows(&filtered)?
    );
    ensure!(
        events >= FILES as u64,
        "only {events} tracepoint events for {FILES} remote xattrs"
    );
    expect_fields(
        &filtered,
        "xfs_buf_alloc",
        &[("calls", events), ("null_returns", 0)],
    )?;
    expect_fields(
        &control,
        nofail_test_support::bpf::array_map_caller()?,
        &[("calls", MAPS)],
    )?;
    same_rows_inside(&filtered, &control, |c| c.starts_with("xfs_"))?;
    if let Some(module) = &module {
        println!("  --module xfs rows: {:?}", rows(module)?);
        same_rows_inside(module, &control, |c| c.starts_with("xfs_"))?;
    }
    same_rows_inside(&wide, &control, |c| {
        c.split('+').next().is_some_and(|f| f.contains('a'))
    })
}

/// `nofail inject --stage area --caller 'xfs_*' --times 3 --chains 4` on
/// XFS remote xattrs: XFS's own `xb_page_retries` rises by exactly 3,
/// every setxattr succeeds, the report says XFS retried by hand 3 times,
/// and the call chains behind `xfs_buf_alloc` add up to its calls that
/// mattered (3 NULLs, 3 retries by hand).
pub fn xfs_inject_glob_retried_by_hand(ctx: &Ctx) -> Result<()> {
    if !Path::new("/sys/kernel/tracing/events/xfs/xfs_buf_backing_vmalloc").exists() {
        return Err(skip(
            "this kernel's XFS does not allocate buffers with vmalloc",
        ));
    }
    let fs = LoopFs::new("xfs_inject", "xfs", 600, &["-f", "-q"])?;
    let pid = std::process::id().to_string();
    let before = xb_page_retries()?;
    let inj = Trace::start_cmd(
        ctx,
        "inject",
        "real_xfs_inject",
        &[
            "--stage", "area", "--caller", "xfs_*", "--pid", &pid, "--times", "3", "--chains", "4",
        ],
    )?;
    let (_, report) = inj.around(|| xattr_files(&fs.mnt, "g", 6))?;
    let retries = xb_page_retries()? - before;
    ensure!(retries == 3, "xb_page_retries rose by {retries}, not 3");
    let b = crate::harness::rows_of(&report["injection"]["behaviour"], "xfs_buf_alloc")?
        .into_iter()
        .next()
        .with_context(|| {
            format!(
                "no behaviour row for xfs_buf_alloc: {}",
                report["injection"]
            )
        })?;
    ensure!(
        b["injected"] == 3 && b["null_returned"] == 3 && b["open_coded_retries"] == 3,
        "behaviour {b}"
    );
    ensure!(
        b["absorbed"] == 0 && b["error_to_userspace"] == 0,
        "behaviour {b}"
    );
    let caller = row(&report, "xfs_buf_alloc")?;
    let chains: Vec<&Value> = report["chains"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["caller"] == caller["caller"])
        .collect();
    let sum = |k: &str| json::sum(chains.iter().map(|c| &c["counts"]), k);
    // The calls that mattered: the 3 NULLs and the retries that then went
    // through, one per buffer hit (3 on one buffer: 4 calls; one each on
    // 3 buffers: 6).
    ensure!(
        sum("null_returns")? == 3
            && sum("open_coded_retries")? == 3
            && sum("injected")? == 3
            && (4..=6).contains(&sum("calls")?),
        "chains of xfs_buf_alloc: {chains:?}"
    );
    for c in &chains {
        let first = c["chain"][0].as_str().unwrap_or("");
        ensure!(
            first == caller["caller"],
            "chain does not start at the call site: {c}"
        );
        ensure!(
            c["chain"].as_array().map_or(0, |a| a.len()) == 4,
            "depth: {c}"
        );
    }
    println!(
        "  chains behind xfs_buf_alloc: {:?}",
        chains.iter().map(|c| &c["chain"]).collect::<Vec<_>>()
    );
    Ok(())
}

/// `--caller 'ext4_*'` on an ext4 workload next to an unfiltered control
/// run: the same ext4 rows, nothing else (BPF maps in the window).
pub fn ext4_filter_exact(ctx: &Ctx) -> Result<()> {
    const MAPS: u64 = 2;
    let pid = std::process::id().to_string();
    let filtered = Trace::start(
        ctx,
        "real_ext4_filtered",
        &["--pid", &pid, "--caller", "ext4_*"],
    )?;
    let control = Trace::start(ctx, "real_ext4_control", &["--pid", &pid])?;
    let work = (|| {
        let fs = LoopFs::new("ext4", "ext4", 256, &["-q", "-F"])?;
        for i in 0..64 {
            std::fs::write(fs.mnt.join(format!("f{i}")), vec![1u8; 8192])?;
        }
        unsafe { libc::sync() };
        for _ in 0..MAPS {
            bpf::create_big_array_map()?;
        }
        drop(fs);
        Ok::<_, anyhow::Error>(())
    })();
    let control = control.finish()?;
    let filtered = filtered.finish()?;
    work?;
    println!("  ext4 rows: {:?}", rows(&filtered)?);
    expect_fields(
        &control,
        nofail_test_support::bpf::array_map_caller()?,
        &[("calls", MAPS)],
    )?;
    same_rows_inside(&filtered, &control, |c| c.starts_with("ext4_"))
}

/// `[start, end)` of a kernel function, from /proc/kallsyms.
fn symbol_range(name: &str) -> Result<(u64, u64)> {
    nofail_test_support::kernel::function_range(&std::fs::read_to_string("/proc/kallsyms")?, name)
}

/// The kernel's own fail_page_alloc, failing one page allocation (order
/// 1 or more) of this task made from inside `function` (the stack-trace
/// filter's require-start/end), then nothing more.
struct FailPagesInside {
    range: (u64, u64),
}

const FPA: &str = "/sys/kernel/debug/fail_page_alloc";

impl FailPagesInside {
    fn new(function: &str) -> Result<Self> {
        let range = symbol_range(function)?;
        let set = |f: &str, v: &str| -> Result<()> {
            std::fs::write(format!("{FPA}/{f}"), v).with_context(|| format!("{FPA}/{f} = {v}"))
        };
        set("require-start", &range.0.to_string())?;
        set("require-end", &range.1.to_string())?;
        set("stacktrace-depth", "32")?;
        set("ignore-gfp-wait", "N")?;
        set("ignore-gfp-highmem", "N")?;
        set("min-order", "1")?;
        set("task-filter", "Y")?;
        set("verbose", "0")?;
        set("interval", "1")?;
        set("space", "0")?;
        set("probability", "100")?;
        std::fs::write("/proc/thread-self/make-it-fail", "1")?;
        Ok(Self { range })
    }

    /// Allows exactly one more failure.
    fn arm_once(&self) -> Result<()> {
        std::fs::write(format!("{FPA}/times"), "1")?;
        Ok(())
    }

    /// Failures of the armed budget that were not used.
    fn left(&self) -> Result<i64> {
        Ok(std::fs::read_to_string(format!("{FPA}/times"))?
            .trim()
            .parse()?)
    }
}

impl Drop for FailPagesInside {
    fn drop(&mut self) {
        let _ = std::fs::write("/proc/thread-self/make-it-fail", "0");
        let _ = std::fs::write(format!("{FPA}/probability"), "0");
        let _ = std::fs::write(format!("{FPA}/times"), "0");
        // The kernel's defaults: require-end ULONG_MAX means "no stack
        // filter"; 0 would make fail_page_alloc never fail anything again.
        let _ = std::fs::write(format!("{FPA}/require-start"), "0");
        let _ = std::fs::write(format!("{FPA}/require-end"), u64::MAX.to_string());
        let _ = self.range;
    }
}

/// The attr leaf of `file` back to shortform, with its `__GFP_NOFAIL`
/// kvmalloc(one block) pushed to vmalloc: `user.x` (1000 bytes, too big
/// for the inode) lives in a leaf block; removing it makes
/// `xfs_attr3_leaf_to_shortform()` kvmalloc a 16 KiB buffer, whose kmalloc
/// attempt (order 2) the kernel's fail_page_alloc fails once.
fn leaf_to_shortform(fs: &LoopFs, name: &str, fpa: &FailPagesInside) -> Result<()> {
    let f = fs.mnt.join(name);
    std::fs::write(&f, b"x")?;
    let p = CString::new(f.as_os_str().as_encoded_bytes())?;
    let value = vec![0x41u8; 1000];
    let rc = unsafe {
        libc::setxattr(
            p.as_ptr(),
            c"user.x".as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    ensure!(rc == 0, "setxattr: {}", std::io::Error::last_os_error());
    fpa.arm_once()?;
    let rc = unsafe { libc::removexattr(p.as_ptr(), c"user.x".as_ptr()) };
    ensure!(rc == 0, "removexattr: {}", std::io::Error::last_os_error());
    let left = fpa.left()?;
    ensure!(
        left == 0,
        "fail_page_alloc did not fail the kmalloc attempt ({left} left)"
    );
    Ok(())
}

/// `vmalloc error: size N, vm_struct allocation failed` records: the
/// kernel's own record of area-stage failures of calls without
/// __GFP_NOWARN (warn_alloc, ratelimited to one per 10 s).
fn vm_struct_failures(records: &[String], size: u64) -> usize {
    let needle = format!("vmalloc error: size {size}, vm_struct allocation failed");
    records.iter().filter(|r| r.contains(&needle)).count()
}

const LBS: u64 = 16384;

/// A real `__GFP_NOFAIL` vmalloc from a filesystem: XFS with 16 KiB blocks,
/// three attr leaves turned back to shortform, each kmalloc attempt failed
/// by the kernel's fail_page_alloc (exactly once, from inside
/// `xfs_attr3_leaf_to_shortform`): nofail, scoped to `xfs_*`, sees exactly
/// three NOFAIL vmalloc calls from that function, none failed, with call
/// chains through XFS's attr code.
pub fn xfs_nofail_kvmalloc_fallback(ctx: &Ctx) -> Result<()> {
    const N: u64 = 3;
    let fs = LoopFs::new("xfs_lbs", "xfs", 600, &["-f", "-q", "-b", "size=16384"])?;
    let fpa = FailPagesInside::new("xfs_attr3_leaf_to_shortform")?;
    let pid = std::process::id().to_string();
    let trace = Trace::start(
        ctx,
        "real_xfs_nofail",
        &[
            "--pid",
            &pid,
            "--caller",
            "xfs_*",
            "--nofail-only",
            "--chains",
            "3",
        ],
    )?;
    let (_, report) = trace.around(|| {
        for i in 0..N {
            leaf_to_shortform(&fs, &format!("n{i}"), &fpa)?;
        }
        Ok(())
    })?;
    expect_fields(
        &report,
        "xfs_attr3_leaf_to_shortform",
        &[
            ("calls", N),
            ("nofail_calls", N),
            ("null_returns", 0),
            ("failures", 0),
            ("sleeps", 0),
        ],
    )?;
    let total_calls = report["totals"]["calls"].as_u64().context("totals.calls")?;
    ensure!(
        total_calls == N,
        "other NOFAIL vmalloc calls in XFS: {}",
        report["callers"]
    );
    let chains: Vec<&Value> = report["chains"].as_array().into_iter().flatten().collect();
    let sum = json::sum(chains.iter().map(|c| &c["counts"]), "nofail_calls")?;
    ensure!(sum == N, "chains: {chains:?}");
    for c in &chains {
        ensure!(
            c["chain"][1]
                .as_str()
                .is_some_and(|f| f.starts_with("xfs_attr")),
            "chain does not go on into XFS's attr code: {c}"
        );
    }
    println!(
        "  chains: {:?}",
        chains.iter().map(|c| &c["chain"]).collect::<Vec<_>>()
    );
    Ok(())
}

/// The same real NOFAIL call under `nofail inject --stage area --caller
/// 'xfs_attr*' --fail-first 2`: the kernel starts exactly two one-jiffy
/// timers for this task (`timer:timer_start` of `process_timeout`, the
/// retry loop's `schedule_timeout_uninterruptible(1)`), logs the
/// vm_struct failure (warn_alloc prints one per 10 s), nofail counts two
/// area retries and two sleeps, and removexattr succeeds.
pub fn xfs_nofail_kvmalloc_injected(ctx: &Ctx) -> Result<()> {
    const K: u64 = 2;
    let fs = LoopFs::new(
        "xfs_lbs_inject",
        "xfs",
        600,
        &["-f", "-q", "-b", "size=16384"],
    )?;
    let fpa = FailPagesInside::new("xfs_attr3_leaf_to_shortform")?;
    let pid = std::process::id().to_string();
    // warn_alloc() prints at most one line per 10 s: start a fresh window.
    std::thread::sleep(std::time::Duration::from_millis(10_500));
    let mut kmsg = Kmsg::from_now()?;
    let timers = TpCount::start("nofail_xfs_timers", "timer/timer_start")?
        .context("no timer:timer_start tracepoint")?;
    let inj = Trace::start_cmd(
        ctx,
        "inject",
        "real_xfs_nofail_inject",
        &[
            "--stage",
            "area",
            "--caller",
            "xfs_attr*",
            "--nofail-only",
            "--pid",
            &pid,
            "--fail-first",
            "2",
        ],
    )?;
    let (_, report) = inj.around(|| leaf_to_shortform(&fs, "i0", &fpa))?;
    let sleeps = timers
        .finish_lines()?
        .iter()
        .filter(|l| l.contains("function=process_timeout"))
        .count() as u64;
    ensure!(
        sleeps == K,
        "the kernel started {sleeps} retry timers for this task, not {K}"
    );
    let records = kmsg.read_new()?;
    let logged = vm_struct_failures(&records, LBS);
    ensure!(
        logged == 1,
        "kernel logged {logged} vm_struct failures, not 1 (ratelimited): {:?}",
        records
            .iter()
            .filter(|r| r.contains("vmalloc"))
            .collect::<Vec<_>>()
    );
    expect_fields(
        &report,
        "xfs_attr3_leaf_to_shortform",
        &[
            ("calls", 1),
            ("nofail_calls", 1),
            ("area_retries", K),
            ("sleeps", K),
            ("null_returns", 0),
            ("injected", K),
        ],
    )?;
    let b = report["injection"]["behaviour"][0].clone();
    ensure!(
        b["nofail"] == true && b["still_looping"] == 0,
        "behaviour {b}"
    );
    Ok(())
}
