//! `mvnet restore`: one idempotent step that makes the kernel match the
//! state, after a reboot, a crash or a change behind mvnet's back. It
//! observes the kernel (namespaces, links, the classifier's bpf_links and
//! map entries), never trusts the state file for what exists, and
//! * rolls back or finishes commands that were killed ([`super::intent`]);
//! * recreates the parents we own and the endpoints whose namespace lives;
//! * purges containers whose namespace is gone, clears stale /run/netns
//!   files and leftover links of ours (`mvt…`, `mvd…`) in containers;
//! * sets each container's default routes via its gateway endpoint, as
//!   `network connect` and `disconnect` do;
//! * releases or re-reserves addresses so IPAM matches the endpoints;
//! * re-attaches a classifier the kernel does not have, adds missing and
//!   removes stale endpoint entries, removes pins of roots no network uses.
//!
//! With `dry` (`restore --check`) it only says what it would do. A second
//! run has nothing to do. It touches only what mvnet made: the names it
//! recorded, its link name prefixes, its pin directories.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use anyhow::{anyhow, Result};
use macvlan_common::{config_flags, vlan_policy};

use super::{
    datapath::{attachment, pin_dir, Attachment},
    endpoint::{self, TOMBSTONE_PREFIX},
    network::create_parent,
    Controller,
};
use crate::{
    datapath::{
        pinned::{self, PinnedMaps},
        Classifier,
    },
    model::{Container, Mac, ParentOrigin},
    netlink,
    netns::{self, NetNs},
};

/// Prefix of an endpoint's link before its rename (see
/// [`endpoint::temp_name`]).
const TEMP_PREFIX: &str = "mvt";

/// What a restore did (or, dry, would do), one line each.
#[derive(Debug, Default)]
pub struct RestoreReport {
    pub actions: Vec<String>,
    pub problems: Vec<String>,
}

fn link_exists(ns: Option<&NetNs>, name: &str) -> Result<bool> {
    let name = name.to_owned();
    Ok(netlink::run(ns, move |nl| async move { nl.link(&name).await })?.is_some())
}

impl Controller {
    /// Converges the kernel and the state; with `dry`, changes nothing.
    pub fn restore(&mut self, dry: bool) -> Result<RestoreReport> {
        let mut r = RestoreReport::default();
        for rec in self.recover(dry) {
            match rec.result {
                Ok(()) => r.actions.push(rec.what),
                Err(e) => r.problems.push(format!("{}: {e:#}", rec.what)),
            }
        }
        self.restore_parents(dry, &mut r)?;
        self.restore_containers(dry, &mut r)?;
        self.restore_ipam(dry, &mut r);
        self.restore_classifiers(dry, &mut r)?;
        if !dry {
            self.save()?;
        }
        Ok(r)
    }

    fn restore_parents(&mut self, dry: bool, r: &mut RestoreReport) -> Result<()> {
        let links = netlink::run(None, |nl| async move { nl.links().await })?;
        for net in self.state.networks.values_mut() {
            let Some(l) = links.iter().find(|l| l.name == net.parent) else {
                continue;
            };
            match net.parent_ifindex {
                Some(i) if i == l.index => {}
                // Recorded from now on (states from before it was).
                None if !dry => net.parent_ifindex = Some(l.index),
                None => {}
                Some(i) => {
                    r.actions.push(format!(
                        "{} parent {} of network {} as the new device (ifindex {i} is now {})",
                        if dry { "would adopt" } else { "adopted" },
                        net.parent,
                        net.name,
                        l.index
                    ));
                    if !dry {
                        net.parent_ifindex = Some(l.index);
                    }
                }
            }
        }
        let mut created = BTreeSet::new();
        for net in self.state.networks.values() {
            if created.contains(&net.parent) || link_exists(None, &net.parent)? {
                continue;
            }
            if net.parent_origin == ParentOrigin::Existing {
                r.problems.push(format!(
                    "network {}: parent {} is missing and was not created by mvnet; bring it back, then run `mvnet restore` again",
                    net.name, net.parent
                ));
                continue;
            }
            if dry {
                r.actions
                    .push(format!("would recreate parent {}", net.parent));
                created.insert(net.parent.clone());
                continue;
            }
            match create_parent(&net.parent, net.parent_origin, net.vlan.as_ref()) {
                Ok(()) => {
                    // Its new ifindex is recorded by the next restore.
                    created.insert(net.parent.clone());
                    r.actions.push(format!("recreated parent {}", net.parent));
                }
                Err(e) => r.problems.push(format!("network {}: {e:#}", net.name)),
            }
        }
        Ok(())
    }

