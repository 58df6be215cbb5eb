//! Fuzzing with proptest, fixed seeds and bounded counts (run by
//! `cargo test -p macvlan-user`, so CI runs it; no root, no kernel):
//!
//! * the command line: random argument vectors for every subcommand of the
//!   real clap tree (`Cli::command()`), mixing valid values, boundary values
//!   and garbage, through clap's parser and `Cli::validate` (every check
//!   that runs before the kernel is touched);
//! * IPAM: pools from random subnets, ranges, gateways and aux addresses,
//!   then random allocate / release / mark sequences, with the pool's
//!   invariants checked after every step.
//!
//! Zero panics over [`CASES`] cases each. A failure prints the shrunk input.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::Mutex,
};

use clap::{CommandFactory as _, FromArgMatches as _};
use mvnet::{
    cli::Cli,
    ipam::{Pool, PoolConfig, Subnet},
};
use proptest::{
    prelude::*,
    sample::Index,
    test_runner::{Config, RngAlgorithm, RngSeed, TestRunner},
};

const CASES: u32 = 100_000;

fn config(seed: u64) -> Config {
    Config {
        cases: CASES,
        rng_algorithm: RngAlgorithm::ChaCha,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        ..Config::default()
    }
}

// ---------------------------------------------------------------- the CLI

/// One option of a subcommand, as typed.
#[derive(Debug, Clone)]
struct Opt {
    spelling: String,
    long: Option<String>,
    takes_value: bool,
    possible: Vec<String>,
}

/// A leaf subcommand: its path (`network create`) and its options.
#[derive(Debug, Clone)]
struct Leaf {
    path: Vec<String>,
    opts: Vec<Opt>,
}

fn leaves(cmd: &clap::Command, path: &mut Vec<String>, out: &mut Vec<Leaf>) {
    let opts = cmd
        .get_arguments()
        .filter(|a| !a.is_positional())
        .flat_map(|a| {
            let takes_value = a.get_action().takes_values();
            let possible: Vec<String> = a
                .get_possible_values()
                .iter()
                .map(|p| p.get_name().to_owned())
                .collect();
            let long = a.get_long().map(str::to_owned);
            let mut spellings: Vec<String> = Vec::new();
            if let Some(l) = &long {
                spellings.push(format!("--{l}"));
            }
            if let Some(s) = a.get_short() {
                spellings.push(format!("-{s}"));
            }
            spellings.into_iter().map(move |spelling| Opt {
                spelling,
                long: long.clone(),
                takes_value,
                possible: possible.clone(),
            })
        })
        .collect();
    out.push(Leaf {
        path: path.clone(),
        opts,
    });
    for sub in cmd.get_subcommands() {
        path.push(sub.get_name().to_owned());
        leaves(sub, path, out);
        path.pop();
    }
}

/// Values that are valid somewhere, at a boundary, or plainly wrong.
const BOUNDARY: &[&str] = &[
    "0",
    "1",
    "-1",
    "-0",
    "0.1",
    "0.09",
    "3600",
    "3600.0001",
    "1e300",
    "-1e300",
    "NaN",
    "inf",
    "-inf",
    "4094",
    "4095",
    "4096",
    "65535",
    "65536",
    "604800",
    "604801",
    "1000000",
    "1000001",
    "2147483647",
    "2147483648",
    "4294967295",
    "4294967296",
    "18446744073709551615",
    "18446744073709551616",
    "",
    " ",
    "=",
    "a=",
    "=1",
    "::",
    ":0",
    ":",
    ":65536",
    "[::1]:9435",
    "localhost:9435",
    "0.0.0.0:0",
    "256.0.0.1",
    "10.0.0.0/33",
    "10.0.0.0/-1",
    "2001:db8::/129",
    "ff:ff:ff:ff:ff:ff",
    "00:00:00:00:00:00",
    "01:00:5e:00:00:01",
    "+2:42:ac:10:00:02",
    "02:42:ac:10:00",
    "eth0.4095",
    "eth0.0",
    "--",
    "-",
    "\u{0}",
    "ünïcödé",
];

