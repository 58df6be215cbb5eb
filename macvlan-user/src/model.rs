//! What mvnet remembers: networks, containers and their endpoints. Plain
//! data, persisted by [`crate::store`]; the controller owns the rules.
use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
};

use clap::ValueEnum;
use rtnetlink::packet_route::link::MacVlanMode as RtMacvlanMode;
use serde::{Deserialize, Serialize};

use crate::ipam::Pool;

mod containers;
mod endpoints;
mod unread;
pub use containers::{
    Containers, Head, HeadEndpoint, Id, Listed, ListedEndpoint, ListedEndpoints, Saved,
};
pub(crate) use containers::{HeadEndpointIn, HeadIn, Kept, Text};
pub use endpoints::{Endpoints, NetId};
pub(crate) use unread::{record_lines, Unread};

/// An interface name: inline up to 24 bytes (every kernel name), on the
/// heap beyond.
pub type IfName = compact_str::CompactString;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct State {
    /// By network id.
    pub networks: BTreeMap<String, Network>,
    /// By container id, each parsed when read (see [`Containers`]).
    pub containers: Containers,
    /// Changes a writer recorded before touching the kernel and did not
    /// finish (it was killed): the next writer or `mvnet restore` rolls
    /// them back or finishes them. Empty between commands.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<Intent>,
}

/// A change a writer is about to make, saved durably before its first
/// kernel effect and cleared (in the same save as its result) after the
/// last one. Each names everything the change creates, so that what a
/// crash leaves can be found and removed.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Intent {
    /// `run`: creates the namespace `container.netns` and its endpoints
    /// (their addresses are reserved in the pools with this intent). Rolled
    /// back: the container is not in the state until it is done.
    Run { container: Container },
    /// `start` of a stopped container: creates the namespace
    /// `container.netns` and its endpoints (`container` as it is once
    /// started; their addresses are reserved with this intent). Rolled
    /// back: the state keeps the container stopped until it is done.
    Start { container: Container },
    /// `network connect`: creates `endpoint` (link `mvt<id>`, then its
    /// ifname) in `netns`. Rolled back.
    Connect {
        container_id: String,
        netns: PathBuf,
        endpoint: Endpoint,
    },
    /// `network disconnect`. Finished.
    Disconnect {
        container_id: String,
        network_id: String,
    },
    /// `container stop`. Finished.
    Stop { container_id: String },
    /// `container rm` (and the removal of a `--rm` container). Finished.
    Remove { container_id: String },
    /// `network create`: attaches the classifier to the network's root
    /// (if none is) and creates the parent if `create_parent`. Rolled back.
    CreateNetwork {
        network: Network,
        create_parent: bool,
    },
    /// `network rm`. Finished.
    RemoveNetwork { network_id: String },
}

impl Intent {
    /// What the interrupted command was, for messages.
    pub fn describe(&self, state: &State) -> String {
        let container = |id: &str| {
            state
                .containers
                .get(id)
                .map(|c| c.name.clone())
                .unwrap_or_else(|| id[..12.min(id.len())].to_owned())
        };
        let network = |id: &str| {
            state
                .networks
                .get(id)
                .map(|n| n.name.clone())
                .unwrap_or_else(|| id[..12.min(id.len())].to_owned())
        };
        match self {
            Intent::Run { container } => format!("run of container {}", container.name),
            Intent::Start { container } => format!("start of container {}", container.name),
            Intent::Connect {
                container_id,
                endpoint,
                ..
            } => format!(
                "connect of container {} to network {}",
                container(container_id),
                network(&endpoint.network_id)
            ),
            Intent::Disconnect {
                container_id,
                network_id,
            } => format!(
                "disconnect of container {} from network {}",
                container(container_id),
                network(network_id)
            ),
            Intent::Stop { container_id } => {
                format!("stop of container {}", container(container_id))
            }
            Intent::Remove { container_id } => {
                format!("removal of container {}", container(container_id))
            }
            Intent::CreateNetwork { network, .. } => {
                format!("creation of network {}", network.name)
            }
            Intent::RemoveNetwork { network_id } => {
                format!("removal of network {}", network(network_id))
            }
        }
    }
}

