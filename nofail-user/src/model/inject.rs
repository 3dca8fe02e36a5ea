// SPDX-License-Identifier: MIT OR Apache-2.0
//! Injection as the report records it: the rule, the kernel's tallies of
//! eligible and failed allocations, and how each caller coped.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use nofail_common::{STAGE_AREA, STAGE_MAPPING};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// `should_failslab` inside `__get_vm_area_node`.
    Area,
    /// `should_fail_alloc_page` inside the page-table mapping function.
    Mapping,
}

impl Stage {
    /// The `STAGE_*` bit of the kernel-side rule.
    pub fn bit(self) -> u32 {
        match self {
            Stage::Area => STAGE_AREA,
            Stage::Mapping => STAGE_MAPPING,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InjectMode {
    /// kprobe override where the kernel allows it (exact under preemption),
    /// fmod_ret otherwise.
    Auto,
    /// kprobe + bpf_override_return (CONFIG_BPF_KPROBE_OVERRIDE).
    Kprobe,
    /// fentry decision + fmod_ret (CONFIG_FUNCTION_ERROR_INJECTION and
    /// BTF; no kprobe override needed).
    FmodRet,
}

impl std::fmt::Display for InjectMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            InjectMode::Auto => "auto",
            InjectMode::Kprobe => "kprobe",
            InjectMode::FmodRet => "fmod-ret",
        })
    }
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct InjectCounts {
    pub eligible: u64,
    pub injected: u64,
    pub skipped_budget: u64,
    pub skipped_guard: u64,
    pub skipped_selection: u64,
}

/// How one caller coped with the failures it was given.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Behaviour {
    pub caller: String,
    pub nofail: bool,
    pub injected: u64,
    pub calls: u64,
    pub area_retries: u64,
    pub mapping_retries: u64,
    pub sleeps: u64,
    pub stall_ms: f64,
    pub max_stall_ms: f64,
    pub still_looping: u64,
    pub null_returned: u64,
    /// Version 1 called these `retried_by_hand`, `retry_sleeps_by_hand`.
    #[serde(alias = "retried_by_hand")]
    pub open_coded_retries: u64,
    #[serde(alias = "retry_sleeps_by_hand")]
    pub open_coded_retry_sleeps: u64,
    /// NULL returns that became a system call failing with -ENOMEM, and
    /// which system calls.
    pub error_to_userspace: u64,
    pub syscalls: BTreeMap<String, u64>,
    /// NULL returns neither retried open-coded nor handed to userspace within
    /// the window.
    pub absorbed: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InjectRuleView {
    /// The mechanism used: "kprobe" or "fmod-ret".
    pub mechanism: InjectMode,
    pub stages: Vec<Stage>,
    pub probability: f64,
    pub every: Option<u32>,
    pub times: Option<u64>,
    pub fail_first: Option<u32>,
    pub max_consecutive: u32,
    pub dry_run: bool,
}

#[cfg(test)]
impl InjectRuleView {
    /// Tests' rule: always fail the area stage, by `mechanism`.
    pub fn always_area(mechanism: InjectMode) -> Self {
        Self {
            mechanism,
            stages: vec![Stage::Area],
            probability: 1.0,
            every: None,
            times: None,
            fail_first: None,
            max_consecutive: 50,
            dry_run: false,
        }
    }
}

/// What `nofail inject` did and how each caller coped.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Injection {
    pub rule: InjectRuleView,
    pub counts: InjectCounts,
    pub behaviour: Vec<Behaviour>,
}
