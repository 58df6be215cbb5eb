//! The `mvnet-lab` command line, run by `mvnet lab …` and `mvnet pktgen …`
//! (mvnet passes its arguments through), so its usage reads `mvnet …`.
use std::{io::Write as _, path::PathBuf};

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use mvnet::{model::XdpMode, store};

use crate::{lab, traffic};

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
    /// Frames per flow.
    #[arg(long, default_value_t = 1000)]
    count: u64,
    /// Frames per second over all flows (0: as fast as the generator goes).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// With --rate: send for this many seconds (sets --count).
    #[arg(long)]
    duration: Option<f64>,
    /// Frame length in bytes without FCS (at least 60).
    #[arg(long, default_value_t = 60)]
    size: usize,
    /// pktgen kernel threads (kpktgend_0..N-1) to spread the flows over.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Flows to MACs no endpoint has.
    #[arg(long, default_value_t = 0)]
    unknown: u32,
    /// Flows to endpoints' MACs on a VLAN that is not theirs.
    #[arg(long, default_value_t = 0)]
    wrong_vlan: u32,
    /// Fallback generator: frames in flight at most (the receiver's ring is 256).
    #[arg(long, default_value_t = 128)]
    window: u64,
    /// Stop sending after this many seconds.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
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
        #[arg(long, default_value_t = 1000)]
        to_child: u64,
        #[arg(long, default_value_t = 500)]
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
                        unknown: a.unknown,
                        wrong_vlan: a.wrong_vlan,
                    },
                    generator: a.generator,
                    device: a.dev,
                    netns: a.netns,
                    size: a.size,
                    rate: a.rate,
                    duration: a.duration,
                    threads: a.threads,
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