/// A network's macvlan mode (`-o macvlan_mode=`), as in
/// `ip link add … type macvlan mode M`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum MacvlanMode {
    Bridge,
    Vepa,
    Private,
    Passthru,
}

impl MacvlanMode {
    /// The `-o macvlan_mode=` value (exact, lower case).
    pub fn parse(s: &str) -> Option<MacvlanMode> {
        <MacvlanMode as ValueEnum>::from_str(s, false).ok()
    }

    /// The mode the kernel reports (IFLA_MACVLAN_MODE); `None` for one
    /// mvnet does not make (source).
    pub fn from_kernel(m: RtMacvlanMode) -> Option<MacvlanMode> {
        match m {
            RtMacvlanMode::Bridge => Some(MacvlanMode::Bridge),
            RtMacvlanMode::Vepa => Some(MacvlanMode::Vepa),
            RtMacvlanMode::Private => Some(MacvlanMode::Private),
            RtMacvlanMode::Passthrough => Some(MacvlanMode::Passthru),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MacvlanMode::Bridge => "bridge",
            MacvlanMode::Vepa => "vepa",
            MacvlanMode::Private => "private",
            MacvlanMode::Passthru => "passthru",
        }
    }
}

impl From<MacvlanMode> for RtMacvlanMode {
    fn from(m: MacvlanMode) -> Self {
        match m {
            MacvlanMode::Bridge => RtMacvlanMode::Bridge,
            MacvlanMode::Vepa => RtMacvlanMode::Vepa,
            MacvlanMode::Private => RtMacvlanMode::Private,
            MacvlanMode::Passthru => RtMacvlanMode::Passthrough,
        }
    }
}

/// How XDP attaches to a root device (`--xdp-mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// In the driver, before any skb exists (veth and most NICs).
    Native,
    /// In the stack, after the skb is built; works on every device.
    Generic,
    /// TC alone on a veth (native XDP would switch its receive path to
    /// NAPI, costing more than it saves; Linux 6.6+), else native, falling
    /// back to generic where the driver has no XDP.
    #[default]
    // State files written before this enum stored "" for it.
    #[serde(alias = "")]
    Auto,
}

impl XdpMode {
    pub fn as_str(self) -> &'static str {
        match self {
            XdpMode::Native => "native",
            XdpMode::Generic => "generic",
            XdpMode::Auto => "auto",
        }
    }
}

/// Under enforce, what the classifier does with a network's broadcast or
/// multicast frames (`--broadcast`, `--multicast`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum GroupRule {
    #[default]
    Pass,
    Drop,
}

impl GroupRule {
    /// Whether the rule drops (as stored: `drop_broadcast`, `drop_multicast`).
    pub fn drops(self) -> bool {
        self == GroupRule::Drop
    }
}

/// Who made a network or container. mvnet's own are created, restored and
/// removed by mvnet; another runtime's (foreign) were made by that runtime,
/// which keeps their links and namespaces: mvnet only counts, verifies and
/// enforces them, and forgets them when they go.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Owner {
    #[default]
    Mvnet,
    /// Docker's own macvlan driver (`mvnet docker sync|watch`).
    Docker,
    /// A CNI runtime through the `mvnet-cni` plugin. A network's owner
    /// names its CNI network (conflist); a container's names none
    /// ([`Owner::cni_runtime`]): one container (a pod sandbox) may be on
    /// several CNI networks (Multus), and each of its endpoints is shown
    /// with its network's owner. Records from before that named the
    /// container's first network, which is read the same.
    Cni {
        #[serde(default, skip_serializing_if = "String::is_empty")]
        network: String,
    },
}

impl Owner {
    pub fn is_foreign(&self) -> bool {
        *self != Owner::Mvnet
    }

    /// Who made the endpoint on `net` of a container this owns: a foreign
    /// container's endpoints are their network's runtime's (`cni:NAME` for
    /// each CNI network of a pod on several), mvnet's own are mvnet's.
    pub fn of_endpoint_on(&self, net: &Network) -> Owner {
        if self.is_foreign() {
            net.owner.clone()
        } else {
            self.clone()
        }
    }

