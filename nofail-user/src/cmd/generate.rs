// SPDX-License-Identifier: MIT OR Apache-2.0
//! `nofail generate-files --out DIR` (hidden): the man pages (one per
//! subcommand) and the bash, zsh and fish completions, made from the same
//! definitions the command line parses with, for the Debian package
//! (`cargo xtask deb`).

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use clap::CommandFactory as _;
use clap_complete::{Shell, generate_to};

#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    /// Directory to write `man8/` and `completions/` into.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(args: GenerateArgs) -> Result<()> {
    let man = args.out.join("man8");
    let completions = args.out.join("completions");
    for dir in [&man, &completions] {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let cmd = super::Cli::command();
    page(&man, "nofail", cmd.clone())?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        // clap names are 'static; this runs once, for packaging.
        let name: &'static str = format!("nofail-{}", sub.get_name()).leak();
        page(&man, name, sub.clone().name(name))?;
    }
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        generate_to(shell, &mut super::Cli::command(), "nofail", &completions)?;
    }
    Ok(())
}

/// `name.8`: section 8, system administration (nofail runs as root).
fn page(dir: &Path, name: &str, cmd: clap::Command) -> Result<()> {
    let mut text = Vec::new();
    clap_mangen::Man::new(cmd).section("8").render(&mut text)?;
    let path = dir.join(format!("{name}.8"));
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
}
