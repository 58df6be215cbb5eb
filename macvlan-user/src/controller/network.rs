//! `network create` / `network rm`: options, IPAM pools, and the parent
//! link (used as is, or an 802.1Q sub-interface or dummy that we own).
use std::{collections::BTreeMap, net::IpAddr};

use anyhow::{anyhow, bail, Result};

use super::Controller;
use crate::{
    ipam::{Pool, PoolConfig, Subnet},
    model::{self, GroupRule, Intent, MacvlanMode, Network, Owner, ParentOrigin, Policy, XdpMode},
    netlink::{self, NetlinkError},
};

/// What `mvnet network create` was asked for.
#[derive(Clone, Debug, Default)]
pub struct NetworkSpec {
    pub name: String,
    pub driver: String,
    pub subnets: Vec<String>,
    pub gateways: Vec<String>,
    pub ip_ranges: Vec<String>,
    /// `name=IP`.
    pub aux_addresses: Vec<String>,
    pub internal: bool,
    pub ipv6: bool,
    /// `key=value`.
    pub options: Vec<String>,
    pub policy: Policy,
    pub xdp_mode: XdpMode,
    /// `--max-endpoints`: endpoint slots of the root's classifier (`None`:
    /// the attached classifier's, else the default 4096).
    pub max_endpoints: Option<u32>,
    /// Under enforce: broadcast and multicast frames.
    pub broadcast: GroupRule,
    pub multicast: GroupRule,
    /// `--label KEY=VALUE`.
    pub labels: std::collections::BTreeMap<String, String>,
}

/// A validated `network create`.
#[derive(Clone, Debug)]
pub struct NetworkPlan {
    pub network: Network,
    /// The parent is an 802.1Q sub-interface or dummy mvnet makes.
    pub create_parent: bool,
}

/// Linux interface names are at most 15 bytes.
const IFNAMSIZ: usize = 15;

fn parse_ip(flag: &str, s: &str) -> Result<IpAddr> {
    s.parse()
        .map_err(|_| anyhow!("invalid {flag} {s:?}: not an IP address"))
}

/// Builds the IPAM pools: each subnet with the gateway, ip-range and aux
/// addresses that fall inside it (Docker matches them the same way).
fn pools(spec: &NetworkSpec, internal: bool) -> Result<Vec<Pool>> {
    if spec.subnets.is_empty() {
        bail!("network create needs a --subnet (for example --subnet=172.16.86.0/24): a macvlan network shares the physical network's addressing");
    }
    let subnets: Vec<Subnet> = spec
        .subnets
        .iter()
        .map(|s| s.parse::<Subnet>().map_err(|e| anyhow!("{e}")))
        .collect::<Result<_>>()?;
    for (i, a) in subnets.iter().enumerate() {
        for b in &subnets[i + 1..] {
            if a.overlaps(b) {
                bail!("subnets {a} and {b} overlap; give distinct --subnet values");
            }
        }
    }
    let mut gateways: Vec<IpAddr> = spec
        .gateways
        .iter()
        .map(|g| parse_ip("--gateway", g))
        .collect::<Result<_>>()?;
    let mut ranges: Vec<Subnet> = spec
        .ip_ranges
        .iter()
        .map(|r| {
            r.parse::<Subnet>()
                .map_err(|e| anyhow!("invalid --ip-range: {e}"))
        })
        .collect::<Result<_>>()?;
    let mut aux: Vec<(String, IpAddr)> = spec
        .aux_addresses
        .iter()
        .map(|a| {
            let (name, ip) = a.split_once('=').ok_or_else(|| {
                anyhow!("invalid --aux-address {a:?}: use name=IP, e.g. --aux-address router=172.16.86.254")
            })?;
            Ok((name.to_owned(), parse_ip("--aux-address", ip)?))
        })
        .collect::<Result<_>>()?;

    let mut pools = Vec::new();
    for subnet in subnets {
        let gateway = take_first(&mut gateways, |g| subnet.contains(*g));
        let ip_range = take_first(&mut ranges, |r| subnet.contains_subnet(r));
        let mut aux_addresses = BTreeMap::new();
        while let Some((name, ip)) = take_first(&mut aux, |(_, ip)| subnet.contains(*ip)) {
            aux_addresses.insert(name, ip);
        }
        let config = PoolConfig {
            subnet,
            ip_range,
            gateway,
            aux_addresses,
            implicit_gateway: false,
        };
        pools.push(Pool::new_for(config, internal).map_err(|e| anyhow!("{e}"))?);
    }
    if let Some(g) = gateways.first() {
        bail!("invalid gateway {g}: not inside any --subnet of this network");
    }
    if let Some(r) = ranges.first() {
        bail!("ip-range {r} is not inside any --subnet of this network");
    }
    if let Some((name, ip)) = aux.first() {
        bail!("aux-address {name}={ip} is not inside any --subnet of this network");
    }
    Ok(pools)
}