    /// The owner of a CNI container: the CNI runtime, on whichever CNI
    /// networks its endpoints are.
    pub fn cni_runtime() -> Owner {
        Owner::Cni {
            network: String::new(),
        }
    }

    /// Whether both are the same runtime (CNI owners of different
    /// networks are: the runtime that calls mvnet-cni for each).
    pub fn same_runtime(&self, other: &Owner) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other)
    }

    /// As shown: `mvnet`, `docker`, `cni:NAME` (`cni` for a CNI container,
    /// whose endpoints show their network's).
    pub fn describe(&self) -> String {
        match self {
            Owner::Mvnet => "mvnet".to_owned(),
            Owner::Docker => "docker".to_owned(),
            Owner::Cni { network } if network.is_empty() => "cni".to_owned(),
            Owner::Cni { network } => format!("cni:{network}"),
        }
    }

    /// The command that manages what it owns, for refusals.
    pub fn tool(&self) -> &'static str {
        match self {
            Owner::Mvnet => "mvnet",
            Owner::Docker => "docker",
            Owner::Cni { .. } => "the container runtime (podman, kubectl, ...)",
        }
    }
}

/// How the parent link came to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParentOrigin {
    /// It existed; never deleted by us.
    Existing,
    /// An 802.1Q sub-interface we created; deleted with the last network on it.
    CreatedVlan,
    /// A dummy link we created for a network without parent.
    CreatedDummy,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Network {
    pub id: String,
    pub name: String,
    /// RFC 3339.
    pub created: String,
    pub parent: String,
    pub parent_origin: ParentOrigin,
    /// For `name.vid` parents: the device carrying the tags, and the id.
    pub vlan: Option<(String, u16)>,
    pub mode: MacvlanMode,
    pub internal: bool,
    pub enable_ipv6: bool,
    pub pools: Vec<Pool>,
    /// `-o` options as given (parent, macvlan_mode, ...).
    pub options: BTreeMap<String, String>,
    /// What the classifier does with invalid frames on this network.
    #[serde(default)]
    pub policy: Policy,
    /// How XDP is attached to the root device (decided by the first
    /// network on it).
    #[serde(default)]
    pub xdp_mode: XdpMode,
    /// Endpoint slots of the classifier on the root device
    /// (`--max-endpoints`, decided by the first network on it). Once the
    /// classifier is attached, its pinned maps' `max_entries` are the
    /// truth; this is what `restore` attaches it with again.
    #[serde(default = "default_max_endpoints")]
    pub max_endpoints: u32,
    /// Under enforce, drop broadcast frames on this network's VLAN too.
    #[serde(default)]
    pub drop_broadcast: bool,
    /// Under enforce, drop multicast frames on this network's VLAN too.
    #[serde(default)]
    pub drop_multicast: bool,
    /// `--label KEY=VALUE` at create.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Inode of the network namespace the parent lives in (where `mvnet`
    /// ran at create): commands from another namespace would see other
    /// links and other classifier pins.
    #[serde(default)]
    pub netns_inode: Option<u64>,
    /// The parent's ifindex when last seen: tells a renamed parent (the
    /// index under another name) from a gone or replaced one.
    #[serde(default)]
    pub parent_ifindex: Option<u32>,
    /// Who made it (see [`Owner`]).
    #[serde(default, skip_serializing_if = "is_mvnet")]
    pub owner: Owner,
}

/// State files written before `--max-endpoints` had the default capacity.
fn default_max_endpoints() -> u32 {
    macvlan_common::DEFAULT_ENDPOINTS
}

pub(crate) fn is_mvnet(o: &Owner) -> bool {
    !o.is_foreign()
}

/// The classifier's policy for a network.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// Count every frame and pass it.
    #[default]
    Observe,
    /// Count, and drop frames to unknown MACs, on the wrong VLAN, malformed
    /// or with a forged source.
    Enforce,
}

impl Policy {
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Observe => "observe",
            Policy::Enforce => "enforce",
        }
    }
}

impl Network {
    /// The device the classifier sits on, where the tags are visible: the
    /// base of a `name.vid` parent, else the parent itself; and the VLAN id
    /// of this network's frames there (0 = untagged).
    pub fn root(&self) -> (&str, u16) {
        match &self.vlan {
            Some((base, vid)) => (base, *vid),
            None => (&self.parent, 0),
        }
    }
}

