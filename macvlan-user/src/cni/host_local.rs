//! `host-local` inside the plugin, for standalone ADD and DEL: executing
//! the IPAM binary is most of a standalone call's time (a Go process start
//! for every ADD and DEL), so the common configs are allocated here, in
//! host-local's own on-disk format and under its lock, so that both can
//! share one data directory:
//!
//! * `<dataDir>/<network name>/` (dataDir default `/var/lib/cni/networks`);
//! * one file per reserved address, named as the address, holding
//!   `<container id>\r\n<ifname>`, created exclusively (`O_EXCL`);
//! * `last_reserved_ip.<range set index>`: where the next search starts
//!   (round robin);
//! * `lock`: an exclusive `flock` held while allocating or releasing.
//!
//! The allocation order is host-local's (`allocator.go`, `range_set.go`,
//! `range.go`): each range set in turn, from the address after the last
//! reserved one (or the range's start), skipping the gateway, wrapping
//! around the set once; a container already holding an address in a set
//! is refused as a duplicate.
//!
//! Only configs this module understands completely take this path: the
//! keys below, valid ranges, no requested addresses (`IP=` in CNI_ARGS,
//! `args`/`runtimeConfig` `ips`), no `resolvConf`. Every other config,
//! including every invalid one, goes to the host-local binary, which then
//! answers (or refuses) exactly as it always does. CHECK and GC always do.
use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write as _},
    net::IpAddr,
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
};

use serde_json::{json, Map, Value};

use super::spec::{CniError, CniResult, Code, Env};
use crate::{
    ipam::{from_bits, to_bits, Subnet},
    state_dir,
    sys::fs as sys,
};

/// host-local's default data directory.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";
/// Prefix of the files holding each range set's last reserved address.
const LAST_RESERVED: &str = "last_reserved_ip.";
/// Between the container id and the ifname in a reservation.
const LINE_BREAK: &str = "\r\n";
/// The keys of `ipam` this module reads; any other sends the config to
/// the binary.
const KNOWN_KEYS: [&str; 8] = [
    "type",
    "subnet",
    "rangeStart",
    "rangeEnd",
    "gateway",
    "ranges",
    "routes",
    "dataDir",
];

/// An error as the binary reports it: a plain error, which its `skel`
/// answers with code 999, passed on under the plugin's name.
fn failure(msg: String) -> CniError {
    CniError::new(Code(999), format!("host-local: {msg}"))
}

fn io_failure(what: &str, path: &Path, e: io::Error) -> CniError {
    failure(format!("{what} {}: {e}", path.display()))
}

/// One range, canonical as host-local makes it: start and end inside the
/// subnet, the gateway defaulting to the subnet's first address.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Range {
    subnet: Subnet,
    start: IpAddr,
    end: IpAddr,
    gateway: IpAddr,
}

impl Range {
    fn contains(&self, ip: IpAddr) -> bool {
        self.subnet.contains(ip)
            && to_bits(ip) >= to_bits(self.start)
            && to_bits(ip) <= to_bits(self.end)
    }

    fn overlaps(&self, other: &Range) -> bool {
        self.subnet.is_ipv4() == other.subnet.is_ipv4()
            && (self.contains(other.start)
                || self.contains(other.end)
                || other.contains(self.start)
                || other.contains(self.end))
    }
}

/// A parsed config this module handles.
#[derive(Clone, Debug)]
pub struct Config {
    /// `<dataDir>/<network name>`.
    dir: PathBuf,
    range_sets: Vec<Vec<Range>>,
    routes: Vec<Value>,
}

/// An address as Go's `net.ParseIP` would take it and `String()` print it;
/// `None` for one written any other way (IPv4-mapped IPv6, for one, which
/// Go treats as IPv4).
fn address(v: &Value) -> Option<IpAddr> {
    let s = v.as_str()?;
    let ip: IpAddr = s.parse().ok()?;
    match ip {
        IpAddr::V6(a) if a.to_ipv4_mapped().is_some() => None,
        _ => Some(ip),
    }
}

