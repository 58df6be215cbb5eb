//! Adopting foreign endpoints in batches: what `docker sync`, `docker
//! watch` and CNI's ADD register through. Per batch the state is saved
//! once (each save rewrites and fsyncs the whole state, so one per
//! endpoint made a 1000-endpoint sync take most of a minute), each root's
//! classifier is opened once, MAC clashes are found through one index
//! instead of a scan of every endpoint per endpoint, and each container's
//! namespace is entered once for all its devices' source checks.
//!
//! Crash order as in [`super::foreign`]: the state is saved first and the
//! kernel follows. An endpoint the kernel then refuses is taken out of the
//! state again (one more save); a command killed in between leaves the
//! state ahead of the kernel, which `mvnet restore` converges.
use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
};

use anyhow::{anyhow, bail, Context as _, Result};

use super::{
    datapath::{entry, DeviceRegistration},
    foreign::{
        baseline_here, foreign_device_note, kernel_unicast_rx_all, kernel_unicast_rx_here,
        ForeignContainer, ForeignEndpoint,
    },
    Controller,
};
use crate::{
    datapath::Classifier,
    model::{self, Container, Endpoint, Mac, Network},
};

/// What adopting one endpoint did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Adopted {
    /// It was not in the state.
    Added,
    /// It was, with another MAC, device, address or namespace, or without
    /// its classifier entry.
    Updated,
    /// It was, as it is, and so was its classifier entry.
    Unchanged,
}

/// An endpoint changed in the state, for the kernel to follow.
struct Planned {
    /// Its place in the caller's list.
    at: usize,
    container_id: String,
    network: Network,
    /// The endpoint it replaces: its entry goes first.
    old: Option<Endpoint>,
    endpoint: Endpoint,
    adopted: Adopted,
    /// Its entry's slot, once the entry is in the table.
    slot: Option<u32>,
}

/// Threads a batch works on side by side (see [`in_lanes`]).
const REGISTER_THREADS: usize = 4;

/// Every endpoint in the state by its classifier key: (root, VLAN, MAC)
/// → (container id, network id).
/// A MAC on a root and VLAN: (root, VLAN, MAC).
type MacKey = (String, u16, Mac);
/// Which endpoint, (container id, network id), holds each [`MacKey`].
type MacIndex = HashMap<MacKey, (String, String)>;

/// The classifiers a batch uses, opened on first use; the error of one
/// that cannot be opened is kept for each endpoint on it.
#[derive(Default)]
struct Classifiers(BTreeMap<String, Result<Classifier, String>>);

impl Classifiers {
    fn get(&mut self, ctl: &Controller, net: &Network) -> Result<&mut Classifier> {
        let root = net.root().0;
        self.0
            .entry(root.to_owned())
            .or_insert_with(|| ctl.pinned_maps(net).map_err(|e| format!("{e:#}")))
            .as_mut()
            .map_err(|e| anyhow!("{e}"))
    }

    /// Whether the classifier of `net`'s root has an entry for `mac` on
    /// its VLAN. A classifier that cannot be opened or a lookup that fails
    /// is an error: taken for no entry, the endpoint's entry would be made
    /// again, its counts starting over, or its record dropped when that
    /// failed.
    fn has_entry(&mut self, ctl: &Controller, net: &Network, mac: Mac) -> Result<bool> {
        let vlan = net.root().1;
        let c = self.get(ctl, net)?;
        let Some(view) = c.endpoints_ro() else {
            return Ok(false);
        };
        Ok(view
            .lookup(mac.octets(), vlan)
            .with_context(|| format!("looking {mac} up in the classifier of {}", net.root().0))?
            .is_some())
    }
}

impl Controller {
    /// Adds (or replaces) endpoints of foreign containers, creating the
    /// containers' records: puts them in the classifiers' tables and
    /// registers their devices' source checks where the devices' ifindexes
    /// allow. Idempotent. One result per item, in order; one that fails
    /// leaves the others adopted.
    pub fn adopt_endpoints(
        &mut self,
        items: Vec<(ForeignContainer, ForeignEndpoint)>,
    ) -> Vec<Result<Adopted>> {
        self.adopt_batch(items, true)
    }