impl Network {
    pub fn short_id(&self) -> &str {
        short(&self.id)
    }

    /// Gives `addrs` back to their pools.
    pub fn release(&mut self, addrs: impl IntoIterator<Item = IpAddr>) {
        for a in addrs {
            for pool in self.pools.iter_mut() {
                pool.release(a);
            }
        }
    }

    /// The pool whose subnet holds `ip` (an endpoint's gateway and prefix
    /// are its subnet's).
    pub fn pool_of(&self, ip: IpAddr) -> Option<&Pool> {
        self.pools.iter().find(|p| p.config.subnet.contains(ip))
    }

    /// Hands out an endpoint's addresses: IPv4 if the network has an IPv4
    /// subnet, IPv6 if it has IPv6 on; each the requested one, or from the
    /// first subnet of its family with a free address (see
    /// [`crate::ipam::allocate_in`]). Nothing stays allocated on error.
    pub fn allocate_addresses(
        &mut self,
        ip: Option<Ipv4Addr>,
        ip6: Option<Ipv6Addr>,
    ) -> Result<(Option<Ipv4Addr>, Option<Ipv6Addr>), crate::ipam::IpamError> {
        let v4 = match crate::ipam::allocate_in(&mut self.pools, true, ip.map(IpAddr::V4))? {
            Some(IpAddr::V4(a)) => Some(a),
            _ => None,
        };
        if !self.enable_ipv6 {
            return Ok((v4, None));
        }
        match crate::ipam::allocate_in(&mut self.pools, false, ip6.map(IpAddr::V6)) {
            Ok(Some(IpAddr::V6(a))) => Ok((v4, Some(a))),
            Ok(_) => Ok((v4, None)),
            Err(e) => {
                self.release(v4.map(IpAddr::V4));
                Err(e)
            }
        }
    }

    pub fn pool_v4(&self) -> Option<&Pool> {
        self.pools.iter().find(|p| p.config.subnet.is_ipv4())
    }

