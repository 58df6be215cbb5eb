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
    filter::Filters,
    format::Format,
    model::{GroupRule, Mac, Policy, XdpMode},
    scripting, store,
};

/// `println!` to standard output that returns the write error instead of
/// panicking: a closed pipe (`mvnet network ls | head -0`) ends the command
/// quietly in `main` (see [`is_broken_pipe`]).
macro_rules! outln {
    ($($arg:tt)*) => {
        writeln!(std::io::stdout().lock(), $($arg)*)?
    };
}

/// `print!` to standard output, returning the write error (see [`outln!`]).
macro_rules! out {
    ($($arg:tt)*) => {{
        let mut stdout = std::io::stdout().lock();
        write!(stdout, $($arg)*)?;
        stdout.flush()?
    }};
}

/// Whether `e` is a write to a closed pipe: the reader went away
/// (`mvnet network ls | true`), so the command ends quietly with status 0,
/// as `ls` does.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || c.downcast_ref::<serde_json::Error>()
                .and_then(serde_json::Error::io_error_kind)
                == Some(std::io::ErrorKind::BrokenPipe)
    })
}

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
    /// List containers (`container ls`).
    Ps(ContainerLsArgs),
    /// Show containers or networks as JSON (containers are looked up first).
    Inspect {
        /// Only this kind of object.
        #[arg(long = "type", value_enum)]
        kind: Option<ObjectKind>,
        #[command(flatten)]
        format: FormatArg,
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Stop containers (`container stop`).
    Stop(NamesArgs),
    /// Remove containers (`container rm`).
    Rm(RmArgs),
    /// Start stopped containers (`container start`).
    Start(NamesArgs),
    /// Stop and start containers (`container restart`).
    Restart(NamesArgs),
    /// Print a detached container's output (`container logs`).
    Logs(LogsArgs),
    /// Print a shell completion script: `source <(mvnet completion bash)`.
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) to standard output; see the README to
    /// install it.
    Man,
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
        /// Stop after this many seconds, 1 to 604800 (a week; default: run
        /// until interrupted).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=MAX_MONITOR_SECS))]
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
        /// Address to listen on: ADDR:PORT, [IPv6]:PORT, localhost:PORT
        /// (127.0.0.1) or :PORT (127.0.0.1 too: loopback only unless an
        /// address is given); port 0 to 65535 (0: any free port).
        #[arg(
            long,
            value_name = "ADDR:PORT",
            default_value = crate::serve::DEFAULT_ADDR,
            value_parser = crate::serve::addr::parse
        )]
        metrics_addr: std::net::SocketAddr,
        /// Do not stream the classifier's anomaly events.
        #[arg(long)]
        no_events: bool,
    },
    /// Count, verify and enforce Docker's own macvlan networks: read them
    /// through Docker's Engine API and keep their containers' endpoints in
    /// the classifier's table (`sync` once, `watch` to follow Docker).
    Docker {
        #[command(subcommand)]
        command: DockerCommand,
    },
    /// Live view of the classifier's counters: per-endpoint rates with
    /// sparklines, per-VLAN and per-verdict tables (q quits, s sorts, r
    /// reverses, n filters by network). Plain text when stdout is not a
    /// terminal or TERM is dumb.
    Top {
        /// Only this network.
        network: Option<String>,
        /// Seconds between refreshes, 0.1 to 3600.
        #[arg(long, default_value = "1", value_parser = parse_interval)]
        interval: std::time::Duration,
        /// Stop after this many refreshes, 1 to 1000000 (default: until quit).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=MAX_UPDATES))]
        count: Option<u64>,
        /// Print plain text even on a terminal.
        #[arg(long)]
        plain: bool,
    },
    /// Send exact frame counts to the endpoints (plus unknown MACs and wrong
    /// VLANs) with the kernel's pktgen or an AF_PACKET TX ring, and hold
    /// what was sent against the classifier's and the kernel's counters;
    /// exits 1 unless every count is exact. Run by `mvnet-lab`
    /// (`mvnet pktgen --help` for its options).
    #[command(disable_help_flag = true)]
    Pktgen(LabArgs),
    /// Throwaway lab topologies in network namespaces: smoke, tutorial,
    /// clean. Run by `mvnet-lab` (`mvnet lab --help` for its commands).
    #[command(disable_help_flag = true)]
    Lab(LabArgs),
}

/// The arguments of a subcommand that `mvnet-lab` runs, passed through as given.
#[derive(Args)]
struct LabArgs {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

/// `inspect --type`.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ObjectKind {
    Container,
    Network,
}