/// Values that are valid for an option of this name.
fn valid_for(long: Option<&str>) -> &'static [&'static str] {
    match long.unwrap_or_default() {
        "subnet" => &[
            "10.10.0.0/24",
            "2001:db8:1::/64",
            "10.20.0.0/30",
            "10.0.0.0/8",
        ],
        "gateway" => &["10.10.0.1", "10.10.0.254", "2001:db8:1::1"],
        "ip-range" => &["10.10.0.128/25", "10.10.0.0/24", "2001:db8:1::/80"],
        "aux-address" => &["router=10.10.0.254", "dns=10.10.0.2", "v6=2001:db8:1::2"],
        "opt" => &[
            "parent=eth0",
            "parent=eth0.10",
            "macvlan_mode=vepa",
            "macvlan_mode=passthru",
            "parent=",
        ],
        "policy" => &["observe", "enforce"],
        "broadcast" | "multicast" => &["pass", "drop"],
        "xdp-mode" => &["native", "generic", "auto"],
        "ip" => &["10.10.0.5", "10.10.0.255"],
        "ip6" => &["2001:db8:1::5"],
        "mac-address" => &["02:42:0a:0a:00:05", "02:42:AC:10:56:0A"],
        "metrics-addr" => &[":9435", "[::1]:0", "127.0.0.1:9435", "localhost:80"],
        "watch" | "interval" => &["0.1", "1", "2.5", "3600"],
        "count" | "duration" | "timeout" | "size" | "window" | "rate" | "threads" => {
            &["1", "60", "100", "1514"]
        }
        "state-dir" => &["/tmp/mvnet-fuzz-state"],
        "network" | "name" | "dev" | "netns" => &["net1", "c1", "mvl-1-host"],
        _ => &["1"],
    }
}

/// Positional words: names, ids, commands, a shell (`completion`).
const WORDS: &[&str] = &[
    "net1",
    "c1",
    "sh",
    "-c",
    "true",
    "0123456789ab",
    "x",
    "bash",
];

/// How one token of the argument vector is made.
#[derive(Debug, Clone)]
enum Token {
    /// An option, with a value if it takes one (`--opt V`).
    Opt(Index, Value),
    /// `--opt=V`.
    OptEq(Index, Value),
    /// A positional word.
    Word(Index),
    /// A value on its own.
    Bare(Value),
}

#[derive(Debug, Clone)]
enum Value {
    Valid(Index),
    Possible(Index),
    Boundary(Index),
    Random(String),
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => any::<Index>().prop_map(Value::Valid),
        1 => any::<Index>().prop_map(Value::Possible),
        3 => any::<Index>().prop_map(Value::Boundary),
        1 => "[ -~]{0,24}".prop_map(Value::Random),
    ]
}

fn token() -> impl Strategy<Value = Token> {
    prop_oneof![
        5 => (any::<Index>(), value()).prop_map(|(i, v)| Token::Opt(i, v)),
        1 => (any::<Index>(), value()).prop_map(|(i, v)| Token::OptEq(i, v)),
        2 => any::<Index>().prop_map(Token::Word),
        1 => value().prop_map(Token::Bare),
    ]
}

fn render(v: &Value, opt: Option<&Opt>) -> String {
    match v {
        Value::Valid(i) => i
            .get(valid_for(opt.and_then(|o| o.long.as_deref())))
            .to_string(),
        Value::Possible(i) => match opt.filter(|o| !o.possible.is_empty()) {
            Some(o) => i.get(&o.possible).clone(),
            None => i.get(BOUNDARY).to_string(),
        },
        Value::Boundary(i) => i.get(BOUNDARY).to_string(),
        Value::Random(s) => s.clone(),
    }
}

fn argv(leaf: &Leaf, tokens: &[Token]) -> Vec<String> {
    let mut argv = vec!["mvnet".to_owned()];
    argv.extend(leaf.path.iter().cloned());
    for t in tokens {
        match t {
            Token::Opt(i, v) | Token::OptEq(i, v) if !leaf.opts.is_empty() => {
                let opt = i.get(&leaf.opts);
                let val = render(v, Some(opt));
                match (t, opt.takes_value) {
                    (_, false) => argv.push(opt.spelling.clone()),
                    (Token::OptEq(..), true) => argv.push(format!("{}={val}", opt.spelling)),
                    _ => {
                        argv.push(opt.spelling.clone());
                        argv.push(val);
                    }
                }
            }
            Token::Opt(_, v) | Token::OptEq(_, v) | Token::Bare(v) => argv.push(render(v, None)),
            Token::Word(i) => argv.push(i.get(WORDS).to_string()),
        }
    }
    argv
}