    pub fn pool_v6(&self) -> Option<&Pool> {
        self.pools.iter().find(|p| !p.config.subnet.is_ipv4())
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Endpoint {
    pub id: String,
    pub network_id: String,
    /// Interface name inside the container, held inline (a kernel name
    /// is at most 15 bytes): a walk over every endpoint reads no other
    /// allocation for it.
    pub ifname: IfName,
    pub mac: Mac,
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
    /// The kernel's count of unicast frames the device had received when
    /// its classifier entry was (re)made: another runtime's device, or one
    /// whose classifier was re-attached, has history the classifier never
    /// saw. `verify` compares what came after.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rx_base: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Endpoint {
    pub fn addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.ipv4
            .map(IpAddr::V4)
            .into_iter()
            .chain(self.ipv6.map(IpAddr::V6))
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Container {
    pub id: String,
    pub name: String,
    pub created: String,
    /// The network namespace (a bind mount under /run/netns, or a path
    /// given with --netns).
    pub netns: PathBuf,
    /// Whether mvnet created the namespace (and so removes it).
    pub netns_owned: bool,
    /// The namespace's inode when it was attached: a name under /run/netns
    /// or a /proc/PID/ns/net path can come to mean another namespace (a
    /// namespace made again under that name, a reused pid), which is then
    /// not this container's.
    #[serde(default)]
    pub netns_inode: Option<u64>,
    /// Remove on stop.
    pub auto_remove: bool,
    pub command: Vec<String>,
    pub pid: Option<u32>,
    pub running: bool,
    /// By network id.
    pub endpoints: Endpoints,
    /// `--label KEY=VALUE` at run.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The addresses asked for with --ip/--ip6, by network id (Docker's
    /// `IPAMConfig`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ipam_config: BTreeMap<String, IpamConfig>,
    /// A stopped container's endpoints as they were, by network id: no
    /// kernel resources and no addresses held, kept for inspect and for
    /// `start`, which asks for the same addresses again.
    #[serde(default, skip_serializing_if = "Endpoints::is_empty")]
    pub stopped_endpoints: Endpoints,
    /// Docker's `DriverOpts` of the networks joined by `network connect`
    /// (docker/cli sends a map there, `{}` without --driver-opt; `run`
    /// sends none), by network id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub driver_opts: BTreeMap<String, BTreeMap<String, String>>,
    /// Who made it (see [`Owner`]).
    #[serde(default, skip_serializing_if = "is_mvnet")]
    pub owner: Owner,
    /// The Kubernetes pod (`NAMESPACE/NAME`) of a CNI container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
}

/// The addresses a container asked for on one network (`--ip`, `--ip6`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpamConfig {
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
}

impl Container {
    pub fn short_id(&self) -> &str {
        short(&self.id)
    }

    /// Who made its endpoint on `net`: a foreign container's endpoints are
    /// their network's runtime's (`cni:NAME` for each CNI network of a pod
    /// on several), mvnet's own are mvnet's.
    pub fn endpoint_owner(&self, net: &Network) -> Owner {
        self.owner.of_endpoint_on(net)
    }

    /// Whether the container's namespace is there: a namespace (not a
    /// stale file) at its path, with the recorded inode.
    pub fn netns_alive(&self) -> bool {
        match crate::netns::inode(&self.netns) {
            Some(ino) => self.netns_inode.is_none_or(|want| want == ino),
            None => false,
        }
    }

    /// Whether its path now holds a namespace that is not its own.
    pub fn netns_replaced(&self) -> bool {
        crate::netns::inode(&self.netns)
            .is_some_and(|ino| self.netns_inode.is_some_and(|want| want != ino))
    }
}

/// A MAC address (EUI-48). Parsed only from exactly six colon-separated
/// pairs of hex digits (either case); written as `aa:bb:cc:dd:ee:ff`. In
/// the state file it is that string; older files held a six-number array,
/// which still loads.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mac([u8; 6]);

impl Mac {
    pub const BROADCAST: Mac = Mac([0xff; 6]);

    pub const fn new(octets: [u8; 6]) -> Mac {
        Mac(octets)
    }

    pub const fn octets(self) -> [u8; 6] {
        self.0
    }

    /// Group bit set: multicast (or broadcast).
    pub const fn is_multicast(self) -> bool {
        self.0[0] & 0x01 != 0
    }

    /// Locally administered bit set.
    pub const fn is_local(self) -> bool {
        self.0[0] & 0x02 != 0
    }
}

impl From<[u8; 6]> for Mac {
    fn from(octets: [u8; 6]) -> Mac {
        Mac(octets)
    }
}

impl From<Mac> for [u8; 6] {
    fn from(mac: Mac) -> [u8; 6] {
        mac.0
    }
}

/// A string that is not six colon-separated pairs of hex digits.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid MAC address {input:?}: write six pairs of hex digits separated by colons, \
     e.g. 02:42:ac:10:56:0a"
)]
pub struct MacParseError {
    input: String,
}

impl std::str::FromStr for Mac {
    type Err = MacParseError;

    fn from_str(s: &str) -> Result<Mac, MacParseError> {
        // Exactly "hh:hh:hh:hh:hh:hh", read in one pass (every state read
        // parses one per endpoint: 4000 and more).
        fn hex(b: u8) -> Option<u8> {
            match b {
                b'0'..=b'9' => Some(b - b'0'),
                b'a'..=b'f' => Some(b - b'a' + 10),
                b'A'..=b'F' => Some(b - b'A' + 10),
                _ => None,
            }
        }
        let parse = |b: &[u8]| -> Option<[u8; 6]> {
            if b.len() != 17 {
                return None;
            }
            let mut octets = [0u8; 6];
            for (i, octet) in octets.iter_mut().enumerate() {
                let at = 3 * i;
                if i > 0 && b[at - 1] != b':' {
                    return None;
                }
                *octet = hex(b[at])? << 4 | hex(b[at + 1])?;
            }
            Some(octets)
        };
        parse(s.as_bytes()).map(Mac).ok_or_else(|| MacParseError {
            input: s.to_owned(),
        })
    }
}