/// `-f/--format`.
#[derive(Args, Default)]
struct FormatArg {
    /// Go template, as Docker's (`{{json .}}`, `table {{.ID}}\t{{.Name}}`).
    #[arg(short = 'f', long)]
    format: Option<String>,
}

#[derive(Args)]
struct NamesArgs {
    #[arg(required = true)]
    names: Vec<String>,
}

#[derive(Args)]
struct LogsArgs {
    /// Keep printing new output until the container's command exits.
    #[arg(short, long)]
    follow: bool,
    container: String,
}

#[derive(Args)]
struct RmArgs {
    #[arg(short, long)]
    force: bool,
    #[arg(required = true)]
    names: Vec<String>,
}

/// `network ls`.
#[derive(Args)]
struct NetworkLsArgs {
    /// Only the network ids.
    #[arg(short, long)]
    quiet: bool,
    /// KEY=VALUE: dangling, driver, id, label, name, scope, type.
    #[arg(short, long)]
    filter: Vec<String>,
    /// Full ids.
    #[arg(long)]
    no_trunc: bool,
    /// Go template, as Docker's (`{{json .}}`, `table {{.ID}}\t{{.Name}}`).
    #[arg(long)]
    format: Option<String>,
}

/// `container ls` and `ps`.
#[derive(Args)]
struct ContainerLsArgs {
    /// Stopped containers too.
    #[arg(short, long)]
    all: bool,
    /// Only the container ids.
    #[arg(short, long)]
    quiet: bool,
    /// KEY=VALUE: id, label, name, network, status.
    #[arg(short, long)]
    filter: Vec<String>,
    /// Full ids and commands.
    #[arg(long)]
    no_trunc: bool,
    /// Go template, as Docker's (`{{json .}}`, `table {{.ID}}\t{{.Names}}`).
    #[arg(long)]
    format: Option<String>,
}

/// `network prune` and `container prune`.
#[derive(Args)]
struct PruneArgs {
    /// Do not ask for confirmation.
    #[arg(short, long)]
    force: bool,
    /// label=KEY, label=KEY=VALUE, or until=TIME (10m, 1h, Unix seconds,
    /// 2026-12-01T10:00:00Z): only those created before.
    #[arg(long)]
    filter: Vec<String>,
}

/// Longest `monitor --duration`: a week, in seconds.
const MAX_MONITOR_SECS: u64 = 7 * 24 * 3600;
/// Most `--count` updates of `stats --watch` and `top`.
const MAX_UPDATES: u64 = 1_000_000;
/// Shortest and longest refresh interval of `stats --watch` and `top`, in seconds.
const INTERVAL_SECS: std::ops::RangeInclusive<f64> = 0.1..=3600.0;

/// `--watch`'s optional SECS. A word there is most likely the network
/// (`stats --watch NET`), which clap hands to the option: say so.
fn parse_watch(s: &str) -> Result<std::time::Duration, String> {
    match s.trim().parse::<f64>() {
        Ok(secs) if INTERVAL_SECS.contains(&secs) => Ok(std::time::Duration::from_secs_f64(secs)),
        Ok(_) => Err(format!(
            "{s} is out of range; give seconds between 0.1 and 3600, e.g. 1 or 0.5"
        )),
        Err(_) => Err(format!(
            "not a number of seconds; to watch network {s:?} put it first: \
             `mvnet stats {s} --watch [SECS]`"
        )),
    }
}

#[derive(Args)]
struct StatsArgs {
    /// Only this network (name, id or id prefix).
    network: Option<String>,
    /// One JSON document (one per line with --watch); schema in the README.
    #[arg(long)]
    json: bool,
    /// Print rates per second every SECS seconds, 0.1 to 3600 (default 1).
    #[arg(
        long,
        value_name = "SECS",
        num_args = 0..=1,
        default_missing_value = "1",
        value_parser = parse_watch
    )]
    watch: Option<std::time::Duration>,
    /// With --watch: stop after this many updates, 1 to 1000000.
    #[arg(long, requires = "watch", value_parser = clap::value_parser!(u64).range(1..=MAX_UPDATES))]
    count: Option<u64>,
}

