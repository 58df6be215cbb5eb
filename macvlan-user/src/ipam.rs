//! IP address management for macvlan networks, after Docker's default IPAM
//! driver: subnets in CIDR form, a pool per subnet with an optional
//! `--ip-range`, a gateway, auxiliary (reserved) addresses, and
//! lowest-free-first allocation. Also the MAC helpers endpoints need.
//!
//! Reserved in every pool, as Docker does: the subnet's network address
//! (except on IPv4 /31 and /32, which have none), the IPv4 broadcast address
//! (subnets up to /30), the gateway and every aux address.
use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    str::FromStr,
};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::model::Mac;

/// What can go wrong managing addresses. Every message names the offending
/// value and says how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    /// A subnet string that is not `address/prefix`.
    #[error("invalid subnet {input:?}: {reason}")]
    InvalidSubnet {
        /// The text as given.
        input: String,
        /// What is wrong and how to write it instead.
        reason: String,
    },
    /// A subnet whose address has bits set beyond the prefix.
    #[error("subnet {given} has host bits set; did you mean {network}?")]
    HostBitsSet {
        /// The text as given (or formatted from address and prefix).
        given: String,
        /// The network the user probably meant.
        network: Subnet,
    },
    /// A subnet too small to hold even a gateway.
    #[error("subnet {subnet} has no usable host address for a gateway; use a shorter prefix")]
    NoUsableAddress {
        /// The subnet.
        subnet: Subnet,
    },
    /// A gateway that does not fit its subnet.
    #[error("invalid gateway {gateway}: {reason}")]
    InvalidGateway {
        /// The gateway as given.
        gateway: IpAddr,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// An ip-range that does not fit its subnet.
    #[error("ip-range {range} {reason}")]
    InvalidIpRange {
        /// The range as given.
        range: Subnet,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// An aux address that does not fit its subnet or clashes.
    #[error("invalid aux-address {name}={addr}: {reason}")]
    InvalidAuxAddress {
        /// The aux address' name (the part before `=`).
        name: String,
        /// The address.
        addr: IpAddr,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// A requested (static) address that cannot be handed out.
    #[error("invalid address {addr}: {reason}")]
    InvalidAddress {
        /// The address requested.
        addr: IpAddr,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// A requested (static) address that another endpoint holds.
    #[error(
        "address {0} is already in use on this network; choose another {flag} or leave it out to get a free one",
        flag = ip_flag(*.0)
    )]
    InUse(IpAddr),
    /// No address left to hand out.
    #[error("no free address left in {range}; use a larger --subnet or --ip-range")]
    Exhausted {
        /// Where addresses are handed out from: the ip-range, or the subnet.
        range: Subnet,
    },
    /// No address left in any of a network's subnets of one family.
    #[error("no free address left in any subnet of this network ({ranges}); remove a container, or use larger subnets or ip-ranges")]
    AllExhausted {
        /// Where addresses are handed out from, comma-separated.
        ranges: String,
    },
    /// A requested (static) address outside every subnet of its family.
    #[error("invalid address {addr}: not inside any subnet of this network ({subnets}); choose a {flag} within one of them", flag = ip_flag(*addr))]
    OutsideAll {
        /// The address requested.
        addr: IpAddr,
        /// The network's subnets of that family, comma-separated.
        subnets: String,
    },
    /// A MAC address no container may have.
    #[error("MAC {mac} is {reason}")]
    InvalidMac {
        /// The MAC, formatted `aa:bb:cc:dd:ee:ff`.
        mac: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
}

/// The CLI flag that sets a container's static address of this family.
fn ip_flag(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() {
        "--ip"
    } else {
        "--ip6"
    }
}

fn family(v4: bool) -> &'static str {
    if v4 {
        "IPv4"
    } else {
        "IPv6"
    }
}

/// Address width in bits.
fn width(v4: bool) -> u8 {
    if v4 {
        32
    } else {
        128
    }
}

pub(crate) fn to_bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

pub(crate) fn from_bits(bits: u128, v4: bool) -> IpAddr {
    if v4 {
        // Only ever called with values that fit in 32 bits for IPv4.
        IpAddr::V4(Ipv4Addr::from(bits as u32))
    } else {
        IpAddr::V6(Ipv6Addr::from(bits))
    }
}

/// Ones in the host part of a `/prefix` of the given family.
fn host_mask(prefix: u8, v4: bool) -> u128 {
    let host_bits = u32::from(width(v4) - prefix);
    if host_bits >= 128 {
        u128::MAX
    } else {
        (1u128 << host_bits) - 1
    }
}

/// An IPv4 or IPv6 network in CIDR form, e.g. `172.16.86.0/24` or
/// `2001:db8:abcd::/64`. Always canonical: no host bits set.
///
/// Serialized as its string form.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Subnet {
    addr: IpAddr,
    prefix: u8,
}

impl Subnet {
    /// The subnet `addr/prefix`; fails if the prefix is longer than the
    /// address or `addr` has host bits set.
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Subnet, IpamError> {
        let v4 = addr.is_ipv4();
        if prefix > width(v4) {
            return Err(IpamError::InvalidSubnet {
                input: format!("{addr}/{prefix}"),
                reason: format!(
                    "prefix length {prefix} is too long for {} (at most /{})",
                    family(v4),
                    width(v4)
                ),
            });
        }
        let bits = to_bits(addr);
        let mask = host_mask(prefix, v4);
        if bits & mask != 0 {
            return Err(IpamError::HostBitsSet {
                given: format!("{addr}/{prefix}"),
                network: Subnet {
                    addr: from_bits(bits & !mask, v4),
                    prefix,
                },
            });
        }
        Ok(Subnet { addr, prefix })
    }

    /// Whether this is an IPv4 subnet.
    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// The network address (the first address of the subnet).
    pub fn network(&self) -> IpAddr {
        self.addr
    }

    /// The last address of the subnet.
    pub fn last(&self) -> IpAddr {
        from_bits(self.first_bits() | self.mask(), self.is_ipv4())
    }

    /// The IPv4 broadcast address; `None` for IPv6 and for IPv4 /31 and
    /// /32, which have none.
    pub fn broadcast(&self) -> Option<IpAddr> {
        (self.is_ipv4() && self.prefix < 31).then(|| self.last())
    }

    /// How many addresses the subnet spans (saturating at `u128::MAX`).
    pub fn size(&self) -> u128 {
        self.mask().saturating_add(1)
    }

