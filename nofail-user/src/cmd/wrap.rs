// SPDX-License-Identifier: MIT OR Apache-2.0
//! `nofail trace|inject [FLAGS] -- COMMAND [ARGS...]`: the command runs
//! once every program counts, the run ends when it exits, and nofail exits
//! with its status (as `perf stat -- cmd`, `strace -- cmd`, `bpftrace -c`).
//! The command gets a process group of its own (and the terminal, if
//! nofail had it), so SIGINT and SIGTERM sent to nofail reach it through
//! nofail, once, and nofail writes its outputs after the command is gone.

use std::{
    os::unix::{fs::PermissionsExt as _, process::ExitStatusExt as _},
    path::{Path, PathBuf},
    process::ExitStatus,
};

use anyhow::{Context as _, Result};

use crate::{cmd::signals::Stop, kernel::cgroup::CommandCgroup, model::filter::CgroupScope};

#[derive(Debug, Clone, clap::Args)]
pub struct CommandArgs {
    /// Count only calls made by COMMAND and its descendants: nofail puts
    /// COMMAND in a cgroup v2 of its own (created below nofail's cgroup,
    /// removed afterwards) and the kernel programs keep only calls from
    /// tasks in it or below it. Work the kernel does on their behalf in
    /// kworkers and other kernel threads (deferred frees, writeback, XFS's
    /// log and inodegc workers) runs outside it and is not counted.
    #[arg(long, requires = "command", conflicts_with = "pid")]
    pub command_only: bool,
    /// Run COMMAND (with ARGS) once every program counts, stop when it
    /// exits, write every output, and exit with its status (128+N if
    /// signal N ended it; 127 if it cannot be found, 126 if it cannot be
    /// run). SIGINT and SIGTERM to nofail go to COMMAND's process group
    /// first. A failed gate exits 3 only if COMMAND succeeded.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// nofail could not start the command: exits with `code` (127 not found,
/// 126 not runnable, as shells and timeout(1) do) after one line.
#[derive(Debug)]
pub struct CannotRun {
    pub code: u8,
    pub why: String,
}

impl std::fmt::Display for CannotRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.why)
    }
}

impl std::error::Error for CannotRun {}

/// A command checked and (with `--command-only`) given its cgroup, before
/// anything is attached.
pub struct Prepared {
    program: PathBuf,
    argv: Vec<String>,
    cgroup: Option<CommandCgroup>,
}

impl CommandArgs {
    /// None without a command. The program is looked up now, so a typo
    /// fails before anything is loaded.
    pub fn prepare(&self) -> Result<Option<Prepared>> {
        let Some(name) = self.command.first() else {
            return Ok(None);
        };
        let program = resolve(name, std::env::var_os("PATH").as_deref())?;
        let cgroup = self.command_only.then(CommandCgroup::create).transpose()?;
        Ok(Some(Prepared {
            program,
            argv: self.command.clone(),
            cgroup,
        }))
    }
}

/// `name` as execvp(3) finds it: a path if it has a '/', else the first
/// executable file of that name in `PATH`.
fn resolve(name: &str, path: Option<&std::ffi::OsStr>) -> Result<PathBuf> {
    let runnable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    let found = if name.contains('/') {
        let p = PathBuf::from(name);
        p.exists().then_some(p)
    } else {
        std::env::split_paths(path.unwrap_or_default())
            .map(|dir| dir.join(name))
            .find(|p| runnable(p))
    };
    match found {
        Some(p) if runnable(&p) => Ok(p),
        Some(p) => Err(CannotRun {
            code: 126,
            why: format!("cannot run {}: not an executable file", p.display()),
        }
        .into()),
        None => Err(CannotRun {
            code: 127,
            why: format!("cannot run {name}: command not found"),
        }
        .into()),
    }
}

impl Prepared {
    /// What the kernel filter keeps with `--command-only`.
    pub fn scope(&self) -> Option<CgroupScope> {
        self.cgroup.as_ref().map(|c| CgroupScope {
            id: c.id,
            level: c.level,
            path: c.dir.display().to_string(),
        })
    }

    pub fn describe(&self) -> String {
        self.argv.join(" ")
    }

    /// Starts the command: a process group of its own, the terminal's
    /// foreground if nofail held it, and its cgroup, all before exec.
    pub fn spawn(self) -> Result<Running> {
        let terminal = Terminal::held();
        let mut cmd = tokio::process::Command::new(&self.program);
        cmd.arg0(&self.argv[0]).args(&self.argv[1..]);
        let cgroup = self.cgroup;
        let procs = cgroup.as_ref().map(CommandCgroup::procs);
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setpgid(0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if terminal {
                    Terminal::give_to(libc::getpid());
                }
                if let Some(procs) = &procs {
                    crate::kernel::cgroup::enter(procs)?;
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| CannotRun {
            code: if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            },
            why: format!("cannot run {}: {e}", self.argv[0]),
        })?;
        let pid = child.id().context("the command has no pid")? as i32;
        // Both sides set the group and the terminal, so neither order of
        // the parent and the child running first leaves a gap (as shells do).
        unsafe { libc::setpgid(pid, pid) };
        if terminal {
            Terminal::give_to(pid);
        }
        Ok(Running {
            child,
            pid,
            terminal,
            status: None,
            _cgroup: cgroup,
        })
    }
}

/// The controlling terminal on stdin, when nofail's process group is in
/// its foreground: the command gets it (so Ctrl-C and reads at the
/// terminal go to the command) and nofail takes it back at the end.
struct Terminal;

impl Terminal {
    fn held() -> bool {
        unsafe { libc::isatty(0) == 1 && libc::tcgetpgrp(0) == libc::getpgrp() }
    }