    fn restore_containers(&mut self, dry: bool, r: &mut RestoreReport) -> Result<()> {
        let would = if dry { "would " } else { "" };
        let containers: Vec<_> = self.state.containers.values().cloned().collect();
        for c in containers {
            if c.owner.is_foreign() {
                // Another runtime's: never created or deleted here, only
                // forgotten where the kernel no longer has it.
                self.restore_foreign(&c, dry, r);
                continue;
            }
            if c.netns_alive() {
                self.restore_endpoints(&c.id, dry, r)?;
                continue;
            }
            let ns = NetNs::from_path(&c.netns);
            let stale = c.netns_owned && c.netns.exists() && !netns::is_namespace(&c.netns);
            if let (true, Some(name)) = (stale, ns.name()) {
                // An interrupted create or delete: a file, no namespace.
                r.actions.push(format!(
                    "{} the stale namespace file {}",
                    if dry { "would remove" } else { "removed" },
                    c.netns.display()
                ));
                if !dry {
                    netns::delete(name)?;
                }
            }
            if !c.running && c.endpoints.is_empty() {
                // Stopped: nothing of it is in the kernel.
                continue;
            }
            r.actions.push(format!(
                "{would}purge{} container {} ({})",
                if dry { "" } else { "d" },
                c.name,
                if c.netns_replaced() {
                    "its namespace was replaced by another one, left alone"
                } else {
                    "its namespace is gone"
                }
            ));
            // Its addresses and classifier entries go in the IPAM and
            // classifier steps, which see it gone (also when dry: the
            // state is not saved then).
            self.state.containers.remove(&c.id);
        }
        Ok(())
    }

    /// Forgets the endpoints of a foreign container whose device or
    /// namespace is gone (its runtime removed it while nothing watched),
    /// and the container once none is left.
    fn restore_foreign(&mut self, c: &crate::model::Container, dry: bool, r: &mut RestoreReport) {
        let would = if dry { "would forget" } else { "forgot" };
        let links = if c.netns_alive() {
            let ns = NetNs::from_path(&c.netns);
            match netlink::run(Some(&ns), |nl| async move { nl.links().await }) {
                Ok(links) => Some(links),
                // Not read is not gone (out of file descriptors, a netlink
                // buffer full): forgetting a live container would take its
                // counters and its checks away.
                Err(e) => {
                    return r.problems.push(format!(
                        "{} container {}: reading its links failed ({e:#}); kept as it is, \
                         run `mvnet restore` again",
                        c.owner.describe(),
                        c.name
                    ));
                }
            }
        } else {
            None
        };
        let mut gone = Vec::new();
        for (nid, ep) in &c.endpoints {
            let why = match &links {
                None => "its namespace is gone",
                Some(ls)
                    if !ls
                        .iter()
                        .any(|l| l.name == ep.ifname && l.mac == Some(ep.mac)) =>
                {
                    "its device is gone"
                }
                Some(_) => continue,
            };
            let owner = self
                .state
                .networks
                .get(nid.as_str())
                .map_or_else(|| c.owner.clone(), |n| c.endpoint_owner(n));
            r.actions.push(format!(
                "{would} {} container {}'s endpoint {} ({why})",
                owner.describe(),
                c.name,
                ep.ifname
            ));
            gone.push(nid.clone());
        }
        // Its classifier entries go in the classifier step, which sees
        // them gone (also when dry: the state is not saved then).
        let Some(rec) = self.state.containers.get_mut(&c.id) else {
            return;
        };
        for nid in gone {
            rec.endpoints.remove(&nid);
        }
        if rec.endpoints.is_empty() {
            self.state.containers.remove(&c.id);
        }
    }