    /// Whether `ip` is in this subnet (always false across families).
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.is_ipv4() && to_bits(ip) & !self.mask() == self.first_bits()
    }

    /// Whether `other` lies entirely inside this subnet.
    pub fn contains_subnet(&self, other: &Subnet) -> bool {
        other.prefix >= self.prefix && self.contains(other.addr)
    }

    /// Whether the two subnets share any address.
    pub fn overlaps(&self, other: &Subnet) -> bool {
        self.contains(other.addr) || other.contains(self.addr)
    }

    /// The first address a host may use: the network address itself on
    /// IPv4 /31 and /32, otherwise the one after it. `None` for an IPv6
    /// /128, which is nothing but its network address.
    pub fn first_host(&self) -> Option<IpAddr> {
        let first = if self.reserves_network() {
            self.first_bits().checked_add(1)?
        } else {
            self.first_bits()
        };
        let ip = from_bits(first, self.is_ipv4());
        (self.contains(ip) && self.broadcast() != Some(ip)).then_some(ip)
    }

    /// Whether the network address is reserved (everything but IPv4 /31
    /// and /32, like Docker).
    fn reserves_network(&self) -> bool {
        !self.is_point_to_point()
    }

    /// An IPv4 /31 or /32: no network or broadcast address.
    pub fn is_point_to_point(&self) -> bool {
        self.is_ipv4() && self.prefix >= 31
    }

    fn first_bits(&self) -> u128 {
        to_bits(self.addr)
    }

    fn mask(&self) -> u128 {
        host_mask(self.prefix, self.is_ipv4())
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Subnet {
    type Err = IpamError;

    fn from_str(s: &str) -> Result<Subnet, IpamError> {
        let example = if s.contains(':') {
            "2001:db8:abcd::/64"
        } else {
            "172.16.86.0/24"
        };
        let invalid = |reason: String| IpamError::InvalidSubnet {
            input: s.to_string(),
            reason,
        };
        let Some((addr, prefix)) = s.split_once('/') else {
            return Err(invalid(format!(
                "missing prefix length; write it in CIDR form, e.g. {example}"
            )));
        };
        let addr: IpAddr = addr.parse().map_err(|_| {
            invalid(format!(
                "{addr:?} is not an IPv4 or IPv6 address; write it in CIDR form, e.g. {example}"
            ))
        })?;
        let v4 = addr.is_ipv4();
        let prefix_len = (!prefix.is_empty() && prefix.bytes().all(|b| b.is_ascii_digit()))
            .then(|| prefix.parse::<u32>().ok())
            .flatten()
            .ok_or_else(|| {
                invalid(format!(
                    "prefix length {prefix:?} is not a number; write it in CIDR form, e.g. {example}"
                ))
            })?;
        if prefix_len > u32::from(width(v4)) {
            return Err(invalid(format!(
                "prefix length {prefix_len} is too long for {} (at most /{})",
                family(v4),
                width(v4)
            )));
        }
        // In range, so it fits in a u8.
        let prefix_len = prefix_len as u8;
        Subnet::new(addr, prefix_len).map_err(|e| match e {
            IpamError::HostBitsSet { network, .. } => IpamError::HostBitsSet {
                given: s.to_string(),
                network,
            },
            other => other,
        })
    }
}

impl Serialize for Subnet {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Subnet {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Subnet, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Why an address cannot be handed out as a host address of a subnet
/// (wrong family, outside, network or broadcast address); `None` if it can.
/// `flag` names the option the user should change.
fn host_problem(subnet: &Subnet, ip: IpAddr, flag: &str) -> Option<String> {
    let v4 = subnet.is_ipv4();
    let example = subnet
        .first_host()
        .map(|h| format!(", e.g. {h}"))
        .unwrap_or_default();
    if ip.is_ipv4() != v4 {
        return Some(format!(
            "it is an {} address but subnet {subnet} is {}; give an {} {flag} inside the subnet{example}",
            family(!v4),
            family(v4),
            family(v4)
        ));
    }
    if !subnet.contains(ip) {
        return Some(format!(
            "not inside subnet {subnet}; choose a {flag} within the subnet{example}"
        ));
    }
    if subnet.reserves_network() && ip == subnet.network() {
        return Some(format!(
            "it is the network address of subnet {subnet}; choose a host address{example}"
        ));
    }
    if subnet.broadcast() == Some(ip) {
        return Some(format!(
            "it is the broadcast address of subnet {subnet}; choose a host address{example}"
        ));
    }
    None
}

/// One subnet of a network and what is reserved in it, as given with
/// `--subnet`, `--ip-range`, `--gateway` and `--aux-address`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolConfig {
    /// The subnet.
    pub subnet: Subnet,
    /// Where dynamic addresses come from; the whole subnet if `None`.
    #[serde(default)]
    pub ip_range: Option<Subnet>,
    /// The gateway; filled in by [`PoolConfig::validate`] if `None`, except
    /// on internal /31 and /32 subnets, which have none.
    #[serde(default)]
    pub gateway: Option<IpAddr>,
    /// Addresses never handed out, by name (`--aux-address name=ip`).
    #[serde(default)]
    pub aux_addresses: BTreeMap<String, IpAddr>,
    /// Whether [`PoolConfig::validate`] chose the gateway because none was
    /// given. It is used all the same, but Docker 20.10's inspect leaves
    /// such a gateway out of IPAM.Config.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub implicit_gateway: bool,
}

impl PoolConfig {
    /// A config with only a subnet (gateway to be filled in by
    /// [`PoolConfig::validate`]).
    pub fn new(subnet: Subnet) -> PoolConfig {
        PoolConfig {
            subnet,
            ip_range: None,
            gateway: None,
            aux_addresses: BTreeMap::new(),
            implicit_gateway: false,
        }
    }

    /// Checks that ip-range, gateway and aux addresses fit the subnet and
    /// do not clash, and fills in the gateway if none was given: the first
    /// host address of the subnet (`x.x.x.1` on an IPv4 /24, `prefix::1` on
    /// IPv6), as Docker does.
    pub fn validate(&mut self) -> Result<(), IpamError> {
        self.validate_for(false)
    }

    /// [`PoolConfig::validate`] for a network that is `internal` or not.
    /// An internal IPv4 /31 or /32 without `--gateway` gets no gateway, so
    /// that every address is usable, as current moby does (its
    /// `TestPointToPoint`); Docker 20.10 refused such networks.
    pub fn validate_for(&mut self, internal: bool) -> Result<(), IpamError> {
        let subnet = self.subnet;
        let v4 = subnet.is_ipv4();
        if let Some(range) = self.ip_range {
            if range.is_ipv4() != v4 {
                return Err(IpamError::InvalidIpRange {
                    range,
                    reason: format!(
                        "is {} but subnet {subnet} is {}; give an {} --ip-range inside the subnet",
                        family(!v4),
                        family(v4),
                        family(v4)
                    ),
                });
            }
            if !subnet.contains_subnet(&range) {
                return Err(IpamError::InvalidIpRange {
                    range,
                    reason: format!(
                        "is not inside subnet {subnet}; choose an --ip-range within the subnet"
                    ),
                });
            }
        }
        let gateway = match self.gateway {
            Some(gateway) => {
                if let Some(reason) = host_problem(&subnet, gateway, "--gateway") {
                    return Err(IpamError::InvalidGateway { gateway, reason });
                }
                Some(gateway)
            }
            None if internal && subnet.is_point_to_point() => None,
            None => Some(
                subnet
                    .first_host()
                    .ok_or(IpamError::NoUsableAddress { subnet })?,
            ),
        };
        if self.gateway.is_none() {
            self.implicit_gateway = gateway.is_some();
        }
        self.gateway = gateway;
        let mut seen: BTreeMap<IpAddr, &str> = BTreeMap::new();
        for (name, &addr) in &self.aux_addresses {
            let invalid = |reason: String| IpamError::InvalidAuxAddress {
                name: name.clone(),
                addr,
                reason,
            };
            if let Some(reason) = host_problem(&subnet, addr, "--aux-address") {
                return Err(invalid(reason));
            }
            if Some(addr) == gateway {
                return Err(invalid(
                    "it is the gateway; choose another --aux-address or a different --gateway"
                        .to_string(),
                ));
            }
            if let Some(other) = seen.insert(addr, name) {
                return Err(invalid(format!(
                    "aux-address {other:?} has the same address; give each aux-address its own"
                )));
            }
        }
        Ok(())
    }
}

/// Why an address is reserved in a pool.
enum Reserved<'a> {
    Network,
    Broadcast,
    Gateway,
    Aux(&'a str),
}

/// A validated [`PoolConfig`] and the addresses handed out from it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pool {
    /// The (validated) configuration.
    pub config: PoolConfig,
    #[serde(default, deserialize_with = "set_in_bulk")]
    allocated: BTreeSet<IpAddr>,
}

/// A set read whole, then built in one go: mvnet writes it in order, and
/// a `BTreeSet` collected from a sorted sequence is built leaf by leaf,
/// where inserting the addresses one by one searches the tree for each (at
/// 4000 addresses 0.3 ms of every command's state read, `perf record` of
/// `run`/`rm` pairs). Any order is read alike: the sequence is sorted first.
fn set_in_bulk<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeSet<IpAddr>, D::Error> {
    Ok(Vec::<IpAddr>::deserialize(d)?.into_iter().collect())
}

impl Pool {
    /// A pool with nothing allocated; validates (and completes) `config`.
    pub fn new(config: PoolConfig) -> Result<Pool, IpamError> {
        Pool::new_for(config, false)
    }

    /// [`Pool::new`] for a network that is `internal` or not (see
    /// [`PoolConfig::validate_for`]).
    pub fn new_for(mut config: PoolConfig, internal: bool) -> Result<Pool, IpamError> {
        config.validate_for(internal)?;
        Ok(Pool {
            config,
            allocated: BTreeSet::new(),
        })
    }

    /// Hands out an address: `requested` if given and free (it must be a
    /// host address of the subnet; it need not be in the ip-range), else
    /// the lowest free address of the ip-range (or of the subnet).
    pub fn allocate(&mut self, requested: Option<IpAddr>) -> Result<IpAddr, IpamError> {
        let ip = match requested {
            Some(ip) => {
                self.check_request(ip)?;
                ip
            }
            None => self.lowest_free()?,
        };
        self.allocated.insert(ip);
        Ok(ip)
    }

    /// Returns `ip` to the pool; false if it was not allocated.
    pub fn release(&mut self, ip: IpAddr) -> bool {
        self.allocated.remove(&ip)
    }

    /// Whether `ip` has been handed out (gateway and aux addresses are
    /// reserved, not allocated).
    pub fn is_allocated(&self, ip: IpAddr) -> bool {
        self.allocated.contains(&ip)
    }

    /// The addresses handed out, in order.
    pub fn allocated(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.allocated.iter().copied()
    }

    /// Records `ip` as handed out without any check (restoring state);
    /// false if it already was.
    pub fn mark_allocated(&mut self, ip: IpAddr) -> bool {
        self.allocated.insert(ip)
    }

    fn reserved(&self, ip: IpAddr) -> Option<Reserved<'_>> {
        let subnet = &self.config.subnet;
        if subnet.reserves_network() && ip == subnet.network() {
            return Some(Reserved::Network);
        }
        if subnet.broadcast() == Some(ip) {
            return Some(Reserved::Broadcast);
        }
        if self.config.gateway == Some(ip) {
            return Some(Reserved::Gateway);
        }
        self.config
            .aux_addresses
            .iter()
            .find(|(_, &a)| a == ip)
            .map(|(name, _)| Reserved::Aux(name))
    }

    fn check_request(&self, ip: IpAddr) -> Result<(), IpamError> {
        let flag = ip_flag(ip);
        let subnet = &self.config.subnet;
        if let Some(reason) = host_problem(subnet, ip, flag) {
            return Err(IpamError::InvalidAddress { addr: ip, reason });
        }
        let reason = match self.reserved(ip) {
            Some(Reserved::Gateway) => format!(
                "it is the gateway of subnet {subnet}; choose another {flag} or leave it out to get a free one"
            ),
            Some(Reserved::Aux(name)) => format!(
                "it is reserved as aux-address {name:?}; choose another {flag} or leave it out to get a free one"
            ),
            // Already refused by host_problem.
            Some(Reserved::Network | Reserved::Broadcast) | None => {
                if self.allocated.contains(&ip) {
                    return Err(IpamError::InUse(ip));
                }
                return Ok(());
            }
        };
        Err(IpamError::InvalidAddress { addr: ip, reason })
    }

    /// The lowest address of the range that is neither reserved nor
    /// allocated. Every address skipped is one of the reserved or allocated
    /// ones, so the scan takes at most that many steps plus one, however
    /// big the range.
    fn lowest_free(&self) -> Result<IpAddr, IpamError> {
        let range = self.config.ip_range.unwrap_or(self.config.subnet);
        let v4 = range.is_ipv4();
        // Network, broadcast and gateway, the aux addresses, the allocated
        // ones, and then the free one.
        let limit = 3 + self.config.aux_addresses.len() + self.allocated.len() + 1;
        let (start, end) = (range.first_bits(), to_bits(range.last()));
        // The allocated addresses of the range, in order, walked alongside.
        let mut taken = self
            .allocated
            .range(from_bits(start, v4)..=from_bits(end, v4))
            .map(|&ip| to_bits(ip))
            .peekable();
        // An inclusive range: no overflow at the top of the address space.
        for bits in (start..=end).take(limit) {
            let is_taken = taken.next_if_eq(&bits).is_some();
            let ip = from_bits(bits, v4);
            if !is_taken && self.reserved(ip).is_none() {
                return Ok(ip);
            }
        }
        Err(IpamError::Exhausted { range })
    }
}

