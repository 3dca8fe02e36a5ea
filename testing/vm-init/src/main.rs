// SPDX-License-Identifier: MIT OR Apache-2.0
//! PID 1 of nofail's test VMs (modelled on aya's test-distro init).
//!
//! The initramfs holds this binary, `/config` and the kernel modules a stock
//! kernel needs for 9p. It mounts the host's root (9p, read-only) and the
//! host's working directory (9p, writable) at the same path, mounts the
//! pseudo filesystems inside, chroots there, runs the command, prints
//! `<nonce> EXIT <status>` on the console for the host to parse, and powers
//! off. A heartbeat on the second serial port lets the host tell a hung
//! guest from a quiet command.
//!
//! With `init=systemd` in `/config` it boots systemd instead (`systemd.rs`):
//! the same binary then runs the command from a unit (`vm-init run`) and
//! beats the heartbeat from another (`vm-init heartbeat`).

mod systemd;

use std::{
    ffi::CString, fs, io::Write as _, os::unix::process::ExitStatusExt as _, process::Command,
    time::Duration,
};

/// Parsed `/config`: NUL-separated `key=value` records.
pub(crate) struct Config {
    pub(crate) nonce: String,
    /// Boot systemd as PID 1 and run the command from a unit.
    systemd: bool,
    pub(crate) cwd: String,
    env: Vec<(String, String)>,
    argv: Vec<String>,
    modules: Vec<String>,
}

fn read_config(path: &str) -> Result<Config, String> {
    let raw = fs::read(path).map_err(|e| format!("read {path}: {e}"))?;
    let mut cfg = Config {
        nonce: String::new(),
        systemd: false,
        cwd: "/".into(),
        env: vec![],
        argv: vec![],
        modules: vec![],
    };
    for rec in raw.split(|&b| b == 0).filter(|r| !r.is_empty()) {
        let rec = String::from_utf8_lossy(rec);
        let (key, value) = rec
            .split_once('=')
            .ok_or(format!("bad config record {rec:?}"))?;
        match key {
            "nonce" => cfg.nonce = value.into(),
            "cwd" => cfg.cwd = value.into(),
            "arg" => cfg.argv.push(value.into()),
            "module" => cfg.modules.push(value.into()),
            "init" if value == "systemd" => cfg.systemd = true,
            "env" => {
                let (k, v) = value.split_once('=').ok_or(format!("bad env {value:?}"))?;
                cfg.env.push((k.into(), v.into()));
            }
            _ => return Err(format!("unknown config key {key:?}")),
        }
    }
    if cfg.argv.is_empty() {
        return Err("no command in /config".into());
    }
    Ok(cfg)
}

pub(crate) fn cstr(s: &str) -> CString {
    CString::new(s).expect("no NUL in path")
}