    /// [`Controller::adopt_endpoints`]; without `devices_exist` (the caller
    /// makes the devices afterwards and registers them as it does, as
    /// mvnet-cni standalone does) the containers' namespaces are not
    /// visited: there is no count to read (a new device starts at 0) and no
    /// device to register yet.
    fn adopt_batch(
        &mut self,
        items: Vec<(ForeignContainer, ForeignEndpoint)>,
        devices_exist: bool,
    ) -> Vec<Result<Adopted>> {
        let mut results: Vec<Option<Result<Adopted>>> = items.iter().map(|_| None).collect();
        let mut classifiers = Classifiers::default();
        let mut index = self.mac_index();
        // What a failed save puts back: the containers the plan changes (it
        // changes no other), as they were. Not a copy of every container:
        // that would cost each adoption (each CNI ADD) the whole state.
        let mut before: BTreeMap<String, Option<Container>> = BTreeMap::new();
        let mut planned = Vec::new();
        // The kernel's counts per namespace, read once, side by side, for
        // the containers that may change.
        let present = self.present(&items, &mut classifiers);
        let mut rx = if devices_exist {
            self.read_baselines(&items, &present)
        } else {
            items
                .iter()
                .map(|(c, _)| (c.netns.clone(), BTreeMap::new()))
                .collect()
        };
        self.release_moving_macs(&items, &mut index);
        let mut names = Vec::with_capacity(items.len());
        for (at, (c, ep)) in items.into_iter().enumerate() {
            names.push((c.name.clone(), ep.ifname.clone()));
            before
                .entry(c.id.clone())
                .or_insert_with(|| self.state.containers.get(&c.id).cloned());
            let present = match &present[at] {
                Ok(p) => *p,
                Err(e) => {
                    results[at] = Some(Err(anyhow!("{e}")));
                    continue;
                }
            };
            match self.plan_endpoint(at, &c, ep, present, &mut index, &mut rx) {
                Ok(Some(p)) => planned.push(p),
                Ok(None) => results[at] = Some(Ok(Adopted::Unchanged)),
                Err(e) => results[at] = Some(Err(e)),
            }
        }
        if planned.is_empty() {
            return results.into_iter().map(Option::unwrap).collect();
        }
        if let Err(e) = self.save() {
            for (id, old) in before {
                match old {
                    Some(c) => self.state.containers.insert(id, c),
                    None => self.state.containers.remove(&id),
                };
            }
            for p in &planned {
                results[p.at] = Some(Err(anyhow!("{e:#}")));
            }
            return results.into_iter().map(Option::unwrap).collect();
        }

        let (entered, mut failed) = self.add_entries(&mut classifiers, planned);
        let mut by_container: BTreeMap<String, Vec<Planned>> = BTreeMap::new();
        for p in entered {
            by_container
                .entry(p.container_id.clone())
                .or_default()
                .push(p);
        }
        let groups = by_container
            .into_iter()
            .map(|(cid, ps)| (self.state.containers[&cid].clone(), ps))
            .collect();
        let registered = if devices_exist {
            self.register_all(groups)
        } else {
            groups
                .into_iter()
                .flat_map(|(_, ps)| ps)
                .map(|p| (p, Ok(None)))
                .collect()
        };
        let mut rebased = false;
        for (p, outcome) in registered {
            match outcome {
                Ok(base) => {
                    if let Some(base) = base.filter(|b| *b != p.endpoint.rx_base) {
                        rebased |= self.set_rx_base(&p, base);
                    }
                    results[p.at] = Some(Ok(p.adopted));
                }
                Err(e) => failed.push((p, e)),
            }
        }
        if rebased && failed.is_empty() {
            // Frames arrived between the first read and the entry: the
            // state's base counts them, which `verify` would then miss.
            if let Err(e) = self.save() {
                eprintln!(
                    "mvnet: warning: {e:#}; `verify` may find the kernel ahead of the classifier by the frames that arrived while the endpoints were added"
                );
            }
        }
        if !failed.is_empty() {
            for (p, e) in failed {
                let root = p.network.root().0.to_owned();
                self.take_back(&mut classifiers, &p);
                let (name, ifname) = &names[p.at];
                let owner = p.network.owner.describe();
                results[p.at] = Some(Err(e.context(format!(
                    "adding {name}/{ifname} of {owner} container {name} to the classifier of {root}"
                ))));
            }
            if let Err(e) = self.save() {
                // The kernel has none of the failed ones; the state keeps
                // them until `restore` converges it.
                eprintln!("mvnet: warning: {e:#}; run `mvnet restore` to converge");
            }
        }
        results.into_iter().map(Option::unwrap).collect()
    }