/// Hands out an address of one family (`v4` or not) from a network's
/// pools, as Docker's default IPAM does with several subnets: a requested
/// address from the pool whose subnet holds it; otherwise the lowest free
/// address of the first pool, in `--subnet` order, that has one. `None`
/// when the network has no subnet of that family.
pub fn allocate_in(
    pools: &mut [Pool],
    v4: bool,
    requested: Option<IpAddr>,
) -> Result<Option<IpAddr>, IpamError> {
    let mut family: Vec<&mut Pool> = pools
        .iter_mut()
        .filter(|p| p.config.subnet.is_ipv4() == v4)
        .collect();
    let joined = |family: &[&mut Pool], f: &dyn Fn(&Pool) -> Subnet| {
        family
            .iter()
            .map(|p| f(p).to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match (requested, family.len()) {
        (_, 0) => Ok(None),
        // One subnet: its own checks and messages.
        (_, 1) => family[0].allocate(requested).map(Some),
        (Some(ip), _) => match family.iter_mut().find(|p| p.config.subnet.contains(ip)) {
            Some(pool) => pool.allocate(Some(ip)).map(Some),
            None => Err(IpamError::OutsideAll {
                addr: ip,
                subnets: joined(&family, &|p| p.config.subnet),
            }),
        },
        (None, _) => {
            for pool in family.iter_mut() {
                match pool.allocate(None) {
                    Err(IpamError::Exhausted { .. }) => continue,
                    other => return other.map(Some),
                }
            }
            Err(IpamError::AllExhausted {
                ranges: joined(&family, &|p| p.config.ip_range.unwrap_or(p.config.subnet)),
            })
        }
    }
}

/// Formats a MAC as `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The MAC Docker derives from an IPv4 address: `02:42` followed by the
/// four address bytes (172.16.86.2 → 02:42:ac:10:56:02).
pub fn mac_for_ipv4(ip: Ipv4Addr) -> Mac {
    let [a, b, c, d] = ip.octets();
    Mac::new([0x02, 0x42, a, b, c, d])
}

/// A random locally administered unicast MAC, from /dev/urandom (falling
/// back to std's randomly keyed hasher if that cannot be read).
pub fn random_mac() -> Mac {
    let mut mac = [0u8; 6];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| {
        use std::io::Read as _;
        f.read_exact(&mut mac)
    });
    if read.is_err() {
        use std::hash::{BuildHasher as _, Hasher as _};
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos(),
        );
        hasher.write_u32(std::process::id());
        mac.copy_from_slice(&hasher.finish().to_le_bytes()[..6]);
    }
    // Locally administered (bit 1 set), unicast (bit 0 clear).
    mac[0] = (mac[0] | 0x02) & !0x01;
    Mac::new(mac)
}

