//! The attach plan: one declarative table of roles, each with candidate
//! kernel functions in order of preference (newest kernels first), resolved
//! against the running kernel.

use std::fmt;

use anyhow::{Result, bail};

use crate::kernel::KernelView;

/// How a role's programs are attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// fentry/fexit when the kernel allows, kprobes otherwise (per role).
    Auto,
    Fentry,
    Kprobe,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Auto => "auto",
            Mode::Fentry => "fentry",
            Mode::Kprobe => "kprobe",
        })
    }
}

/// Program names (in nofail-ebpf) implementing one role in each mode.
#[derive(Debug)]
pub struct Programs {
    pub fentry: &'static str,
    pub fexit: &'static str,
    pub kprobe: &'static str,
    pub kretprobe: &'static str,
}

#[derive(Debug)]
pub struct Role {
    pub name: &'static str,
    /// Candidate functions, first match wins.
    pub candidates: &'static [&'static str],
    pub required: bool,
    /// What the report loses when an optional role cannot be attached.
    pub lost: &'static str,
    pub programs: Programs,
}

pub const ROLES: &[Role] = &[Role {
    name: "vmalloc-core",
    // 6.9+ renamed it for memory allocation profiling.
    candidates: &["__vmalloc_node_range_noprof", "__vmalloc_node_range"],
    required: true,
    lost: "every vmalloc call",
    programs: Programs {
        fentry: "vmalloc_core_fentry",
        fexit: "vmalloc_core_fexit",
        kprobe: "vmalloc_core_kprobe",
        kretprobe: "vmalloc_core_kretprobe",
    },
}];

/// A role matched to a function of the running kernel.
#[derive(Debug)]
pub struct Resolved {
    pub role: &'static Role,
    pub function: &'static str,
}

/// Resolves every role; a missing required role is an error, a missing
/// optional one comes back in the second list with what is lost.
pub fn resolve(view: &KernelView) -> Result<(Vec<Resolved>, Vec<&'static Role>)> {
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for role in ROLES {
        match role.candidates.iter().find(|f| view.is_traceable(f)) {
            Some(function) => found.push(Resolved { role, function }),
            None if role.required => bail!(
                "kernel {} has none of the functions nofail needs for {} ({}): cannot trace it",
                view.release,
                role.name,
                role.candidates.join(", ")
            ),
            None => missing.push(role),
        }
    }
    Ok((found, missing))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::KernelView;

    fn view(functions: &[&str]) -> KernelView {
        KernelView {
            release: "test".into(),
            traceable: Some(functions.iter().map(|s| s.to_string()).collect()),
            ..Default::default()
        }
    }

    #[test]
    fn prefers_newest_name() {
        let (found, _) = resolve(&view(&[
            "__vmalloc_node_range_noprof",
            "__vmalloc_node_range",
        ]))
        .unwrap();
        assert_eq!(found[0].function, "__vmalloc_node_range_noprof");
    }

    #[test]
    fn falls_back_to_6_1_name() {
        let (found, _) = resolve(&view(&["__vmalloc_node_range"])).unwrap();
        assert_eq!(found[0].function, "__vmalloc_node_range");
    }

    #[test]
    fn missing_required_role_is_an_error() {
        let err = resolve(&view(&["kmalloc"])).unwrap_err().to_string();
        assert!(err.contains("vmalloc-core"), "{err}");
    }
}