fn take_first<T>(items: &mut Vec<T>, pred: impl Fn(&T) -> bool) -> Option<T> {
    let i = items.iter().position(pred)?;
    Some(items.remove(i))
}

/// Splits `eth0.10` into (`eth0`, 10) when the suffix is a number.
pub(super) fn vlan_parent(parent: &str) -> Result<Option<(String, u16)>> {
    let Some((base, vid)) = parent.rsplit_once('.') else {
        return Ok(None);
    };
    if base.is_empty() || vid.is_empty() || !vid.chars().all(|c| c.is_ascii_digit()) {
        return Ok(None);
    }
    let n: u64 = vid.parse().unwrap_or(u64::MAX);
    if !(1..=4094).contains(&n) {
        bail!("vlan id must be between 1-4094, received: {vid}");
    }
    Ok(Some((base.to_owned(), n as u16)))
}

/// A `network create` request that passed every check needing neither the
/// state nor the kernel.
pub struct ValidSpec {
    pub options: BTreeMap<String, String>,
    pub mode: MacvlanMode,
    pub policy: Policy,
    pub xdp_mode: XdpMode,
    pub drop_broadcast: bool,
    pub drop_multicast: bool,
    pub pools: Vec<Pool>,
}

/// The checks of `network create` that touch neither the state nor the
/// kernel: name, driver, options, policy, rules, subnets and their pools.
pub fn validate(spec: &NetworkSpec) -> Result<ValidSpec> {
    model::validate_name("network", &spec.name).map_err(|e| anyhow!(e))?;
    if !spec.driver.is_empty() && spec.driver != "macvlan" {
        bail!(
            "driver {:?} is not supported: mvnet creates macvlan networks (-d macvlan)",
            spec.driver
        );
    }
    let mut options = BTreeMap::new();
    for o in &spec.options {
        let (k, v) = o
            .split_once('=')
            .ok_or_else(|| anyhow!("invalid option {o:?}: use -o key=value"))?;
        match k {
            "parent" | "macvlan_mode" => {}
            _ => bail!("unknown option {k:?}: the macvlan driver takes -o parent=IF and -o macvlan_mode=bridge|vepa|private|passthru"),
        }
        options.insert(k.to_owned(), v.to_owned());
    }
    let mode = match options.get("macvlan_mode") {
        None => MacvlanMode::Bridge,
        Some(m) => MacvlanMode::parse(m).ok_or_else(|| {
            anyhow!("requested macvlan mode '{m}' is not valid, 'bridge' mode is the macvlan driver default")
        })?,
    };
    let (policy, xdp_mode) = (spec.policy, spec.xdp_mode);
    if let Some(n) = spec.max_endpoints {
        crate::datapath::check_capacity(n)?;
    }
    let drop_broadcast = spec.broadcast.drops();
    let drop_multicast = spec.multicast.drops();
    let pools = pools(spec, spec.internal)?;
    if spec.ipv6 && !pools.iter().any(|p| !p.config.subnet.is_ipv4()) {
        bail!("--ipv6 needs an IPv6 --subnet (for example --subnet=2001:db8:abc8::/64)");
    }
    if !spec.ipv6 {
        if let Some(p) = pools.iter().find(|p| !p.config.subnet.is_ipv4()) {
            bail!(
                "IPv6 subnet {} given without --ipv6; add --ipv6 to enable it",
                p.config.subnet
            );
        }
    }
    Ok(ValidSpec {
        options,
        mode,
        policy,
        xdp_mode,
        drop_broadcast,
        drop_multicast,
        pools,
    })
}