    /// Deletes leftover links of ours in a live container and recreates
    /// its missing endpoints.
    fn restore_endpoints(&mut self, cid: &str, dry: bool, r: &mut RestoreReport) -> Result<()> {
        let c = self.state.containers[cid].clone();
        let ns = NetNs::from_path(&c.netns);
        let links = netlink::run(Some(&ns), |nl| async move { nl.links().await })?;
        // Our mark on a link no endpoint of this container has: left by a
        // connect whose record is gone.
        let orphan = |l: &netlink::Link| {
            l.alias.as_deref().is_some_and(|a| {
                a.starts_with(endpoint::MARK_PREFIX)
                    && !c.endpoints.values().any(|e| endpoint::mark(e) == a)
            })
        };
        for l in &links {
            if orphan(l) || l.name.starts_with(TOMBSTONE_PREFIX) || l.name.starts_with(TEMP_PREFIX)
            {
                r.actions.push(format!(
                    "{} leftover link {} in container {}",
                    if dry { "would delete" } else { "deleted" },
                    l.name,
                    c.name
                ));
                if !dry {
                    let index = l.index;
                    // An earlier version's background reaper may delete
                    // a tombstone first.
                    netlink::run(Some(&ns), move |nl| async move {
                        match nl.delete(index).await {
                            Err(e) if e.errno() == Some(libc::ENODEV) => Ok(()),
                            other => other,
                        }
                    })?;
                }
            }
        }
        for ep in c.endpoints.values() {
            if links.iter().any(|l| l.name == ep.ifname) {
                continue;
            }
            let Some(net) = self.state.networks.get(&ep.network_id) else {
                continue;
            };
            // Renamed behind mvnet's back: the endpoint's MAC (on a
            // non-passthru network no other link has it) under another name.
            let renamed = links.iter().filter(|l| !orphan(l)).find(|l| {
                l.alias.as_deref() == Some(endpoint::mark(ep).as_str())
                    || (net.mode != crate::model::MacvlanMode::Passthru
                        && l.mac == Some(ep.mac)
                        && !c.endpoints.values().any(|e| e.ifname == l.name))
            });
            if let Some(l) = renamed {
                r.actions.push(format!(
                    "{} link {} of container {} back to {}",
                    if dry { "would rename" } else { "renamed" },
                    l.name,
                    c.name,
                    ep.ifname
                ));
                if !dry {
                    let (index, ifname) = (l.index, ep.ifname.clone());
                    netlink::run(Some(&ns), move |nl| async move {
                        nl.rename(index, &ifname).await
                    })?;
                }
                continue;
            }
            let what = format!("endpoint {}/{} on {}", c.name, ep.ifname, net.name);
            if dry {
                r.actions.push(format!("would recreate {what}"));
                continue;
            }
            match endpoint::plumb(net, ep, &ns) {
                Ok(()) => r.actions.push(format!("recreated {what}")),
                Err(e) => r.problems.push(format!("{what}: {e:#}")),
            }
        }
        if c.netns_owned {
            self.restore_default_routes(&c, dry, r);
        }
        Ok(())
    }

    /// Makes a container's default routes those of its gateway endpoint,
    /// as `network connect` and `disconnect` leave them: a command killed
    /// between its endpoint change and the route move, or a route changed
    /// behind mvnet's back. (Namespaces attached with --netns keep theirs.)
    fn restore_default_routes(&self, c: &Container, dry: bool, r: &mut RestoreReport) {
        let ns = NetNs::from_path(&c.netns);
        let gateway = endpoint::gateway_endpoint(
            c.endpoints
                .values()
                .filter_map(|ep| Some((self.state.networks.get(&ep.network_id)?, ep))),
        );
        let what = format!("the default routes of container {}", c.name);
        let drift = match endpoint::default_route_drift(&ns, gateway.clone()) {
            Ok(d) if d.is_empty() => return,
            Ok(d) => d.join(", "),
            Err(e) => return r.problems.push(format!("{what}: {e:#}")),
        };
        if dry {
            return r.actions.push(format!("would set {what}: {drift}"));
        }
        match endpoint::set_default_routes(&ns, gateway) {
            Ok(()) => r.actions.push(format!("set {what}: {drift}")),
            Err(e) => r.problems.push(format!("{what}: {e:#}")),
        }
    }

