// SPDX-License-Identifier: MIT OR Apache-2.0
//! Loads the embedded eBPF object and attaches it according to the plan.
//! Everything attached lives in `Tracer::ebpf`: dropping it (on any error
//! path, or at exit) detaches all programs.

use anyhow::{Context as _, Result, anyhow};
use aya::{
    Ebpf, EbpfLoader,
    programs::{FEntry, FExit, KProbe, ProgramError},
    sys::SyscallError,
};

use crate::{
    bpf::attach::{self, Resolved, Role},
    bpf::one_line,
    bpf::tpmode,
    kernel::symbols::Kallsyms,
    kernel::view::KernelView,
    model::{
        Mode,
        mode::{Attached, mode_of},
    },
};

pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/nofail"));

/// Load-time constants from the command line (aya globals).
#[derive(Debug, Clone, Copy)]
pub struct Globals {
    pub retry_window_ns: u64,
    /// `EVENT_*` bits (events.rs); 0: `--events` off, its paths removed.
    pub event_kinds: u32,
    pub events_rate: u64,
    pub stuck_after_ns: u64,
    /// `--what-if`: futile retries and wake delays (whatif.rs).
    pub what_if: bool,
}

impl Default for Globals {
    fn default() -> Self {
        Self {
            retry_window_ns: 1_000_000_000,
            event_kinds: 0,
            events_rate: 0,
            stuck_after_ns: u64::MAX,
            what_if: false,
        }
    }
}

pub struct Tracer {
    pub ebpf: Ebpf,
    pub attached: Vec<Attached>,
    /// Optional roles that could not be attached, with what is lost.
    pub warnings: Vec<String>,
    /// Where the programs that read vmalloc's `caller` from the stack
    /// find it (`caller_off` 0: unread); None without kallsyms.
    pub call_frame: Option<crate::kernel::callframe::CallFrame>,
}