pub(crate) fn mount(
    src: &str,
    target: &str,
    fstype: &str,
    flags: libc::c_ulong,
    data: &str,
) -> Result<(), String> {
    let _ = fs::create_dir_all(target);
    let (s, t, f, d) = (cstr(src), cstr(target), cstr(fstype), cstr(data));
    let rc = unsafe { libc::mount(s.as_ptr(), t.as_ptr(), f.as_ptr(), flags, d.as_ptr().cast()) };
    if rc != 0 {
        return Err(format!(
            "mount {fstype} on {target}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// finit_module(); the host decompressed the modules already.
fn load_module(path: &str) -> Result<(), String> {
    let file = fs::File::open(path).map_err(|e| format!("open {path}: {e}"))?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
    let params = cstr("");
    let rc = unsafe { libc::syscall(libc::SYS_finit_module, fd, params.as_ptr(), 0) };
    let err = std::io::Error::last_os_error();
    if rc != 0 && err.raw_os_error() != Some(libc::EEXIST) {
        return Err(format!("load module {path}: {err}"));
    }
    Ok(())
}

/// Brings up `lo`, so tests can serve and scrape on 127.0.0.1 (the guest
/// has no other network).
fn loopback_up() -> Result<(), String> {
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
    if fd < 0 {
        return Err(format!("socket: {}", std::io::Error::last_os_error()));
    }
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *d = *s as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = (libc::IFF_UP | libc::IFF_LOOPBACK | libc::IFF_RUNNING) as i16;
    let rc = unsafe { libc::ioctl(fd, libc::SIOCSIFFLAGS as _, &req) };
    let err = std::io::Error::last_os_error();
    unsafe { libc::close(fd) };
    if rc < 0 {
        return Err(format!("bringing up lo: {err}"));
    }
    Ok(())
}

/// The host's root, read-only, at `at`.
pub(crate) fn mount_host_root(at: &str) -> Result<(), String> {
    mount(
        "hostroot",
        at,
        "9p",
        libc::MS_RDONLY,
        "trans=virtio,version=9p2000.L,msize=512000,cache=loose",
    )
}

/// The host's working directory, writable, at `cwd` under `root`.
pub(crate) fn mount_host_cwd(root: &str, cwd: &str) -> Result<(), String> {
    if cwd == "/" {
        return Ok(());
    }
    mount(
        "hostcwd",
        &format!("{root}{cwd}"),
        "9p",
        0,
        "trans=virtio,version=9p2000.L,msize=512000",
    )
}

/// The pseudo filesystems the scenarios read, under `root`.
pub(crate) fn mount_pseudo(root: &str) -> Result<(), String> {
    let nosuid = libc::MS_NOSUID | libc::MS_NODEV;
    let host = |p: &str| format!("{root}{p}");
    mount("proc", &host("/proc"), "proc", nosuid | libc::MS_NOEXEC, "")?;
    mount(
        "sysfs",
        &host("/sys"),
        "sysfs",
        nosuid | libc::MS_NOEXEC,
        "",
    )?;
    mount("devtmpfs", &host("/dev"), "devtmpfs", libc::MS_NOSUID, "")?;
    mount("devpts", &host("/dev/pts"), "devpts", nosuid, "")?;
    mount("tmpfs", &host("/dev/shm"), "tmpfs", nosuid, "")?;
    mount("debugfs", &host("/sys/kernel/debug"), "debugfs", nosuid, "")?;
    mount(
        "tracefs",
        &host("/sys/kernel/tracing"),
        "tracefs",
        nosuid,
        "",
    )?;
    mount("bpffs", &host("/sys/fs/bpf"), "bpf", nosuid, "")?;
    mount("cgroup2", &host("/sys/fs/cgroup"), "cgroup2", nosuid, "")
}

pub(crate) fn load_modules(cfg: &Config) -> Result<(), String> {
    for module in &cfg.modules {
        load_module(&format!("/modules/{module}"))?;
    }
    loopback_up()
}

fn setup(cfg: &Config) -> Result<(), String> {
    load_modules(cfg)?;
    mount_host_root("/host")?;
    mount_pseudo("/host")?;
    let nosuid = libc::MS_NOSUID | libc::MS_NODEV;
    mount("tmpfs", "/host/tmp", "tmpfs", nosuid, "mode=1777")?;
    mount("tmpfs", "/host/run", "tmpfs", nosuid, "mode=755")?;
    mount_host_cwd("/host", &cfg.cwd)?;
    let root = cstr("/host");
    if unsafe { libc::chroot(root.as_ptr()) } != 0 {
        return Err(format!("chroot /host: {}", std::io::Error::last_os_error()));
    }
    std::env::set_current_dir(&cfg.cwd).map_err(|e| format!("chdir {}: {e}", cfg.cwd))?;
    Ok(())
}

/// The heartbeat port: the second serial port on x86-64; on arm64
/// (`virt` has a single UART) the virtio console. Chosen by architecture,
/// not by which opens: Debian's 6.1 arm64 kernel has 8250 ports ttyS0-3
/// without hardware that open and swallow what is written, and its
/// virtio_console is a module, so /dev/hvc0 appears only once `setup`
/// has loaded it (a heartbeat written to ttyS1 there left the host
/// calling every run longer than 90 s hung).
const HEARTBEAT_PORT: &str = if cfg!(target_arch = "aarch64") {
    "/dev/hvc0"
} else {
    "/dev/ttyS1"
};

/// A dot a second on the heartbeat port, for ever, once it can be opened.
fn beat() {
    let started = std::time::Instant::now();
    let mut port = loop {
        if let Ok(port) = fs::OpenOptions::new().write(true).open(HEARTBEAT_PORT) {
            break port;
        }
        if started.elapsed() > Duration::from_secs(60) {
            eprintln!("vm-init: the heartbeat port {HEARTBEAT_PORT} did not open in 60 s");
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    loop {
        let _ = port.write_all(b".");
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn heartbeat() {
    std::thread::spawn(beat);
}

fn run(cfg: &Config) -> i32 {
    let mut cmd = Command::new(&cfg.argv[0]);
    cmd.args(&cfg.argv[1..])
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("HOME", "/root")
        .env("TERM", "dumb")
        .env("NOFAIL_IN_VM", "1");
    for (k, v) in &cfg.env {
        cmd.env(k, v);
    }
    match cmd.status() {
        Ok(status) => status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
        Err(e) => {
            eprintln!("vm-init: cannot run {:?}: {e}", cfg.argv[0]);
            127
        }
    }
}

/// Prints the status line the host waits for, lets the console drain,
/// powers off.
fn finish(nonce: &str, status: i32) -> ! {
    let _ = std::io::stdout().flush();
    unsafe { libc::sync() };
    println!("\n{nonce} EXIT {status}");
    let _ = std::io::stdout().flush();
    // The line is in the tty's buffer, not yet out of the UART: with a
    // task spinning in the kernel (the endless-loop scenarios), power-off
    // came before the drain and the host saw no status (exit 125 for a
    // passed scenario). Wait until the console has sent everything.
    unsafe { libc::tcdrain(libc::STDOUT_FILENO) };
    unsafe { libc::reboot(libc::RB_POWER_OFF) };
    std::process::exit(status)
}

/// `vm-init run` in a systemd guest: the command, from its unit.
fn run_from_unit() -> ! {
    let cfg = match read_config(systemd::CONFIG) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("vm-init run: {e}");
            finish("", 125)
        }
    };
    if let Err(e) = std::env::set_current_dir(&cfg.cwd) {
        eprintln!("vm-init run: chdir {}: {e}", cfg.cwd);
        finish(&cfg.nonce, 125)
    }
    println!("\n{} START", cfg.nonce);
    let status = run(&cfg);
    finish(&cfg.nonce, status)
}

fn main() {
    match std::env::args().nth(1).as_deref() {
        Some("run") => run_from_unit(),
        Some("heartbeat") => return beat(),
        _ => {}
    }
    // The initramfs root: console first so every message is seen.
    let _ = mount("devtmpfs", "/dev", "devtmpfs", libc::MS_NOSUID, "");
    let _ = mount("proc", "/proc", "proc", 0, "");
    let _ = mount("sysfs", "/sys", "sysfs", 0, "");
    heartbeat();
    let (nonce, status) = match read_config("/config") {
        Ok(cfg) if cfg.systemd => {
            // Returns only if systemd could not be started.
            let e = systemd::boot(&cfg);
            eprintln!("vm-init: {e}");
            (cfg.nonce.clone(), 125)
        }
        Ok(cfg) => match setup(&cfg) {
            Ok(()) => {
                // Tells the host the guest booted: a crash before this line
                // is a boot failure, not the command's.
                println!("\n{} START", cfg.nonce);
                (cfg.nonce.clone(), run(&cfg))
            }
            Err(e) => {
                eprintln!("vm-init: {e}");
                (cfg.nonce.clone(), 125)
            }
        },
        Err(e) => {
            eprintln!("vm-init: {e}");
            (String::new(), 125)
        }
    };
    finish(&nonce, status)
}
