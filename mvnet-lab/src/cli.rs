//! The `mvnet-lab` command line, run by `mvnet lab …` and `mvnet pktgen …`
//! (mvnet passes its arguments through), so its usage reads `mvnet …`.
use std::{io::Write as _, ops::RangeInclusive, path::PathBuf};

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use mvnet::{model::XdpMode, store};

use crate::{
    lab::{self, smoke},
    traffic::{self, limits},
};

#[derive(Parser)]
#[command(
    name = "mvnet-lab",
    bin_name = "mvnet",
    version,
    about = "mvnet's lab topologies and traffic runs (run through `mvnet lab` and `mvnet pktgen`)"
)]
pub struct Cli {
    /// State directory (default /var/lib/mvnet, or $MVNET_STATE_DIR).
    #[arg(long, global = true)]
    state_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Send exact frame counts to the endpoints (plus unknown MACs and wrong
    /// VLANs) with the kernel's pktgen or an AF_PACKET TX ring, and hold
    /// what was sent against the classifier's and the kernel's counters;
    /// exits 1 unless every count is exact.
    Pktgen(PktgenArgs),
    /// Throwaway lab topologies in network namespaces.
    Lab {
        #[command(subcommand)]
        command: LabCommand,
    },
}

#[derive(Args)]
struct PktgenArgs {
    /// Only endpoints of this network (repeatable; default all, on one root).
    #[arg(long)]
    network: Vec<String>,
    /// The sending device (default wire0 when --netns is a lab namespace).
    #[arg(long)]
    dev: Option<String>,
    /// Network namespace of the sending device (name under /run/netns or a path).
    #[arg(long)]
    netns: Option<String>,
    /// auto (pktgen if the kernel has it), pktgen, or fallback (AF_PACKET TX ring).
    #[arg(long, default_value = "auto", value_parser = parse_generator)]
    generator: traffic::Generator,
    /// Frames per flow (1 to 1000000000).
    #[arg(long, default_value_t = 1000, value_parser = in_range(limits::COUNT))]
    count: u64,
    /// Frames per second over all flows (0: as fast as the generator goes;
    /// at most 100000000).
    #[arg(long, default_value_t = 0, value_parser = in_range(limits::RATE))]
    rate: u64,
    /// With --rate: send for this many seconds (0.001 to 3600; sets --count).
    #[arg(long, value_parser = limits::parse_duration)]
    duration: Option<f64>,
    /// Frame length in bytes without FCS (60 to 1514).
    #[arg(long, default_value_t = 60, value_parser = in_range(limits::SIZE))]
    size: u64,
    /// pktgen kernel threads (kpktgend_0..N-1) to spread the flows over
    /// (1 to 1024, and at most one per CPU).
    #[arg(long, default_value_t = 1, value_parser = in_range(limits::THREADS))]
    threads: u64,
    /// Flows to MACs no endpoint has (0 to 4096).
    #[arg(long, default_value_t = 0, value_parser = in_range(limits::EXTRA_FLOWS))]
    unknown: u64,
    /// Flows to endpoints' MACs on a VLAN that is not theirs (0 to 4096).
    #[arg(long, default_value_t = 0, value_parser = in_range(limits::EXTRA_FLOWS))]
    wrong_vlan: u64,
    /// Fallback generator: frames in flight at most (1 to 256, the
    /// receiver's ring).
    #[arg(long, default_value_t = 128, value_parser = in_range(limits::WINDOW))]
    window: u64,
    /// Stop sending after this many seconds (1 to 86400).
    #[arg(long, default_value_t = 120, value_parser = in_range(limits::TIMEOUT_SECS))]
    timeout: u64,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// A u64 within `range` (clap says "V is not in A..=B" otherwise).
fn in_range(range: RangeInclusive<u64>) -> clap::builder::RangedU64ValueParser {
    clap::value_parser!(u64).range(range)
}

fn parse_generator(s: &str) -> Result<traffic::Generator, String> {
    traffic::Generator::parse(s)
        .ok_or_else(|| format!("unknown generator {s:?}; use auto, pktgen or fallback"))
}

#[derive(Subcommand)]
enum LabCommand {
    /// Build a lab, attach the classifier, send exact frame counts, check
    /// the counters against the kernel, print them, clean up.
    Smoke {
        /// XDP attach mode.
        #[arg(long, value_enum, default_value_t = XdpMode::Native)]
        xdp_mode: XdpMode,
        /// Frames to the child's MAC (1 to 1000000).
        #[arg(long, default_value_t = 1000, value_parser = in_range(smoke::TO_CHILD))]
        to_child: u64,
        /// Frames to a MAC no endpoint has (0 to 1000000).
        #[arg(long, default_value_t = 500, value_parser = in_range(smoke::TO_UNKNOWN))]
        to_unknown: u64,
    },
    /// Walk through Docker's macvlan tutorial (bridge, then 802.1Q where the
    /// kernel has it) in a lab, printing each command and its output.
    Tutorial,
    /// Remove lab namespaces left behind by killed runs.
    Clean {
        /// Also remove labs of processes still running.
        #[arg(long)]
        all: bool,
    },
}

fn print_json(v: &serde_json::Value) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, v)?;
    writeln!(out)?;
    Ok(())
}

/// Runs the command line; returns the process exit code.
pub fn run(cli: Cli) -> Result<i32> {
    let state_dir = store::state_dir(cli.state_dir);
    match cli.command {
        Command::Pktgen(a) => {
            mvnet::require_root("mvnet pktgen")?;
            let report = traffic::run(
                &state_dir,
                &traffic::RunSpec {
                    mix: traffic::mix::MixSpec {
                        networks: a.network,
                        count: a.count,
                        // Within u32: clap checked the ranges.
                        unknown: a.unknown as u32,
                        wrong_vlan: a.wrong_vlan as u32,
                    },
                    generator: a.generator,
                    device: a.dev,
                    netns: a.netns,
                    size: a.size as usize,
                    rate: a.rate,
                    duration: a.duration,
                    threads: a.threads as usize,
                    window: a.window,
                    deadline: std::time::Duration::from_secs(a.timeout),
                },
                |line| eprintln!("{line}"),
            )?;
            if a.json {
                print_json(&serde_json::to_value(&report)?)?;
            } else {
                print!("{}", report.render());
            }
            return Ok(if report.exact { 0 } else { 1 });
        }
        Command::Lab { command } => match command {
            LabCommand::Smoke {
                xdp_mode,
                to_child,
                to_unknown,
            } => {
                mvnet::require_root("mvnet lab smoke")?;
                let report = lab::smoke::run(xdp_mode, to_child, to_unknown)?;
                print!("{}", report.render());
                report.check()?;
                println!("smoke: all counts exact");
            }
            LabCommand::Tutorial => {
                mvnet::require_root("mvnet lab tutorial")?;
                lab::tutorial::run()?;
            }
            LabCommand::Clean { all } => {
                mvnet::require_root("mvnet lab clean")?;
                let removed = lab::clean(all);
                if removed.is_empty() {
                    println!("no lab namespaces left behind");
                }
                for name in removed {
                    println!("removed network namespace {name}");
                }
                for dir in mvnet::datapath::pinned::clean_stale() {
                    println!("removed stale classifier pins {}", dir.display());
                }
            }
        },
    }
    Ok(0)
}