#[test]
fn cli_parser_and_validation_never_panic() {
    let mut cmd = Cli::command();
    cmd.build();
    let mut all = Vec::new();
    leaves(&cmd, &mut Vec::new(), &mut all);
    // Only leaves run anything; `help` is clap's own.
    let all: Vec<Leaf> = all
        .into_iter()
        .filter(|l| {
            !l.path.is_empty()
                && !l.path.iter().any(|p| p == "help")
                && !all_has_children(&cmd, &l.path)
        })
        .collect();
    assert!(all.len() >= 20, "only {} subcommands found", all.len());
    let parsed: Mutex<BTreeMap<String, (u32, u32)>> = Mutex::new(BTreeMap::new());
    let cmd = Mutex::new(cmd);
    let mut runner = TestRunner::new(config(0x6d76_6e65_7401));
    let strategy = (any::<Index>(), proptest::collection::vec(token(), 0..8));
    runner
        .run(&strategy, |(leaf, tokens)| {
            let leaf = leaf.get(&all);
            let argv = argv(leaf, &tokens);
            let mut cmd = cmd.lock().unwrap();
            let Ok(matches) = cmd.try_get_matches_from_mut(&argv) else {
                return Ok(());
            };
            let cli = Cli::from_arg_matches(&matches).expect("matches of Cli's own command");
            let valid = cli.validate().is_ok();
            let mut p = parsed.lock().unwrap();
            let e = p.entry(leaf.path.join(" ")).or_default();
            e.0 += 1;
            e.1 += u32::from(valid);
            Ok(())
        })
        .unwrap();
    let parsed = parsed.into_inner().unwrap();
    // The fuzzer reached past the parser into every subcommand.
    let missing: Vec<String> = all
        .iter()
        .map(|l| l.path.join(" "))
        .filter(|p| !parsed.contains_key(p))
        .collect();
    assert!(missing.is_empty(), "never parsed: {missing:?}");
    // `network connect` and `network update` have nothing left to check
    // after clap: their MAC, policy and rules are typed by the parser.
    for path in ["network create", "run"] {
        let (ok, valid) = parsed[path];
        assert!(
            valid > 0 && valid < ok,
            "{path}: {valid} of {ok} parsed vectors validated; want some and not all"
        );
    }
}

fn all_has_children(root: &clap::Command, path: &[String]) -> bool {
    let mut cmd = root;
    for p in path {
        cmd = cmd.find_subcommand(p).expect("path from the tree");
    }
    cmd.get_subcommands().any(|s| s.get_name() != "help")
}

#[test]
fn out_of_range_numbers_are_refused_with_the_range() {
    let err = |args: &[&str]| {
        let argv: Vec<&str> = std::iter::once("mvnet")
            .chain(args.iter().copied())
            .collect();
        match Cli::command().try_get_matches_from(argv) {
            Ok(_) => panic!("{args:?} was accepted"),
            Err(e) => e.to_string(),
        }
    };
    for v in ["1e300", "NaN", "-1", "0", "inf", "3600.5"] {
        let e = err(&["stats", &format!("--watch={v}")]);
        assert!(
            e.contains(&format!(
                "invalid value '{v}' for '--watch [<SECS>]': {v} is out of range; give seconds between 0.1 and 3600"
            )),
            "{e}"
        );
    }
    let e = err(&["stats", "--watch", "1", "--count", "0"]);
    assert!(e.contains("0 is not in 1..=1000000"), "{e}");
    let e = err(&["top", "--count", "1000001"]);
    assert!(e.contains("1000001 is not in 1..=1000000"), "{e}");
    let e = err(&["monitor", "--duration", "604801"]);
    assert!(e.contains("604801 is not in 1..=604800"), "{e}");
    let e = err(&["serve", "--metrics-addr", ":65536"]);
    assert!(
        e.contains("invalid port \"65536\" in \":65536\": give a port from 0 to 65535"),
        "{e}"
    );
}

// ---------------------------------------------------------------- IPAM

/// `bits` with the host bits of a /`prefix` cleared (of a `width`-bit address).
fn mask(bits: u128, prefix: u8, width: u8) -> u128 {
    let host = width.saturating_sub(prefix).min(127);
    let keep = (!0u128 >> host) << host;
    bits & keep & (!0u128 >> (128 - u32::from(width)))
}