    /// Makes each pool's allocations the addresses of the endpoints on it.
    fn restore_ipam(&mut self, dry: bool, r: &mut RestoreReport) {
        let mut used: BTreeMap<String, BTreeSet<IpAddr>> = BTreeMap::new();
        for c in self.state.containers.values() {
            for ep in c.endpoints.values() {
                used.entry(ep.network_id.clone())
                    .or_default()
                    .extend(ep.addresses());
            }
        }
        for net in self.state.networks.values_mut() {
            let want = used.remove(&net.id).unwrap_or_default();
            for pool in net.pools.iter_mut() {
                let have: BTreeSet<IpAddr> = pool.allocated().collect();
                for a in have.difference(&want) {
                    r.actions.push(format!(
                        "{} address {a} on network {} (no endpoint has it)",
                        if dry { "would release" } else { "released" },
                        net.name
                    ));
                    if !dry {
                        pool.release(*a);
                    }
                }
                for a in want.difference(&have) {
                    if !pool.config.subnet.contains(*a) {
                        continue;
                    }
                    r.actions.push(format!(
                        "{} address {a} on network {} (an endpoint has it)",
                        if dry {
                            "would re-reserve"
                        } else {
                            "re-reserved"
                        },
                        net.name
                    ));
                    if !dry {
                        pool.mark_allocated(*a);
                    }
                }
            }
        }
    }

    /// Each root with networks has its classifier attached (as the kernel
    /// says) with exactly the endpoints of live containers; roots without
    /// networks have none.
    fn restore_classifiers(&mut self, dry: bool, r: &mut RestoreReport) -> Result<()> {
        let roots: BTreeSet<String> = self
            .state
            .networks
            .values()
            .map(|n| n.root().0.to_owned())
            .collect();
        for root in &roots {
            if !link_exists(None, root)? {
                r.problems.push(format!(
                    "classifier of {root}: the device is gone; bring it back, then run `mvnet restore` again"
                ));
                continue;
            }
            if self.kept_elsewhere(root)? {
                r.problems.push(format!(
                    "classifier of {root}: kept by another mvnet state directory, which has \
                     its endpoints; left alone (keep every network on {root} in one state \
                     directory)"
                ));
                continue;
            }
            let att = attachment(root)?;
            if att != Attachment::Attached {
                let why = if att == Attachment::Absent {
                    "not attached"
                } else {
                    "pins without an attached program"
                };
                if dry {
                    r.actions
                        .push(format!("would re-attach the classifier to {root} ({why})"));
                    continue;
                }
                let first = self
                    .state
                    .networks
                    .values()
                    .find(|n| n.root().0 == root)
                    .cloned()
                    .expect("a network on the root");
                if let Err(e) = self.attach_datapath(&first) {
                    r.problems.push(format!("classifier on {root}: {e:#}"));
                    continue;
                }
                r.actions
                    .push(format!("re-attached the classifier to {root} ({why})"));
            }
            self.restore_entries(root, dry, r)?;
            self.restore_policy(root, dry, r)?;
        }
        self.remove_unused_pins(&roots, dry, r)
    }