impl Tracer {
    /// Loads the object, installs `filter`, then attaches every role.
    pub fn attach(
        view: &KernelView,
        kallsyms: Option<&Kallsyms>,
        mode: Mode,
        globals: &Globals,
        targets: &crate::bpf::filter::Targets,
    ) -> Result<Self> {
        let gfp_nofail = view.gfp_nofail();
        let cap = &targets.capacity;
        let text = kallsyms.and_then(tpmode::TextGlobals::from_kallsyms);
        let self_tgid = std::process::id();
        let what_if = globals.what_if as u32;
        // --max-inflight N: min(N, CALL_SLOTS) call slots in full mode
        // (nofail-ebpf/src/task.rs), N loops in tracepoint mode.
        let slots_used = cap.max_inflight.min(nofail_common::CALL_SLOTS);
        let mut loader = EbpfLoader::new();
        loader
            .map_max_entries("CALLERS", cap.max_callers)
            .map_max_entries("INFLIGHT", cap.max_inflight)
            // As many caller ranges as this run searches (filter::install):
            // the full table is a 520 KiB vmalloc area held all run, and
            // every vmalloc area held makes vmalloc calls dearer (the
            // benchmark, README).
            .map_max_entries(
                nofail_common::map_names::CALLER_RANGES,
                (targets.ranges.len() as u32).max(1),
            )
            .override_global("GFP_NOFAIL", &gfp_nofail, true)
            .override_global("RETRY_WINDOW_NS", &globals.retry_window_ns, true)
            .override_global("SELF_TGID", &self_tgid, true)
            .override_global("WHAT_IF", &what_if, true)
            .override_global("SLOTS_USED", &slots_used, true);
        crate::bpf::footprint::shrink_unused(
            &mut loader,
            mode,
            view.kprobes,
            globals.event_kinds != 0,
        );
        crate::bpf::events::apply_globals(
            &mut loader,
            &globals.event_kinds,
            &globals.events_rate,
            &globals.stuck_after_ns,
        );
        if let Some(text) = &text {
            text.apply(&mut loader);
        }
        let mut ebpf = loader.load(OBJECT).map_err(|e| match e {
            aya::EbpfError::MapError(_) if !is_root() => {
                anyhow!("cannot create nofail's BPF maps: run as root (sudo nofail ...)")
            }
            e => anyhow!("cannot load nofail's eBPF object: {}", one_line(&e)),
        })?;
        crate::bpf::filter::install(&mut ebpf, targets)?;
        let (attached, warnings) = match mode {
            Mode::Sentinel => attach_sentinel(&mut ebpf, view, text.as_ref())?,
            Mode::Tracepoint => (
                tpmode::attach(&mut ebpf, text.as_ref(), None)?,
                tpmode::warnings(),
            ),
            _ => match attach_functions(&mut ebpf, view, mode) {
                Ok(done) => done,
                // auto on a kernel that has no kprobes, or refuses them to
                // this process (KprobesRefused), and refuses or was not
                // asked for fentry for vmalloc's core (nothing attached
                // yet): tracepoints.
                Err((e, nothing_attached))
                    if nothing_attached
                        && mode == Mode::Auto
                        && (!view.kprobes || e.chain().any(|c| c.is::<KprobesRefused>())) =>
                {
                    let why = fallback_reason(&e);
                    let attached = tpmode::attach(&mut ebpf, text.as_ref(), Some(why.clone()))
                        .map_err(|t| anyhow!("{why}; {t}"))?;
                    (attached, tpmode::warnings())
                }
                Err((e, _)) => return Err(e),
            },
        };
        if targets.filter.min_size != 0 && attached.iter().any(|a| a.mode == Mode::Sentinel) {
            anyhow::bail!("--min-size needs each call's size, which sentinel mode cannot see");
        }
        if globals.event_kinds != 0
            && attached
                .iter()
                .any(|a| matches!(a.mode, Mode::Tracepoint | Mode::Sentinel))
        {
            anyhow::bail!(
                "--events needs the full mode (kprobe or fentry): the {} mode does not follow each call",
                mode_of(&attached)
            );
        }
        if targets.filter.chains != 0
            && attached
                .iter()
                .any(|a| matches!(a.mode, Mode::Tracepoint | Mode::Sentinel))
        {
            anyhow::bail!(
                "--chains needs the full mode (kprobe or fentry): the {} mode does not follow each call",
                mode_of(&attached)
            );
        }
        if targets.filter.nofail_only != 0 && attached.iter().any(|a| a.mode == Mode::Tracepoint) {
            // Dropping `ebpf` detaches what was attached.
            anyhow::bail!(
                "--nofail-only needs each call's gfp mask, which tracepoint mode cannot see"
            );
        }
        let mut tracer = Self {
            ebpf,
            attached,
            warnings,
            call_frame: text.as_ref().map(|t| t.frame),
        };
        if tracer.core_mode().is_some() {
            tracer.attach_like_core(view, attach::EVENT_WAIT_ROLES)?;
        }
        if globals.what_if {
            // Dropping the tracer detaches what was attached.
            tracer.attach_what_if(view)?;
        }
        Ok(tracer)
    }

    /// `--what-if`: the vmap-free role in the core's mode and the page
    /// free tracepoint. The full mode only: the other modes do not follow
    /// a call from its failure to its retry.
    fn attach_what_if(&mut self, view: &KernelView) -> Result<()> {
        if self.core_mode().is_none() {
            anyhow::bail!(
                "--what-if needs the full mode (kprobe or fentry): the {} mode does not follow a call from its failure to its retry",
                mode_of(&self.attached)
            );
        }
        self.attach_like_core(view, attach::WHAT_IF_ROLES)?;
        let name = attach::PAGE_FREE_PROGRAM;
        let tp: &mut aya::programs::RawTracePoint = program(&mut self.ebpf, name)?.try_into()?;
        tp.load()
            .map_err(|e| anyhow!("cannot load {name}: {}", one_line(&e)))?;
        tp.attach(attach::PAGE_FREE_TP).map_err(|e| {
            anyhow!(
                "cannot attach to raw tracepoint {}: {}",
                attach::PAGE_FREE_TP,
                one_line(&e)
            )
        })?;
        Ok(())
    }
}