    /// Adds (or replaces) one endpoint of a foreign container: a batch of
    /// one.
    pub fn adopt_endpoint(&mut self, c: &ForeignContainer, ep: ForeignEndpoint) -> Result<()> {
        self.adopt_endpoints(vec![(c.clone(), ep)])
            .pop()
            .expect("one result per item")
            .map(drop)
    }

    /// [`Controller::adopt_endpoint`] of an endpoint whose device does not
    /// exist yet: the caller makes it next and registers its source checks
    /// (see [`Controller::adopt_batch`]).
    pub fn adopt_endpoint_before_device(
        &mut self,
        c: &ForeignContainer,
        ep: ForeignEndpoint,
    ) -> Result<()> {
        self.adopt_batch(vec![(c.clone(), ep)], false)
            .pop()
            .expect("one result per item")
            .map(drop)
    }

    /// Per item, whether it is recorded in its namespace with its MAC and
    /// has its classifier entry: one lookup each, which both the baselines
    /// and the plan go by (an error: the lookup failed, and the item is
    /// not adopted now).
    fn present(
        &self,
        items: &[(ForeignContainer, ForeignEndpoint)],
        classifiers: &mut Classifiers,
    ) -> Vec<Result<bool, String>> {
        items
            .iter()
            .map(|(c, ep)| {
                let recorded = self.state.containers.get(&c.id).is_some_and(|o| {
                    o.netns == c.netns
                        && o.endpoints
                            .get(&ep.network_id)
                            .is_some_and(|e| e.mac == ep.mac)
                });
                let Some(n) = self.state.networks.get(&ep.network_id).filter(|_| recorded) else {
                    return Ok(false);
                };
                classifiers
                    .has_entry(self, n, ep.mac)
                    .map_err(|e| format!("{e:#}"))
            })
            .collect()
    }

    /// The kernel's unicast counts of the devices in the namespaces of
    /// the items that may change (not `present`), read on a few threads
    /// that enter one namespace after the other. A namespace that cannot
    /// be read is left out (its endpoints then read it themselves, or
    /// record 0).
    fn read_baselines(
        &self,
        items: &[(ForeignContainer, ForeignEndpoint)],
        present: &[Result<bool, String>],
    ) -> HashMap<PathBuf, BTreeMap<String, u64>> {
        let mut seen = std::collections::HashSet::new();
        let wanted: Vec<PathBuf> = items
            .iter()
            .zip(present)
            .filter(|(_, p)| matches!(p, Ok(false)))
            .map(|((c, _), _)| c.netns.clone())
            .filter(|n| seen.insert(n.clone()))
            .collect();
        in_lanes(wanted, |lane| {
            lane.into_iter()
                .filter_map(|p| {
                    enter(&p).ok()?;
                    Some((p, kernel_unicast_rx_here().ok()?))
                })
                .collect()
        })
        .into_iter()
        .collect()
    }