    /// Sets the policy of every VLAN in `root`'s classifier (and whether it
    /// drops malformed frames) as the state has it: a writer killed
    /// between saving a network's policy and writing it, or before clearing
    /// a removed network's VLAN, left the kernel enforcing what the state
    /// observes or the reverse. Then the endpoint flags (written anyway).
    fn restore_policy(&mut self, root: &str, dry: bool, r: &mut RestoreReport) -> Result<()> {
        let dir = pin_dir(root)?;
        let mut maps = PinnedMaps::open(&dir).map_err(|e| anyhow!("classifier of {root}: {e}"))?;
        let (vlans, any) = self.root_policy(root, None);
        let wanted: BTreeMap<u16, u32> = vlans.into_iter().collect();
        let verb = if dry { "would set" } else { "set" };
        for vlan in 0..4096u16 {
            let want = wanted.get(&vlan).copied().unwrap_or(0);
            let have = maps.vlan_policy(vlan)?;
            if have != want {
                r.actions.push(format!(
                    "{verb} the policy of VLAN {vlan} in {root}'s classifier to {} (it was {})",
                    policy_words(want),
                    policy_words(have)
                ));
                if !dry {
                    // Not in `wanted`: no network on it is left.
                    maps.set_vlan_policy(vlan, want)?;
                }
            }
        }
        let config = maps.config()?.flags;
        let (vlans_at_tc, want_at_tc) = (
            config & config_flags::VLANS_AT_TC != 0,
            self.root_has_vlans(root),
        );
        if vlans_at_tc != want_at_tc {
            r.actions.push(format!(
                "{verb} {root}'s classifier to classify tagged frames at {} (it did at {})",
                if want_at_tc { "TC" } else { "XDP" },
                if vlans_at_tc { "TC" } else { "XDP" }
            ));
        }
        let drops = config & config_flags::DROP_MALFORMED != 0;
        if drops != any {
            r.actions.push(format!(
                "{verb} {root}'s classifier to {} malformed frames and foreign source MACs \
                 (it {})",
                if any { "drop" } else { "pass" },
                if drops { "dropped them" } else { "passed them" }
            ));
        }
        if !dry {
            self.apply_root_policy(root, None)?;
        }
        Ok(())
    }

    /// Removes the entries of `root`'s classifier that no live endpoint
    /// has and those sharing a slot with another, then adds the endpoints
    /// missing (removals first: the stale entries may hold the slots the
    /// missing ones need).
    fn restore_entries(&mut self, root: &str, dry: bool, r: &mut RestoreReport) -> Result<()> {
        let dir = pin_dir(root)?;
        let maps = PinnedMaps::open(&dir).map_err(|e| anyhow!("classifier of {root}: {e}"))?;
        let actual: BTreeMap<(Mac, u16), u32> = maps
            .endpoints_ro()
            .ok_or_else(|| anyhow!("classifier of {root}: no endpoint table"))?
            .entries()
            .map_err(|e| anyhow!("classifier of {root}: {e}"))?
            .into_iter()
            .map(|(k, v)| ((Mac::new(k.mac), k.vlan), v.slot))
            .collect();
        drop(maps);
        let mut wanted = BTreeMap::new();
        for c in self.state.containers.values() {
            if !c.netns_alive() {
                continue;
            }
            for ep in c.endpoints.values() {
                if let Some(net) = self.state.networks.get(&ep.network_id) {
                    if net.root().0 == root {
                        wanted.insert(
                            (ep.mac, net.root().1),
                            (net.clone(), ep.clone(), c.name.clone()),
                        );
                    }
                }
            }
        }
        // Two entries on one slot (a writer killed between its change of
        // the table and of the count that says which slots are taken, or
        // another tool): their counters and device checks are one; each
        // goes, and those wanted come back on slots of their own.
        let mut by_slot: BTreeMap<u32, Vec<(Mac, u16)>> = BTreeMap::new();
        for (key, slot) in &actual {
            by_slot.entry(*slot).or_default().push(*key);
        }
        let shared: BTreeMap<(Mac, u16), u32> = by_slot
            .iter()
            .filter(|(_, keys)| keys.len() > 1)
            .flat_map(|(slot, keys)| keys.iter().map(move |k| (*k, *slot)))
            .collect();
        let mut gone = BTreeSet::new();
        for (key, slot) in &actual {
            let (mac, vlan) = key;
            let (what, why) = if !wanted.contains_key(key) {
                ("stale classifier entry", String::new())
            } else if shared.contains_key(key) {
                (
                    "classifier entry",
                    format!(", which shared slot {slot} with another"),
                )
            } else {
                continue;
            };
            r.actions.push(format!(
                "{} {what} {mac} (VLAN {vlan}) on {root}{why}",
                if dry { "would remove" } else { "removed" },
            ));
            gone.insert(*key);
            if !dry {
                let mut maps = PinnedMaps::open(&dir)?;
                // Its device entries go with it, as on `rm`.
                maps.remove_devices(*slot)?;
                // The MAC's other VLANs that stay, for its VLAN_ANY entry.
                let vlans: Vec<u16> = wanted
                    .keys()
                    .filter(|(m, v)| m == mac && !shared.contains_key(&(*m, *v)))
                    .map(|(_, v)| *v)
                    .collect();
                maps.endpoints()?
                    .remove_among(mac.octets(), *vlan, &vlans)?;
            }
        }
        // Device entries whose endpoint is gone (a writer killed between
        // its removal of an endpoint's entry and of its devices, or an
        // entry removed above whose device had another slot): before the
        // adds, which register the devices that live again.
        let orphans = PinnedMaps::open(&dir)?.prune_devices(!dry)?;
        if orphans > 0 {
            r.actions.push(format!(
                "{} {orphans} device entr{} of {root}'s classifier whose endpoint is gone",
                if dry { "would remove" } else { "removed" },
                if orphans == 1 { "y" } else { "ies" }
            ));
        }
        for (key, (net, ep, name)) in &wanted {
            if actual.contains_key(key) && !gone.contains(key) {
                continue;
            }
            r.actions.push(format!(
                "{} classifier entry {} of container {name} on {root}",
                if dry { "would add" } else { "added" },
                ep.mac
            ));
            if !dry {
                self.datapath_add(net, ep)?;
                // The device's history is not in the new entry's counters:
                // verify compares what comes from now on.
                self.rebase(&dir, key.1, ep);
            }
        }
        self.restore_device_checks(&dir, root, &wanted, dry, r)?;
        // The count beside the direct index (what `stats` reports as the
        // table's fill) is one off when a writer was killed between its
        // change of the hash and its count.
        let mut maps = PinnedMaps::open(&dir)?;
        let resynced = maps.endpoints()?.resync(!dry);
        if let Some((was, is)) = resynced.count {
            r.actions.push(format!(
                "{} the endpoint count of {root}'s classifier from {was} to {is}",
                if dry { "would correct" } else { "corrected" }
            ));
        }
        // The count of device entries under keys not of their slot's own
        // (see `direct::FILL`): too high after a writer was killed between
        // its count and its change of the table, too low after an mvnet
        // before the count registered such a device.
        if let Some((was, is)) = maps.resync_device_strays(!dry)? {
            r.actions.push(format!(
                "{} the count of device entries not under their endpoint's own keys in {root}'s \
                 classifier from {was} to {is}",
                if dry { "would correct" } else { "corrected" }
            ));
        }
        let clear = resynced.unmarked;
        if clear > 0 {
            r.actions.push(format!(
                "{} {clear} endpoint MAC{} in the source filter of {root}'s classifier (written \
                 by a writer that does not keep the filter)",
                if dry { "would mark" } else { "marked" },
                if clear == 1 { "" } else { "s" }
            ));
        }
        Ok(())
    }