/// An address of the family of `base`, `offset` from its start or end.
fn near(subnet: &Subnet, offset: u8, from_end: bool) -> IpAddr {
    let bits = |ip: IpAddr| match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    };
    let v = if from_end {
        bits(subnet.last()).wrapping_sub(u128::from(offset))
    } else {
        bits(subnet.network()).wrapping_add(u128::from(offset))
    };
    if subnet.is_ipv4() {
        IpAddr::V4(Ipv4Addr::from(v as u32))
    } else {
        IpAddr::V6(Ipv6Addr::from(v))
    }
}

/// An address: near the start or end of the subnet, or anywhere.
#[derive(Debug, Clone)]
enum Addr {
    Near(u8, bool),
    Any4(u32),
    Any6(u128),
}

impl Addr {
    fn resolve(&self, subnet: &Subnet) -> IpAddr {
        match *self {
            Addr::Near(o, end) => near(subnet, o, end),
            Addr::Any4(a) => IpAddr::V4(Ipv4Addr::from(a)),
            Addr::Any6(a) => IpAddr::V6(Ipv6Addr::from(a)),
        }
    }
}

fn addr() -> impl Strategy<Value = Addr> {
    prop_oneof![
        14 => (0u8..12, any::<bool>()).prop_map(|(o, e)| Addr::Near(o, e)),
        1 => any::<u32>().prop_map(Addr::Any4),
        1 => any::<u128>().prop_map(Addr::Any6),
    ]
}

#[derive(Debug, Clone)]
enum Op {
    Allocate(Option<Addr>),
    Release(Addr),
    ReleaseAllocated(Index),
    Mark(Addr),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => proptest::option::of(addr()).prop_map(Op::Allocate),
        1 => addr().prop_map(Op::Release),
        2 => any::<Index>().prop_map(Op::ReleaseAllocated),
        1 => addr().prop_map(Op::Mark),
    ]
}

/// How the subnet is given: as text (parsed), or built from parts.
#[derive(Debug, Clone)]
enum SubnetSpec {
    Text(String),
    V4(u32, u8),
    V6(u128, u8),
}

fn subnet_spec() -> impl Strategy<Value = SubnetSpec> {
    prop_oneof![
        1 => "[0-9a-f:./]{0,24}".prop_map(SubnetSpec::Text),
        1 => (any::<u32>(), 0u8..34, any::<u8>())
            .prop_map(|(a, p, o)| SubnetSpec::Text(format!("{}/{p}{}", Ipv4Addr::from(a), if o < 8 { " " } else { "" }))),
        4 => (any::<u32>(), prop_oneof![0u8..=33, 22u8..=32], any::<u8>())
            .prop_map(|(a, p, m)| SubnetSpec::V4(if m < 224 { mask(a.into(), p, 32) as u32 } else { a }, p)),
        2 => (any::<u128>(), prop_oneof![0u8..=129, 100u8..=128], any::<u8>())
            .prop_map(|(a, p, m)| SubnetSpec::V6(if m < 224 { mask(a, p, 128) } else { a }, p)),
    ]
}

#[derive(Debug, Clone)]
struct PoolCase {
    subnet: SubnetSpec,
    /// Extra prefix bits of the ip-range (`None`: no range), and where.
    range: Option<(u8, Addr)>,
    gateway: Option<Addr>,
    aux: Vec<Addr>,
    ops: Vec<Op>,
}

fn pool_case() -> impl Strategy<Value = PoolCase> {
    (
        subnet_spec(),
        proptest::option::of((0u8..12, addr())),
        proptest::option::of(addr()),
        proptest::collection::vec(addr(), 0..3),
        proptest::collection::vec(op(), 0..24),
    )
        .prop_map(|(subnet, range, gateway, aux, ops)| PoolCase {
            subnet,
            range,
            gateway,
            aux,
            ops,
        })
}

/// What must hold of a pool after every step.
fn check(pool: &Pool) -> Result<(), TestCaseError> {
    let c = &pool.config;
    let gw = c.gateway;
    prop_assert!(gw.is_some(), "a validated pool has a gateway");
    let mut seen = BTreeSet::new();
    for ip in pool.allocated() {
        prop_assert!(seen.insert(ip), "{ip} allocated twice");
        prop_assert!(Some(ip) != gw, "the gateway {ip} was allocated");
        prop_assert!(
            !c.aux_addresses.values().any(|a| *a == ip),
            "aux address {ip} was allocated"
        );
        prop_assert!(pool.is_allocated(ip));
    }
    Ok(())
}