/// perf_event_open, and so kprobes, refused to this process for lack of
/// privilege (EACCES, EPERM): Debian's and Ubuntu's kernels at
/// `kernel.perf_event_paranoid` 3 ask for CAP_SYS_ADMIN, which
/// nofail.service's drop-in takes away. Auto mode falls back to
/// tracepoints, which need no perf event.
#[derive(Debug)]
pub struct KprobesRefused {
    errno: String,
    paranoid: Option<String>,
}

impl std::fmt::Display for KprobesRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "kprobes refused (perf_event_open: {}", self.errno)?;
        if let Some(level) = &self.paranoid {
            write!(f, ", kernel.perf_event_paranoid {level}")?;
            if level == "3" {
                write!(f, ": Debian's and Ubuntu's kernels ask for CAP_SYS_ADMIN")?;
            }
        }
        write!(f, ")")
    }
}

impl std::error::Error for KprobesRefused {}

/// A kprobe attach error, typed KprobesRefused where it is one.
fn kprobe_error(e: ProgramError) -> anyhow::Error {
    match &e {
        ProgramError::SyscallError(SyscallError {
            call: "perf_event_open",
            io_error,
        }) if matches!(io_error.raw_os_error(), Some(libc::EACCES | libc::EPERM)) => {
            anyhow::Error::new(KprobesRefused {
                errno: io_error.to_string(),
                paranoid: std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
                    .ok()
                    .map(|s| s.trim().to_string()),
            })
        }
        _ => anyhow!(one_line(&e)),
    }
}

/// Why auto mode chose tracepoints, in one line: the kernel lacks kprobes
/// (or refuses them to this process) and refused fentry (with its errno),
/// or has no attachable vmalloc core.
fn fallback_reason(e: &anyhow::Error) -> String {
    if let Some(refused) = e.chain().find_map(|c| c.downcast_ref::<KprobesRefused>()) {
        return refused.to_string();
    }
    let text = format!("{e:#}");
    let fentry = text
        .split("fentry: ")
        .nth(1)
        .and_then(|t| t.split(';').next())
        .map(|t| t.trim_start_matches("refused: "));
    match fentry {
        Some(f) => format!("kprobes absent, fentry refused ({f})"),
        None => format!("kprobes absent, {}", text.lines().next().unwrap_or("")),
    }
}

/// Sentinel mode: kprobes on the slow paths only (attach::SENTINEL_ROLES),
/// resolved like the full mode's table; a missing optional role is a
/// warning naming what is lost.
fn attach_sentinel(
    ebpf: &mut Ebpf,
    view: &KernelView,
    text: Option<&tpmode::TextGlobals>,
) -> Result<(Vec<Attached>, Vec<String>)> {
    let Some(text) = text else {
        return Err(anyhow!(
            "sentinel mode needs kernel addresses from /proc/kallsyms (run as root)"
        ));
    };
    // Its one kprobe program tells warn_alloc from the sleeps by address.
    if !text.has_warn_alloc() {
        return Err(anyhow!(
            "sentinel mode needs warn_alloc's address, which /proc/kallsyms does not give"
        ));
    }
    if !view.kprobes {
        return Err(anyhow!(
            "sentinel mode needs kprobes, which this kernel lacks (try --mode tracepoint)"
        ));
    }
    let (plan, missing) = attach::resolve_table(view, attach::SENTINEL_ROLES)?;
    let mut attached = Vec::new();
    for Resolved { role, function } in plan {
        attach_kprobe(ebpf, view, role, function)
            .map_err(|e| e.context(format!("kprobe on {function} ({})", role.name)))?;
        attached.push(Attached {
            role: role.name.to_string(),
            function: function.to_string(),
            mode: Mode::Sentinel,
            fallback_reason: None,
        });
    }
    let warnings = missing_warnings(&missing)
        .into_iter()
        .chain(
            attach::SENTINEL_BLIND
                .iter()
                .map(|w| format!("sentinel mode does not count {w}")),
        )
        .collect();
    Ok((attached, warnings))
}

/// One warning per optional role this kernel lacks.
fn missing_warnings(missing: &[&Role]) -> Vec<String> {
    missing
        .iter()
        .map(|r| {
            format!(
                "{} not attachable on this kernel: {} not seen",
                r.name, r.lost
            )
        })
        .collect()
}