    /// Attaches again the source checks of the endpoints whose entry is
    /// not marked as checked on their device while the device lives: a
    /// writer killed between registering a device and attaching its check
    /// (the mark comes last) left it unchecked, and the device's frames
    /// would go unjudged at the device.
    fn restore_device_checks(
        &self,
        dir: &std::path::Path,
        root: &str,
        wanted: &BTreeMap<(Mac, u16), (crate::model::Network, crate::model::Endpoint, String)>,
        dry: bool,
        r: &mut RestoreReport,
    ) -> Result<()> {
        let maps = PinnedMaps::open(dir)?;
        if !maps.has_devices()? || !dir.join(pinned::PROG_TC_ENDPOINT).exists() {
            return Ok(());
        }
        let Some(view) = maps.endpoints_ro() else {
            return Ok(());
        };
        // A lookup that fails is an error, not an endpoint left unchecked.
        let mut unchecked = Vec::new();
        for ((mac, vlan), v) in wanted {
            if v.0.mode == crate::model::MacvlanMode::Passthru {
                continue;
            }
            let entry = view
                .lookup(mac.octets(), *vlan)
                .map_err(|e| anyhow!("classifier of {root}: {e}"))?;
            if entry.is_some_and(|e| e.flags & macvlan_common::endpoint_flags::DEVICE_CHECKED == 0)
            {
                unchecked.push(v);
            }
        }
        drop(maps);
        for (net, ep, name) in unchecked {
            let Some(netns) = self
                .state
                .containers
                .holder_of_endpoint(&ep.id)
                .and_then(|id| self.state.containers.get(id))
                .map(|c| c.netns.clone())
            else {
                continue;
            };
            let ifname = ep.ifname.to_string();
            let lives = netns::run_in(Some(&NetNs::from_path(&netns)), move || {
                crate::sys::net::if_index(&ifname).is_some()
            })
            .unwrap_or(false);
            if !lives {
                continue;
            }
            r.actions.push(format!(
                "{} the source checks of {} on {} of container {name} ({root})",
                if dry { "would attach" } else { "attached" },
                ep.mac,
                ep.ifname
            ));
            if !dry {
                self.reregister_device(net, ep)?;
            }
        }
        Ok(())
    }

