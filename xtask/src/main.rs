//! `cargo xtask`: setup, build, run, lab, test (host and VM), bench.
//!
//! Every command it runs is printed first as `+ cmd args`.

mod bench;
mod bench_deps;
mod bpf_linker;
mod cargo;
mod host_deps;
mod run;
mod setup;
mod test;
mod toolchain;
mod util;
mod vm;
mod vm_deps;

use std::ffi::OsString;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Build, run and test mvnet"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Check and install what building and testing need: the nightly
    /// toolchain with rust-src, bpf-linker (built against the nightly's LLVM),
    /// and for the VM tests qemu, a Debian kernel, tools and virtme-ng.
    Setup {
        /// Skip the VM test prerequisites.
        #[arg(long)]
        host_only: bool,
    },
    /// Build the workspace's default members (the eBPF programs are built by
    /// macvlan-user's build script).
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Build mvnet and run `mvnet ARGS`; without ARGS, run the smoke lab
    /// (`mvnet lab smoke`, as root).
    Run {
        #[arg(long)]
        release: bool,
        /// Arguments for mvnet.
        #[arg(last = true)]
        args: Vec<OsString>,
    },
    /// Lab maintenance.
    Lab {
        #[command(subcommand)]
        command: LabCmd,
    },
    /// Run the unit tests, the host integration tests and the VM tests
    /// (needs root). Arguments after `--` go to every test binary.
    Test {
        /// Skip the VM tests.
        #[arg(long, conflicts_with = "vm_only")]
        host_only: bool,
        /// Run only the VM tests.
        #[arg(long)]
        vm_only: bool,
        /// Test filters and test-harness options.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Run benchmarks against a release build of mvnet (needs root).
    ///
    /// Without NAMES, all of them. Known: control-plane (mvnet network
    /// connect/disconnect against the CNI macvlan plugin's ADD/DEL, and
    /// mvnet run/stop; installs containernetworking-plugins when missing).
    /// Prints the measurements; fails only if an operation failed.
    Bench {
        /// Benches to run (default: all).
        names: Vec<String>,
    },
    /// Boot the VM on each of its kernels in turn (MVNET_VM_KERNEL picks)
    /// and run a shell command there (as root, in the current directory);
    /// exits with the first non-zero status.
    #[command(hide = true)]
    VmExec {
        /// The command (joined with spaces and run by /bin/sh).
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
}

#[derive(Subcommand)]
enum LabCmd {
    /// Remove network namespaces and links left by killed lab or test runs
    /// (`mvnet lab clean`).
    Clean,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli.command) {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            // Innermost cause first: outer layers mostly say how to fix it.
            let mut chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            chain.reverse();
            eprintln!("error: {}", chain.join("\n"));
            ExitCode::FAILURE
        }
    }
}

fn dispatch(command: Cmd) -> Result<i32> {
    match command {
        Cmd::Setup { host_only } => {
            setup::setup(host_only)?;
            host_deps::ensure_tmux()?;
            // The host tests' tools, and Docker and busybox for the parity
            // suite and the Docker tests.
            host_deps::ensure()?;
            host_deps::ensure_kubernetes_validate()?;
            Ok(0)
        }
        Cmd::Build { release } => {
            let env = setup::setup(true)?;
            let mut cmd = env.cargo();
            cmd.arg("build");
            if release {
                cmd.arg("--release");
            }
            util::run(&mut cmd)?;
            // Finds mvnet among what was just built, and links the CNI
            // plugin statically (see `cargo::build_mvnet`).
            cargo::build_mvnet(&env, release)?;
            Ok(0)
        }
        Cmd::Run { release, args } => run::run(release, args),
        Cmd::Lab {
            command: LabCmd::Clean,
        } => run::lab_clean(),
        Cmd::Test {
            host_only,
            vm_only,
            args,
        } => test::test(test::Opts {
            host_only,
            vm_only,
            args,
        }),
        Cmd::Bench { names } => bench::bench(&names),
        Cmd::VmExec { command } => {
            let env = setup::setup(false)?;
            let vm = env.vm.expect("setup prepared the VM part");
            vm.exec_on_each(&command.join(" "), &std::env::current_dir()?)
        }
    }
}
