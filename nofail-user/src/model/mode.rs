// SPDX-License-Identifier: MIT OR Apache-2.0
//! How calls were followed: the attach mode asked for, each role as it
//! ended up attached (the report's `mode` and `attached`), and what that
//! and the run's flags let it count.

use std::fmt;

/// How a role's programs are attached.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// fentry/fexit when the kernel allows, kprobes otherwise (per role).
    Auto,
    Fentry,
    Kprobe,
    /// Raw tracepoints, for kernels without kprobes and fentry (auto's
    /// fallback): vmap areas, NOFAIL retry sleeps per stage, slept time; no
    /// latency, NULLs, open-coded retries or injection.
    Tracepoint,
    /// Slow paths only, for always-on use: failures, NULLs, NOFAIL retries
    /// and sleeps, open-coded retries; a call that does not fail runs nothing,
    /// so calls, latency and page-table levels are not counted. Follows up
    /// to 256 tasks in a slow path at once.
    Sentinel,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Auto => "auto",
            Mode::Fentry => "fentry",
            Mode::Kprobe => "kprobe",
            Mode::Tracepoint => "tracepoint",
            Mode::Sentinel => "sentinel",
        })
    }
}

/// One role as it ended up attached.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Attached {
    pub role: String,
    pub function: String,
    pub mode: Mode,
    /// Why fentry was not used, when auto mode fell back to kprobes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback_reason: Option<String>,
}

/// "kprobe", "fentry", or "mixed" across the attached roles.
/// The mode calls were followed in: vmalloc's core's (the slow-path roles
/// are kprobes in every mode), else the one all roles share.
pub fn mode_of(attached: &[Attached]) -> String {
    if let Some(core) = attached.iter().find(|a| a.role == "vmalloc-core") {
        return core.mode.to_string();
    }
    let mut modes: Vec<String> = attached.iter().map(|a| a.mode.to_string()).collect();
    modes.dedup();
    match modes.as_slice() {
        [] => "none".into(),
        [one] => one.clone(),
        _ => "mixed".into(),
    }
}

/// How a run followed vmalloc calls, which decides what it could count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Follow {
    /// kprobe or fentry on vmalloc's core: every call's entry and exit.
    Full,
    /// Raw tracepoints: vmap areas and retry sleeps, the caller read from
    /// the stack; no call's entry, exit or gfp mask.
    Tracepoint,
    /// The slow paths only: failures, NULLs and sleeps, the caller read
    /// from the stack; a call that does not fail runs nothing.
    Sentinel,
}

/// What a run could count: how it followed calls and the flags that add
/// counts, each of which only the full mode can follow (`--what-if`,
/// `--chains`, `nofail inject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sees {
    pub follow: Follow,
    pub what_if: bool,
    pub chains: bool,
    pub injection: bool,
}

/// What a count needs the run to have seen; outputs leave out what a run
/// could not count rather than show it as 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// Counted in every mode.
    Nothing,
    /// Calls counted: at their entry (full) or their vmap area (tracepoint).
    Calls,
    /// Each call's entry and exit (full mode): gfp mask, latency, per-call
    /// histograms, page-table levels, an exit or entry missed.
    EveryCall,
    /// Calls returning to their caller: NULLs and open-coded retries
    /// (full and sentinel modes).
    Returns,
    /// Calls in progress tracked (full and tracepoint modes).
    InFlight,
    /// The caller read from the stack (tracepoint and sentinel modes).
    StackCaller,
    /// `--what-if`.
    WhatIf,
    /// `--chains`.
    Chains,
    /// `nofail inject`.
    Injection,
}

impl Sees {
    /// Whether the run could count what `needs` says.
    pub fn counts(&self, needs: Needs) -> bool {
        use Follow::*;
        match needs {
            Needs::Nothing => true,
            Needs::Calls | Needs::InFlight => self.follow != Sentinel,
            Needs::EveryCall => self.follow == Full,
            Needs::Returns => self.follow != Tracepoint,
            Needs::StackCaller => self.follow != Full,
            Needs::WhatIf => self.follow == Full && self.what_if,
            Needs::Chains => self.follow == Full && self.chains,
            Needs::Injection => self.follow == Full && self.injection,
        }
    }
}
