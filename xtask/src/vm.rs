// SPDX-License-Identifier: MIT OR Apache-2.0
//! `cargo xtask vm`: boot a kernel under QEMU (TCG), run one command in the
//! guest over the host's root filesystem, stream its output, and exit with
//! its status. Panics, soft lockups, RCU stalls, hangs and the wall-clock
//! timeout end the run with a non-zero exit and the last console lines.

use std::{
    collections::VecDeque,
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

mod monitor;

use crate::{
    arch::Arch,
    cpio::Cpio,
    kernels::{Kernel, KernelName, KernelSpec},
    util::{self, workspace_root},
    variant,
};

/// Exit codes for outcomes that are not the command's own.
pub const EXIT_TIMEOUT: i32 = 124;
pub const EXIT_CRASH: i32 = 125;
pub const EXIT_HANG: i32 = 126;

/// Seconds without a heartbeat from the guest init before it counts as hung.
const HANG_SECS: u64 = 90;
/// A run this long whose heartbeat never beat fails (`conclude`): every
/// guest beats within seconds of its init starting.
const UNBEATEN_SECS: f64 = 20.0;
/// Console lines kept for the failure report.
const TAIL_LINES: usize = 40;

#[derive(Debug, clap::Args)]
pub struct VmArgs {
    /// A kernel name, test+PATCH_FILE (the test kernel with a patch), or
    /// DIR, a kernel build tree you built (the source tree or its O=
    /// directory, with arch/x86/boot/bzImage, Module.symvers and .config),
    /// written with a '/' (./linux, /src/linux).
    #[arg(long, default_value = "test", value_name = "NAME|test+PATCH|DIR")]
    pub kernel: KernelSpec,
    /// The guest's architecture: arm64 boots Debian's arm64 kernels under
    /// qemu-system-aarch64, over a root of Debian's arm64 packages.
    #[arg(long, value_enum, default_value_t)]
    pub arch: Arch,
    /// Wall-clock limit for the whole run, boot included.
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 2048)]
    pub memory: u32,
    /// Environment variables passed to the command (NAME=VALUE).
    #[arg(long = "env", value_name = "NAME=VALUE")]
    pub env: Vec<String>,
    /// Count instead of time: QEMU `-icount shift=0,sleep=off` (a guest
    /// nanosecond is one guest instruction), as `cargo xtask bench` runs.
    #[arg(long)]
    pub icount: bool,
    /// Guest CPUs.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=8))]
    pub cpus: u32,
    /// Boot systemd as PID 1 (to multi-user.target, over a writable
    /// overlay of the host's root) and run the command from a unit after
    /// it: for `dpkg -i`, `systemctl` and services. What it masks, and why:
    /// testing/vm-init/src/systemd.rs.
    #[arg(long)]
    pub systemd: bool,
    /// The command to run in the guest, as root, in the current directory.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

pub fn cmd(args: VmArgs) -> Result<i32> {
    crate::setup::ensure()?;
    let kernel = variant::ensure_spec(&KernelSpec {
        arch: args.arch,
        ..args.kernel.clone()
    })?;
    let cwd = std::env::current_dir()?;
    run(&Guest {
        kernel: &kernel,
        cwd: &cwd,
        command: &args.command,
        env: &args.env,
        timeout: args.timeout,
        memory: args.memory,
        icount: args.icount,
        cpus: args.cpus,
        systemd: args.systemd,
    })
}

/// One guest run: `command` as root in `cwd` (shared writable), with `env`,
/// under `timeout` seconds of wall clock and `memory` MiB.
#[derive(Clone, Copy)]
pub struct Guest<'a> {
    pub kernel: &'a Kernel,
    pub cwd: &'a Path,
    pub command: &'a [String],
    pub env: &'a [String],
    pub timeout: u64,
    pub memory: u32,
    /// QEMU `-icount shift=0,sleep=off`: the guest clock advances one
    /// nanosecond per guest instruction (the benchmark's counted metric).
    pub icount: bool,
    /// Guest CPUs. The benchmark boots one: under -icount the clock is
    /// shared, so instructions a second CPU runs meanwhile (a kworker,
    /// a tracer's own process) would count as the measured thread's.
    pub cpus: u32,
    /// systemd as PID 1, the command run from a unit after
    /// multi-user.target (testing/vm-init/src/systemd.rs).
    pub systemd: bool,
}