    /// Takes out of `index` the MACs that endpoints of this batch leave
    /// for another (a runtime that handed its containers' addresses out
    /// anew, so their MACs moved among them, as Docker does on a daemon
    /// restart): the endpoint that takes such a MAC is no conflict, in
    /// whatever order the two are planned, and two that swap MACs both go
    /// through. `add_entries` removes every planned endpoint's old entry
    /// before it adds any. A MAC stays held when the endpoint leaving it
    /// cannot take its new one (held by an endpoint outside the batch, or
    /// not unicast): that endpoint's plan fails and keeps its old entry, so
    /// nothing may take it.
    fn release_moving_macs(
        &self,
        items: &[(ForeignContainer, ForeignEndpoint)],
        index: &mut MacIndex,
    ) {
        // (old key, new key, endpoint) of each endpoint whose MAC changes.
        let mut moving: Vec<(MacKey, MacKey, (String, String))> = items
            .iter()
            .filter(|(_, ep)| !ep.mac.is_multicast() && ep.mac.octets() != [0; 6])
            .filter_map(|(c, ep)| {
                let old = self
                    .state
                    .containers
                    .get(&c.id)?
                    .endpoints
                    .get(&ep.network_id)?;
                let net = self.state.networks.get(&ep.network_id)?;
                let (root, vlan) = net.root();
                let me = (c.id.clone(), ep.network_id.clone());
                let old_key = (root.to_owned(), vlan, old.mac);
                (old.mac != ep.mac && index.get(&old_key) == Some(&me))
                    .then(|| (old_key, (root.to_owned(), vlan, ep.mac), me))
            })
            .collect();
        // Until no endpoint's new MAC is held by one that stays: each
        // round puts back the MACs of those that cannot move.
        loop {
            let released: HashMap<MacKey, (String, String)> = moving
                .iter()
                .map(|(old, _, me)| (old.clone(), me.clone()))
                .collect();
            let before = moving.len();
            moving.retain(|(_, new, me)| match index.get(new) {
                None => true,
                Some(holder) if holder == me => true,
                Some(holder) => released.get(new) == Some(holder),
            });
            if moving.len() == before {
                break;
            }
        }
        for (old, _, _) in &moving {
            index.remove(old);
        }
    }

    fn mac_index(&self) -> MacIndex {
        let mut index = MacIndex::new();
        for c in self.state.containers.values() {
            for e in c.endpoints.values() {
                if let Some(n) = self.state.networks.get(&e.network_id) {
                    let (root, vlan) = n.root();
                    index.insert(
                        (root.to_owned(), vlan, e.mac),
                        (c.id.clone(), e.network_id.clone()),
                    );
                }
            }
        }
        index
    }

