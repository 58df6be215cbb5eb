//! What mvnet remembers: networks, containers and their endpoints. Plain
//! data, persisted by [`crate::store`]; the controller owns the rules.
use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
};

use serde::{Deserialize, Serialize};

use crate::ipam::Pool;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct State {
    /// By network id.
    pub networks: BTreeMap<String, Network>,
    /// By container id.
    pub containers: BTreeMap<String, Container>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Bridge,
    Vepa,
    Private,
    Passthru,
}

impl Mode {
    pub fn parse(s: &str) -> Option<Mode> {
        Some(match s {
            "bridge" => Mode::Bridge,
            "vepa" => Mode::Vepa,
            "private" => Mode::Private,
            "passthru" => Mode::Passthru,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Bridge => "bridge",
            Mode::Vepa => "vepa",
            Mode::Private => "private",
            Mode::Passthru => "passthru",
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
    pub mode: Mode,
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
    pub xdp_mode: String,
    /// Under enforce, drop broadcast frames on this network's VLAN too.
    #[serde(default)]
    pub drop_broadcast: bool,
    /// Under enforce, drop multicast frames on this network's VLAN too.
    #[serde(default)]
    pub drop_multicast: bool,
}

/// The classifier's policy for a network.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
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
    pub fn parse(s: &str) -> Option<Policy> {
        match s {
            "observe" => Some(Policy::Observe),
            "enforce" => Some(Policy::Enforce),
            _ => None,
        }
    }

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
        &self.id[..12]
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

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Endpoint {
    pub id: String,
    pub network_id: String,
    /// Interface name inside the container.
    pub ifname: String,
    pub mac: [u8; 6],
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
}

impl Endpoint {
    pub fn addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.ipv4
            .map(IpAddr::V4)
            .into_iter()
            .chain(self.ipv6.map(IpAddr::V6))
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Container {
    pub id: String,
    pub name: String,
    pub created: String,
    /// The network namespace (a bind mount under /run/netns, or a path
    /// given with --netns).
    pub netns: PathBuf,
    /// Whether mvnet created the namespace (and so removes it).
    pub netns_owned: bool,
    /// Remove on stop.
    pub auto_remove: bool,
    pub command: Vec<String>,
    pub pid: Option<u32>,
    pub running: bool,
    /// By network id.
    pub endpoints: BTreeMap<String, Endpoint>,
}

impl Container {
    pub fn short_id(&self) -> &str {
        &self.id[..12]
    }
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
}