/// Boots `kernel`, runs `command` in `cwd`, returns the guest command's
/// exit status (or one of the EXIT_* codes). A guest that crashes or hangs
/// before the command started (seen under TCG: an int3 oops while the
/// kernel patches its own text during boot) is booted once more.
pub fn run(guest: &Guest) -> Result<i32> {
    match run_once(guest)? {
        Outcome::Done(code) => Ok(code),
        Outcome::BootFailed(_) => {
            eprintln!("xtask vm: the guest failed before the command started; booting once more");
            Ok(match run_once(guest)? {
                Outcome::Done(code) | Outcome::BootFailed(code) => code,
            })
        }
    }
}

enum Outcome {
    Done(i32),
    /// Crashed or hung before the guest init reported START.
    BootFailed(i32),
}

fn run_once(guest: &Guest) -> Result<Outcome> {
    let work = tempdir()?;
    let nonce = format!("NOFAIL-VM-{:016x}", rand64());
    let initrd = work.join("initrd.cpio");
    write_initramfs(guest, &initrd, &nonce)?;
    let heartbeat = work.join("heartbeat");
    std::fs::write(&heartbeat, "")?;
    for var in ["NOFAIL_QEMU_EXTRA", "NOFAIL_KERNEL_APPEND"] {
        if let Ok(v) = std::env::var(var) {
            // Set for profiling; left exported, it would change every
            // boot, the benchmark's included.
            eprintln!("xtask vm: {var}={v:?}");
        }
    }
    let root = crate::guestroot::ensure(guest.kernel, guest.cwd)?;
    let started = Instant::now();
    let mut qemu = qemu_command(guest, &initrd, &heartbeat, &root);
    let mut child = qemu.spawn().with_context(|| {
        format!(
            "cannot start {} (run `cargo xtask setup`)",
            qemu.get_program().to_string_lossy()
        )
    })?;
    let rx = console_lines(&mut child);
    let watched = watch(&rx, &nonce, &heartbeat, guest.timeout, started);
    if watched
        .failure
        .as_ref()
        .is_some_and(|(code, _)| [EXIT_HANG, EXIT_TIMEOUT].contains(code))
    {
        // Where each vCPU was when the guest stopped answering: a hang
        // that printed nothing (no lockup, no stall report) says no more.
        for line in monitor::cpu_state(&work.join(monitor::SOCKET)) {
            eprintln!("xtask vm: {line}");
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&work);
    Ok(conclude(
        guest.kernel,
        watched,
        started.elapsed().as_secs_f64(),
    ))
}

/// The QEMU machine of `arch`: its program, machine and CPU options, the
/// kernel's console, and how the heartbeat port is made (the guest init
/// writes to /dev/hvc0 on arm64, /dev/ttyS1 on x86-64).
struct Machine {
    program: &'static str,
    machine: &'static [&'static str],
    console: &'static str,
}

fn machine(arch: Arch) -> Machine {
    match arch {
        Arch::X86_64 => Machine {
            program: "qemu-system-x86_64",
            machine: &["-cpu", "max"],
            console: "ttyS0",
        },
        // Pointer authentication as the kernels use it, with QEMU's cheap
        // implementation-defined algorithm (the architected QARMA5 costs
        // TCG dearly); `virt` has one UART (PL011, ttyAMA0).
        Arch::Arm64 => Machine {
            program: "qemu-system-aarch64",
            machine: &["-M", "virt", "-cpu", "max,pauth-impdef=on"],
            console: "ttyAMA0",
        },
    }
}