#[derive(Subcommand)]
enum NetworkCommand {
    /// Create a macvlan network.
    Create(CreateArgs),
    /// List networks, sorted by name.
    #[command(alias = "list")]
    Ls(NetworkLsArgs),
    /// Show networks as JSON.
    Inspect {
        #[command(flatten)]
        format: FormatArg,
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove the networks no container uses.
    Prune(PruneArgs),
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
        /// observe (count and pass) or enforce (drop invalid frames).
        #[arg(long, value_enum)]
        policy: Option<Policy>,
        /// Under enforce: pass or drop broadcast frames.
        #[arg(long, value_enum)]
        broadcast: Option<GroupRule>,
        /// Under enforce: pass or drop multicast frames.
        #[arg(long, value_enum)]
        multicast: Option<GroupRule>,
        network: String,
    },
    /// Disconnect a container from a network.
    Disconnect { network: String, container: String },
}

#[derive(Subcommand)]
enum DockerCommand {
    /// Read Docker's macvlan networks and running containers once, and make
    /// the state and the classifier's table hold exactly their endpoints;
    /// exits 1 when a network or endpoint had to be left out (each is
    /// reported with the reason).
    Sync(DockerArgs),
    /// Sync, then follow Docker's events (network create/destroy/connect/
    /// disconnect, container start/die/destroy) until killed; a lost
    /// connection or a daemon restart is retried with backoff and followed
    /// by a full sync.
    Watch(DockerArgs),
}

#[derive(Args)]
struct DockerArgs {
    /// Docker's socket, unix:///PATH or /PATH (default: $DOCKER_HOST, else
    /// unix:///var/run/docker.sock).
    #[arg(long, value_name = "HOST")]
    docker_host: Option<String>,
    /// Classifier policy of the Docker networks adopted: observe (count and
    /// pass) or enforce (drop invalid frames).
    #[arg(long, value_enum, default_value_t)]
    policy: Policy,
    /// How XDP attaches to a root device the classifier is not on yet.
    #[arg(long, value_enum, default_value_t)]
    xdp_mode: XdpMode,
    /// Endpoint slots of the classifier on a root device it is not on yet
    /// (1 to 65536; default: the root's, else 4096).
    #[arg(long, value_name = "N")]
    max_endpoints: Option<u32>,
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
    /// Driver options: parent=IF (IF.VID: an 802.1Q sub-interface, VID 1 to
    /// 4094), macvlan_mode=bridge|vepa|private|passthru.
    #[arg(short = 'o', long = "opt")]
    opt: Vec<String>,
    /// Classifier policy: observe (count and pass) or enforce (drop invalid frames).
    #[arg(long, value_enum, default_value_t)]
    policy: Policy,
    /// How XDP attaches to the root device.
    #[arg(long, value_enum, default_value_t)]
    xdp_mode: XdpMode,
    /// Endpoint slots of the classifier on the root device, fixed when the
    /// first network on it attaches it (1 to 65536; default: the attached
    /// classifier's, else 4096).
    #[arg(long, value_name = "N")]
    max_endpoints: Option<u32>,
    /// Under enforce: pass or drop broadcast frames.
    #[arg(long, value_enum, default_value_t)]
    broadcast: GroupRule,
    /// Under enforce: pass or drop multicast frames.
    #[arg(long, value_enum, default_value_t)]
    multicast: GroupRule,
    /// KEY=VALUE metadata (repeatable).
    #[arg(long)]
    label: Vec<String>,
    /// A file of KEY=VALUE lines (# comments), read before --label.
    #[arg(long)]
    label_file: Vec<PathBuf>,
    name: String,
}

#[derive(Args, Default)]
struct AddressArgs {
    #[arg(long)]
    ip: Option<Ipv4Addr>,
    #[arg(long)]
    ip6: Option<Ipv6Addr>,
    /// Six pairs of hex digits separated by colons, e.g. 02:42:ac:10:56:0a.
    #[arg(long)]
    mac_address: Option<Mac>,
}