    /// Checks one endpoint and changes the state for it; `None` when it is
    /// recorded as it is and has its entry (`present`: see
    /// [`Controller::present`]).
    fn plan_endpoint(
        &mut self,
        at: usize,
        c: &ForeignContainer,
        ep: ForeignEndpoint,
        present: bool,
        index: &mut MacIndex,
        rx: &mut HashMap<PathBuf, BTreeMap<String, u64>>,
    ) -> Result<Option<Planned>> {
        if !c.owner.is_foreign() {
            bail!("internal error: adopt_endpoint of a container owned by mvnet");
        }
        if c.id.is_empty() {
            bail!("{} container without an id", c.owner.describe());
        }
        let net = match self.state.networks.get(&ep.network_id) {
            Some(n) if n.owner.is_foreign() => n.clone(),
            Some(n) => bail!(
                "network {} is mvnet's own; attach containers to it with `mvnet run` or `mvnet network connect`",
                n.name
            ),
            None => bail!(
                "network {} of {} container {} is not adopted (internal error: adopt the network first)",
                ep.network_id,
                c.owner.describe(),
                c.name
            ),
        };
        if ep.mac.is_multicast() || ep.mac.octets() == [0; 6] {
            bail!(
                "{} container {}: {} has the MAC {}, which is not a unicast address",
                net.owner.describe(),
                c.name,
                ep.ifname,
                ep.mac
            );
        }
        if !net.owner.same_runtime(&c.owner) {
            bail!(
                "{} container {} cannot be on {}'s network {}",
                c.owner.describe(),
                c.name,
                net.owner.describe(),
                net.name
            );
        }
        let old_container = self.state.containers.get(&c.id).cloned();
        if let Some(old) = &old_container {
            // One runtime's container may be on several of its networks
            // (a pod on several CNI networks).
            if !old.owner.same_runtime(&c.owner) {
                bail!(
                    "container id {} is already {}'s container {}; not adopting it for {}",
                    c.id,
                    old.owner.describe(),
                    old.name,
                    c.owner.describe()
                );
            }
        }
        let old_ep = old_container
            .as_ref()
            .and_then(|o| o.endpoints.get(&ep.network_id).cloned());
        let unchanged = old_container.as_ref().is_some_and(|o| {
            o.name == c.name && o.netns == c.netns && o.pod == c.pod && o.owner == c.owner
        }) && old_ep.as_ref().is_some_and(|o| {
            o.ifname == ep.ifname && o.mac == ep.mac && o.ipv4 == ep.ipv4 && o.ipv6 == ep.ipv6
        });
        if unchanged && present {
            return Ok(None);
        }
        let (root, vlan) = net.root();
        let key = (root.to_owned(), vlan, ep.mac);
        let me = (c.id.clone(), ep.network_id.clone());
        if let Some(holder) = index.get(&key).filter(|h| **h != me) {
            // Another endpoint with this MAC on the root and VLAN would
            // share its classifier entry.
            let other = &self.state.containers[&holder.0];
            let e = &other.endpoints[&holder.1];
            let on = &self.state.networks[&holder.1];
            bail!(
                "{} container {}: MAC {} on {root} (VLAN {vlan}) is already endpoint {} of container {} ({}); the classifier tells endpoints apart by MAC and VLAN",
                net.owner.describe(),
                c.name,
                ep.mac,
                e.ifname,
                other.name,
                other.endpoint_owner(on).describe()
            );
        }
        let mut container = old_container.unwrap_or_else(|| Container {
            id: c.id.clone(),
            created: model::now_rfc3339(),
            netns_owned: false,
            running: true,
            ..Default::default()
        });
        container.name = c.name.clone();
        container.netns = c.netns.clone();
        container.netns_inode = crate::netns::inode(&c.netns);
        container.pod = c.pod.clone();
        container.owner = c.owner.clone();
        let endpoint = Endpoint {
            id: model::new_id(),
            network_id: ep.network_id.clone(),
            ifname: ep.ifname.as_str().into(),
            mac: ep.mac,
            ipv4: ep.ipv4,
            ipv6: ep.ipv6,
            // Read before the entry exists, for the state saved before the
            // kernel changes; read again once it does (`register_devices`),
            // as frames may arrive in between.
            rx_base: rx
                .entry(c.netns.clone())
                .or_insert_with(|| kernel_unicast_rx_all(&c.netns).unwrap_or_default())
                .get(&ep.ifname)
                .copied()
                .unwrap_or(0),
        };
        container
            .endpoints
            .insert(ep.network_id.clone(), endpoint.clone());
        self.state.containers.insert(c.id.clone(), container);
        if let Some(o) = &old_ep {
            if index.get(&(root.to_owned(), vlan, o.mac)) == Some(&me) {
                index.remove(&(root.to_owned(), vlan, o.mac));
            }
        }
        index.insert(key, me);
        Ok(Some(Planned {
            at,
            container_id: c.id.clone(),
            adopted: if old_ep.is_none() {
                Adopted::Added
            } else {
                Adopted::Updated
            },
            network: net,
            old: old_ep,
            endpoint,
            slot: None,
        }))
    }

    /// Puts the planned endpoints into their classifiers' tables, each
    /// replacing its old entry (if any); per root one read of the table
    /// for all its new entries. Returns the ones entered and the ones not.
    #[allow(clippy::type_complexity)]
    fn add_entries(
        &self,
        classifiers: &mut Classifiers,
        planned: Vec<Planned>,
    ) -> (Vec<Planned>, Vec<(Planned, anyhow::Error)>) {
        let mut failed = Vec::new();
        let mut by_root: BTreeMap<String, Vec<Planned>> = BTreeMap::new();
        for p in planned {
            let removed = (|| -> Result<()> {
                let Some(o) = &p.old else {
                    return Ok(());
                };
                // Replaced (another MAC, a re-created device): out with the
                // old first, as its MAC may be the new one's.
                let vlan = p.network.root().1;
                let cl = classifiers.get(self, &p.network)?;
                if let Some(e) = cl.endpoints()?.lookup(o.mac.octets(), vlan)? {
                    cl.remove_devices(e.slot)?;
                }
                let vlans = self.root_vlans(p.network.root().0);
                cl.endpoints()?.remove_among(o.mac.octets(), vlan, &vlans)?;
                Ok(())
            })();
            match removed {
                Ok(()) => by_root
                    .entry(p.network.root().0.to_owned())
                    .or_default()
                    .push(p),
                Err(e) => failed.push((p, e)),
            }
        }
        let mut entered = Vec::new();
        for ps in by_root.into_values() {
            let entries: Vec<_> = ps.iter().map(|p| entry(&p.network, &p.endpoint)).collect();
            let added = classifiers
                .get(self, &ps[0].network)
                .and_then(|cl| Ok(cl.add_endpoints(&entries)?));
            match added {
                Ok(results) => {
                    for (mut p, r) in ps.into_iter().zip(results) {
                        match r {
                            Ok(slot) => {
                                p.slot = Some(slot);
                                entered.push(p);
                            }
                            Err(e) => failed.push((p, e.into())),
                        }
                    }
                }
                Err(e) => {
                    let msg = format!("{e:#}");
                    failed.extend(ps.into_iter().map(|p| (p, anyhow!("{msg}"))));
                }
            }
        }
        (entered, failed)
    }

