//! The `mvnet` command line: Docker-shaped commands over the controller.
use std::{
    io::Write as _,
    net::{Ipv4Addr, Ipv6Addr},
    path::PathBuf,
};

use anyhow::{anyhow, Result};
use clap::{Args, Parser, Subcommand};

use crate::{
    controller::{
        container::{self, AddressRequest, RunOutcome, RunSpec},
        network::NetworkSpec,
        Controller,
    },
    datapath::XdpMode,
    lab::{self, frames::parse_mac},
    store,
};

#[derive(Parser)]
#[command(
    name = "mvnet",
    version,
    about = "macvlan networks with an eBPF classifier on the parent"
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
    /// Manage networks.
    Network {
        #[command(subcommand)]
        command: NetworkCommand,
    },
    /// Manage containers.
    Container {
        #[command(subcommand)]
        command: ContainerCommand,
    },
    /// Create a container (a network namespace with an endpoint) and
    /// optionally start a command in it.
    Run(RunArgs),
    /// Run a command inside a container's network namespace.
    Exec {
        container: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        command: Vec<String>,
    },
    /// Make the kernel match the state: finish or roll back commands that
    /// were killed, recreate owned parents and lost endpoints, purge
    /// containers whose namespace is gone, fix IPAM, re-attach the
    /// classifier and its entries, remove leftovers of mvnet.
    Restore {
        /// Only list what would be done; exit 1 if anything would.
        #[arg(long)]
        check: bool,
    },
    /// Stream the classifier's anomaly events (unknown MAC, VLAN mismatch,
    /// spoofed source), rate-limited in the kernel.
    Monitor {
        /// Stop after this many seconds (default: run until interrupted).
        #[arg(long)]
        duration: Option<u64>,
    },
    /// Reconcile the classifier's per-endpoint delivery counts with the
    /// kernel's counters of each macvlan; exits 1 on an unexplained difference.
    Verify {
        /// Only this network.
        network: Option<String>,
    },
    /// Frames and bytes the classifier counted, per network and endpoint,
    /// per VLAN and per verdict; rates per second with --watch.
    Stats(StatsArgs),
    /// Prometheus exporter of the classifier's counters (GET /metrics);
    /// also streams the anomaly events to standard error.
    Serve {
        /// Address to listen on (loopback by default).
        #[arg(long, default_value = crate::serve::DEFAULT_ADDR)]
        metrics_addr: std::net::SocketAddr,
        /// Do not stream the classifier's anomaly events.
        #[arg(long)]
        no_events: bool,
    },
    /// Live view of the classifier's counters: per-endpoint rates with
    /// sparklines, per-VLAN and per-verdict tables (q quits, s sorts, r
    /// reverses, n filters by network). Plain text when stdout is not a
    /// terminal or TERM is dumb.
    Top {
        /// Only this network.
        network: Option<String>,
        /// Seconds between refreshes.
        #[arg(long, default_value = "1", value_parser = parse_interval)]
        interval: std::time::Duration,
        /// Stop after this many refreshes (default: until quit).
        #[arg(long)]
        count: Option<u64>,
        /// Print plain text even on a terminal.
        #[arg(long)]
        plain: bool,
    },
    /// Send exact frame counts to the endpoints (plus unknown MACs and wrong
    /// VLANs) with the kernel's pktgen or an AF_PACKET TX ring, and hold
    /// what was sent against the classifier's and the kernel's counters;
    /// exits 1 unless every count is exact.
    Pktgen(PktgenArgs),
    /// Internal: deletes a removed endpoint's tombstoned link in the
    /// background (spawned by `network disconnect` and `container stop`).
    #[command(name = "__reap-link", hide = true)]
    ReapLink {
        #[arg(long)]
        netns: PathBuf,
        #[arg(long)]
        ifindex: u32,
    },
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
    generator: crate::traffic::Generator,
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

fn parse_generator(s: &str) -> Result<crate::traffic::Generator, String> {
    crate::traffic::Generator::parse(s)
        .ok_or_else(|| format!("unknown generator {s:?}; use auto, pktgen or fallback"))
}