/// One range object (`subnet`, `rangeStart`, `rangeEnd`, `gateway`),
/// canonicalised as host-local's `Range.Canonicalize` does; `None` where
/// it would fail or where this module would not print it identically.
fn range(obj: &Map<String, Value>) -> Option<Range> {
    let subnet: Subnet = obj.get("subnet")?.as_str()?.parse().ok()?;
    let v4 = subnet.is_ipv4();
    if matches!(subnet.network(), IpAddr::V6(a) if a.to_ipv4_mapped().is_some()) {
        return None;
    }
    // "Network ... too small to allocate from".
    if u32::from(subnet.prefix()) + 2 > if v4 { 32 } else { 128 } {
        return None;
    }
    let first = from_bits(to_bits(subnet.network()) + 1, v4);
    let opt = |key: &str| match obj.get(key) {
        None | Some(Value::Null) => Some(None),
        Some(v) => address(v).filter(|a| a.is_ipv4() == v4).map(Some),
    };
    let gateway = opt("gateway")?.unwrap_or(first);
    let start = opt("rangeStart")?.unwrap_or(first);
    // The last address, less the IPv4 broadcast.
    let last = from_bits(to_bits(subnet.last()) - u128::from(v4), v4);
    let end = opt("rangeEnd")?.unwrap_or(last);
    if !subnet.contains(start) || !subnet.contains(end) || to_bits(start) > to_bits(end) {
        return None;
    }
    Some(Range {
        subnet,
        start,
        end,
        gateway,
    })
}

/// A route as the result carries it: `dst` (and `gw`) as given, when
/// host-local would print them the same.
fn route(v: &Value) -> Option<Value> {
    let obj = v.as_object()?;
    if obj.keys().any(|k| k != "dst" && k != "gw") {
        return None;
    }
    let dst = obj.get("dst")?.as_str()?;
    // A network address (host bits are kept by some versions, cleared by
    // none: leave those to the binary), written as Go prints it.
    let net: Subnet = dst.parse().ok()?;
    address(&json!(net.network().to_string()))?;
    if net.to_string() != dst {
        return None;
    }
    let mut out = json!({ "dst": dst });
    match obj.get("gw") {
        None | Some(Value::Null) => {}
        Some(gw) => {
            let gw = address(gw)?;
            if json!(gw.to_string()) != obj["gw"] {
                return None;
            }
            out["gw"] = json!(gw.to_string());
        }
    }
    Some(out)
}

/// Whether CNI_ARGS leaves the allocation to the pool: none, or only
/// keys host-local ignores under `IgnoreUnknown`, and no `IP`.
fn args_allow(env: &Env) -> bool {
    let Ok(args) = env.args() else {
        return false;
    };
    if args.is_empty() {
        return true;
    }
    let ignore = args.iter().any(|(k, v)| {
        k == "IgnoreUnknown" && matches!(v.to_ascii_lowercase().as_str(), "1" | "true")
    });
    ignore && !args.iter().any(|(k, _)| k == "IP")
}

/// The config this module handles, or `None`: the binary's to answer.
pub fn config(conf: &Value, env: &Env) -> Option<Config> {
    let ipam = conf.get("ipam")?.as_object()?;
    if ipam.keys().any(|k| !KNOWN_KEYS.contains(&k.as_str())) || !args_allow(env) {
        return None;
    }
    let requested = |v: Option<&Value>| v.and_then(|v| v.get("ips")).is_some();
    if requested(conf.get("runtimeConfig"))
        || requested(conf.get("args").and_then(|a| a.get("cni")))
    {
        return None;
    }
    let name = conf.get("name")?.as_str()?;
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return None;
    }
    let mut range_sets = Vec::new();
    if ipam.contains_key("subnet") {
        range_sets.push(vec![range(ipam)?]);
    } else if ["rangeStart", "rangeEnd", "gateway"]
        .iter()
        .any(|k| ipam.contains_key(*k))
    {
        return None;
    }
    match ipam.get("ranges") {
        None | Some(Value::Null) => {}
        Some(sets) => {
            for set in sets.as_array()? {
                let set: Option<Vec<Range>> = set
                    .as_array()?
                    .iter()
                    .map(|r| range(r.as_object()?))
                    .collect();
                range_sets.push(set.filter(|s| !s.is_empty())?);
            }
        }
    }
    if range_sets.is_empty() {
        return None;
    }
    // One family per set, and no overlaps within or across sets.
    let all: Vec<(usize, &Range)> = range_sets
        .iter()
        .enumerate()
        .flat_map(|(i, s)| s.iter().map(move |r| (i, r)))
        .collect();
    for (n, (i, a)) in all.iter().enumerate() {
        for (j, b) in &all[n + 1..] {
            if a.overlaps(b) || (i == j && a.subnet.is_ipv4() != b.subnet.is_ipv4()) {
                return None;
            }
        }
    }
    let routes: Option<Vec<Value>> = match ipam.get("routes") {
        None | Some(Value::Null) => Some(Vec::new()),
        Some(r) => r.as_array()?.iter().map(route).collect(),
    };
    let data_dir = match ipam.get("dataDir") {
        None | Some(Value::Null) => PathBuf::from(DEFAULT_DATA_DIR),
        Some(Value::String(d)) if !d.is_empty() => PathBuf::from(d),
        Some(Value::String(_)) => PathBuf::from(DEFAULT_DATA_DIR),
        Some(_) => return None,
    };
    Some(Config {
        dir: data_dir.join(name),
        range_sets,
        routes: routes?,
    })
}

