use std::process::ExitCode;

use clap::{Parser, Subcommand};
use mvnet::{datapath::XdpMode, lab};

#[derive(Parser)]
#[command(name = "mvnet", version, about = "macvlan networks with an eBPF classifier on the parent")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Throwaway lab topologies in network namespaces.
    Lab {
        #[command(subcommand)]
        command: LabCommand,
    },
}

#[derive(Subcommand)]
enum LabCommand {
    /// Build a lab, attach the classifier, send exact frame counts, check
    /// the counters against the kernel, print them, clean up.
    Smoke {
        /// XDP attach mode: native, generic or auto.
        #[arg(long, default_value = "native", value_parser = parse_xdp_mode)]
        xdp_mode: XdpMode,
        #[arg(long, default_value_t = 1000)]
        to_child: u64,
        #[arg(long, default_value_t = 500)]
        to_unknown: u64,
    },
    /// Remove lab namespaces left behind by killed runs.
    Clean {
        /// Also remove labs of processes still running.
        #[arg(long)]
        all: bool,
    },
}

fn parse_xdp_mode(s: &str) -> Result<XdpMode, String> {
    match s {
        "native" => Ok(XdpMode::Native),
        "generic" => Ok(XdpMode::Generic),
        "auto" => Ok(XdpMode::Auto),
        _ => Err(format!("unknown XDP mode {s:?}; use native, generic or auto")),
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mvnet: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
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
                Ok(())
            }
            LabCommand::Clean { all } => {
                mvnet::require_root("mvnet lab clean")?;
                let removed = lab::clean(all);
                if removed.is_empty() {
                    println!("no lab namespaces left behind");
                } else {
                    for name in removed {
                        println!("removed network namespace {name}");
                    }
                }
                Ok(())
            }
        },
    }
}