/// The QEMU command line of a guest run, over `root` (the guest's root
/// filesystem on the host: xtask/src/guestroot.rs).
fn qemu_command(guest: &Guest, initrd: &Path, heartbeat: &Path, root: &Path) -> Command {
    let m = machine(guest.kernel.arch);
    let mut qemu = Command::new(m.program);
    qemu.args(m.machine)
        .args([
            // One host thread runs both vCPUs in turn (no MTTCG). With a
            // thread per vCPU, this QEMU (7.2) let guests execute a stale
            // INT3 after the kernel had live-patched it away: "Oops: int3" at
            // static-key sites (__schedule's sched_switch tracepoint,
            // enqueue_timer's timer_start, sched_clock_cpu during boot), seen
            // in about one CI run in three on the 7.2 kernels, with and
            // without nofail attached. The guest's CPUs (two, except in the
            // benchmark) preempt each other; it runs slower where both are busy.
            "-accel",
            "tcg,thread=single",
            "-smp",
            &guest.cpus.to_string(),
            "-m",
            &guest.memory.to_string(),
        ])
        .args(["-nodefaults", "-display", "none", "-no-reboot"])
        .arg("-monitor")
        .arg(format!(
            "unix:{},server=on,wait=off",
            initrd.with_file_name(monitor::SOCKET).display()
        ))
        .args(if guest.icount {
            &["-icount", "shift=0,sleep=off"][..]
        } else {
            &[]
        })
        .args(
            std::env::var("NOFAIL_QEMU_EXTRA")
                .unwrap_or_default()
                .split_whitespace(),
        )
        .args(["-serial", "stdio"]);
    match guest.kernel.arch {
        Arch::X86_64 => {
            qemu.arg("-serial")
                .arg(format!("file:{}", heartbeat.display()));
        }
        Arch::Arm64 => {
            qemu.args(["-device", "virtio-serial-pci", "-chardev"])
                .arg(format!("file,id=heartbeat,path={}", heartbeat.display()))
                .args(["-device", "virtconsole,chardev=heartbeat"]);
        }
    }
    qemu.arg("-kernel")
        .arg(&guest.kernel.image)
        .arg("-initrd")
        .arg(initrd)
        .arg("-append")
        .arg(format!(
            "console={} panic=-1 quiet loglevel=4 rdinit=/init {}",
            m.console,
            std::env::var("NOFAIL_KERNEL_APPEND").unwrap_or_default()
        ))
        .arg("-virtfs")
        .arg(format!(
            "local,path={},mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
            root.display()
        ))
        .arg("-virtfs")
        .arg(format!(
            "local,path={},mount_tag=hostcwd,security_model=none,multidevs=remap",
            guest.cwd.display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    qemu
}

/// Console lines and QEMU's own errors, on one channel.
fn console_lines(child: &mut std::process::Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel::<String>();
    for stream in [
        Box::new(child.stdout.take().expect("piped")) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().expect("piped")),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).split(b'\n') {
                let Ok(line) = line else { break };
                let line = String::from_utf8_lossy(&line)
                    .trim_end_matches('\r')
                    .to_string();
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    }
    rx
}

/// What watching a guest's console saw.
struct Watched {
    tail: VecDeque<String>,
    /// The command's exit status, as the guest init reported it.
    status: Option<i32>,
    /// The guest init reported START: the kernel booted.
    started_command: bool,
    /// What ended the run early (crash, hang, timeout), with its code.
    failure: Option<(i32, String)>,
    /// The heartbeat was seen at least once.
    beat: bool,
}

/// Streams the console until the guest ends, crashes, hangs (no heartbeat
/// for HANG_SECS) or runs past `timeout` seconds.
fn watch(
    rx: &mpsc::Receiver<String>,
    nonce: &str,
    heartbeat: &Path,
    timeout: u64,
    started: Instant,
) -> Watched {
    let mut w = Watched {
        tail: VecDeque::new(),
        status: None,
        started_command: false,
        failure: None,
        beat: false,
    };
    let mut last_beat = (0u64, Instant::now());
    let stdout = std::io::stdout();
    let keep = |w: &mut Watched, line: String| {
        let _ = writeln!(stdout.lock(), "{line}");
        w.tail.push_back(line);
        if w.tail.len() > TAIL_LINES {
            w.tail.pop_front();
        }
    };
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                if let Some(rest) = line.strip_prefix(nonce) {
                    match rest.trim().strip_prefix("EXIT ") {
                        Some(code) => w.status = code.trim().parse().ok(),
                        None => w.started_command = true,
                    }
                    continue;
                }
                if w.failure.is_none()
                    && let Some(what) = crash_kind(&line)
                {
                    w.failure = Some((EXIT_CRASH, what.to_string()));
                }
                keep(&mut w, line);
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if w.failure.is_some() {
            // Let the oops finish printing, then stop the guest.
            std::thread::sleep(Duration::from_secs(2));
            while let Ok(line) = rx.try_recv() {
                keep(&mut w, line);
            }
            break;
        }
        let beats = std::fs::metadata(heartbeat).map(|m| m.len()).unwrap_or(0);
        if beats != last_beat.0 {
            last_beat = (beats, Instant::now());
            w.beat = true;
        }
        if started.elapsed() > Duration::from_secs(timeout) {
            w.failure = Some((EXIT_TIMEOUT, format!("timed out after {timeout} s")));
            break;
        }
        if last_beat.1.elapsed() > Duration::from_secs(HANG_SECS) && w.status.is_none() {
            w.failure = Some((
                EXIT_HANG,
                if w.beat {
                    format!("guest hung: no heartbeat for {HANG_SECS} s")
                } else {
                    format!("guest hung, or its heartbeat never started: none in {HANG_SECS} s")
                },
            ));
            break;
        }
    }
    w
}

