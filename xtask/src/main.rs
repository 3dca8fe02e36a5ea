// SPDX-License-Identifier: MIT OR Apache-2.0
//! Project automation: toolchain setup, kernels, the QEMU runner, tests.

mod apt;
mod arch;
mod bench;
mod checkpatch;
mod ci;
mod cpio;
mod deb;
mod demo;
mod dist;
mod event_wait;
mod fstests;
mod fuzz;
mod gate;
mod guestroot;
mod kernels;
mod licenses;
mod setup;
mod suite;
mod tree;
mod trigger;
mod util;
mod variant;
mod vm;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what building and testing need (idempotent).
    Setup,
    /// Fetch Debian's stock kernels and build the test kernel (cached);
    /// `test+FILE` or `--patch FILE`: the test kernel with a patch,
    /// built incrementally from its tree.
    Kernel {
        /// Kernels to provide (a name, test+PATCH_FILE, or a kernel build
        /// tree DIR, checked); all four by default.
        #[arg(long)]
        kernel: Vec<kernels::KernelSpec>,
        /// Apply this patch to the test kernel (as --kernel test+FILE).
        #[arg(long, value_name = "FILE")]
        patch: Option<std::path::PathBuf>,
        /// Debian's kernels for this architecture.
        #[arg(long, value_enum, default_value_t)]
        arch: arch::Arch,
    },
    /// Boot a kernel in QEMU and run a command in it.
    Vm(vm::VmArgs),
    /// Boot a VM and show `nofail trace` on real vmalloc traffic.
    Demo {
        #[arg(long, value_enum, default_value = "test")]
        kernel: kernels::KernelName,
    },
    /// Build, then run the VM scenarios on one kernel.
    VmTest {
        /// A kernel name, test+PATCH_FILE (the scenarios of that patch),
        /// or DIR, a kernel build tree you built (the source tree or its
        /// O= directory, with arch/x86/boot/bzImage, Module.symvers and
        /// .config), written with a '/' (./linux, /src/linux): the trigger
        /// module is built against it, and scenarios needing an option its
        /// .config lacks are skipped, one line per option.
        #[arg(long, default_value = "test", value_name = "NAME|test+PATCH|DIR")]
        kernel: kernels::KernelSpec,
        /// Only scenarios whose name contains this, or one of these
        /// (comma-separated: `--filter sentinel,export`).
        #[arg(long)]
        filter: Option<String>,
        /// Run the scenarios that record testing/reports (test kernel)
        /// and copy their fresh reports there.
        #[arg(long)]
        bless: bool,
        /// With --kernel test+PATCH: every scenario of the stock test
        /// kernel too, but for those asserting what only the stock loop
        /// does, to show the patch breaks none.
        #[arg(long)]
        also_unpatched: bool,
        /// The guest's architecture: arm64 runs the stock kernels'
        /// scenarios on Debian's arm64 kernels (qemu-system-aarch64) with
        /// the static arm64 nofail.
        #[arg(long, value_enum, default_value_t)]
        arch: arch::Arch,
    },
    /// The stock-versus-patched gate `ci` runs, on two kernels you name:
    /// the endless NOFAIL mapping loop's report on the stock kernel
    /// against the fixed kernel's single retry (exit 0: pass, 1: fail).
    Gate {
        /// The kernel without the fix: a kernel name or a DIR.
        #[arg(long, value_name = "NAME|DIR")]
        stock: kernels::KernelSpec,
        /// The kernel with the fix: test+testing/patches/vmalloc-nofail-unwind-partial-map.patch,
        /// or a DIR you built with it.
        #[arg(long, value_name = "test+PATCH|DIR")]
        patched: kernels::KernelSpec,
    },
    /// The event-driven wait (testing/patches/vmalloc-nofail-event-wait.patch)
    /// against the stock loop: the timed exhaustion scenarios on the test
    /// kernel and on the patched one, side by side with the stall
    /// --what-if predicted from the stock run (exit 0: every check holds).
    EventWait,
    /// Tracing overhead: untraced vs nofail (kprobe, fentry, sentinel) vs
    /// bpftrace, counted (-icount) and wall time; or, with --compare, the
    /// untraced cost on two kernels.
    Bench {
        /// The kernel measured: test, test+PATCH_FILE, or a kernel build
        /// tree DIR (the trigger module is built against it).
        #[arg(long, default_value = "test", value_name = "test|test+PATCH|DIR")]
        kernel: kernels::KernelSpec,
        /// Compare two kernels instead, the base first (`--compare test
        /// --compare test+PATCH_FILE`): the untraced configuration only,
        /// counted boots only, alternating A B A B ... per run; the table
        /// is printed and goes to docs/benchmark-results.md's section
        /// "Kernel comparison".
        #[arg(long, value_name = "test|test+PATCH|DIR", conflicts_with = "kernel")]
        compare: Vec<kernels::KernelSpec>,
        /// Complete runs (two boots each); with more than one, the spread
        /// of the counted metric between them is printed and written to
        /// target/bench-runs.json. Every run's table goes to
        /// docs/benchmark-results.md. With --compare: counted boots per
        /// kernel.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10))]
        runs: u32,
        /// Counted (-icount) boots to run at once (each is one host
        /// thread; their count does not depend on the host's load). The
        /// wall-time boots always run one at a time.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=8))]
        jobs: u32,
        /// Idle threads the benchmark holds through every configuration,
        /// as a host's (their kernel stacks are vmalloc areas); 0 measures
        /// the bare guest.
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(0..=4000))]
        backdrop_threads: u32,
        /// The guest's architecture: arm64 measures the arm64 test kernel
        /// (qemu-system-aarch64) and writes docs/benchmark-results-arm64.md.
        /// Instructions differ per architecture: its numbers are not
        /// comparable with x86-64's.
        #[arg(long, value_enum, default_value_t)]
        arch: arch::Arch,
    },
    /// One static nofail (musl, stripped) in target/dist/, as a tarball
    /// with its sha256.
    Dist {
        #[arg(long, value_enum, default_value_t)]
        arch: arch::Arch,
    },
    /// The Debian package (static binary, man pages, completions,
    /// nofail.service), installed into a directory and checked.
    Deb {
        #[arg(long, value_enum, default_value_t)]
        arch: arch::Arch,
    },
    /// fstests on XFS in the VM: untraced, under `nofail trace` and under
    /// `nofail inject`, with the kernel's own counts beside nofail's
    /// (docs/fstests.md).
    Fstests(fstests::FstestsArgs),
    /// Build the cargo-fuzz targets (fuzz/) and run each for a bounded
    /// time or count, seeded from fuzz/seeds (docs/fuzzing.md).
    Fuzz(fuzz::FuzzArgs),
    /// The whole test suite: host checks, then the VM matrix.
    Ci {
        /// Kernels of the VM matrix; all four by default.
        #[arg(long, value_enum)]
        kernel: Vec<kernels::KernelName>,
    },
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Cmd::Setup => setup::ensure().map(|()| 0),
        Cmd::Kernel {
            kernel,
            patch,
            arch,
        } => kernel_cmd(kernel, patch, arch),
        Cmd::Vm(args) => vm::cmd(args),
        Cmd::Demo { kernel } => demo::run(kernel),
        Cmd::Ci { kernel } => ci::run(kernel),
        Cmd::Dist { arch } => dist::build_for(arch).map(|_| 0),
        Cmd::Deb { arch } => deb::build_for(arch).map(|_| 0),
        Cmd::Fstests(args) => fstests::cmd(args),
        Cmd::Fuzz(args) => fuzz::run(args),
        Cmd::Bench {
            kernel,
            compare,
            runs,
            jobs,
            backdrop_threads,
            arch,
        } if compare.is_empty() => bench::run(
            &kernels::KernelSpec { arch, ..kernel },
            runs,
            jobs,
            backdrop_threads,
        ),
        Cmd::Bench {
            compare,
            runs,
            jobs,
            backdrop_threads,
            arch,
            ..
        } => bench::compare(
            &compare
                .into_iter()
                .map(|k| kernels::KernelSpec { arch, ..k })
                .collect::<Vec<_>>(),
            runs,
            jobs,
            backdrop_threads,
        ),
        Cmd::VmTest {
            kernel,
            filter,
            bless,
            also_unpatched,
            arch,
        } => ci::vm_test(
            kernels::KernelSpec { arch, ..kernel },
            filter,
            bless,
            also_unpatched,
        ),
        Cmd::Gate { stock, patched } => gate::run(&stock, &patched),
        Cmd::EventWait => event_wait::run(),
    };
    match result {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn kernel_cmd(
    specs: Vec<kernels::KernelSpec>,
    patch: Option<std::path::PathBuf>,
    arch: arch::Arch,
) -> anyhow::Result<i32> {
    use kernels::{KernelName, KernelSpec};
    let mut specs = if specs.is_empty() {
        match patch {
            // A patch alone means the test kernel.
            Some(_) => vec![KernelSpec::plain(KernelName::Test)],
            None => KernelName::ALL.map(KernelSpec::plain).to_vec(),
        }
    } else {
        specs
    };
    if let Some(patch) = patch {
        for spec in &mut specs {
            if spec.name != KernelName::Test || spec.patch.is_some() {
                anyhow::bail!("--patch applies to --kernel test only, not {spec}");
            }
            spec.patch = Some(patch.clone());
        }
    }
    setup::ensure()?;
    for mut spec in specs {
        spec.arch = arch;
        let k = crate::variant::ensure_spec(&spec)?;
        println!("{:<14} {:<28} {}", k.label, k.release, k.image.display());
    }
    Ok(0)
}