/// Attaches the function roles (fentry or kprobe); on error, also says
/// whether nothing was attached yet.
type Attachment = (Vec<Attached>, Vec<String>);
fn attach_functions(
    ebpf: &mut Ebpf,
    view: &KernelView,
    mode: Mode,
) -> std::result::Result<Attachment, (anyhow::Error, bool)> {
    let (plan, missing) = attach::resolve(view).map_err(|e| (e, true))?;
    let mut attached = Vec::new();
    for Resolved { role, function } in plan {
        let a =
            attach_role(ebpf, view, role, function, mode).map_err(|e| (e, attached.is_empty()))?;
        attached.push(a);
    }
    let warnings = missing_warnings(&missing);
    Ok((attached, warnings))
}

impl Tracer {
    /// `nofail inject`: the stage roles that scope the injector
    /// (attach::STAGE_ROLES), attached the way vmalloc's core was.
    pub fn attach_stages(&mut self, view: &KernelView) -> Result<()> {
        self.attach_like_core(view, attach::STAGE_ROLES)
    }

    /// How vmalloc's core is attached (kprobe or fentry); None in the
    /// tracepoint and sentinel modes.
    fn core_mode(&self) -> Option<Mode> {
        self.attached
            .iter()
            .find(|a| a.role == "vmalloc-core")
            .map(|a| a.mode)
    }

    /// Attaches every role of `roles` the way vmalloc's core was.
    fn attach_like_core(&mut self, view: &KernelView, roles: &'static [Role]) -> Result<()> {
        let core_mode = self.core_mode().context("vmalloc's core is not attached")?;
        let (plan, _) = attach::resolve_table(view, roles)?;
        for Resolved { role, function } in plan {
            let a = attach_role(&mut self.ebpf, view, role, function, core_mode)?;
            self.attached.push(a);
        }
        Ok(())
    }

    /// Counts every call (entry and exit hooks), rather than tracepoint
    /// mode's vmap areas and slow-path events or sentinel's slow paths.
    pub fn sees_every_call(&self) -> bool {
        !self
            .attached
            .iter()
            .any(|a| matches!(a.mode, Mode::Tracepoint | Mode::Sentinel))
    }

    /// Warnings, then one line per attach mode with the reason fentry was
    /// not used said once.
    pub fn announce(&self) {
        for w in &self.warnings {
            eprintln!("nofail: warning: {w}");
        }
        let mut groups: Vec<(String, Vec<String>)> = Vec::new();
        for a in &self.attached {
            let key = match &a.fallback_reason {
                Some(why) if a.mode == Mode::Tracepoint => format!("tracepoint; auto: {why}"),
                Some(why) => format!("{}; fentry {why}", a.mode),
                None => a.mode.to_string(),
            };
            let item = format!("{} {}", a.role, a.function);
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((_, items)) => items.push(item),
                None => groups.push((key, vec![item])),
            }
        }
        for (key, items) in groups {
            eprintln!("nofail: attached ({key}): {}", items.join(", "));
        }
    }
}

fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

fn attach_role(
    ebpf: &mut Ebpf,
    view: &KernelView,
    role: &'static Role,
    function: &'static str,
    mode: Mode,
) -> Result<Attached> {
    let attached = |mode, fallback_reason| Attached {
        role: role.name.to_string(),
        function: function.to_string(),
        mode,
        fallback_reason,
    };
    let fentry_err = match mode {
        Mode::Kprobe | Mode::Tracepoint | Mode::Sentinel => None,
        _ if role.programs.kprobe_only_role() => None,
        // Exact counts first: on a kernel that preempts BPF programs, fentry
        // loses events under load; kprobes do not. --mode fentry overrides.
        Mode::Auto if view.preempts_bpf() && view.kprobes => Some(format!(
            "not used: this kernel preempts BPF programs ({} preemption) and skips fentry runs under load",
            view.preempt.as_deref().unwrap_or("?")
        )),
        Mode::Fentry | Mode::Auto => match attach_fentry(ebpf, view, role, function) {
            Ok(()) => return Ok(attached(Mode::Fentry, None)),
            Err(e) if mode == Mode::Fentry => {
                return Err(e.context(format!("fentry on {function} ({})", role.name)));
            }
            Err(e) => Some(format!("refused: {}", one_line(&format!("{e:#}")))),
        },
    };
    match attach_kprobe(ebpf, view, role, function) {
        Ok(()) => Ok(attached(Mode::Kprobe, fentry_err)),
        Err(kprobe_err) => Err(match fentry_err {
            // Kept typed: auto mode falls back to tracepoints on it.
            Some(fentry_err) if kprobe_err.is::<KprobesRefused>() => {
                kprobe_err.context(format!("fentry {fentry_err}"))
            }
            Some(fentry_err) => anyhow!(
                "this kernel refuses nofail's tracing programs (fentry: {fentry_err}; kprobe: {}); \
                 run nofail in a VM instead: cargo xtask vm --kernel test -- nofail trace",
                one_line(&format!("{kprobe_err:#}"))
            ),
            None => kprobe_err.context(format!("kprobe on {function} ({})", role.name)),
        }),
    }
}

