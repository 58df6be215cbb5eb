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

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct State {
    /// By network id.
    pub networks: BTreeMap<String, Network>,
    /// By container id.
    pub containers: BTreeMap<String, Container>,
    /// Teardowns saved before they touched the kernel and not finished yet
    /// (a failed save or a crash stopped them), by container id: the next
    /// `container stop`/`rm` or `mvnet restore` finishes them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub teardowns: BTreeMap<String, Teardown>,
}

/// A teardown of a container's network, recorded in the state before it
/// starts, so that a save that fails afterwards leaves an intent, not a lie.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Teardown {
    /// `container stop`: every endpoint and the namespace.
    Stop,
    /// `container rm`: as `Stop`, then the container leaves the state.
    Remove,
    /// `network disconnect`: the endpoint on this network.
    Disconnect { network_id: String },
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
    /// Native, falling back to generic where the driver has no XDP.
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
    /// Under enforce, drop broadcast frames on this network's VLAN too.
    #[serde(default)]
    pub drop_broadcast: bool,
    /// Under enforce, drop multicast frames on this network's VLAN too.
    #[serde(default)]
    pub drop_multicast: bool,
    /// `--label KEY=VALUE` at create.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
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
    pub mac: Mac,
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

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
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
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub stopped_endpoints: BTreeMap<String, Endpoint>,
}

/// The addresses a container asked for on one network (`--ip`, `--ip6`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpamConfig {
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
}

impl Container {
    pub fn short_id(&self) -> &str {
        &self.id[..12]
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
        let err = || MacParseError {
            input: s.to_owned(),
        };
        let mut octets = [0u8; 6];
        let mut parts = s.split(':');
        for octet in &mut octets {
            let part = parts.next().ok_or_else(err)?;
            // from_str_radix alone would take "+2": only two hex digits do.
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(err());
            }
            *octet = u8::from_str_radix(part, 16).map_err(|_| err())?;
        }
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(Mac(octets))
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