/// The run's outcome, with the last console lines where it went wrong.
fn conclude(kernel: &Kernel, w: Watched, elapsed: f64) -> Outcome {
    if let Some((code, what)) = w.failure {
        eprintln!(
            "xtask vm: {what} ({} kernel {}, {elapsed:.1} s); last console lines:",
            kernel.label, kernel.release
        );
        for line in &w.tail {
            eprintln!("  | {line}");
        }
        return if w.started_command || code == EXIT_TIMEOUT {
            Outcome::Done(code)
        } else {
            Outcome::BootFailed(code)
        };
    }
    match w.status {
        // A run long enough to have beaten that never did had no hang
        // detection: a guest that stopped would have been waited on to
        // the timeout (and Debian's 6.1 arm64 runs past 90 s were called
        // hung while their heartbeat had never started).
        Some(_) if !w.beat && elapsed > UNBEATEN_SECS => {
            eprintln!(
                "xtask vm: {}: the guest's heartbeat never beat in {elapsed:.1} s: its hangs would go unseen",
                kernel.label
            );
            Outcome::Done(EXIT_CRASH)
        }
        Some(code) => {
            eprintln!("xtask vm: {} exited {code} ({elapsed:.1} s)", kernel.label);
            Outcome::Done(code)
        }
        None => {
            eprintln!(
                "xtask vm: guest stopped without reporting a status ({elapsed:.1} s); last console lines:"
            );
            for line in &w.tail {
                eprintln!("  | {line}");
            }
            if w.started_command {
                Outcome::Done(EXIT_CRASH)
            } else {
                Outcome::BootFailed(EXIT_CRASH)
            }
        }
    }
}

/// Console patterns that end a run: what the kernel prints for each.
pub fn crash_kind(line: &str) -> Option<&'static str> {
    const PATTERNS: [(&str, &str); 5] = [
        ("Kernel panic - not syncing", "kernel panic"),
        ("BUG: soft lockup", "soft lockup"),
        ("rcu: INFO: ", "RCU stall"),
        ("detected stalls on CPUs", "RCU stall"),
        ("BUG: kernel NULL pointer dereference", "kernel oops"),
    ];
    PATTERNS
        .iter()
        .find(|(p, _)| line.contains(p))
        .map(|(_, what)| *what)
}