/// `--watch`'s optional SECS. A word there is most likely the network
/// (`stats --watch NET`), which clap hands to the option: say so.
fn parse_watch(s: &str) -> Result<f64, String> {
    s.parse::<f64>().map_err(|_| {
        format!(
            "not a number of seconds; to watch network {s:?} put it first: \
             `mvnet stats {s} --watch [SECS]`"
        )
    })
}

#[derive(Args)]
struct StatsArgs {
    /// Only this network (name, id or id prefix).
    network: Option<String>,
    /// One JSON document (one per line with --watch); schema in the README.
    #[arg(long)]
    json: bool,
    /// Print rates per second every SECS seconds (default 1).
    #[arg(
        long,
        value_name = "SECS",
        num_args = 0..=1,
        default_missing_value = "1",
        value_parser = parse_watch
    )]
    watch: Option<f64>,
    /// With --watch: stop after this many updates.
    #[arg(long, requires = "watch")]
    count: Option<u64>,
}

#[derive(Subcommand)]
enum NetworkCommand {
    /// Create a macvlan network.
    Create(CreateArgs),
    /// List networks.
    #[command(alias = "list")]
    Ls,
    /// Show networks as JSON.
    Inspect {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove networks.
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Connect a container, or an existing namespace (--netns), to a network.
    Connect {
        #[command(flatten)]
        addresses: AddressArgs,
        /// An existing network namespace to attach (e.g. /proc/PID/ns/net).
        #[arg(long)]
        netns: Option<PathBuf>,
        network: String,
        /// Container name or id (with --netns: the name to give it).
        container: Option<String>,
    },
    /// Change a network's classifier policy.
    Update {
        /// observe or enforce.
        #[arg(long)]
        policy: Option<String>,
        /// Under enforce: pass or drop broadcast frames.
        #[arg(long)]
        broadcast: Option<String>,
        /// Under enforce: pass or drop multicast frames.
        #[arg(long)]
        multicast: Option<String>,
        network: String,
    },
    /// Disconnect a container from a network.
    Disconnect { network: String, container: String },
}

#[derive(Args)]
struct CreateArgs {
    /// Driver (only macvlan).
    #[arg(short = 'd', long, default_value = "macvlan")]
    driver: String,
    #[arg(long)]
    subnet: Vec<String>,
    #[arg(long)]
    gateway: Vec<String>,
    #[arg(long)]
    ip_range: Vec<String>,
    /// name=IP, never handed out.
    #[arg(long)]
    aux_address: Vec<String>,
    #[arg(long)]
    internal: bool,
    #[arg(long)]
    ipv6: bool,
    /// Driver options: parent=IF, macvlan_mode=bridge|vepa|private|passthru.
    #[arg(short = 'o', long = "opt")]
    opt: Vec<String>,
    /// Classifier policy: observe (count and pass) or enforce (drop invalid frames).
    #[arg(long)]
    policy: Option<String>,
    /// How XDP attaches to the root device: native, generic or auto.
    #[arg(long)]
    xdp_mode: Option<String>,
    /// Under enforce: pass (default) or drop broadcast frames.
    #[arg(long)]
    broadcast: Option<String>,
    /// Under enforce: pass (default) or drop multicast frames.
    #[arg(long)]
    multicast: Option<String>,
    name: String,
}

#[derive(Args, Default)]
struct AddressArgs {
    #[arg(long)]
    ip: Option<Ipv4Addr>,
    #[arg(long)]
    ip6: Option<Ipv6Addr>,
    #[arg(long)]
    mac_address: Option<String>,
}

impl AddressArgs {
    fn request(&self) -> Result<AddressRequest> {
        let mac = match &self.mac_address {
            None => None,
            Some(m) => Some(parse_mac(m).ok_or_else(|| {
                anyhow!("invalid --mac-address {m:?}: use six hex bytes, e.g. 02:42:ac:10:56:0a")
            })?),
        };
        Ok(AddressRequest {
            ip: self.ip,
            ip6: self.ip6,
            mac,
        })
    }
}

#[derive(Args)]
struct RunArgs {
    /// Remove the container when it stops.
    #[arg(long)]
    rm: bool,
    /// Run in the background.
    #[arg(short = 'd', long)]
    detach: bool,
    /// Accepted for Docker compatibility (stdin stays attached in the foreground).
    #[arg(short = 'i', long)]
    interactive: bool,
    /// Accepted for Docker compatibility (no pseudo-terminal is allocated).
    #[arg(short = 't', long)]
    tty: bool,
    #[arg(long)]
    network: String,
    #[arg(long)]
    name: Option<String>,
    #[command(flatten)]
    addresses: AddressArgs,
    /// Command to start inside the container's namespace.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

#[derive(Subcommand)]
enum ContainerCommand {
    /// Show containers as JSON.
    Inspect {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// List containers.
    #[command(alias = "list", alias = "ps")]
    Ls,
    /// Stop containers (removing those run with --rm).
    Stop {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove containers.
    Rm {
        #[arg(short, long)]
        force: bool,
        #[arg(required = true)]
        names: Vec<String>,
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

fn parse_xdp_mode(s: &str) -> Result<XdpMode, String> {
    match s {
        "native" => Ok(XdpMode::Native),
        "generic" => Ok(XdpMode::Generic),
        "auto" => Ok(XdpMode::Auto),
        _ => Err(format!(
            "unknown XDP mode {s:?}; use native, generic or auto"
        )),
    }
}

fn parse_interval(s: &str) -> Result<std::time::Duration, String> {
    match s.parse::<f64>() {
        Ok(secs) if (0.1..=3600.0).contains(&secs) => Ok(std::time::Duration::from_secs_f64(secs)),
        _ => Err(format!(
            "invalid interval {s:?}; give seconds between 0.1 and 3600, e.g. 1 or 0.5"
        )),
    }
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
    // Writers lock the state while they change it; readers take a
    // snapshot without the lock, so they never wait behind a writer.
    let open = |what: &str| -> Result<Controller> {
        crate::require_root(what)?;
        let mut ctl = Controller::open(&state_dir)?;
        ctl.check_namespace()?;
        // What a killed command left pending is undone (or finished)
        // before this one starts, so it can retry with the same names.
        for rec in ctl.recover(false) {
            match rec.result {
                Ok(()) => eprintln!("mvnet: {}", rec.what),
                Err(e) => eprintln!(
                    "mvnet: warning: {}: {e:#}; run `mvnet restore` to converge",
                    rec.what
                ),
            }
        }
        Ok(ctl)
    };
    let read = |what: &str| -> Result<Controller> {
        crate::require_root(what)?;
        let ctl = Controller::snapshot(&state_dir)?;
        ctl.check_namespace()?;
        Ok(ctl)
    };
    match cli.command {
        Command::Network { command } => match command {
            NetworkCommand::Create(a) => {
                let mut ctl = open("mvnet network create")?;
                let net = ctl.create_network(NetworkSpec {
                    name: a.name,
                    driver: a.driver,
                    subnets: a.subnet,
                    gateways: a.gateway,
                    ip_ranges: a.ip_range,
                    aux_addresses: a.aux_address,
                    internal: a.internal,
                    ipv6: a.ipv6,
                    options: a.opt,
                    policy: a.policy,
                    xdp_mode: a.xdp_mode,
                    broadcast: a.broadcast,
                    multicast: a.multicast,
                })?;
                println!("{}", net.id);
            }
            NetworkCommand::Ls => {
                let ctl = read("mvnet network ls")?;
                println!(
                    "{:<12}   {:<30} {:<10} SCOPE",
                    "NETWORK ID", "NAME", "DRIVER"
                );
                for n in ctl.state.networks.values() {
                    println!(
                        "{:<12}   {:<30} {:<10} local",
                        n.short_id(),
                        n.name,
                        "macvlan"
                    );
                }
            }
            NetworkCommand::Inspect { names } => {
                let ctl = read("mvnet network inspect")?;
                let mut out = Vec::new();
                for n in &names {
                    out.push(ctl.network_json(ctl.network(n)?));
                }
                print_json(&serde_json::Value::Array(out))?;
            }
            NetworkCommand::Rm { names } => {
                let mut ctl = open("mvnet network rm")?;
                let mut failed = false;
                for n in &names {
                    match ctl.remove_network(n) {
                        Ok(name) => println!("{name}"),
                        Err(e) => {
                            eprintln!("mvnet: error: {e:#}");
                            failed = true;
                        }
                    }
                }
                return Ok(if failed { 1 } else { 0 });
            }
            NetworkCommand::Connect {
                addresses,
                netns,
                network,
                container,
            } => {
                let mut ctl = open("mvnet network connect")?;
                ctl.connect(&network, container.as_deref(), netns, addresses.request()?)?;
            }
            NetworkCommand::Update {
                policy,
                broadcast,
                multicast,
                network,
            } => {
                let mut ctl = open("mvnet network update")?;
                println!(
                    "{}",
                    ctl.update_network(
                        &network,
                        policy.as_deref(),
                        broadcast.as_deref(),
                        multicast.as_deref()
                    )?
                );
            }
            NetworkCommand::Disconnect { network, container } => {
                let mut ctl = open("mvnet network disconnect")?;
                ctl.disconnect(&network, &container)?;
            }
        },
        Command::Container { command } => match command {
            ContainerCommand::Inspect { names } => {
                let ctl = read("mvnet container inspect")?;
                let mut out = Vec::new();
                for n in &names {
                    out.push(ctl.container_json(ctl.container(n)?));
                }
                print_json(&serde_json::Value::Array(out))?;
            }
            ContainerCommand::Ls => {
                let ctl = read("mvnet container ls")?;
                println!(
                    "{:<12}   {:<10} {:<30} NETWORKS",
                    "CONTAINER ID", "STATUS", "NAMES"
                );
                for c in ctl.state.containers.values() {
                    let nets: Vec<&str> = c
                        .endpoints
                        .keys()
                        .filter_map(|id| ctl.state.networks.get(id))
                        .map(|n| n.name.as_str())
                        .collect();
                    let status = if c.running { "running" } else { "exited" };
                    println!(
                        "{:<12}   {:<10} {:<30} {}",
                        c.short_id(),
                        status,
                        c.name,
                        nets.join(",")
                    );
                }
            }
            ContainerCommand::Stop { names } => {
                let mut ctl = open("mvnet container stop")?;
                for n in &names {
                    println!("{}", ctl.stop(n)?);
                }
            }
            ContainerCommand::Rm { force, names } => {
                let mut ctl = open("mvnet container rm")?;
                for n in &names {
                    println!("{}", ctl.remove_container(n, force)?);
                }
            }
        },
        Command::Run(a) => {
            let mut ctl = open("mvnet run")?;
            let _ = (a.interactive, a.tty);
            if !a.detach && !a.command.is_empty() {
                // Foreground: `run` lets go of the state lock while the
                // command runs, and takes it again to record its exit.
                let outcome = ctl.run(RunSpec {
                    name: a.name,
                    network: a.network,
                    addresses: a.addresses.request()?,
                    auto_remove: a.rm,
                    detach: false,
                    command: a.command,
                })?;
                return Ok(match outcome {
                    RunOutcome::Exited(code) => code,
                    RunOutcome::Started(_) => 0,
                });
            }
            match ctl.run(RunSpec {
                name: a.name,
                network: a.network,
                addresses: a.addresses.request()?,
                auto_remove: a.rm,
                detach: a.detach,
                command: a.command,
            })? {
                RunOutcome::Started(id) => println!("{id}"),
                RunOutcome::Exited(code) => return Ok(code),
            }
        }
        Command::Exec { container, command } => {
            let c = {
                let ctl = read("mvnet exec")?;
                ctl.container(&container)?.clone()
            };
            return container::exec(&c, &command);
        }
        Command::Monitor { duration } => {
            crate::require_root("mvnet monitor")?;
            crate::datapath::monitor::run(duration.map(std::time::Duration::from_secs))?;
        }
        Command::Verify { network } => {
            let ctl = read("mvnet verify")?;
            let checks = ctl.verify(network.as_deref())?;
            print!("{}", crate::controller::verify::render(&checks));
            let problems = ctl.root_problems(network.as_deref())?;
            for p in &problems {
                eprintln!("mvnet: verify: {p}");
            }
            let bad = checks.iter().filter(|c| c.unexplained()).count();
            if bad > 0 {
                eprintln!(
                    "mvnet: verify: {bad} endpoint(s) with a difference that has no explanation"
                );
            }
            if bad > 0 || !problems.is_empty() {
                return Ok(1);
            }
        }
        Command::Stats(a) => {
            read("mvnet stats")?;
            let watch = match a.watch {
                Some(s) if !(s.is_finite() && s > 0.0) => {
                    return Err(anyhow!(
                        "--watch {s}: give an interval above 0 seconds, e.g. `--watch 1`"
                    ))
                }
                s => s.map(std::time::Duration::from_secs_f64),
            };
            crate::stats::run(
                &state_dir,
                &crate::stats::StatsOptions {
                    network: a.network,
                    json: a.json,
                    watch,
                    count: a.count,
                },
            )?;
        }
        Command::Serve {
            metrics_addr,
            no_events,
        } => {
            read("mvnet serve")?;
            crate::serve::run(crate::serve::ServeOptions {
                state_dir,
                addr: metrics_addr,
                events: !no_events,
            })?;
        }
        Command::Restore { check } => {
            let mut ctl = if check {
                read("mvnet restore --check")?
            } else {
                crate::require_root("mvnet restore")?;
                let ctl = Controller::open(&state_dir)?;
                ctl.check_namespace()?;
                ctl
            };
            let r = ctl.restore(check)?;
            for a in &r.actions {
                println!("{a}");
            }
            if r.actions.is_empty() && r.problems.is_empty() {
                println!("nothing to do: the kernel matches the state");
            }
            for p in &r.problems {
                eprintln!("mvnet: problem: {p}");
            }
            if !r.problems.is_empty() || (check && !r.actions.is_empty()) {
                return Ok(1);
            }
        }
        Command::Top {
            network,
            interval,
            count,
            plain,
        } => {
            read("mvnet top")?;
            crate::top::run(crate::top::Options {
                state_dir,
                network,
                interval,
                count,
                plain,
            })?;
        }
        Command::Pktgen(a) => {
            read("mvnet pktgen")?;
            let report = crate::traffic::run(
                &state_dir,
                &crate::traffic::RunSpec {
                    mix: crate::traffic::mix::MixSpec {
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
        Command::ReapLink { netns, ifindex } => {
            crate::controller::endpoint::reap(&crate::netns::NetNs::from_path(netns), ifindex)?;
        }
        Command::Lab { command } => match command {
            LabCommand::Smoke {
                xdp_mode,
                to_child,
                to_unknown,
            } => {
                crate::require_root("mvnet lab smoke")?;
                let report = lab::smoke::run(xdp_mode, to_child, to_unknown)?;
                print!("{}", report.render());
                report.check()?;
                println!("smoke: all counts exact");
            }
            LabCommand::Tutorial => {
                crate::require_root("mvnet lab tutorial")?;
                lab::tutorial::run()?;
            }
            LabCommand::Clean { all } => {
                crate::require_root("mvnet lab clean")?;
                let removed = lab::clean(all);
                if removed.is_empty() {
                    println!("no lab namespaces left behind");
                }
                for name in removed {
                    println!("removed network namespace {name}");
                }
                for dir in crate::datapath::pinned::clean_stale() {
                    println!("removed stale classifier pins {}", dir.display());
                }
            }
        },
    }
    Ok(0)
}