/// The network's data directory, locked as host-local locks it.
struct Store {
    dir: PathBuf,
    _lock: sys::Lock,
}

impl Store {
    fn open(dir: &Path) -> CniResult<Store> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(|e| io_failure("creating", dir, e))?;
        let path = dir.join("lock");
        // host-local opens it O_RDONLY|O_CREAT, mode 0750; the flock is the
        // same on a descriptor opened for writing.
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o750)
            .open(&path)
            .map_err(|e| io_failure("opening", &path, e))?;
        let lock = sys::lock_exclusive(file, true).map_err(|e| io_failure("locking", &path, e))?;
        Ok(Store {
            dir: dir.to_owned(),
            _lock: lock,
        })
    }

    /// The reservations: (address, content), for every file named as an
    /// address.
    fn reservations(&self) -> CniResult<Vec<(IpAddr, String)>> {
        let entries = fs::read_dir(&self.dir).map_err(|e| io_failure("reading", &self.dir, e))?;
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io_failure("reading", &self.dir, e))?;
            let Some(ip) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<IpAddr>().ok())
            else {
                continue;
            };
            if !entry.file_type().is_ok_and(|t| t.is_file()) {
                continue;
            }
            match fs::read_to_string(entry.path()) {
                Ok(content) => out.push((ip, content)),
                // Released meanwhile by a holder of an older lock, or not ours.
                Err(_) => continue,
            }
        }
        Ok(out)
    }

    /// Reserves `ip` for the attachment; false if someone holds it.
    fn reserve(&self, ip: IpAddr, owner: &str, set: usize) -> CniResult<bool> {
        let path = self.dir.join(ip.to_string());
        let mut f: File = match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
            Err(e) => return Err(io_failure("reserving", &path, e)),
        };
        if let Err(e) = f.write_all(owner.as_bytes()) {
            let _ = fs::remove_file(&path);
            return Err(io_failure("writing", &path, e));
        }
        let last = self.dir.join(format!("{LAST_RESERVED}{set}"));
        write_over(&last, ip.to_string().as_bytes())
            .map_err(|e| io_failure("writing", &last, e))?;
        Ok(true)
    }

    fn last_reserved(&self, set: usize) -> Option<IpAddr> {
        fs::read_to_string(self.dir.join(format!("{LAST_RESERVED}{set}")))
            .ok()?
            .parse()
            .ok()
    }

    /// Removes every reservation whose content is `key` (trimmed); whether
    /// there was one.
    fn release(&self, key: &str) -> CniResult<bool> {
        let mut found = false;
        for (ip, content) in self.reservations()? {
            if content.trim() == key.trim() {
                let path = self.dir.join(ip.to_string());
                match fs::remove_file(&path) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => {
                        return Err(io_failure("releasing", &path, e))
                    }
                    _ => found = true,
                }
            }
        }
        Ok(found)
    }
}

/// What a reservation of the attachment holds.
fn owner(env: &Env) -> String {
    format!("{}{LINE_BREAK}{}", env.container_id.trim(), env.ifname)
}

/// host-local's iterator over a range set (`RangeIter`): from the address
/// after `last` (when the set contains it) or from the first range's
/// start; the gateway skipped; once around the set.
struct RangeIter<'a> {
    set: &'a [Range],
    idx: usize,
    cur: Option<IpAddr>,
    start: Option<IpAddr>,
}

impl<'a> RangeIter<'a> {
    fn new(set: &'a [Range], last: Option<IpAddr>) -> RangeIter<'a> {
        let from = last.and_then(|l| set.iter().position(|r| r.contains(l)).map(|i| (i, l)));
        RangeIter {
            set,
            idx: from.map_or(0, |(i, _)| i),
            cur: from.map(|(_, l)| l),
            start: None,
        }
    }
}

impl Iterator for RangeIter<'_> {
    type Item = (IpAddr, usize);

