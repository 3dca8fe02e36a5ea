// SPDX-License-Identifier: MIT OR Apache-2.0
//! The kernel side from userspace: loading the embedded object (and what
//! it leaves in the kernel), the attach plan, the injectors and the fmod_ret program, bpf(2), program
//! statistics, the filter maps, and reading the maps into the model.

pub mod asm;
pub mod attach;
pub mod events;
pub mod filter;
pub mod fmodret;
pub mod footprint;
pub mod injector;
pub mod maps;
pub mod progstats;
pub mod session;
pub mod sys;
pub mod textread;
pub mod tpmode;
pub mod tracer;

/// First line of an error chain, without the verifier log aya appends.
pub fn one_line(err: &dyn std::fmt::Display) -> String {
    let text = err.to_string();
    if std::env::var_os("NOFAIL_DEBUG").is_some() && text.contains("Verifier output") {
        eprintln!("nofail: debug: {text}");
    }
    let first = text.lines().next().unwrap_or_default().trim();
    match first.find(". Verifier output:") {
        Some(i) => first[..i].to_string(),
        None => first.to_string(),
    }
}