/// Pools that validated, and addresses handed out, over all cases.
#[derive(Default)]
struct Reached {
    pools: u32,
    allocated: u32,
}

fn run_pool_case(case: &PoolCase, reached: &mut Reached) -> Result<(), TestCaseError> {
    let subnet = match &case.subnet {
        SubnetSpec::Text(s) => s.parse::<Subnet>(),
        SubnetSpec::V4(a, p) => Subnet::new(IpAddr::V4(Ipv4Addr::from(*a)), *p),
        SubnetSpec::V6(a, p) => Subnet::new(IpAddr::V6(Ipv6Addr::from(*a)), *p),
    };
    let Ok(subnet) = subnet else {
        return Ok(());
    };
    // Display and parse agree.
    prop_assert_eq!(subnet.to_string().parse::<Subnet>().ok(), Some(subnet));
    let mut config = PoolConfig::new(subnet);
    if let Some((extra, at)) = &case.range {
        let width = if subnet.is_ipv4() { 32 } else { 128 };
        let prefix = subnet.prefix().saturating_add(*extra).min(width + 1);
        let start = match at.resolve(&subnet) {
            IpAddr::V4(a) => {
                IpAddr::V4(Ipv4Addr::from(mask(u32::from(a).into(), prefix, 32) as u32))
            }
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(mask(a.into(), prefix, 128))),
        };
        config.ip_range = Subnet::new(start, prefix).ok();
    }
    config.gateway = case.gateway.as_ref().map(|g| g.resolve(&subnet));
    for (i, a) in case.aux.iter().enumerate() {
        config
            .aux_addresses
            .insert(format!("aux{i}"), a.resolve(&subnet));
    }
    let Ok(mut pool) = Pool::new(config) else {
        return Ok(());
    };
    reached.pools += 1;
    check(&pool)?;
    for op in &case.ops {
        match op {
            Op::Allocate(req) => {
                let want = req.as_ref().map(|a| a.resolve(&subnet));
                let before = pool.allocated().count();
                if let Ok(ip) = pool.allocate(want) {
                    prop_assert!(subnet.contains(ip), "{ip} outside {subnet}");
                    if let Some(w) = want {
                        prop_assert_eq!(ip, w);
                    }
                    prop_assert_eq!(pool.allocated().count(), before + 1);
                    reached.allocated += 1;
                } else {
                    prop_assert_eq!(pool.allocated().count(), before);
                }
            }
            Op::Release(a) => {
                let ip = a.resolve(&subnet);
                let was = pool.is_allocated(ip);
                prop_assert_eq!(pool.release(ip), was);
                prop_assert!(!pool.is_allocated(ip));
            }
            Op::ReleaseAllocated(i) => {
                let all: Vec<IpAddr> = pool.allocated().collect();
                if !all.is_empty() {
                    let ip = *i.get(&all);
                    prop_assert!(pool.release(ip));
                }
            }
            Op::Mark(a) => {
                // Restoring state marks without checks; only subnet
                // addresses are ever recorded, as the controller does.
                let ip = a.resolve(&subnet);
                if subnet.contains(ip) && pool.check_free(ip) {
                    pool.mark_allocated(ip);
                }
            }
        }
        check(&pool)?;
    }
    Ok(())
}

trait CheckFree {
    /// Whether `ip` is neither reserved nor allocated (what a restored
    /// state can hold).
    fn check_free(&self, ip: IpAddr) -> bool;
}

impl CheckFree for Pool {
    fn check_free(&self, ip: IpAddr) -> bool {
        let c = &self.config;
        Some(ip) != c.gateway
            && !c.aux_addresses.values().any(|a| *a == ip)
            && !self.is_allocated(ip)
    }
}

#[test]
fn ipam_never_panics_and_keeps_its_invariants() {
    let mut runner = TestRunner::new(config(0x6d76_6e65_7402));
    let reached = Mutex::new(Reached::default());
    runner
        .run(&pool_case(), |case| {
            run_pool_case(&case, &mut reached.lock().unwrap())
        })
        .unwrap();
    // The generator reaches valid pools and allocations, not only refusals.
    let r = reached.into_inner().unwrap();
    assert!(
        r.pools > CASES / 4 && r.allocated > CASES,
        "{} valid pools, {} addresses handed out in {CASES} cases",
        r.pools,
        r.allocated
    );
}