/// Refuses MACs a container cannot have: all-zero, broadcast, multicast.
pub fn validate_mac(mac: Mac) -> Result<(), IpamError> {
    let reason = if mac == Mac::new([0; 6]) {
        "the all-zero address; give a unicast MAC such as 02:42:ac:10:56:02 or leave it out to get one"
    } else if mac == Mac::BROADCAST {
        "the broadcast address; a container MAC must be unicast (first byte even), e.g. 02:42:ac:10:56:02"
    } else if mac.is_multicast() {
        "a multicast address; a container MAC must be unicast (first byte even), e.g. 02:42:ac:10:56:02"
    } else {
        return Ok(());
    };
    Err(IpamError::InvalidMac {
        mac: mac.to_string(),
        reason: reason.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sn(s: &str) -> Subnet {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn err_subnet(s: &str) -> String {
        s.parse::<Subnet>().unwrap_err().to_string()
    }

    fn pool(subnet: &str, range: Option<&str>, gateway: Option<&str>) -> Pool {
        Pool::new(PoolConfig {
            subnet: sn(subnet),
            ip_range: range.map(sn),
            gateway: gateway.map(ip),
            aux_addresses: BTreeMap::new(),
            implicit_gateway: false,
        })
        .unwrap()
    }

    fn config_err(config: PoolConfig) -> String {
        Pool::new(config).unwrap_err().to_string()
    }

    #[test]
    fn parses_good_subnets() {
        let s = sn("172.16.86.0/24");
        assert!(s.is_ipv4());
        assert_eq!(s.prefix(), 24);
        assert_eq!(s.network(), ip("172.16.86.0"));
        assert_eq!(s.last(), ip("172.16.86.255"));
        assert_eq!(s.broadcast(), Some(ip("172.16.86.255")));
        assert_eq!(s.size(), 256);
        assert_eq!(s.to_string(), "172.16.86.0/24");

        let s = sn("2001:db8:abcd::/64");
        assert!(!s.is_ipv4());
        assert_eq!(s.prefix(), 64);
        assert_eq!(s.broadcast(), None);
        assert_eq!(s.size(), 1 << 64);
        assert_eq!(s.to_string(), "2001:db8:abcd::/64");

        assert_eq!(sn("0.0.0.0/0").size(), 1 << 32);
        assert_eq!(sn("::/0").size(), u128::MAX);
        assert_eq!(sn("10.1.2.3/32").size(), 1);
        assert_eq!(sn("10.1.2.3/32").broadcast(), None);
        assert_eq!(sn("2001:db8::1/128").size(), 1);
    }

    #[test]
    fn rejects_bad_subnets() {
        assert_eq!(
            err_subnet("172.16.86.0"),
            "invalid subnet \"172.16.86.0\": missing prefix length; write it in CIDR form, e.g. 172.16.86.0/24"
        );
        assert_eq!(
            err_subnet("172.16.86.5/24"),
            "subnet 172.16.86.5/24 has host bits set; did you mean 172.16.86.0/24?"
        );
        assert_eq!(
            err_subnet("2001:db8:abcd::1/64"),
            "subnet 2001:db8:abcd::1/64 has host bits set; did you mean 2001:db8:abcd::/64?"
        );
        assert_eq!(
            err_subnet("10.0.0.0/33"),
            "invalid subnet \"10.0.0.0/33\": prefix length 33 is too long for IPv4 (at most /32)"
        );
        assert_eq!(
            err_subnet("2001:db8::/129"),
            "invalid subnet \"2001:db8::/129\": prefix length 129 is too long for IPv6 (at most /128)"
        );
        assert_eq!(
            err_subnet("172.16.86/24"),
            "invalid subnet \"172.16.86/24\": \"172.16.86\" is not an IPv4 or IPv6 address; write it in CIDR form, e.g. 172.16.86.0/24"
        );
        for bad in [
            "10.0.0.0/",
            "10.0.0.0/+8",
            "10.0.0.0/x",
            "10.0.0.0/99999999999",
            "/24",
            "",
            " 10.0.0.0/8",
            "2001:db8::",
        ] {
            assert!(bad.parse::<Subnet>().is_err(), "{bad:?} parsed");
        }
        assert!(Subnet::new(ip("10.0.0.1"), 24).is_err());
        assert!(Subnet::new(ip("10.0.0.0"), 40).is_err());
        assert_eq!(Subnet::new(ip("10.0.0.0"), 8).unwrap(), sn("10.0.0.0/8"));
    }

    #[test]
    fn contains_and_overlaps() {
        let big = sn("10.0.0.0/8");
        let small = sn("10.1.2.0/24");
        let other = sn("192.168.0.0/16");
        assert!(big.contains(ip("10.255.255.255")));
        assert!(!big.contains(ip("11.0.0.0")));
        assert!(!big.contains(ip("::a00:1")));
        assert!(big.contains_subnet(&small));
        assert!(!small.contains_subnet(&big));
        assert!(big.contains_subnet(&big));
        assert!(big.overlaps(&small) && small.overlaps(&big));
        assert!(!big.overlaps(&other) && !other.overlaps(&big));
        assert!(!sn("10.0.0.0/25").overlaps(&sn("10.0.0.128/25")));
        assert!(sn("0.0.0.0/0").overlaps(&other));

        let v6 = sn("2001:db8::/32");
        let v6_small = sn("2001:db8:abcd::/64");
        let v6_other = sn("2001:db9::/32");
        assert!(v6.contains(ip("2001:db8:ffff::1")));
        assert!(v6.contains_subnet(&v6_small));
        assert!(!v6_small.contains_subnet(&v6));
        assert!(v6.overlaps(&v6_small) && v6_small.overlaps(&v6));
        assert!(!v6.overlaps(&v6_other) && !v6_other.overlaps(&v6));
        assert!(sn("::/0").contains(ip("ffff::1")));

        // Families never mix.
        assert!(!sn("0.0.0.0/0").overlaps(&sn("::/0")));
        assert!(!sn("::/0").contains_subnet(&sn("0.0.0.0/0")));
    }

    #[test]
    fn tutorial_network_allocates_from_two() {
        let mut p = pool("172.16.86.0/24", None, Some("172.16.86.1"));
        assert_eq!(p.allocate(None).unwrap(), ip("172.16.86.2"));
        assert_eq!(p.allocate(None).unwrap(), ip("172.16.86.3"));
        assert!(p.is_allocated(ip("172.16.86.2")));
        assert!(!p.is_allocated(ip("172.16.86.1")));
        assert_eq!(
            p.allocated().collect::<Vec<_>>(),
            [ip("172.16.86.2"), ip("172.16.86.3")]
        );
    }

    #[test]
    fn release_then_reuse_lowest() {
        let mut p = pool("172.16.86.0/24", None, None);
        for _ in 0..4 {
            p.allocate(None).unwrap();
        }
        assert!(p.release(ip("172.16.86.3")));
        assert!(!p.release(ip("172.16.86.3")));
        assert!(p.release(ip("172.16.86.2")));
        assert_eq!(p.allocate(None).unwrap(), ip("172.16.86.2"));
        assert_eq!(p.allocate(None).unwrap(), ip("172.16.86.3"));
        assert_eq!(p.allocate(None).unwrap(), ip("172.16.86.6"));
    }

    #[test]
    fn gateway_defaults_to_first_host() {
        let p = pool("172.16.86.0/24", None, None);
        assert_eq!(p.config.gateway, Some(ip("172.16.86.1")));
        let p = pool("2001:db8:abcd::/64", None, None);
        assert_eq!(p.config.gateway, Some(ip("2001:db8:abcd::1")));
        // The gateway is the first host of the subnet, not of the range.
        let p = pool("10.0.0.0/24", Some("10.0.0.128/25"), None);
        assert_eq!(p.config.gateway, Some(ip("10.0.0.1")));

        let mut c = PoolConfig::new(sn("10.0.0.0/16"));
        c.validate().unwrap();
        assert_eq!(c.gateway, Some(ip("10.0.0.1")));
        // Chosen, not given: marked so (inspect leaves it out, as Docker
        // 20.10 does); given: not marked, also when it is the first host.
        assert!(pool("172.16.86.0/24", None, None).config.implicit_gateway);
        assert!(
            !pool("172.16.86.0/24", None, Some("172.16.86.1"))
                .config
                .implicit_gateway
        );
        let mut c = PoolConfig::new(sn("10.0.0.0/24"));
        c.validate().unwrap();
        c.validate().unwrap();
        assert!(c.implicit_gateway, "a second validate keeps the mark");
    }

    #[test]
    fn tiny_subnets() {
        // /31 and /32 have no network or broadcast address (as in Docker).
        let mut p = pool("10.0.0.0/31", None, None);
        assert_eq!(p.config.gateway, Some(ip("10.0.0.0")));
        assert_eq!(p.allocate(None).unwrap(), ip("10.0.0.1"));
        assert!(matches!(p.allocate(None), Err(IpamError::Exhausted { .. })));

        let mut p = pool("10.0.0.7/32", None, None);
        assert_eq!(p.config.gateway, Some(ip("10.0.0.7")));
        assert!(matches!(p.allocate(None), Err(IpamError::Exhausted { .. })));

        assert_eq!(
            config_err(PoolConfig::new(sn("2001:db8::/128"))),
            "subnet 2001:db8::/128 has no usable host address for a gateway; use a shorter prefix"
        );
        let mut p = pool("2001:db8::/127", None, None);
        assert_eq!(p.config.gateway, Some(ip("2001:db8::1")));
        assert!(matches!(p.allocate(None), Err(IpamError::Exhausted { .. })));
    }

    #[test]
    fn aux_addresses_never_handed_out() {
        let mut config = PoolConfig::new(sn("10.0.0.0/29"));
        config.aux_addresses.insert("router".into(), ip("10.0.0.2"));
        config
            .aux_addresses
            .insert("printer".into(), ip("10.0.0.4"));
        let mut p = Pool::new(config).unwrap();
        assert_eq!(p.allocate(None).unwrap(), ip("10.0.0.3"));
        assert_eq!(p.allocate(None).unwrap(), ip("10.0.0.5"));
        assert_eq!(p.allocate(None).unwrap(), ip("10.0.0.6"));
        assert_eq!(
            p.allocate(None).unwrap_err().to_string(),
            "no free address left in 10.0.0.0/29; use a larger --subnet or --ip-range"
        );
        assert_eq!(
            p.allocate(Some(ip("10.0.0.2"))).unwrap_err().to_string(),
            "invalid address 10.0.0.2: it is reserved as aux-address \"router\"; choose another --ip or leave it out to get a free one"
        );
        assert!(!p.is_allocated(ip("10.0.0.2")));
    }

    #[test]
    fn ip_range_respected() {
        let mut p = pool("10.0.0.0/24", Some("10.0.0.128/25"), None);
        assert_eq!(p.allocate(None).unwrap(), ip("10.0.0.128"));
        assert_eq!(p.allocate(None).unwrap(), ip("10.0.0.129"));
        // Static addresses need only be in the subnet.
        assert_eq!(p.allocate(Some(ip("10.0.0.9"))).unwrap(), ip("10.0.0.9"));
        assert_eq!(p.allocate(None).unwrap(), ip("10.0.0.130"));

        // A range starting at the subnet's network address skips it.
        let mut p = pool("10.0.0.0/24", Some("10.0.0.0/28"), None);
        assert_eq!(p.allocate(None).unwrap(), ip("10.0.0.2"));

        // A range ending at the subnet's broadcast address skips that.
        let mut p = pool("10.0.0.0/24", Some("10.0.0.252/30"), None);
        assert_eq!(p.allocate(None).unwrap(), ip("10.0.0.252"));
        assert_eq!(p.allocate(None).unwrap(), ip("10.0.0.253"));
        assert_eq!(p.allocate(None).unwrap(), ip("10.0.0.254"));
        assert_eq!(
            p.allocate(None).unwrap_err().to_string(),
            "no free address left in 10.0.0.252/30; use a larger --subnet or --ip-range"
        );
    }

    #[test]
    fn static_requests() {
        let mut p = pool("172.16.86.0/24", None, None);
        assert_eq!(
            p.allocate(Some(ip("172.16.86.10"))).unwrap(),
            ip("172.16.86.10")
        );
        assert_eq!(
            p.allocate(Some(ip("172.16.86.10"))).unwrap_err().to_string(),
            "address 172.16.86.10 is already in use on this network; choose another --ip or leave it out to get a free one"
        );
        assert_eq!(
            p.allocate(Some(ip("10.0.0.5"))).unwrap_err().to_string(),
            "invalid address 10.0.0.5: not inside subnet 172.16.86.0/24; choose a --ip within the subnet, e.g. 172.16.86.1"
        );
        assert_eq!(
            p.allocate(Some(ip("172.16.86.1"))).unwrap_err().to_string(),
            "invalid address 172.16.86.1: it is the gateway of subnet 172.16.86.0/24; choose another --ip or leave it out to get a free one"
        );
        assert_eq!(
            p.allocate(Some(ip("172.16.86.255"))).unwrap_err().to_string(),
            "invalid address 172.16.86.255: it is the broadcast address of subnet 172.16.86.0/24; choose a host address, e.g. 172.16.86.1"
        );
        assert!(matches!(
            p.allocate(Some(ip("172.16.86.0"))),
            Err(IpamError::InvalidAddress { .. })
        ));
        assert!(p
            .allocate(Some(ip("2001:db8::5")))
            .unwrap_err()
            .to_string()
            .contains("is an IPv6 address but subnet 172.16.86.0/24 is IPv4"));
        // The failed requests took nothing.
        assert_eq!(p.allocated().count(), 1);
        // Dynamic allocation steps around the static one.
        let mut p = pool("172.16.86.0/24", None, None);
        p.allocate(Some(ip("172.16.86.2"))).unwrap();
        assert_eq!(p.allocate(None).unwrap(), ip("172.16.86.3"));

        let mut p6 = pool("2001:db8::/64", None, None);
        p6.allocate(Some(ip("2001:db8::2"))).unwrap();
        assert_eq!(
            p6.allocate(Some(ip("2001:db8::2"))).unwrap_err().to_string(),
            "address 2001:db8::2 is already in use on this network; choose another --ip6 or leave it out to get a free one"
        );
    }

    #[test]
    fn exhaustion_on_slash_30() {
        let mut p = pool("172.16.86.0/30", None, Some("172.16.86.1"));
        assert_eq!(p.allocate(None).unwrap(), ip("172.16.86.2"));
        assert_eq!(
            p.allocate(None).unwrap_err().to_string(),
            "no free address left in 172.16.86.0/30; use a larger --subnet or --ip-range"
        );
        assert!(p.release(ip("172.16.86.2")));
        assert_eq!(p.allocate(None).unwrap(), ip("172.16.86.2"));
    }

    #[test]
    fn ipv6_allocation() {
        let mut p = pool("2001:db8:abcd::/64", None, Some("2001:db8:abcd::1"));
        assert_eq!(p.allocate(None).unwrap(), ip("2001:db8:abcd::2"));
        assert_eq!(p.allocate(None).unwrap(), ip("2001:db8:abcd::3"));

        // Large subnets stay cheap: the scan is bounded by what is taken.
        let mut p = pool("::/0", None, None);
        for _ in 0..2000 {
            p.allocate(None).unwrap();
        }
        assert_eq!(p.allocate(None).unwrap(), ip("::7d2"));

        // The very top of the address space does not overflow.
        let mut p = pool(
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ff00/120",
            Some("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffc/126"),
            None,
        );
        for _ in 0..4 {
            p.allocate(None).unwrap();
        }
        assert!(p.is_allocated(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")));
        assert!(matches!(p.allocate(None), Err(IpamError::Exhausted { .. })));

        let mut p = pool("255.255.255.252/30", None, None);
        assert_eq!(p.allocate(None).unwrap(), ip("255.255.255.254"));
        assert!(matches!(p.allocate(None), Err(IpamError::Exhausted { .. })));
    }

    #[test]
    fn validate_errors() {
        let with = |subnet: &str, range: Option<&str>, gateway: Option<&str>| PoolConfig {
            subnet: sn(subnet),
            ip_range: range.map(sn),
            gateway: gateway.map(ip),
            aux_addresses: BTreeMap::new(),
            implicit_gateway: false,
        };
        assert_eq!(
            config_err(with("172.16.86.0/24", None, Some("10.0.0.1"))),
            "invalid gateway 10.0.0.1: not inside subnet 172.16.86.0/24; choose a --gateway within the subnet, e.g. 172.16.86.1"
        );
        assert_eq!(
            config_err(with("172.16.86.0/24", None, Some("2001:db8::1"))),
            "invalid gateway 2001:db8::1: it is an IPv6 address but subnet 172.16.86.0/24 is IPv4; give an IPv4 --gateway inside the subnet, e.g. 172.16.86.1"
        );
        assert_eq!(
            config_err(with("172.16.86.0/24", None, Some("172.16.86.0"))),
            "invalid gateway 172.16.86.0: it is the network address of subnet 172.16.86.0/24; choose a host address, e.g. 172.16.86.1"
        );
        assert_eq!(
            config_err(with("172.16.86.0/24", None, Some("172.16.86.255"))),
            "invalid gateway 172.16.86.255: it is the broadcast address of subnet 172.16.86.0/24; choose a host address, e.g. 172.16.86.1"
        );
        assert!(
            config_err(with("2001:db8::/64", None, Some("2001:db8::"))).contains("network address")
        );
        assert!(config_err(with("2001:db8::/64", None, Some("10.0.0.1")))
            .contains("is an IPv4 address but subnet 2001:db8::/64 is IPv6"));
        // A gateway at the top of an IPv6 subnet is fine (no broadcast).
        pool("2001:db8::/64", None, Some("2001:db8::ffff:ffff:ffff:ffff"));
        // A gateway inside the subnet but outside the ip-range is fine.
        pool("10.0.0.0/24", Some("10.0.0.128/25"), Some("10.0.0.254"));

        assert_eq!(
            config_err(with("172.16.86.0/24", Some("10.0.0.0/28"), None)),
            "ip-range 10.0.0.0/28 is not inside subnet 172.16.86.0/24; choose an --ip-range within the subnet"
        );
        assert!(
            config_err(with("172.16.86.0/24", Some("172.16.0.0/16"), None))
                .starts_with("ip-range 172.16.0.0/16 is not inside subnet 172.16.86.0/24")
        );
        assert_eq!(
            config_err(with("172.16.86.0/24", Some("2001:db8::/64"), None)),
            "ip-range 2001:db8::/64 is IPv6 but subnet 172.16.86.0/24 is IPv4; give an IPv4 --ip-range inside the subnet"
        );

        let mut c = with("172.16.86.0/24", None, None);
        c.aux_addresses.insert("host1".into(), ip("10.0.0.5"));
        assert_eq!(
            config_err(c),
            "invalid aux-address host1=10.0.0.5: not inside subnet 172.16.86.0/24; choose a --aux-address within the subnet, e.g. 172.16.86.1"
        );
        let mut c = with("172.16.86.0/24", None, None);
        c.aux_addresses.insert("host1".into(), ip("172.16.86.1"));
        assert_eq!(
            config_err(c),
            "invalid aux-address host1=172.16.86.1: it is the gateway; choose another --aux-address or a different --gateway"
        );
        let mut c = with("172.16.86.0/24", None, None);
        c.aux_addresses.insert("a".into(), ip("172.16.86.5"));
        c.aux_addresses.insert("b".into(), ip("172.16.86.5"));
        assert_eq!(
            config_err(c),
            "invalid aux-address b=172.16.86.5: aux-address \"a\" has the same address; give each aux-address its own"
        );
        let mut c = with("172.16.86.0/24", None, None);
        c.aux_addresses.insert("bc".into(), ip("172.16.86.255"));
        assert!(config_err(c).contains("broadcast address"));
    }

    #[test]
    fn macs() {
        let m = Mac::new;
        assert_eq!(
            mac_for_ipv4(Ipv4Addr::new(172, 16, 86, 2)),
            m([0x02, 0x42, 0xac, 0x10, 0x56, 0x02])
        );
        assert_eq!(
            mac_for_ipv4(Ipv4Addr::new(172, 16, 86, 2)).to_string(),
            "02:42:ac:10:56:02"
        );
        let mut distinct = BTreeSet::new();
        for _ in 0..64 {
            let mac = random_mac();
            assert!(mac.is_local(), "{mac} not local");
            assert!(!mac.is_multicast(), "{mac} not unicast");
            validate_mac(mac).unwrap();
            distinct.insert(mac);
        }
        assert!(distinct.len() > 60);

        validate_mac(m([0x02, 0x42, 0xac, 0x10, 0x56, 0x02])).unwrap();
        validate_mac(m([0x00, 0x1b, 0x21, 0x00, 0x00, 0x01])).unwrap();
        assert_eq!(
            validate_mac(m([0x01, 0x00, 0x5e, 0x00, 0x00, 0x01]))
                .unwrap_err()
                .to_string(),
            "MAC 01:00:5e:00:00:01 is a multicast address; a container MAC must be unicast (first byte even), e.g. 02:42:ac:10:56:02"
        );
        assert_eq!(
            validate_mac(Mac::BROADCAST).unwrap_err().to_string(),
            "MAC ff:ff:ff:ff:ff:ff is the broadcast address; a container MAC must be unicast (first byte even), e.g. 02:42:ac:10:56:02"
        );
        assert_eq!(
            validate_mac(m([0; 6])).unwrap_err().to_string(),
            "MAC 00:00:00:00:00:00 is the all-zero address; give a unicast MAC such as 02:42:ac:10:56:02 or leave it out to get one"
        );
    }

    #[test]
    fn serde_round_trip() {
        let mut config = PoolConfig::new(sn("172.16.86.0/24"));
        config.ip_range = Some(sn("172.16.86.128/25"));
        config
            .aux_addresses
            .insert("router".into(), ip("172.16.86.129"));
        let mut p = Pool::new(config).unwrap();
        p.allocate(None).unwrap();
        p.allocate(None).unwrap();
        p.allocate(Some(ip("172.16.86.7"))).unwrap();

        let json = serde_json::to_string(&p).unwrap();
        assert!(json.contains("\"subnet\":\"172.16.86.0/24\""), "{json}");
        assert!(json.contains("\"ip_range\":\"172.16.86.128/25\""), "{json}");
        let back: Pool = serde_json::from_str(&json).unwrap();
        assert_eq!(back, p);
        assert_eq!(
            back.allocated().collect::<Vec<_>>(),
            [ip("172.16.86.7"), ip("172.16.86.128"), ip("172.16.86.130")]
        );

        let v6 = pool("2001:db8:abcd::/64", None, None);
        let back: Pool = serde_json::from_str(&serde_json::to_string(&v6).unwrap()).unwrap();
        assert_eq!(back, v6);

        // Allocated addresses in any order, or twice (a state file
        // edited by hand), read as one set in order.
        let shuffled: Pool = serde_json::from_str(
            r#"{"config":{"subnet":"172.16.86.0/24"},
                "allocated":["172.16.86.9","172.16.86.2","172.16.86.9","172.16.86.5"]}"#,
        )
        .unwrap();
        assert_eq!(
            shuffled.allocated().collect::<Vec<_>>(),
            [ip("172.16.86.2"), ip("172.16.86.5"), ip("172.16.86.9")]
        );
        assert!(serde_json::from_str::<Pool>(
            r#"{"config":{"subnet":"10.0.0.0/8"},"allocated":["x"]}"#
        )
        .is_err());

        // Optional fields may be missing; bad subnets are refused.
        let minimal: Pool = serde_json::from_str(r#"{"config":{"subnet":"10.0.0.0/8"}}"#).unwrap();
        assert_eq!(minimal.config.gateway, None);
        assert_eq!(minimal.allocated().count(), 0);
        let err = serde_json::from_str::<Subnet>(r#""10.0.0.1/8""#).unwrap_err();
        assert!(err.to_string().contains("has host bits set"), "{err}");
    }

    #[test]
    fn mark_allocated_restores_state() {
        let mut p = pool("172.16.86.0/24", None, None);
        assert!(p.mark_allocated(ip("172.16.86.2")));
        assert!(!p.mark_allocated(ip("172.16.86.2")));
        assert!(p.is_allocated(ip("172.16.86.2")));
        assert_eq!(p.allocate(None).unwrap(), ip("172.16.86.3"));
    }

    /// moby's testMacvlanMultiSubnet: two IPv4 subnets, the gateway given
    /// for the second only.
    fn two_subnets() -> Vec<Pool> {
        vec![
            pool("172.28.100.0/24", None, None),
            pool("172.28.102.0/24", None, Some("172.28.102.254")),
        ]
    }

    #[test]
    fn multi_subnet_static_in_either_subnet() {
        let mut pools = two_subnets();
        for a in ["172.28.100.20", "172.28.102.20"] {
            assert_eq!(
                allocate_in(&mut pools, true, Some(ip(a))).unwrap(),
                Some(ip(a))
            );
        }
        // Each address is held by its own subnet's pool only.
        assert_eq!(
            pools[0].allocated().collect::<Vec<_>>(),
            [ip("172.28.100.20")]
        );
        assert_eq!(
            pools[1].allocated().collect::<Vec<_>>(),
            [ip("172.28.102.20")]
        );
        assert_eq!(
            allocate_in(&mut pools, true, Some(ip("172.28.102.20"))).unwrap_err().to_string(),
            "address 172.28.102.20 is already in use on this network; choose another --ip or leave it out to get a free one"
        );
        assert_eq!(
            allocate_in(&mut pools, true, Some(ip("172.28.101.5")))
                .unwrap_err()
                .to_string(),
            "invalid address 172.28.101.5: not inside any subnet of this network \
             (172.28.100.0/24, 172.28.102.0/24); choose a --ip within one of them"
        );
        // A reserved address of the subnet that holds it keeps its message.
        assert_eq!(
            allocate_in(&mut pools, true, Some(ip("172.28.102.254")))
                .unwrap_err()
                .to_string(),
            "invalid address 172.28.102.254: it is the gateway of subnet 172.28.102.0/24; \
             choose another --ip or leave it out to get a free one"
        );
        // No pool of the other family: nothing to hand out, no error.
        assert_eq!(allocate_in(&mut pools, false, None).unwrap(), None);
    }

    #[test]
    fn multi_subnet_dynamic_takes_the_first_subnet_with_room() {
        let mut pools = two_subnets();
        assert_eq!(
            allocate_in(&mut pools, true, None).unwrap(),
            Some(ip("172.28.100.2"))
        );
        assert_eq!(pools[1].allocated().count(), 0);

        // Two /30s: one host each besides the implicit gateways.
        let mut pools = vec![
            pool("10.61.0.0/30", None, None),
            pool("10.61.0.4/30", None, None),
        ];
        assert_eq!(
            allocate_in(&mut pools, true, None).unwrap(),
            Some(ip("10.61.0.2"))
        );
        assert_eq!(pools[1].allocated().count(), 0, "only one address is taken");
        assert_eq!(
            allocate_in(&mut pools, true, None).unwrap(),
            Some(ip("10.61.0.6"))
        );
        assert_eq!(
            allocate_in(&mut pools, true, None).unwrap_err().to_string(),
            "no free address left in any subnet of this network (10.61.0.0/30, 10.61.0.4/30); \
             remove a container, or use larger subnets or ip-ranges"
        );
        // Released addresses are handed out again, first subnet first.
        assert!(pools[0].release(ip("10.61.0.2")));
        assert_eq!(
            allocate_in(&mut pools, true, None).unwrap(),
            Some(ip("10.61.0.2"))
        );

        // One subnet keeps its own message.
        let mut one = vec![pool("10.61.0.0/30", None, None)];
        allocate_in(&mut one, true, None).unwrap();
        assert_eq!(
            allocate_in(&mut one, true, None).unwrap_err().to_string(),
            "no free address left in 10.61.0.0/30; use a larger --subnet or --ip-range"
        );
    }

    #[test]
    fn internal_point_to_point_has_no_gateway() {
        let internal = |s: &str, gw: Option<&str>| {
            Pool::new_for(
                PoolConfig {
                    gateway: gw.map(ip),
                    ..PoolConfig::new(sn(s))
                },
                true,
            )
            .unwrap()
        };
        // /31: both addresses are usable (moby TestPointToPoint).
        let mut p = internal("10.63.0.0/31", None);
        assert_eq!(p.config.gateway, None);
        assert_eq!(p.allocate(None).unwrap(), ip("10.63.0.0"));
        assert_eq!(p.allocate(None).unwrap(), ip("10.63.0.1"));
        assert!(matches!(p.allocate(None), Err(IpamError::Exhausted { .. })));
        // /32: its one address.
        let mut p = internal("10.64.0.7/32", None);
        assert_eq!(p.config.gateway, None);
        assert_eq!(p.allocate(None).unwrap(), ip("10.64.0.7"));
        // A gateway given is still reserved.
        let mut p = internal("10.63.0.0/31", Some("10.63.0.0"));
        assert_eq!(p.allocate(None).unwrap(), ip("10.63.0.1"));
        // Larger internal subnets keep the implicit gateway (Docker 20.10).
        assert_eq!(
            internal("10.62.0.0/24", None).config.gateway,
            Some(ip("10.62.0.1"))
        );
        // Not internal: the /31 reserves a gateway, as before.
        assert_eq!(
            pool("10.63.0.0/31", None, None).config.gateway,
            Some(ip("10.63.0.0"))
        );
    }
}