impl AddressArgs {
    fn request(&self) -> Result<AddressRequest> {
        Ok(AddressRequest {
            ip: self.ip,
            ip6: self.ip6,
            mac: self.mac_address,
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
    /// The network to attach the container to (`--net` as Docker's hidden alias).
    #[arg(long, alias = "net")]
    network: String,
    #[arg(long)]
    name: Option<String>,
    #[command(flatten)]
    addresses: AddressArgs,
    /// KEY=VALUE metadata (repeatable).
    #[arg(long)]
    label: Vec<String>,
    /// A file of KEY=VALUE lines (# comments), read before --label.
    #[arg(long)]
    label_file: Vec<PathBuf>,
    /// Command to start inside the container's namespace.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

#[derive(Subcommand)]
enum ContainerCommand {
    /// Show containers as JSON.
    Inspect {
        #[command(flatten)]
        format: FormatArg,
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// List running containers (-a: all).
    #[command(alias = "list", alias = "ps")]
    Ls(ContainerLsArgs),
    /// Stop containers (removing those run with --rm).
    Stop(NamesArgs),
    /// Remove containers.
    Rm(RmArgs),
    /// Start stopped containers: their endpoints again (same addresses
    /// where still free) and their command in the background.
    Start(NamesArgs),
    /// Stop and start containers.
    Restart(NamesArgs),
    /// Print a detached container's output.
    Logs(LogsArgs),
    /// Remove the stopped containers.
    Prune(PruneArgs),
}

fn parse_interval(s: &str) -> Result<std::time::Duration, String> {
    match s.parse::<f64>() {
        Ok(secs) if INTERVAL_SECS.contains(&secs) => Ok(std::time::Duration::from_secs_f64(secs)),
        _ => Err(format!(
            "invalid interval {s:?}; give seconds between 0.1 and 3600, e.g. 1 or 0.5"
        )),
    }
}

impl CreateArgs {
    fn spec(&self) -> NetworkSpec {
        NetworkSpec {
            name: self.name.clone(),
            driver: self.driver.clone(),
            subnets: self.subnet.clone(),
            gateways: self.gateway.clone(),
            ip_ranges: self.ip_range.clone(),
            aux_addresses: self.aux_address.clone(),
            internal: self.internal,
            ipv6: self.ipv6,
            options: self.opt.clone(),
            policy: self.policy,
            xdp_mode: self.xdp_mode,
            max_endpoints: self.max_endpoints,
            broadcast: self.broadcast,
            multicast: self.multicast,
            // Read from --label-file at run time, not by the pure checks.
            labels: Default::default(),
        }
    }
}

impl Cli {
    /// Every check of the arguments that needs neither the state nor the
    /// kernel, so that bad input is refused before anything changes (and
    /// can be fuzzed without root). Clap's value parsers did the rest.
    pub fn validate(&self) -> Result<()> {
        match &self.command {
            Command::Network { command } => match command {
                NetworkCommand::Create(a) => {
                    crate::controller::network::validate(&a.spec())?;
                }
                NetworkCommand::Connect { addresses, .. } => {
                    addresses.request()?;
                }
                _ => {}
            },
            Command::Docker {
                command: DockerCommand::Sync(a) | DockerCommand::Watch(a),
            } => {
                if let Some(h) = &a.docker_host {
                    crate::docker::client::DockerHost::parse(h, "from --docker-host")?;
                }
            }
            Command::Run(a) => {
                if let Some(name) = &a.name {
                    crate::model::validate_name("container", name).map_err(|e| anyhow!(e))?;
                }
                a.addresses.request()?;
            }
            _ => {}
        }
        Ok(())
    }
}

fn print_json(v: &serde_json::Value) -> Result<()> {
    // Buffered: standard output writes each line as it ends.
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    serde_json::to_writer_pretty(&mut out, v)?;
    writeln!(out)?;
    out.flush()?;
    Ok(())
}

// Writers lock the state while they change it; readers take a snapshot
// without the lock, so they never wait behind a writer.

/// A command's controller: the process ends soon after the command, so
/// the state it read is left to the exit (see
/// [`Controller::leave_state_to_exit`]); its lock is let go of as usual.
struct OneShot(Controller);

impl std::ops::Deref for OneShot {
    type Target = Controller;

    fn deref(&self) -> &Controller {
        &self.0
    }
}

impl std::ops::DerefMut for OneShot {
    fn deref_mut(&mut self) -> &mut Controller {
        &mut self.0
    }
}

impl Drop for OneShot {
    fn drop(&mut self) {
        self.0.leave_state_to_exit();
    }
}

/// A writer's controller: the state locked, and what a killed command left
/// pending undone (or finished) before this one starts, so it can retry
/// with the same names.
fn writer(state_dir: &std::path::Path, what: &str) -> Result<OneShot> {
    crate::require_root(what)?;
    let mut ctl = Controller::open(state_dir)?;
    ctl.check_namespace()?;
    for rec in ctl.recover(false) {
        match rec.result {
            Ok(()) => eprintln!("mvnet: {}", rec.what),
            Err(e) => eprintln!(
                "mvnet: warning: {}: {e:#}; run `mvnet restore` to converge",
                rec.what
            ),
        }
    }
    Ok(OneShot(ctl))
}

/// A reader's controller: a snapshot of the state, without the lock.
fn reader(state_dir: &std::path::Path, what: &str) -> Result<OneShot> {
    snapshot(state_dir, what).map(OneShot)
}

/// [`reader`]'s snapshot, freed when dropped: for a command that runs on
/// after it (`stats`, `serve`, `top`, `docker watch`, `exec`, `logs`),
/// whose process would otherwise keep it for its whole life.
fn snapshot(state_dir: &std::path::Path, what: &str) -> Result<Controller> {
    crate::require_root(what)?;
    let ctl = Controller::snapshot(state_dir)?;
    ctl.check_namespace()?;
    Ok(ctl)
}

/// Runs the command line; returns the process exit code.
pub fn run(cli: Cli) -> Result<i32> {
    cli.validate()?;
    let state_dir = store::state_dir(cli.state_dir);
    match cli.command {
        Command::Network { command } => return network_command(&state_dir, command),
        Command::Container { command } => return container_command(&state_dir, command),
        Command::Ps(a) => return container_command(&state_dir, ContainerCommand::Ls(a)),
        Command::Stop(a) => return container_command(&state_dir, ContainerCommand::Stop(a)),
        Command::Rm(a) => return container_command(&state_dir, ContainerCommand::Rm(a)),
        Command::Start(a) => return container_command(&state_dir, ContainerCommand::Start(a)),
        Command::Restart(a) => return container_command(&state_dir, ContainerCommand::Restart(a)),
        Command::Logs(a) => return container_command(&state_dir, ContainerCommand::Logs(a)),
        Command::Inspect {
            kind,
            format,
            names,
        } => return inspect_command(&state_dir, kind, format, names),
        Command::Completion { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut cmd, "mvnet", &mut script);
            std::io::stdout().write_all(&script)?;
        }
        Command::Man => {
            let cmd = <Cli as clap::CommandFactory>::command();
            clap_mangen::Man::new(cmd).render(&mut std::io::stdout())?;
        }
        Command::Run(a) => {
            // As docker/cli: 125 for run's own errors, 126/127 for a
            // command that cannot be started.
            return Ok(run_container(&state_dir, a).unwrap_or_else(|e| {
                eprintln!("mvnet: error: {e:#}");
                container::not_started_code(&e).unwrap_or(125)
            }));
        }
        Command::Exec { container, command } => {
            let c = {
                let ctl = snapshot(&state_dir, "mvnet exec")?;
                ctl.container(&container)?.clone()
            };
            // 126/127 for a command that cannot be started, as Docker.
            return container::exec(&c, &command).or_else(|e| {
                match container::not_started_code(&e) {
                    Some(code) => {
                        eprintln!("mvnet: error: {e:#}");
                        Ok(code)
                    }
                    None => Err(e),
                }
            });
        }
        Command::Monitor { duration } => {
            crate::require_root("mvnet monitor")?;
            crate::datapath::monitor::run(duration.map(std::time::Duration::from_secs))?;
        }
        Command::Verify { network } => return verify_command(&state_dir, network),
        Command::Stats(a) => {
            snapshot(&state_dir, "mvnet stats")?;
            crate::stats::run(
                &state_dir,
                &crate::stats::StatsOptions {
                    network: a.network,
                    json: a.json,
                    watch: a.watch,
                    count: a.count,
                },
            )?;
        }
        Command::Serve {
            metrics_addr,
            no_events,
        } => {
            snapshot(&state_dir, "mvnet serve")?;
            crate::serve::run(crate::serve::ServeOptions {
                state_dir,
                addr: metrics_addr,
                events: !no_events,
            })?;
        }
        Command::Docker { command } => return docker_command(&state_dir, command),
        Command::Restore { check } => return restore_command(&state_dir, check),
        Command::Top {
            network,
            interval,
            count,
            plain,
        } => {
            snapshot(&state_dir, "mvnet top")?;
            crate::top::run(crate::top::Options {
                state_dir,
                network,
                interval,
                count,
                plain,
            })?;
        }
        Command::Pktgen(a) => return Err(crate::external::exec_lab("pktgen", &state_dir, &a.args)),
        Command::Lab(a) => return Err(crate::external::exec_lab("lab", &state_dir, &a.args)),
    }
    Ok(0)
}

/// `network …`.
fn network_command(state_dir: &std::path::Path, command: NetworkCommand) -> Result<i32> {
    let open = |what: &str| writer(state_dir, what);
    let read = |what: &str| reader(state_dir, what);
    match command {
        NetworkCommand::Create(a) => {
            let mut spec = a.spec();
            spec.labels = scripting::labels(&a.label_file, &a.label)?;
            let mut ctl = open("mvnet network create")?;
            let net = ctl.create_network(spec)?;
            outln!("{}", net.id);
        }
        NetworkCommand::Ls(a) => {
            let filters = Filters::parse(&a.filter, scripting::NETWORK_FILTERS, "network ls")?;
            let ctl = read("mvnet network ls")?;
            let rows = scripting::network_rows(&ctl, &filters, a.no_trunc);
            print_rows(
                &rows,
                a.quiet,
                a.format.as_deref(),
                scripting::NETWORK_TABLE,
                scripting::NETWORK_HEADERS,
            )?;
        }
        NetworkCommand::Inspect { format, names } => {
            let ctl = read("mvnet network inspect")?;
            let mut out = Vec::new();
            for n in &names {
                out.push(ctl.network_json(ctl.network(n)?));
            }
            print_inspect(out, format.format.as_deref())?;
        }
        NetworkCommand::Prune(a) => return network_prune(state_dir, a),
        NetworkCommand::Rm { names } => {
            let mut ctl = open("mvnet network rm")?;
            let mut failed = false;
            for n in &names {
                match ctl.remove_network(n) {
                    Ok(name) => outln!("{name}"),
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
            outln!(
                "{}",
                ctl.update_network(&network, policy, broadcast, multicast)?
            );
        }
        NetworkCommand::Disconnect { network, container } => {
            let mut ctl = open("mvnet network disconnect")?;
            ctl.disconnect(&network, &container)?;
        }
    }
    Ok(0)
}

/// `inspect [--type container|network] NAME…`: containers first, as Docker.
fn inspect_command(
    state_dir: &std::path::Path,
    kind: Option<ObjectKind>,
    format: FormatArg,
    names: Vec<String>,
) -> Result<i32> {
    let read = |what: &str| reader(state_dir, what);
    let ctl = read("mvnet inspect")?;
    let mut out = Vec::new();
    for n in &names {
        let container = match kind {
            Some(ObjectKind::Network) => None,
            _ => ctl.container(n).ok(),
        };
        let network = match kind {
            Some(ObjectKind::Container) => None,
            _ if container.is_some() => None,
            _ => ctl.network(n).ok(),
        };
        match (container, network) {
            (Some(c), _) => out.push(ctl.container_json(c)),
            (None, Some(net)) => out.push(ctl.network_json(net)),
            (None, None) => {
                let what = match kind {
                    Some(ObjectKind::Container) => "container",
                    Some(ObjectKind::Network) => "network",
                    None => "object",
                };
                return Err(anyhow!(
                    "no such {what}: {n}; list them with `mvnet ps -a` and `mvnet network ls`"
                ));
            }
        }
    }
    print_inspect(out, format.format.as_deref())?;
    Ok(0)
}

/// `verify [NET]`: exit 1 on an unexplained difference or a problem.
fn verify_command(state_dir: &std::path::Path, network: Option<String>) -> Result<i32> {
    let read = |what: &str| reader(state_dir, what);
    let ctl = read("mvnet verify")?;
    let checks = ctl.verify(network.as_deref())?;
    out!("{}", crate::controller::verify::render(&checks));
    let problems = ctl.root_problems(network.as_deref())?;
    for p in &problems {
        eprintln!("mvnet: verify: {p}");
    }
    let bad = checks.iter().filter(|c| c.unexplained()).count();
    if bad > 0 {
        eprintln!("mvnet: verify: {bad} endpoint(s) with a difference that has no explanation");
    }
    let unmatched = checks.iter().filter(|c| c.needs_restore).count();
    if unmatched > 0 {
        eprintln!(
            "mvnet: verify: {unmatched} endpoint(s) the kernel does not have as the state does; \
             run `mvnet restore`"
        );
    }
    if bad > 0 || unmatched > 0 || !problems.is_empty() {
        return Ok(1);
    }
    Ok(0)
}

/// `restore [--check]`: exit 1 on a problem, or with `--check` when
/// anything is to do.
fn restore_command(state_dir: &std::path::Path, check: bool) -> Result<i32> {
    let read = |what: &str| reader(state_dir, what);
    let mut ctl = if check {
        read("mvnet restore --check")?
    } else {
        crate::require_root("mvnet restore")?;
        let ctl = Controller::open(state_dir)?;
        ctl.check_namespace()?;
        OneShot(ctl)
    };
    let r = ctl.restore(check)?;
    for a in &r.actions {
        outln!("{a}");
    }
    if r.actions.is_empty() && r.problems.is_empty() {
        outln!("nothing to do: the kernel matches the state");
    }
    for p in &r.problems {
        eprintln!("mvnet: problem: {p}");
    }
    if !r.problems.is_empty() || (check && !r.actions.is_empty()) {
        return Ok(1);
    }
    Ok(0)
}

/// `docker sync|watch`: Docker's own macvlan networks, read through its
/// Engine API and registered as foreign networks.
fn docker_command(state_dir: &std::path::Path, command: DockerCommand) -> Result<i32> {
    let (a, follow) = match command {
        DockerCommand::Sync(a) => (a, false),
        DockerCommand::Watch(a) => (a, true),
    };
    let what = if follow {
        "mvnet docker watch"
    } else {
        "mvnet docker sync"
    };
    snapshot(state_dir, what)?;
    let opts = crate::docker::watch::Options {
        host: crate::docker::client::DockerHost::resolve(a.docker_host.as_deref())?,
        adopt: crate::docker::read::Adopt {
            policy: a.policy,
            xdp_mode: a.xdp_mode,
            max_endpoints: a.max_endpoints,
        },
        state_dir: state_dir.to_owned(),
    };
    if follow {
        crate::docker::watch::watch(opts)
    } else {
        crate::docker::watch::sync(opts)
    }
}

/// `container …` and its top-level forms (`ps`, `stop`, `rm`, `start`,
/// `restart`, `logs`).
fn container_command(state_dir: &std::path::Path, command: ContainerCommand) -> Result<i32> {
    let open = |what: &str| writer(state_dir, what);
    let read = |what: &str| reader(state_dir, what);
    match command {
        ContainerCommand::Inspect { format, names } => {
            let ctl = read("mvnet container inspect")?;
            let mut out = Vec::new();
            for n in &names {
                out.push(ctl.container_json(ctl.container(n)?));
            }
            print_inspect(out, format.format.as_deref())?;
        }
        ContainerCommand::Ls(a) => {
            let filters = Filters::parse(&a.filter, scripting::CONTAINER_FILTERS, "container ls")?;
            let ctl = read("mvnet container ls")?;
            let rows = scripting::container_rows(&ctl, &filters, a.all, a.no_trunc);
            print_rows(
                &rows,
                a.quiet,
                a.format.as_deref(),
                scripting::CONTAINER_TABLE,
                scripting::CONTAINER_HEADERS,
            )?;
        }
        ContainerCommand::Stop(a) => {
            let mut ctl = open("mvnet container stop")?;
            for n in &a.names {
                outln!("{}", ctl.stop(n)?);
            }
        }
        ContainerCommand::Rm(a) => {
            let mut ctl = open("mvnet container rm")?;
            for n in &a.names {
                outln!("{}", ctl.remove_container(n, a.force)?);
            }
        }
        ContainerCommand::Start(a) => {
            let mut ctl = open("mvnet container start")?;
            for n in &a.names {
                outln!("{}", ctl.start(n)?);
            }
        }
        ContainerCommand::Restart(a) => {
            let mut ctl = open("mvnet container restart")?;
            for n in &a.names {
                let c = ctl.container(n)?.clone();
                if c.auto_remove {
                    return Err(anyhow!("container {} was run with --rm, so a stop removes it; it cannot be restarted", c.name));
                }
                if c.running {
                    ctl.stop(&c.id)?;
                }
                outln!("{}", ctl.start(&c.id)?);
            }
        }
        ContainerCommand::Logs(a) => {
            let (name, pid) = {
                let ctl = snapshot(state_dir, "mvnet container logs")?;
                let c = ctl.container(&a.container)?;
                let pid = if c.running { c.pid } else { None };
                (container::log_name(&c.id), pid)
            };
            // Without the state lock: reads the log file only.
            let dir = crate::state_dir::StateDir::open_existing(state_dir)?
                .ok_or_else(|| anyhow!("state directory {} is gone", state_dir.display()))?;
            let mut printed = 0;
            loop {
                // The process first: output written before it exited is read after.
                let alive =
                    pid.is_some_and(|p| std::path::Path::new(&format!("/proc/{p}")).exists());
                let log = dir.read(&name)?.unwrap_or_default();
                if log.len() > printed {
                    let mut out = std::io::stdout().lock();
                    out.write_all(&log[printed..])?;
                    out.flush()?;
                    printed = log.len();
                }
                if !a.follow || !alive {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
        }
        ContainerCommand::Prune(a) => {
            let filters = Filters::parse(&a.filter, &["label", "until"], "container prune")?;
            crate::require_root("mvnet container prune")?;
            let warning = "WARNING! This will remove all stopped containers.\nAre you sure you want to continue?";
            if a.force
                || scripting::confirm(
                    warning,
                    &mut std::io::stdin().lock(),
                    &mut std::io::stdout(),
                )?
            {
                let mut ctl = writer(state_dir, "mvnet container prune")?;
                let ids: Vec<String> = ctl
                    .state
                    .containers
                    .values()
                    .filter(|c| !c.running)
                    .filter(|c| {
                        filters.matches(&crate::filter::Subject {
                            id: &c.id,
                            name: &c.name,
                            labels: &c.labels,
                            created: &c.created,
                            fields: Vec::new(),
                        })
                    })
                    .map(|c| c.id.clone())
                    .collect();
                if !ids.is_empty() {
                    outln!("Deleted Containers:");
                    for id in &ids {
                        ctl.remove_container(id, false)?;
                        outln!("{id}");
                    }
                    outln!();
                }
            }
            outln!("Total reclaimed space: 0B");
        }
    }
    Ok(0)
}

/// `network prune`: removes the networks without containers.
fn network_prune(state_dir: &std::path::Path, a: PruneArgs) -> Result<i32> {
    let filters = Filters::parse(&a.filter, &["label", "until"], "network prune")?;
    crate::require_root("mvnet network prune")?;
    let warning = "WARNING! This will remove all custom networks not used by at least one container.\nAre you sure you want to continue?";
    if !a.force
        && !scripting::confirm(
            warning,
            &mut std::io::stdin().lock(),
            &mut std::io::stdout(),
        )?
    {
        return Ok(0);
    }
    let mut ctl = writer(state_dir, "mvnet network prune")?;
    let names = ctl.unused_networks(|n| {
        filters.matches(&crate::filter::Subject {
            id: &n.id,
            name: &n.name,
            labels: &n.labels,
            created: &n.created,
            fields: Vec::new(),
        })
    });
    if !names.is_empty() {
        outln!("Deleted Networks:");
        for n in &names {
            ctl.remove_network(n)?;
            outln!("{n}");
        }
        outln!();
    }
    Ok(0)
}

/// Prints list rows: ids with `quiet`, else the `--format` template, else
/// the command's default table.
fn print_rows(
    rows: &[serde_json::Value],
    quiet: bool,
    format: Option<&str>,
    default_table: &str,
    headers: &[(&str, &str)],
) -> Result<()> {
    let spec = match (quiet, format) {
        (true, _) => "{{.ID}}",
        (false, Some(f)) => f,
        (false, None) => default_table,
    };
    let default_body = default_table.trim_start_matches("table").trim_start();
    let text = Format::parse(spec, default_body)?.render_all(rows, headers)?;
    std::io::stdout().write_all(text.as_bytes())?;
    Ok(())
}

/// Prints inspect output: a JSON array, or each object through `--format`.
fn print_inspect(objects: Vec<serde_json::Value>, format: Option<&str>) -> Result<()> {
    match format {
        None => print_json(&serde_json::Value::Array(objects)),
        Some(f) => {
            let text = Format::parse(f, "")?.render_all(&objects, &[])?;
            std::io::stdout().write_all(text.as_bytes())?;
            Ok(())
        }
    }
}

/// `mvnet run`; returns the exit code of a foreground command (0 otherwise).
fn run_container(state_dir: &std::path::Path, a: RunArgs) -> Result<i32> {
    refuse_image(&a)?;
    let labels = scripting::labels(&a.label_file, &a.label)?;
    let mut ctl = writer(state_dir, "mvnet run")?;
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
            labels,
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
        labels,
    })? {
        RunOutcome::Started(id) => outln!("{id}"),
        RunOutcome::Exited(code) => return Ok(code),
    }
    Ok(0)
}

/// `docker run IMAGE CMD` given to `mvnet run`: say that mvnet has no images.
fn refuse_image(a: &RunArgs) -> Result<()> {
    let Some(first) = a.command.first() else {
        return Ok(());
    };
    if !scripting::looks_like_image(first) {
        return Ok(());
    }
    let rest = a.command[1..].join(" ");
    let example = if rest.is_empty() {
        "sh".to_owned()
    } else {
        rest
    };
    Err(anyhow!(
        "{first:?} is not a program on this host; it looks like a Docker image. mvnet has no images: \
         it runs host binaries in a network namespace. Give a host command instead, \
         e.g. `mvnet run --network {} -- {example}`",
        a.network
    ))
}