impl Controller {
    /// `mvnet network create`: validates, then applies the plan. On any
    /// error (or a crash) nothing is left behind.
    pub fn create_network(&mut self, spec: NetworkSpec) -> Result<&Network> {
        let plan = self.plan_network(&spec)?;
        self.apply_network(plan)
    }

    /// Checks a `network create` against the state and the host without
    /// changing anything; the network to create and whether its parent must
    /// be created.
    pub fn plan_network(&self, spec: &NetworkSpec) -> Result<NetworkPlan> {
        let ValidSpec {
            options,
            mode,
            policy,
            xdp_mode,
            drop_broadcast,
            drop_multicast,
            pools,
        } = validate(spec)?;
        if self.state.networks.values().any(|n| n.name == spec.name) {
            bail!("network with name {} already exists; remove it with `mvnet network rm {}` or pick another name", spec.name, spec.name);
        }
        for pool in &pools {
            for other in self.state.networks.values() {
                for op in &other.pools {
                    if op.config.subnet.overlaps(&pool.config.subnet) {
                        bail!(
                            "subnet {} overlaps with subnet {} of network {}; choose a distinct --subnet",
                            pool.config.subnet,
                            op.config.subnet,
                            other.name
                        );
                    }
                }
            }
        }

        let id = model::new_id();
        // Without a parent the network gets a dummy of its own and is
        // otherwise as any other: not internal unless `--internal` says so,
        // with a gateway and a default route through it (which reaches
        // nothing), as Docker's driver does (moby `testMacvlanNilParent`).
        let internal = spec.internal;
        let (parent, origin, vlan) = match options.get("parent").map(String::as_str) {
            None | Some("") => (
                format!("dm-{}", &id[..12]),
                ParentOrigin::CreatedDummy,
                None,
            ),
            Some("lo") => bail!("loopback interface is not a valid macvlan parent link"),
            Some(p) => {
                if p.len() > IFNAMSIZ {
                    bail!("parent interface name {p} is longer than {IFNAMSIZ} characters");
                }
                let exists = netlink::run(None, {
                    let p = p.to_owned();
                    move |nl| async move { nl.link(&p).await }
                })?
                .is_some();
                let vlan = vlan_parent(p)?;
                if exists {
                    (p.to_owned(), ParentOrigin::Existing, vlan)
                } else if let Some((base, vid)) = vlan {
                    (p.to_owned(), ParentOrigin::CreatedVlan, Some((base, vid)))
                } else {
                    bail!("-o parent interface was not found on the host: {p}; list interfaces with `ip link`");
                }
            }
        };
        for other in self.state.networks.values() {
            if other.parent == parent
                && (other.mode == MacvlanMode::Passthru || mode == MacvlanMode::Passthru)
            {
                bail!(
                    "parent interface {parent} is already used by network {}{}; a passthru network needs its parent to itself",
                    other.name,
                    if other.mode == MacvlanMode::Passthru { " in passthru mode" } else { "" }
                );
            }
        }
        // A VLAN parent another network of ours already created is shared.
        let shared_vlan = self
            .state
            .networks
            .values()
            .any(|n| n.parent == parent && n.parent_origin == ParentOrigin::CreatedVlan);
        let origin = if shared_vlan {
            ParentOrigin::CreatedVlan
        } else {
            origin
        };
        let must_create = !shared_vlan && origin != ParentOrigin::Existing;
        let root = vlan
            .as_ref()
            .map_or(parent.as_str(), |(base, _)| base.as_str());
        let max_endpoints = self.endpoint_capacity(root, spec.max_endpoints, None)?;

        let network = Network {
            id: id.clone(),
            name: spec.name.clone(),
            created: model::now_rfc3339(),
            parent: parent.clone(),
            parent_origin: origin,
            vlan,
            mode,
            internal,
            enable_ipv6: spec.ipv6,
            pools,
            options,
            policy,
            xdp_mode,
            max_endpoints,
            drop_broadcast,
            drop_multicast,
            labels: spec.labels.clone(),
            netns_inode: crate::netns::current_inode().ok(),
            parent_ifindex: None,
            owner: Owner::Mvnet,
        };
        Ok(NetworkPlan {
            network,
            create_parent: must_create,
        })
    }