fn attach_fentry(ebpf: &mut Ebpf, view: &KernelView, role: &Role, function: &str) -> Result<()> {
    let btf = view
        .aya_btf()
        .context("no kernel BTF (/sys/kernel/btf/vmlinux)")?;
    if !view.has_btf_func(function) {
        return Err(anyhow!("{function} is not in the kernel's BTF"));
    }
    let result = (|| -> Result<()> {
        // Exit before entry: an entry seen without its exit would leave a
        // call that never ends in INFLIGHT; the reverse is only an orphan.
        if let Some(name) = role.programs.fexit {
            let exit: &mut FExit = program(ebpf, name)?.try_into()?;
            exit.load(function, btf)
                .map_err(|e| anyhow!(one_line(&e)))?;
            exit.attach().map_err(|e| anyhow!(one_line(&e)))?;
        }
        if let Some(name) = role.programs.fentry {
            let entry: &mut FEntry = program(ebpf, name)?.try_into()?;
            entry
                .load(function, btf)
                .map_err(|e| anyhow!(one_line(&e)))?;
            entry.attach().map_err(|e| anyhow!(one_line(&e)))?;
        }
        Ok(())
    })();
    if result.is_err() {
        // Half an entry/exit pair must not stay attached next to a fallback.
        if let Some(p) = role.programs.fentry.and_then(|n| ebpf.program_mut(n)) {
            let _ = <&mut FEntry>::try_from(p).map(|p| p.unload());
        }
        if let Some(p) = role.programs.fexit.and_then(|n| ebpf.program_mut(n)) {
            let _ = <&mut FExit>::try_from(p).map(|p| p.unload());
        }
    }
    result
}

fn attach_kprobe(ebpf: &mut Ebpf, view: &KernelView, role: &Role, function: &str) -> Result<()> {
    if !view.kprobes {
        return Err(anyhow!("kprobes not supported (no kprobe PMU)"));
    }
    // Return probe first, for the same reason as in attach_fentry.
    let names = [role.programs.kretprobe, role.programs.kprobe];
    // A program shared between roles (sentinel mode's) is loaded once, and
    // left loaded, with its other attachments, if this one fails.
    let mut loaded_here = Vec::new();
    let result = names
        .into_iter()
        .flatten()
        .try_for_each(|name| -> Result<()> {
            let probe: &mut KProbe = program(ebpf, name)?.try_into()?;
            if probe.fd().is_err() {
                probe.load().map_err(|e| anyhow!(one_line(&e)))?;
                loaded_here.push(name);
            }
            probe.attach(function, 0).map_err(kprobe_error)?;
            Ok(())
        });
    if result.is_err() {
        for name in loaded_here {
            if let Some(p) = ebpf.program_mut(name) {
                let _ = <&mut KProbe>::try_from(p).map(|p| p.unload());
            }
        }
    }
    result
}

fn program<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut aya::programs::Program> {
    ebpf.program_mut(name)
        .with_context(|| format!("program {name} missing from the eBPF object"))
}

#[cfg(test)]
mod tests {
    use super::OBJECT;
    use crate::bpf::{
        attach::{
            AREA_INJECT, EVENT_WAIT_ROLES, MAPPING_INJECT, ROLES, SENTINEL_ROLES, STAGE_ROLES,
            SYSCALL_EXIT, TRACEPOINT_ROLES,
        },
        one_line,
    };