/// Modules a stock kernel's guest loads at boot: the host root over 9p,
/// and the filesystems and loop device the real-workload scenarios use
/// (Debian builds them as modules; the test kernel has them built in; a
/// developer's tree, those of them it has).
const GUEST_MODULES: &[&str] = &["9p", "9pnet_virtio", "virtio_pci", "loop", "xfs", "ext4"];

/// Loaded first where the kernel has them as modules: the crc32c
/// implementation XFS's and ext4's checksums ask the crypto API for
/// (a softdep, so not in modules.dep; without it libcrc32c's init fails
/// with ENOENT). Newer kernels have crc32c as a library and no such module.
const GUEST_MODULES_IF_PRESENT: &[&str] = &["crc32c_generic"];

/// What a systemd guest loads besides: its root is an overlay.
const SYSTEMD_MODULES: &[&str] = &["overlay"];

/// What an arm64 guest loads besides: the heartbeat's virtio console.
const ARM64_MODULES: &[&str] = &["virtio_console"];

fn write_initramfs(guest: &Guest, path: &Path, nonce: &str) -> Result<()> {
    let Guest {
        kernel,
        cwd,
        command,
        env,
        ..
    } = *guest;
    let init = build_init(kernel.arch)?;
    let mut cpio = Cpio::new(std::io::BufWriter::new(std::fs::File::create(path)?));
    for dir in ["dev", "proc", "sys", "host", "modules"] {
        cpio.dir(dir)?;
    }
    cpio.char_dev("dev/console", 5, 1)?;
    cpio.file("init", 0o755, &std::fs::read(&init)?)?;
    let mut config = Vec::new();
    let mut record = |k: &str, v: &str| {
        config.extend_from_slice(format!("{k}={v}").as_bytes());
        config.push(0);
    };
    record("nonce", nonce);
    record("cwd", &cwd.to_string_lossy());
    if guest.systemd {
        record("init", "systemd");
    }
    for e in env {
        record("env", e);
    }
    for a in command {
        record("arg", a);
    }
    if let Some(modules) = &kernel.modules {
        // A developer's tree may lack some of them: what the runner needs
        // was checked before (xtask/src/tree.rs), what scenarios need they
        // skip.
        let optional = kernel.name == KernelName::Own;
        let present: Vec<&str> = GUEST_MODULES_IF_PRESENT
            .iter()
            .copied()
            .filter(|m| module_closure(modules, &[m]).is_ok())
            .chain(
                GUEST_MODULES
                    .iter()
                    .chain(if guest.systemd { SYSTEMD_MODULES } else { &[] })
                    .chain(if kernel.arch == Arch::Arm64 {
                        ARM64_MODULES
                    } else {
                        &[]
                    })
                    .copied()
                    .filter(|m| !optional || module_closure(modules, &[m]).is_ok()),
            )
            .collect();
        for (i, ko) in module_closure(modules, &present)?.iter().enumerate() {
            let name = format!("{i:02}.ko");
            cpio.file(&format!("modules/{name}"), 0o644, &read_module(ko)?)?;
            record("module", &name);
        }
    }
    cpio.file("config", 0o644, &config)?;
    cpio.finish()?.flush()?;
    Ok(())
}

/// The guest init, a static musl binary for the guest's architecture.
fn build_init(arch: Arch) -> Result<PathBuf> {
    let root = workspace_root();
    let target = arch.rust_target();
    util::run(
        Command::new("cargo")
            .args([
                "build",
                "--quiet",
                "--release",
                "-p",
                "vm-init",
                "--target",
                target,
            ])
            .current_dir(&root),
    )?;
    Ok(root.join("target").join(target).join("release/vm-init"))
}