    /// tcsetpgrp from a background group stops the caller with SIGTTOU
    /// unless it is ignored; ignored around the call, then restored.
    fn give_to(pgid: i32) {
        unsafe {
            let old = libc::signal(libc::SIGTTOU, libc::SIG_IGN);
            libc::tcsetpgrp(0, pgid);
            libc::signal(libc::SIGTTOU, old);
        }
    }
}

/// The command, running.
pub struct Running {
    child: tokio::process::Child,
    /// Its pid, also its process group.
    pid: i32,
    terminal: bool,
    status: Option<ExitStatus>,
    /// Removed (if empty) when the run is over.
    _cgroup: Option<CommandCgroup>,
}

impl Running {
    /// Until the command exits; SIGINT and SIGTERM to nofail meanwhile go
    /// to the command's process group, and the run goes on until it exits.
    pub async fn exited(&mut self, stop: &mut Stop) -> Result<()> {
        if self.status.is_some() {
            return std::future::pending().await;
        }
        loop {
            tokio::select! {
                status = self.child.wait() => {
                    self.status = Some(status?);
                    if self.terminal {
                        Terminal::give_to(unsafe { libc::getpgrp() });
                    }
                    return Ok(());
                }
                signal = stop.signalled() => {
                    eprintln!(
                        "nofail: {} sent to the command (pid {}); the report follows when it exits",
                        if signal == libc::SIGINT { "SIGINT" } else { "SIGTERM" },
                        self.pid
                    );
                    unsafe { libc::kill(-self.pid, signal) };
                }
            }
        }
    }

    /// The exit status nofail passes on: the command's code, or 128+N for
    /// signal N (as shells report it).
    pub fn code(&self) -> Option<u8> {
        self.status.map(status_code)
    }
}

fn status_code(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(code), _) => code as u8,
        (None, Some(signal)) => (128 + signal).min(255) as u8,
        (None, None) => 255,
    }
}

impl Drop for Running {
    /// nofail ending on an error with the command still running: the
    /// command is stopped too (SIGTERM to its group), not left behind
    /// unobserved.
    fn drop(&mut self) {
        if self.status.is_none() && matches!(self.child.try_wait(), Ok(None)) {
            eprintln!(
                "nofail: stopping the command (pid {}, SIGTERM): nofail is ending before it",
                self.pid
            );
            unsafe { libc::kill(-self.pid, libc::SIGTERM) };
        }
        if self.terminal {
            Terminal::give_to(unsafe { libc::getpgrp() });
        }
    }
}

/// What ends a run of `trace` or `inject`: a signal, or the wrapped
/// command exiting.
pub enum Ending<'a> {
    Signal(&'a mut Stop),
    Command(&'a mut Running, &'a mut Stop),
}

impl Ending<'_> {
    pub async fn reached(&mut self) -> Result<()> {
        match self {
            Self::Signal(stop) => {
                stop.signalled().await;
                Ok(())
            }
            Self::Command(running, stop) => running.exited(stop).await,
        }
    }
}

/// The exit status of a wrapped run: the command's, unless it succeeded
/// and the gate failed (3, as `nofail report`); the gate's lines are
/// printed either way.
pub fn finish(command: Option<u8>, gate: Result<()>) -> Result<u8> {
    match (command, gate) {
        (None, gate) => gate.map(|()| 0),
        (Some(0), gate) => gate.map(|()| 0),
        (Some(code), Ok(())) => Ok(code),
        (Some(code), Err(err)) => {
            if let Some(crate::cmd::gate::GateFailed(violations)) = err.downcast_ref() {
                for v in violations {
                    eprintln!("nofail: gate: {v}");
                }
            }
            Ok(code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_as_shells_give_them() {
        assert_eq!(status_code(ExitStatus::from_raw(0)), 0);
        assert_eq!(status_code(ExitStatus::from_raw(42 << 8)), 42);
        // Killed by SIGKILL (9) and SIGTERM (15).
        assert_eq!(status_code(ExitStatus::from_raw(9)), 137);
        assert_eq!(status_code(ExitStatus::from_raw(15)), 143);
    }

    #[test]
    fn commands_are_found_as_execvp_finds_them() {
        let path = std::ffi::OsString::from("/nonexistent:/bin:/usr/bin");
        assert!(resolve("sh", Some(&path)).unwrap().ends_with("sh"));
        let err = resolve("no-such-command-nofail", Some(&path)).unwrap_err();
        let e = err.downcast_ref::<CannotRun>().unwrap();
        assert_eq!(
            (e.code, e.why.as_str()),
            (127, "cannot run no-such-command-nofail: command not found")
        );
        let e = resolve("./no/such/file", Some(&path)).unwrap_err();
        assert_eq!(e.downcast_ref::<CannotRun>().unwrap().code, 127);
        // A file that is not executable.
        let file = std::env::temp_dir().join(format!("nofail-noexec-{}", std::process::id()));
        std::fs::write(&file, "").unwrap();
        let e = resolve(file.to_str().unwrap(), Some(&path)).unwrap_err();
        std::fs::remove_file(&file).unwrap();
        assert_eq!(e.downcast_ref::<CannotRun>().unwrap().code, 126);
    }

    #[test]
    fn the_command_status_wins_over_the_gate() {
        let gate = || Err(crate::cmd::gate::GateFailed(vec!["x".into()]).into());
        assert_eq!(finish(Some(1), gate()).unwrap(), 1);
        assert!(finish(Some(0), gate()).is_err());
        assert!(finish(None, gate()).is_err());
        assert_eq!(finish(Some(42), Ok(())).unwrap(), 42);
        assert_eq!(finish(None, Ok(())).unwrap(), 0);
    }
}