    /// Records as the base of `ep` (on VLAN `vlan` of the classifier
    /// pinned in `dir`, its entry just added) the kernel's count of its
    /// device when the entry began counting (see
    /// [`super::foreign::baseline_here`]).
    fn rebase(&mut self, dir: &std::path::Path, vlan: u16, ep: &crate::model::Endpoint) {
        let Some(c) = self
            .state
            .containers
            .values_mut()
            .find(|c| c.endpoints.values().any(|e| e.id == ep.id))
        else {
            return;
        };
        let maps = PinnedMaps::open(dir).ok();
        let slot = maps
            .as_ref()
            .and_then(|m| m.endpoints_ro()?.get(ep.mac.octets(), vlan))
            .map(|e| e.slot);
        let exact = maps.as_ref().zip(slot).and_then(|(maps, slot)| {
            let ifname = ep.ifname.clone();
            netns::run_in(Some(&NetNs::from_path(&c.netns)), move || {
                super::foreign::baseline_here(&ifname, || {
                    let n = maps.endpoint_counters(slot).ok()?;
                    Some(n.rx_wire.frames + n.rx_local.frames)
                })
            })
            .ok()
            .flatten()
        });
        let base = exact
            .or_else(|| super::foreign::kernel_unicast_rx(&c.netns, &ep.ifname))
            .unwrap_or(0);
        if let Some(e) = c.endpoints.values_mut().find(|e| e.id == ep.id) {
            e.rx_base = base;
        }
    }

    /// Pin directories of this namespace whose root no network uses (an
    /// interrupted `network create` or `network rm`).
    fn remove_unused_pins(
        &self,
        roots: &BTreeSet<String>,
        dry: bool,
        r: &mut RestoreReport,
    ) -> Result<()> {
        let prefix = format!("{}-", pinned::netns_inode(None)?);
        let Ok(entries) = std::fs::read_dir(pinned::PIN_ROOT) else {
            return Ok(());
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(root) = name.strip_prefix(&prefix) else {
                continue;
            };
            // Another state directory's networks use it.
            if roots.contains(root) || self.kept_elsewhere(root)? {
                continue;
            }
            r.actions.push(format!(
                "{} the classifier pins of {root}, which no network uses ({})",
                if dry { "would remove" } else { "removed" },
                e.path().display()
            ));
            if !dry {
                Classifier::remove(None, root)
                    .map_err(|e| anyhow!("removing the classifier of {root}: {e}"))?;
            }
        }
        Ok(())
    }
}

/// A VLAN's policy bits (`vlan_policy`) in words.
fn policy_words(flags: u32) -> String {
    let broadcast = flags & vlan_policy::DROP_BROADCAST != 0;
    let multicast = flags & vlan_policy::DROP_MULTICAST != 0;
    let policy = match (flags & vlan_policy::ENFORCE != 0, broadcast, multicast) {
        (false, _, _) => "observe",
        (true, false, false) => "enforce",
        (true, true, false) => "enforce, dropping broadcast",
        (true, false, true) => "enforce, dropping multicast",
        (true, true, true) => "enforce, dropping broadcast and multicast",
    };
    if flags & vlan_policy::BRIDGE != 0 {
        format!("{policy}, counting bridge-mode frames at the sender")
    } else {
        policy.to_owned()
    }
}