impl std::fmt::Display for Mac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl std::fmt::Debug for Mac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mac({self})")
    }
}

impl Serialize for Mac {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Mac {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Mac, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Mac;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a MAC address \"aa:bb:cc:dd:ee:ff\" or an array of six bytes")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Mac, E> {
                v.parse().map_err(E::custom)
            }

            /// The state files written before [`Mac`] existed.
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Mac, A::Error> {
                let mut octets = [0u8; 6];
                for (i, o) in octets.iter_mut().enumerate() {
                    *o = seq
                        .next_element()?
                        .ok_or_else(|| serde::de::Error::invalid_length(i, &self))?;
                }
                if seq.next_element::<serde::de::IgnoredAny>()?.is_some() {
                    return Err(serde::de::Error::invalid_length(7, &self));
                }
                Ok(Mac(octets))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// An id's first 12 characters (all of a shorter one: another runtime's
/// ids need not be Docker's 64 hex digits).
fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// A new 64-hex-digit id, as Docker's.
pub fn new_id() -> String {
    let mut bytes = [0u8; 32];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read as _;
        let _ = f.read_exact(&mut bytes);
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Now, as RFC 3339 UTC with nanoseconds (Docker's `Created` format).
pub fn now_rfc3339() -> String {
    rfc3339(std::time::SystemTime::now())
}

/// `t` as RFC 3339 UTC with nanoseconds.
pub fn rfc3339(t: std::time::SystemTime) -> String {
    let now = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = now.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        now.subsec_nanos()
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Checks a network or container name: Docker's rule
/// `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, at most 64 characters here (it also names
/// a network namespace).
pub fn validate_name(kind: &str, name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let ok = matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && name.len() <= 64;
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid {kind} name {name:?}: use 1-64 characters of [a-zA-Z0-9_.-], starting with a letter or digit"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_819), (2027, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    }

    #[test]
    fn cni_owners_of_networks_and_containers() {
        // A container's CNI owner names no network; one stored before that
        // named its first network and still reads as the same runtime.
        let runtime = Owner::cni_runtime();
        assert_eq!(
            serde_json::to_string(&runtime).unwrap(),
            r#"{"kind":"cni"}"#
        );
        assert_eq!(
            serde_json::from_str::<Owner>(r#"{"kind":"cni"}"#).unwrap(),
            runtime
        );
        let old: Owner = serde_json::from_str(r#"{"kind":"cni","network":"a"}"#).unwrap();
        assert_eq!(
            old,
            Owner::Cni {
                network: "a".into()
            }
        );
        assert!(old.same_runtime(&runtime));
        assert!(!runtime.same_runtime(&Owner::Docker));
        assert!(!Owner::Mvnet.same_runtime(&Owner::Docker));
        assert_eq!(runtime.describe(), "cni");
        assert_eq!(old.describe(), "cni:a");
    }

    #[test]
    fn ids_are_64_hex() {
        let id = new_id();
        assert_eq!(id.len(), 64);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(id, new_id());
    }

    #[test]
    fn names() {
        assert!(validate_name("network", "my-macvlan-net").is_ok());
        assert!(validate_name("network", "-x").is_err());
        assert!(validate_name("network", "").is_err());
        assert!(validate_name("network", "a/b").is_err());
        assert!(validate_name("network", &"a".repeat(65)).is_err());
    }

    #[test]
    fn mac_parses_exactly_six_hex_pairs() {
        let a = Mac::new([0x02, 0x42, 0xac, 0x10, 0x56, 0x02]);
        assert_eq!("02:42:ac:10:56:02".parse::<Mac>(), Ok(a));
        assert_eq!("02:42:AC:10:56:02".parse::<Mac>(), Ok(a));
        assert_eq!(a.to_string(), "02:42:ac:10:56:02");
        assert_eq!(format!("{a:?}"), "Mac(02:42:ac:10:56:02)");
        for bad in [
            "",
            "02:42:ac:10:56",
            "02:42:ac:10:56:02:00",
            "02:42:ac:10:56:",
            "zz:42:ac:10:56:02",
            "+2:42:ac:10:56:02",
            "02:42:ac:10:56:+2",
            "-0:42:ac:10:56:02",
            "2:42:ac:10:56:02",
            "002:42:ac:10:56:02",
            "02-42-ac-10-56-02",
            "02:42:ac:10:56-02",
            "02:42:ac:10:56:0g",
            "02:42:ac:10::5602",
            " 02:42:ac:10:56:02",
            "02:42:ac:10:56:02 ",
            "0x:42:ac:10:56:02",
            "٠٢:42:ac:10:56:02",
        ] {
            assert_eq!(
                bad.parse::<Mac>().unwrap_err().to_string(),
                format!(
                    "invalid MAC address {bad:?}: write six pairs of hex digits separated by \
                     colons, e.g. 02:42:ac:10:56:0a"
                ),
            );
        }
    }

    #[test]
    fn mac_bits() {
        assert!(Mac::BROADCAST.is_multicast());
        assert!(Mac::new([0x01, 0, 0x5e, 0, 0, 1]).is_multicast());
        assert!(!Mac::new([0x02, 0x42, 0, 0, 0, 1]).is_multicast());
        assert!(Mac::new([0x02, 0x42, 0, 0, 0, 1]).is_local());
        assert!(!Mac::new([0x00, 0x1b, 0x21, 0, 0, 1]).is_local());
    }

    #[test]
    fn mac_is_a_string_in_json_and_old_arrays_still_load() {
        let a = Mac::new([0x02, 0x42, 0xac, 0x10, 0x56, 0x02]);
        assert_eq!(serde_json::to_string(&a).unwrap(), r#""02:42:ac:10:56:02""#);
        assert_eq!(
            serde_json::from_str::<Mac>(r#""02:42:ac:10:56:02""#).unwrap(),
            a
        );
        assert_eq!(
            serde_json::from_str::<Mac>("[2,66,172,16,86,2]").unwrap(),
            a
        );
        for bad in [
            r#""+2:42:ac:10:56:02""#,
            "[2,66,172,16,86]",
            "[2,66,172,16,86,2,0]",
            "[256,0,0,0,0,0]",
            "7",
        ] {
            assert!(serde_json::from_str::<Mac>(bad).is_err(), "{bad} loaded");
        }
        let old = r#"{"id":"e","network_id":"n","ifname":"eth0","mac":[2,66,172,16,86,2],"ipv4":"172.16.86.2","ipv6":null}"#;
        let ep: Endpoint = serde_json::from_str(old).unwrap();
        assert_eq!(ep.mac, a);
        assert!(serde_json::to_string(&ep)
            .unwrap()
            .contains(r#""mac":"02:42:ac:10:56:02""#));
    }

    #[test]
    fn enums_map_to_the_kernel_and_old_state_loads() {
        assert_eq!(
            RtMacvlanMode::from(MacvlanMode::Passthru),
            RtMacvlanMode::Passthrough
        );
        assert_eq!(
            RtMacvlanMode::from(MacvlanMode::Bridge),
            RtMacvlanMode::Bridge
        );
        assert_eq!(MacvlanMode::parse("vepa"), Some(MacvlanMode::Vepa));
        assert_eq!(MacvlanMode::parse("Vepa"), None);
        assert_eq!(MacvlanMode::parse("passthrough"), None);
        for m in MacvlanMode::value_variants() {
            assert_eq!(MacvlanMode::parse(m.as_str()), Some(*m));
        }
        for m in XdpMode::value_variants() {
            let json = serde_json::to_string(m).unwrap();
            assert_eq!(json, format!("\"{}\"", m.as_str()));
            assert_eq!(serde_json::from_str::<XdpMode>(&json).unwrap(), *m);
        }
        // Before the enum, a network without --xdp-mode stored "".
        assert_eq!(
            serde_json::from_str::<XdpMode>(r#""""#).unwrap(),
            XdpMode::Auto
        );
        assert!(serde_json::from_str::<XdpMode>(r#""turbo""#).is_err());
        assert!(serde_json::from_str::<Policy>(r#""enforce""#).is_ok());
        assert!(serde_json::from_str::<Policy>(r#""strict""#).is_err());
        assert!(GroupRule::Drop.drops() && !GroupRule::Pass.drops());
    }
}