    /// [`Controller::register_devices`] of many containers, on a few
    /// threads: a container's registrations wait on the kernel (netlink
    /// round trips in its namespace, the qdisc's RCU swap), so containers
    /// go side by side. Each thread opens the classifiers for itself, then
    /// enters one container's namespace after the other (a thread per
    /// namespace costs a stack mapped and unmapped, and a wake-up that a
    /// loaded machine makes slow).
    #[allow(clippy::type_complexity)]
    fn register_all(
        &self,
        groups: Vec<(Container, Vec<Planned>)>,
    ) -> Vec<(Planned, Result<Option<u64>>)> {
        in_lanes(groups, |lane| {
            // Opened before the thread leaves mvnet's namespace: the pins
            // are found by its inode.
            let mut classifiers = Classifiers::default();
            for (_, ps) in &lane {
                for p in ps {
                    let _ = classifiers.get(self, &p.network);
                }
            }
            let mut out = Vec::new();
            for (c, ps) in lane {
                let outcomes = self.register_devices(&mut classifiers, &c, &ps);
                out.extend(ps.into_iter().zip(outcomes));
            }
            out
        })
    }

    /// Registers the devices of `ps`, endpoints of container `c`, with
    /// their classifiers and attaches their source checks, in one visit to
    /// the container's namespace. A device whose ifindex another
    /// endpoint's device holds (the runtime numbered it, not mvnet) is left
    /// without source checks, and a line on stderr says so. In the same
    /// visit, with the entries in the table, reads each device's count at
    /// the moment its entry began counting (see [`baseline_here`]), which
    /// each `Ok` carries where it could be read.
    fn register_devices(
        &self,
        classifiers: &mut Classifiers,
        c: &Container,
        ps: &[Planned],
    ) -> Vec<Result<Option<u64>>> {
        if !c.netns.exists() {
            // Gone meanwhile: the runtime's stop follows.
            return ps.iter().map(|_| Ok(None)).collect();
        }
        let mut work = Vec::new();
        for p in ps {
            // A classifier that cannot be read is this endpoint's error, not
            // a device left without its source checks.
            let registration = classifiers.get(self, &p.network).and_then(|cl| {
                DeviceRegistration::with_maps(&p.network, &p.endpoint, cl.dir(), cl)
            });
            work.push(registration.map(|r| r.map(|r| (r, p.network.root().0.to_owned()))));
        }
        let ifnames: Vec<String> = ps.iter().map(|p| p.endpoint.ifname.to_string()).collect();
        let entered = enter(&c.netns).map(|()| {
            let mut outcomes = Vec::new();
            for (job, ifname) in work.iter().zip(&ifnames) {
                let (registration, root) = match job {
                    Ok(Some(job)) => job,
                    Ok(None) => {
                        outcomes.push(Ok(None));
                        continue;
                    }
                    Err(e) => {
                        outcomes.push(Err(anyhow!("{e:#}")));
                        continue;
                    }
                };
                outcomes.push((|| -> Result<Option<u32>> {
                    let Some(index) = crate::sys::net::if_index(ifname) else {
                        return Ok(None);
                    };
                    let Some(Ok(cl)) = classifiers.0.get_mut(root) else {
                        bail!("internal error: the classifier of {root} is not open");
                    };
                    if let Some(held) = cl.device(registration.key(index)) {
                        // Another runtime numbered this device: the number
                        // may be another endpoint's device's in another
                        // namespace.
                        if !registration.is_mine(&held) {
                            return Ok(Some(index));
                        }
                        registration.reattach_with(cl, index, ifname)?;
                        return Ok(None);
                    }
                    if let Err(e) = registration.register_with(cl, index, ifname) {
                        // Another thread of this batch registered the same
                        // number for another endpoint's device meanwhile.
                        if cl
                            .device(registration.key(index))
                            .is_some_and(|h| !registration.is_mine(&h))
                        {
                            return Ok(Some(index));
                        }
                        return Err(e);
                    }
                    Ok(None)
                })());
            }
            let bases: Vec<Option<u64>> = ps
                .iter()
                .map(|p| {
                    let slot = p.slot?;
                    let Some(Ok(cl)) = classifiers.0.get(p.network.root().0) else {
                        return None;
                    };
                    baseline_here(&p.endpoint.ifname, || {
                        let c = cl.endpoint_counters(slot).ok()?;
                        Some(c.rx_wire.frames + c.rx_local.frames)
                    })
                })
                .collect();
            (outcomes, bases)
        });
        let (outcomes, bases) = match entered {
            Ok(o) => o,
            Err(e) => {
                let msg = format!("{e}");
                return ps.iter().map(|_| Err(anyhow!("{msg}"))).collect();
            }
        };
        ps.iter()
            .zip(outcomes)
            .zip(bases)
            .map(|((p, o), base)| {
                let taken = o.map_err(|e| {
                    e.context(format!(
                        "registering {} of {} with the classifier",
                        p.endpoint.ifname, c.name
                    ))
                })?;
                if let Some(index) = taken {
                    eprintln!("{}", foreign_device_note(c, &p.endpoint, index));
                }
                Ok(base)
            })
            .collect()
    }