    /// The kernel side of `network create`, after its intent: the parent
    /// (if ours to create), the classifier on the root (unless attached),
    /// the policy, then the state.
    fn apply_network(&mut self, plan: NetworkPlan) -> Result<&Network> {
        let NetworkPlan {
            network,
            create_parent: must_create,
        } = plan;
        let (id, parent) = (network.id.clone(), network.parent.clone());
        self.begin(Intent::CreateNetwork {
            network: network.clone(),
            create_parent: must_create,
        })?;
        let created = (|| -> Result<()> {
            if must_create {
                create_parent(&parent, network.parent_origin, network.vlan.as_ref())?;
            }
            let mut network = network;
            network.parent_ifindex = Some(link_index(&parent)?);
            self.attach_datapath(&network)?;
            self.state.networks.insert(id.clone(), network);
            self.apply_policy(&self.state.networks[&id].clone())?;
            self.commit()
        })();
        match created {
            Ok(()) => Ok(&self.state.networks[&id]),
            Err(e) => Err(self.fail(e)),
        }
    }

    /// `mvnet network update --policy`: changes the classifier's policy.
    pub fn update_network(
        &mut self,
        key: &str,
        policy: Option<Policy>,
        broadcast: Option<GroupRule>,
        multicast: Option<GroupRule>,
    ) -> Result<String> {
        let id = self.network(key)?.id.clone();
        let old = self.state.networks[&id].clone();
        if old.owner.is_foreign() {
            let how = match old.owner {
                Owner::Docker => "with `mvnet docker sync --policy ...` (or `docker watch`)",
                _ => "with \"policy\" in the network's CNI configuration",
            };
            bail!(
                "network {} belongs to {}, whose adoption sets its policy: change it {how}",
                old.name,
                old.owner.describe()
            );
        }
        let mut new = old.clone();
        if let Some(p) = policy {
            new.policy = p;
        }
        if let Some(b) = broadcast {
            new.drop_broadcast = b.drops();
        }
        if let Some(m) = multicast {
            new.drop_multicast = m.drops();
        }
        self.state.networks.insert(id.clone(), new.clone());
        if let Err(e) = self.apply_policy(&new).and_then(|()| self.save()) {
            self.state.networks.insert(id, old.clone());
            let _ = self.apply_policy(&old);
            return Err(e);
        }
        Ok(new.name)
    }

    /// `mvnet network rm`: refuses while containers are attached; deletes a
    /// parent we created once no network uses it.
    /// Whether any network on the root device of network `id` enforces:
    /// then its classifier drops, at the root's egress, frames from a
    /// source MAC that is no endpoint's (`config_flags::DROP_MALFORMED`).
    pub fn root_of_enforces(&self, id: &str) -> bool {
        let Some(net) = self.state.networks.get(id) else {
            return false;
        };
        let root = net.root().0;
        self.state
            .networks
            .values()
            .any(|n| n.root().0 == root && n.policy == Policy::Enforce)
    }

    pub fn remove_network(&mut self, key: &str) -> Result<String> {
        let net = self.network(key)?.clone();
        super::foreign::refuse_foreign_network(&net, "remove")?;
        let users: Vec<&str> = self
            .state
            .containers
            .on_network(&net.id)
            .map(|(_, name)| name)
            .collect();
        if !users.is_empty() {
            bail!(
                "error while removing network: network {} id {} has active endpoints ({}); stop or disconnect them first",
                net.name,
                net.id,
                users.join(", ")
            );
        }
        self.begin(Intent::RemoveNetwork {
            network_id: net.id.clone(),
        })?;
        self.remove_network_apply(&net.id).map_err(|e| self.fail(e))
    }