    /// Every program the attach tables and the injectors name, and every
    /// map userspace opens, is in the object nofail embeds: a renamed
    /// program or map fails here, not at attach time on some kernel.
    #[test]
    fn object_has_every_program_the_tables_name() {
        let obj = aya_obj::Object::parse(OBJECT).expect("the embedded object parses");
        let mut named: Vec<&str> = ROLES
            .iter()
            .chain(STAGE_ROLES)
            .chain(EVENT_WAIT_ROLES)
            .chain(SENTINEL_ROLES)
            .flat_map(|r| {
                let p = &r.programs;
                [p.fentry, p.fexit, p.kprobe, p.kretprobe]
            })
            .flatten()
            .collect();
        named.extend(TRACEPOINT_ROLES.iter().map(|r| r.program));
        for hook in [&AREA_INJECT, &MAPPING_INJECT] {
            named.extend([hook.kprobe, hook.decide]);
        }
        named.push(SYSCALL_EXIT.2);
        assert!(named.len() > 20, "only {} programs named", named.len());
        let missing: Vec<&&str> = named
            .iter()
            .filter(|n| !obj.programs.contains_key(**n))
            .collect();
        assert!(
            missing.is_empty(),
            "programs not in the object: {missing:?}"
        );
        let missing: Vec<&&str> = nofail_common::map_names::ALL
            .iter()
            .filter(|n| !obj.maps.contains_key(**n))
            .collect();
        assert!(missing.is_empty(), "maps not in the object: {missing:?}");
    }

    /// The bytes of the ELF section `name` in a little-endian ELF64 object.
    fn elf_section<'a>(elf: &'a [u8], name: &str) -> Option<&'a [u8]> {
        let u16_at = |o: usize| u16::from_le_bytes(elf[o..o + 2].try_into().unwrap()) as usize;
        let u32_at = |o: usize| u32::from_le_bytes(elf[o..o + 4].try_into().unwrap()) as usize;
        let u64_at = |o: usize| u64::from_le_bytes(elf[o..o + 8].try_into().unwrap()) as usize;
        let (shoff, shentsize, shnum, shstrndx) =
            (u64_at(0x28), u16_at(0x3a), u16_at(0x3c), u16_at(0x3e));
        let header = |i: usize| shoff + i * shentsize;
        let strtab = u64_at(header(shstrndx) + 0x18);
        (0..shnum).find_map(|i| {
            let h = header(i);
            let n = strtab + u32_at(h);
            let end = n + elf[n..].iter().position(|&b| b == 0)?;
            (&elf[n..end] == name.as_bytes())
                .then(|| &elf[u64_at(h + 0x18)..u64_at(h + 0x18) + u64_at(h + 0x20)])
        })
    }

    /// The license the embedded eBPF object gives the kernel agrees with
    /// the eBPF crate's Cargo license (MIT OR GPL-2.0-only is "Dual MIT/GPL").
    #[test]
    fn embedded_object_license_matches_cargo() {
        assert_eq!(&OBJECT[..4], b"\x7fELF");
        let section = elf_section(OBJECT, "license").expect("no license section");
        assert_eq!(section, b"Dual MIT/GPL\0");
        let manifest = include_str!("../../../nofail-ebpf/Cargo.toml");
        assert!(
            manifest
                .lines()
                .any(|l| l.trim() == "license = \"MIT OR GPL-2.0-only\""),
            "nofail-ebpf/Cargo.toml license is not MIT OR GPL-2.0-only"
        );
    }

    #[test]
    fn one_line_drops_verifier_log() {
        let e = "the BPF_PROG_LOAD syscall failed. Verifier output:\n0: (b7) r0 = 0\nR1 invalid";
        assert_eq!(one_line(&e), "the BPF_PROG_LOAD syscall failed");
        let e = "load returned Permission denied (os error 13). Verifier output: 0: R1=ctx() R10=fp0\n1: x";
        assert_eq!(
            one_line(&e),
            "load returned Permission denied (os error 13)"
        );
    }
}
