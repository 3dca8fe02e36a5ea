// SPDX-License-Identifier: MIT OR Apache-2.0
//! How `nofail inject` makes a `should_*` function fail: a kprobe calling
//! bpf_override_return, or fmod_ret (an fentry deciding, plus the fmod_ret
//! program of fmodret.rs). What each needs from the kernel, which one to
//! use, and attaching it.

use anyhow::{Context as _, Result, anyhow, bail};
use aya::{
    Btf, Ebpf,
    programs::{FEntry, KProbe},
};

use crate::{
    bpf::attach::InjectHook, bpf::fmodret, bpf::one_line, kernel::config::KernelConfig,
    kernel::view::KernelView, model::inject::InjectMode,
};

/// Options the kprobe override needs (BRIEF §3), besides each stage's
/// `InjectHook::option`.
pub const KPROBE_OPTIONS: [&str; 4] = [
    "CONFIG_KPROBES",
    "CONFIG_FUNCTION_ERROR_INJECTION",
    "CONFIG_BPF_KPROBE_OVERRIDE",
    "CONFIG_FAULT_INJECTION",
];

/// What `mode` (kprobe or fmod-ret) lacks on this kernel to fail the
/// `hooks`' functions, from its config when known and from what the kernel
/// shows otherwise. Empty: usable.
pub fn missing(
    mode: InjectMode,
    view: &KernelView,
    config: &KernelConfig,
    hooks: &[&InjectHook],
) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut add = |what: &str| {
        if !out.iter().any(|m| m == what) {
            out.push(what.to_string());
        }
    };
    match mode {
        InjectMode::Kprobe | InjectMode::Auto => {
            for o in KPROBE_OPTIONS {
                if config.enabled(o) == Some(false) {
                    add(o);
                }
            }
            if !view.kprobes {
                add("CONFIG_KPROBES");
            }
            // The verifier is asked only when the config does not already
            // say no: the probe loads nofail's object (maps, aya's feature
            // probes), which a refusal should not.
            if config.enabled("CONFIG_BPF_KPROBE_OVERRIDE") != Some(false)
                && probe_override_return().is_err()
            {
                add("CONFIG_BPF_KPROBE_OVERRIDE");
            }
            for hook in hooks {
                if !view.is_traceable(hook.function) {
                    add(hook.option);
                }
            }
        }
        InjectMode::FmodRet => {
            if config.enabled("CONFIG_FUNCTION_ERROR_INJECTION") == Some(false) {
                add("CONFIG_FUNCTION_ERROR_INJECTION");
            }
            if view.btf.is_none() {
                add("CONFIG_DEBUG_INFO_BTF");
            }
            for hook in hooks {
                if view.btf.is_some() && !view.has_btf_func(hook.function) {
                    add(&format!("{} in BTF", hook.function));
                }
            }
        }
    }
    out
}

/// Loads (never attaches) nofail-ebpf's `probe_override_return`, a kprobe
/// calling bpf_override_return(): the verifier refuses it without
/// CONFIG_BPF_KPROBE_OVERRIDE, whatever the config file says.
pub fn probe_override_return() -> Result<(), String> {
    let mut ebpf = Ebpf::load(crate::bpf::tracer::OBJECT).map_err(|e| one_line(&e))?;
    let prog: &mut KProbe = ebpf
        .program_mut("probe_override_return")
        .ok_or("probe program missing")?
        .try_into()
        .map_err(|e| one_line(&e))?;
    prog.load().map_err(|e| one_line(&e))
}

/// The mechanism to use: the one asked for, or for auto the kprobe
/// override, else fmod_ret. Fails in one sentence naming what is missing.
pub fn choose(
    requested: InjectMode,
    view: &KernelView,
    config: &KernelConfig,
    hooks: &[&InjectHook],
) -> Result<InjectMode> {
    let kprobe = missing(InjectMode::Kprobe, view, config, hooks);
    let fmod_ret = missing(InjectMode::FmodRet, view, config, hooks);
    let usable = |m: &Vec<String>| m.is_empty();
    let chosen = match requested {
        InjectMode::Kprobe if usable(&kprobe) => Some(InjectMode::Kprobe),
        InjectMode::FmodRet if usable(&fmod_ret) => Some(InjectMode::FmodRet),
        InjectMode::Auto if usable(&kprobe) => Some(InjectMode::Kprobe),
        InjectMode::Auto if usable(&fmod_ret) => Some(InjectMode::FmodRet),
        _ => None,
    };
    if let Some(mode) = chosen {
        return Ok(mode);
    }
    let lacks = match requested {
        InjectMode::Kprobe => format!("it lacks {}", kprobe.join(", ")),
        InjectMode::FmodRet => format!("fmod_ret needs {}", fmod_ret.join(", ")),
        InjectMode::Auto => format!(
            "it lacks {} (kprobe override) and {} (fmod_ret)",
            kprobe.join(", "),
            fmod_ret.join(", ")
        ),
    };
    bail!(
        "kernel {} cannot inject failures: {lacks}; use the test kernel (cargo xtask vm --kernel test -- nofail inject ...)",
        view.release
    )
}

/// What stays attached while injecting (kprobe and fentry programs live in
/// the `Ebpf`; fmod_ret links here). Dropping detaches.
#[derive(Default)]
pub struct Attached {
    _fmod_ret: Vec<fmodret::FmodRet>,
}

pub fn attach(ebpf: &mut Ebpf, mode: InjectMode, hooks: &[&InjectHook]) -> Result<Attached> {
    let mut out = Attached::default();
    let btf = match mode {
        InjectMode::FmodRet => Some(Btf::from_sys_fs().context("fmod_ret needs the kernel's BTF")?),
        _ => None,
    };
    for hook in hooks {
        let function = hook.function;
        match &btf {
            None => {
                let prog: &mut KProbe = ebpf
                    .program_mut(hook.kprobe)
                    .context("injection program missing")?
                    .try_into()?;
                prog.load()
                    .map_err(|e| anyhow!("cannot load {}: {}", hook.kprobe, one_line(&e)))?;
                prog.attach(function, 0)
                    .map_err(|e| anyhow!("cannot attach to {function}: {}", one_line(&e)))?;
            }
            Some(btf) => {
                let prog: &mut FEntry = ebpf
                    .program_mut(hook.decide)
                    .context("decision program missing")?
                    .try_into()?;
                prog.load(function, btf)
                    .map_err(|e| anyhow!("cannot load {}: {}", hook.decide, one_line(&e)))?;
                prog.attach()
                    .map_err(|e| anyhow!("cannot attach fentry to {function}: {}", one_line(&e)))?;
                out._fmod_ret
                    .push(fmodret::attach(ebpf, function, hook.fmod_ret)?);
            }
        }
    }
    Ok(out)
}