    /// Sets the recorded base of planned endpoint `p` (still the same
    /// endpoint in the state); whether it did.
    fn set_rx_base(&mut self, p: &Planned, base: u64) -> bool {
        let Some(e) = self
            .state
            .containers
            .get_mut(&p.container_id)
            .and_then(|c| c.endpoints.get_mut(&p.endpoint.network_id))
            .filter(|e| e.id == p.endpoint.id)
        else {
            return false;
        };
        e.rx_base = base;
        true
    }

    /// Takes a planned endpoint the kernel refused out of the state and
    /// its entry out of the classifier.
    fn take_back(&mut self, classifiers: &mut Classifiers, p: &Planned) {
        if let Some(c) = self.state.containers.get_mut(&p.container_id) {
            c.endpoints.remove(&p.endpoint.network_id);
            if c.endpoints.is_empty() {
                self.state.containers.remove(&p.container_id);
            }
        }
        let vlan = p.network.root().1;
        if let Ok(cl) = classifiers.get(self, &p.network) {
            if let Some(e) = cl
                .endpoints_ro()
                .and_then(|t| t.get(p.endpoint.mac.octets(), vlan))
            {
                let _ = cl.remove_devices(e.slot);
            }
            if let Ok(mut t) = cl.endpoints() {
                let _ = t.remove(p.endpoint.mac.octets(), vlan);
            }
        }
    }
}

/// Deals `work` round-robin to up to [`REGISTER_THREADS`] threads, runs
/// `lane` on each share, and gathers what they return.
fn in_lanes<T: Send, R: Send>(work: Vec<T>, lane: impl Fn(Vec<T>) -> Vec<R> + Sync) -> Vec<R> {
    let lanes = work.len().clamp(1, REGISTER_THREADS);
    let mut shares: Vec<Vec<T>> = (0..lanes).map(|_| Vec::new()).collect();
    for (i, w) in work.into_iter().enumerate() {
        shares[i % lanes].push(w);
    }
    let lane = &lane;
    std::thread::scope(|scope| {
        let handles: Vec<_> = shares
            .into_iter()
            .map(|share| scope.spawn(move || lane(share)))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a batch thread panicked"))
            .collect()
    })
}

/// Moves the calling thread into the network namespace at `path`: for the
/// threads of a batch, which visit one namespace after the other and end
/// with the batch (never the process's main thread).
fn enter(path: &Path) -> Result<()> {
    use std::os::fd::AsFd as _;
    let file = std::fs::File::open(path)
        .with_context(|| format!("opening the network namespace {}", path.display()))?;
    crate::sys::netns::setns_net(file.as_fd())
        .with_context(|| format!("entering the network namespace {}", path.display()))
}