    fn next(&mut self) -> Option<(IpAddr, usize)> {
        loop {
            let r = &self.set[self.idx];
            match self.cur {
                None => {
                    self.cur = Some(r.start);
                    self.start = Some(r.start);
                }
                Some(c) => {
                    let next = if c == r.end {
                        self.idx = (self.idx + 1) % self.set.len();
                        self.set[self.idx].start
                    } else {
                        from_bits(to_bits(c) + 1, c.is_ipv4())
                    };
                    self.cur = Some(next);
                    match self.start {
                        None => self.start = Some(next),
                        Some(s) if s == next => return None,
                        Some(_) => {}
                    }
                }
            }
            let c = self.cur.expect("set above");
            if c != self.set[self.idx].gateway {
                return Some((c, self.idx));
            }
        }
    }
}

fn describe(set: &[Range]) -> String {
    set.iter()
        .map(|r| format!("{}-{}", r.start, r.end))
        .collect::<Vec<_>>()
        .join(",")
}

/// ADD: one address from every range set, as host-local's result (spec
/// 1.0.0 shape; the caller converts it).
pub fn add(cfg: &Config, env: &Env) -> CniResult<Value> {
    let store = Store::open(&cfg.dir)?;
    let me = owner(env);
    let held: Vec<IpAddr> = store
        .reservations()?
        .into_iter()
        .filter(|(_, c)| c.trim() == me.trim())
        .map(|(ip, _)| ip)
        .collect();
    let mut ips = Vec::new();
    for (n, set) in cfg.range_sets.iter().enumerate() {
        let got = (|| {
            if let Some(ip) = held.iter().find(|ip| set.iter().any(|r| r.contains(**ip))) {
                return Err(format!(
                    "{ip} has been allocated to {}, duplicate allocation is not allowed",
                    env.container_id
                ));
            }
            for (ip, idx) in RangeIter::new(set, store.last_reserved(n)) {
                if store.reserve(ip, &me, n).map_err(|e| e.msg)? {
                    return Ok((ip, &set[idx]));
                }
            }
            Err(format!(
                "no IP addresses available in range set: {}",
                describe(set)
            ))
        })();
        match got {
            Ok((ip, r)) => ips.push(json!({
                "address": format!("{ip}/{}", r.subnet.prefix()),
                "gateway": r.gateway.to_string(),
            })),
            Err(msg) => {
                if !ips.is_empty() {
                    let _ = store.release(&me);
                }
                let msg = msg.strip_prefix("host-local: ").unwrap_or(&msg).to_owned();
                return Err(failure(format!("failed to allocate for range {n}: {msg}")));
            }
        }
    }
    let mut result = json!({"cniVersion": "1.0.0", "ips": ips, "dns": {}});
    if !cfg.routes.is_empty() {
        result["routes"] = json!(cfg.routes);
    }
    Ok(result)
}

/// DEL: releases the attachment's addresses (and, as host-local does,
/// reservations of an older format holding the container id alone).
pub fn del(cfg: &Config, env: &Env) -> CniResult<()> {
    let store = Store::open(&cfg.dir)?;
    if !store.release(&owner(env))? {
        store.release(env.container_id.trim())?;
    }
    Ok(())
}