/// Modules (with dependencies first, from modules.dep) not built in.
fn module_closure(modules: &Path, wanted: &[&str]) -> Result<Vec<PathBuf>> {
    let deps =
        std::fs::read_to_string(modules.join("modules.dep")).context("modules.dep missing")?;
    let builtin = std::fs::read_to_string(modules.join("modules.builtin")).unwrap_or_default();
    let name_of = |path: &str| -> String {
        let file = path.rsplit('/').next().unwrap_or(path);
        file.split(".ko").next().unwrap_or(file).replace('-', "_")
    };
    let table: Vec<(String, String, Vec<String>)> = deps
        .lines()
        .filter_map(|l| {
            let (module, rest) = l.split_once(':')?;
            Some((
                name_of(module),
                module.to_string(),
                rest.split_whitespace().map(str::to_string).collect(),
            ))
        })
        .collect();
    let mut order: Vec<PathBuf> = Vec::new();
    fn visit(
        path: &str,
        table: &[(String, String, Vec<String>)],
        modules: &Path,
        order: &mut Vec<PathBuf>,
    ) {
        let full = modules.join(path);
        if order.contains(&full) {
            return;
        }
        if let Some((_, _, deps)) = table.iter().find(|(_, p, _)| p == path) {
            // modules.dep lists the deepest dependency last.
            for dep in deps.iter().rev() {
                visit(dep, table, modules, order);
            }
        }
        order.push(full);
    }
    for want in wanted {
        let want = want.replace('-', "_");
        if let Some((_, path, _)) = table.iter().find(|(n, _, _)| *n == want) {
            visit(path, &table, modules, &mut order);
        } else if !builtin.lines().any(|l| name_of(l) == want) {
            bail!(
                "module {want} is neither built in nor in {}",
                modules.display()
            );
        }
    }
    Ok(order)
}

/// Reads a module, decompressing .ko.xz/.ko.zst on the host.
fn read_module(path: &Path) -> Result<Vec<u8>> {
    let s = path.to_string_lossy();
    let tool = if s.ends_with(".xz") {
        Some("xz")
    } else if s.ends_with(".zst") {
        Some("zstd")
    } else {
        None
    };
    match tool {
        Some(tool) => {
            let out = Command::new(tool).arg("-dc").arg(path).output()?;
            if !out.status.success() {
                bail!("cannot decompress {}", path.display());
            }
            Ok(out.stdout)
        }
        None => Ok(std::fs::read(path)?),
    }
}

fn tempdir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("nofail-vm-{}-{:x}", std::process::id(), rand64()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn rand64() -> u64 {
    let mut b = [0u8; 8];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut b);
    }
    u64::from_le_bytes(b) ^ Instant::now().elapsed().as_nanos() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_patterns() {
        assert_eq!(
            crash_kind("[  1.0] Kernel panic - not syncing: Attempted to kill init!"),
            Some("kernel panic")
        );
        assert_eq!(
            crash_kind("watchdog: BUG: soft lockup - CPU#0 stuck for 22s!"),
            Some("soft lockup")
        );
        assert_eq!(
            crash_kind("rcu: INFO: rcu_preempt self-detected stall on CPU"),
            Some("RCU stall")
        );
        assert_eq!(crash_kind("hello"), None);
    }

    #[test]
    fn module_closure_orders_dependencies_first() {
        let dir = std::env::temp_dir().join(format!("nofail-modtest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("modules.dep"),
            "kernel/fs/9p/9p.ko.xz: kernel/net/9p/9pnet.ko.xz kernel/fs/netfs/netfs.ko.xz\n\
             kernel/net/9p/9pnet_virtio.ko.xz: kernel/net/9p/9pnet.ko.xz\n\
             kernel/net/9p/9pnet.ko.xz:\nkernel/fs/netfs/netfs.ko.xz:\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("modules.builtin"),
            "kernel/drivers/virtio/virtio_pci.ko\n",
        )
        .unwrap();
        let order = module_closure(&dir, &["9p", "9pnet_virtio", "virtio_pci"]).unwrap();
        let names: Vec<String> = order
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "netfs.ko.xz",
                "9pnet.ko.xz",
                "9p.ko.xz",
                "9pnet_virtio.ko.xz"
            ]
        );
        assert!(module_closure(&dir, &["nonexistent"]).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