    /// The kernel side of `network rm`, after its intent: the parent we
    /// own, the classifier (with the last network on its root), then the
    /// state, in one save with the intent's end.
    pub(super) fn remove_network_apply(&mut self, id: &str) -> Result<String> {
        let net = self.state.networks[id].clone();
        let others_on_parent = self
            .state
            .networks
            .values()
            .any(|n| n.id != net.id && n.parent == net.parent);
        if net.parent_origin != ParentOrigin::Existing && !others_on_parent {
            delete_link_if_present(&net.parent)?;
        }
        self.state.networks.remove(&net.id);
        let (root, vid) = net.root();
        self.detach_datapath_if_unused(root)?;
        if self.state.networks.values().any(|n| n.root().0 == root) {
            // Others remain on the root: recompute this VLAN's policy.
            self.apply_root_policy(root, Some(vid))?;
        }
        self.commit()?;
        Ok(net.name)
    }
}

/// Creates a parent we own: the 802.1Q sub-interface or the dummy.
pub(super) fn create_parent(
    parent: &str,
    origin: ParentOrigin,
    vlan: Option<&(String, u16)>,
) -> Result<()> {
    let parent = parent.to_owned();
    let vlan = vlan.cloned();
    netlink::run(None, move |nl| async move {
        match (origin, vlan) {
            (ParentOrigin::CreatedVlan, Some((base, vid))) => {
                let base_link = nl.link(&base).await?.ok_or_else(|| NetlinkError::Request {
                    op: format!("create 802.1Q link {parent}"),
                    message: format!("-o parent interface was not found on the host: {base}; list interfaces with `ip link`"),
                    errno: None,
                })?;
                nl.add_vlan(&parent, base_link.index, vid).await.map_err(|e| match e.errno() {
                    Some(libc::EOPNOTSUPP) => NetlinkError::Request {
                        op: format!("create 802.1Q link {parent}"),
                        message: "this kernel has no 802.1Q VLAN support (CONFIG_VLAN_8021Q); load it with `modprobe 8021q`, or create the sub-interface yourself and pass it as -o parent".into(),
                        errno: e.errno(),
                    },
                    _ => e,
                })?;
            }
            _ => nl.add_dummy(&parent).await.map_err(|e| match e.errno() {
                Some(libc::EOPNOTSUPP) => NetlinkError::Request {
                    op: format!("create dummy link {parent}"),
                    message: "this kernel has no dummy link support (CONFIG_DUMMY) for a network without parent; load it with `modprobe dummy`, or give -o parent=IF".into(),
                    errno: e.errno(),
                },
                _ => e,
            })?,
        }
        let link = nl.require_link(&parent).await?;
        nl.set_up(link.index).await
    })
    .map_err(|e| anyhow!(e))
}

/// The ifindex of the link `name` (in mvnet's namespace).
pub(super) fn link_index(name: &str) -> Result<u32> {
    let name = name.to_owned();
    netlink::run(None, move |nl| async move { nl.require_link(&name).await })
        .map(|l| l.index)
        .map_err(|e| anyhow!(e))
}

/// Deletes the link `name` (a parent we own) unless it is gone already
/// (deleted by hand, lost on a reboot, or by an interrupted command).
pub(super) fn delete_link_if_present(name: &str) -> Result<()> {
    let name = name.to_owned();
    netlink::run(None, move |nl| async move {
        match nl.link(&name).await? {
            Some(link) => match nl.delete(link.index).await {
                Err(e) if e.errno() == Some(libc::ENODEV) => Ok(()),
                other => other,
            },
            None => Ok(()),
        }
    })
    .map_err(|e| anyhow!(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vlan_parents() {
        assert_eq!(vlan_parent("eth0.10").unwrap(), Some(("eth0".into(), 10)));
        assert_eq!(vlan_parent("eth0").unwrap(), None);
        assert_eq!(vlan_parent("br.lan").unwrap(), None);
        assert_eq!(
            vlan_parent("eth0.4095").unwrap_err().to_string(),
            "vlan id must be between 1-4094, received: 4095"
        );
        assert_eq!(
            vlan_parent("eth0.0").unwrap_err().to_string(),
            "vlan id must be between 1-4094, received: 0"
        );
    }
}