/// Makes the file at `path` hold `data` (host-local's `os.WriteFile`, under
/// the data directory's lock), without truncating it to 0 first
/// ([`state_dir::write_over`]).
fn write_over(path: &Path, data: &[u8]) -> io::Result<()> {
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    state_dir::write_over(&f, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(args: &str) -> Env {
        Env {
            command: "ADD".into(),
            container_id: "c1".into(),
            netns: "/x".into(),
            ifname: "eth0".into(),
            args: args.into(),
            path: String::new(),
        }
    }

    fn conf(ipam: Value) -> Value {
        json!({"cniVersion": "1.0.0", "name": "net1", "type": "mvnet", "ipam": ipam})
    }

    #[test]
    fn last_reserved_is_written_over_to_exactly_the_new_address() {
        let path = std::env::temp_dir().join(format!(
            "mvnet-host-local-unit-{}-last_reserved_ip.0",
            std::process::id()
        ));
        let _ = fs::remove_file(&path);
        for ip in [
            "10.70.0.100",
            "10.70.0.9",
            "10.70.0.9",
            "10.70.0.10",
            "fd00::1",
        ] {
            write_over(&path, ip.as_bytes()).unwrap();
            assert_eq!(fs::read_to_string(&path).unwrap(), ip);
        }
        fs::remove_file(&path).unwrap();
    }

    #[test]
    fn takes_the_configs_it_understands_and_leaves_the_rest() {
        let ok = |ipam: Value, args: &str| config(&conf(ipam), &env(args)).is_some();
        assert!(ok(
            json!({"type": "host-local", "subnet": "10.1.0.0/24"}),
            ""
        ));
        assert!(ok(
            json!({"type": "host-local", "subnet": "10.1.0.0/24"}),
            "IgnoreUnknown=1;K8S_POD_NAME=p"
        ));
        assert!(ok(
            json!({"type": "host-local", "ranges": [[{"subnet": "10.1.0.0/24"}], [{"subnet": "fd00::/64"}]],
                   "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0", "gw": "fd00::1"}]}),
            ""
        ));
        // Requested addresses, DNS from a file, unknown keys, invalid or
        // overlapping ranges: the binary's to answer.
        for (ipam, args) in [
            (
                json!({"type": "host-local", "subnet": "10.1.0.0/24"}),
                "IP=10.1.0.9",
            ),
            (
                json!({"type": "host-local", "subnet": "10.1.0.0/24"}),
                "K8S_POD_NAME=p",
            ),
            (
                json!({"type": "host-local", "subnet": "10.1.0.0/24", "resolvConf": "/r"}),
                "",
            ),
            (json!({"type": "host-local", "subnet": "10.1.0.5/24"}), ""),
            (json!({"type": "host-local", "subnet": "10.1.0.0/31"}), ""),
            (
                json!({"type": "host-local", "subnet": "10.1.0.0/24", "rangeStart": "10.2.0.1"}),
                "",
            ),
            (
                json!({"type": "host-local", "subnet": "10.1.0.0/24", "rangeStart": "10.1.0.9", "rangeEnd": "10.1.0.3"}),
                "",
            ),
            (
                json!({"type": "host-local", "ranges": [[{"subnet": "10.1.0.0/24"}], [{"subnet": "10.1.0.0/25"}]]}),
                "",
            ),
            (
                json!({"type": "host-local", "ranges": [[{"subnet": "10.1.0.0/24"}, {"subnet": "fd00::/64"}]]}),
                "",
            ),
            (json!({"type": "host-local", "ranges": []}), ""),
            (json!({"type": "host-local"}), ""),
            (
                json!({"type": "host-local", "subnet": "10.1.0.0/24", "routes": [{"dst": "10.9.0.1/8"}]}),
                "",
            ),
        ] {
            assert!(!ok(ipam.clone(), args), "{ipam} {args}");
        }
        let mut c = conf(json!({"type": "host-local", "subnet": "10.1.0.0/24"}));
        c["runtimeConfig"] = json!({"ips": ["10.1.0.9/24"]});
        assert!(config(&c, &env("")).is_none());
    }

    #[test]
    fn canonical_ranges_are_host_locals() {
        let cfg = config(
            &conf(json!({"type": "host-local", "subnet": "10.1.0.0/24", "dataDir": "/d"})),
            &env(""),
        )
        .unwrap();
        assert_eq!(cfg.dir, PathBuf::from("/d/net1"));
        let r = &cfg.range_sets[0][0];
        assert_eq!(
            (r.start, r.end, r.gateway),
            (
                "10.1.0.1".parse().unwrap(),
                "10.1.0.254".parse().unwrap(),
                "10.1.0.1".parse().unwrap()
            )
        );
        let cfg = config(
            &conf(json!({"type": "host-local", "subnet": "fd00::/120"})),
            &env(""),
        )
        .unwrap();
        assert_eq!(cfg.dir, PathBuf::from("/var/lib/cni/networks/net1"));
        assert_eq!(
            cfg.range_sets[0][0].end,
            "fd00::ff".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn iterates_as_host_local_does() {
        let r = |s: &str, a: &str, b: &str| Range {
            subnet: s.parse().unwrap(),
            start: a.parse().unwrap(),
            end: b.parse().unwrap(),
            gateway: "10.1.0.1".parse().unwrap(),
        };
        let set = vec![
            r("10.1.0.0/24", "10.1.0.1", "10.1.0.3"),
            r("10.2.0.0/24", "10.2.0.7", "10.2.0.8"),
        ];
        let all = |last: Option<&str>| -> Vec<String> {
            RangeIter::new(&set, last.map(|l| l.parse().unwrap()))
                .map(|(ip, _)| ip.to_string())
                .collect()
        };
        assert_eq!(all(None), ["10.1.0.2", "10.1.0.3", "10.2.0.7", "10.2.0.8"]);
        // After the last reserved one, once around.
        assert_eq!(
            all(Some("10.1.0.3")),
            ["10.2.0.7", "10.2.0.8", "10.1.0.2", "10.1.0.3"]
        );
        // Outside the set: from the start.
        assert_eq!(all(Some("192.168.0.1")), all(None));
    }
}
