//! Keeping the classifier in step with networks and endpoints: attached to
//! a root device with its first network, detached with its last; every
//! endpoint in the ENDPOINTS map before its link goes up, out of it after
//! its link is gone.
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context as _, Result};

use super::Controller;
use crate::{
    datapath::{
        devices::{self, CheckHook},
        pinned::{self, PinnedMaps},
        sys, Classifier, EndpointEntry,
    },
    model::{Endpoint, MacvlanMode, Network, Policy, XdpMode},
    netns::NetNs,
};
use macvlan_common::{config_flags, vlan_policy, Config, DeviceIdentity};

/// The pin directory of `root` in mvnet's own namespace.
pub fn pin_dir(root: &str) -> Result<PathBuf> {
    Ok(Classifier::dir_of(None, root)?)
}

/// What the kernel says about the classifier of a root device (in mvnet's
/// namespace): not what the state or the pin files claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attachment {
    /// Its pinned XDP link (and, with tcx, both TC links) are attached to
    /// the device of that name, and its maps are pinned.
    Attached,
    /// No pin directory.
    Absent,
    /// Pins without a working attachment: an interrupted attach or detach,
    /// or the device gone, renamed or replaced.
    Broken,
}

/// Asks the kernel whether the classifier is attached to `root`: the
/// ifindex each pinned bpf_link is attached to must be `root`'s (the XDP
/// link is absent when it runs on TC alone, see `datapath::hooks`).
pub fn attachment(root: &str) -> Result<Attachment> {
    use std::os::fd::AsFd as _;
    let dir = pin_dir(root)?;
    if !dir.exists() {
        return Ok(Attachment::Absent);
    }
    let name = root.to_owned();
    let ifindex =
        crate::netlink::run(None, move |nl| async move { nl.link(&name).await })?.map(|l| l.index);
    // The device a pinned link is on; `None` for a pin that is not there.
    // Any other error is no answer: taking it for a broken attachment
    // would have the caller remove the classifier and attach an empty one,
    // every other network's entries and counts lost to a transient error
    // (ENOMEM, EMFILE).
    let on = |pin: &str| -> Result<Option<u32>> {
        let path = dir.join(pin);
        let fd = match sys::obj_get(&path) {
            Ok(fd) => fd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => bail!(
                "reading the classifier's pin {}: {e}; retry, or check the limits on open files and locked memory",
                path.display()
            ),
        };
        let info = sys::link_info(fd.as_fd())
            .with_context(|| format!("reading the link pinned at {}; retry", path.display()))?;
        Ok(Some(info.ifindex))
    };
    let tcx = aya::util::KernelVersion::current()
        .is_ok_and(|v| v >= aya::util::KernelVersion::new(6, 6, 0));
    // On TC alone (tcx only) there is no XDP link; its TC links say it all.
    let tc_only = tcx && !dir.join(pinned::LINK_XDP).exists();
    let attached = ifindex.is_some()
        && (tc_only || on(pinned::LINK_XDP)? == ifindex)
        && (!tcx
            || (on(pinned::LINK_TC_INGRESS)? == ifindex && on(pinned::LINK_TC_EGRESS)? == ifindex))
        && dir.join(macvlan_common::map_names::ENDPOINTS).exists();
    Ok(if attached {
        Attachment::Attached
    } else {
        Attachment::Broken
    })
}

pub(super) fn entry(net: &Network, ep: &Endpoint) -> EndpointEntry {
    EndpointEntry {
        mac: ep.mac.octets(),
        vlan: net.root().1,
        ipv4: ep.ipv4,
        ipv6: ep.ipv6,
        enforce: net.policy == Policy::Enforce,
    }
}

/// What plumbing an endpoint needs for its device's source checks: the
/// classifier's pins, the endpoint's slot and what its device may send as.
/// The endpoint is in the classifier's table by then (`datapath_add`).
pub struct DeviceRegistration {
    dir: PathBuf,
    identity: DeviceIdentity,
    /// The candidate ifindexes no registered device has.
    free: Vec<u32>,
    /// tcx for mvnet's own endpoints, clsact for adopted ones (see
    /// `datapath::devices`).
    hook: CheckHook,
}

impl DeviceRegistration {
    /// `None` where there is nothing to register: no classifier entry for
    /// `ep`, a classifier pinned by an mvnet without source checks on
    /// devices, or passthru (the device shares its MAC with the parent,
    /// whose own frames carry it too).
    pub fn of(net: &Network, ep: &Endpoint) -> Result<Option<DeviceRegistration>> {
        if net.mode == MacvlanMode::Passthru {
            return Ok(None);
        }
        let dir = pin_dir(net.root().0)?;
        if !dir.join(macvlan_common::map_names::ENDPOINTS).exists() {
            // No classifier: nothing to register with.
            return Ok(None);
        }
        // A classifier that cannot be read now is an error, not a device
        // without source checks.
        let maps = PinnedMaps::open(&dir)?;
        let Some(mut r) = Self::with_maps(net, ep, &dir, &maps)? else {
            return Ok(None);
        };
        // Only a device keyed by its ifindex needs one of mvnet's choosing
        // (see `datapath::devices`). A device restored with an ifindex from
        // its old slot may hold one of this slot's candidates.
        if r.hook == CheckHook::Tcx {
            r.free = (0..devices::CANDIDATES)
                .map(|k| devices::candidate(r.identity.slot, k))
                .filter(|i| maps.device(*i).is_none())
                .collect();
        }
        Ok(Some(r))
    }

    /// [`DeviceRegistration::of`] with the classifier's maps (pinned in
    /// `dir`) open already, for a device that exists: without ifindex
    /// candidates.
    pub fn with_maps(
        net: &Network,
        ep: &Endpoint,
        dir: &std::path::Path,
        maps: &PinnedMaps,
    ) -> Result<Option<DeviceRegistration>> {
        if net.mode == MacvlanMode::Passthru {
            return Ok(None);
        }
        let vlan = net.root().1;
        if !maps.has_devices()? || !dir.join(pinned::PROG_TC_ENDPOINT).exists() {
            return Ok(None);
        }
        // No entry, no registration; an entry that cannot be read is an
        // error, not a device left without its source checks.
        let Some(view) = maps.endpoints_ro() else {
            return Ok(None);
        };
        let Some(entry) = view.lookup(ep.mac.octets(), vlan)? else {
            return Ok(None);
        };
        Ok(Some(DeviceRegistration {
            dir: dir.to_owned(),
            free: Vec::new(),
            hook: if net.owner.is_foreign() {
                CheckHook::Clsact
            } else {
                CheckHook::Tcx
            },
            identity: DeviceIdentity {
                mac: ep.mac.octets(),
                vlan,
                slot: entry.slot,
                ipv4: ep.ipv4.map(|a| a.octets()).unwrap_or_default(),
                ipv6: ep.ipv6.map(|a| a.octets()).unwrap_or_default(),
            },
        }))
    }

    /// The ifindexes to create the device with, in order (see
    /// `datapath::devices`), where [`DeviceRegistration::chooses_ifindex`].
    pub fn ifindex_candidates(&self) -> impl Iterator<Item = u32> + '_ {
        self.free.iter().copied()
    }

    /// Whether the device must have an ifindex of mvnet's choosing (its
    /// check is keyed by it), or may have any (keyed by its slot).
    pub fn chooses_ifindex(&self) -> bool {
        self.hook == CheckHook::Tcx
    }

    /// The ENDPOINT_DEVICES key of this endpoint's device `ifindex`.
    pub fn key(&self, ifindex: u32) -> u32 {
        devices::key(self.hook, ifindex, self.identity.slot)
    }

    /// The identity registered for device `ifindex`, if any.
    fn registered(&self, ifindex: u32) -> Result<Option<DeviceIdentity>> {
        Ok(PinnedMaps::open(&self.dir)?.device(self.key(ifindex)))
    }

    /// Whether `held` is this endpoint's identity.
    pub(super) fn is_mine(&self, held: &DeviceIdentity) -> bool {
        held.mac == self.identity.mac
            && held.vlan == self.identity.vlan
            && held.slot == self.identity.slot
    }

    /// Records the identity of device `ifindex` (`ifname`), attaches the
    /// source checks to it (in place of any attached before), then marks
    /// the endpoint's entry as checked on its device. Runs in the
    /// endpoint's namespace (for mvnet's own endpoints, before the device
    /// is up).
    pub fn register(&self, ifindex: u32, ifname: &str) -> Result<()> {
        self.register_with(&mut PinnedMaps::open(&self.dir)?, ifindex, ifname)
    }

    /// [`DeviceRegistration::register`] through the classifier's maps,
    /// open already.
    pub fn register_with(&self, maps: &mut PinnedMaps, ifindex: u32, ifname: &str) -> Result<()> {
        maps.register_device(self.key(ifindex), self.identity)?;
        self.reattach_with(maps, ifindex, ifname)
    }

    /// Attaches the source checks again (in place of any attached) to
    /// device `ifindex`, whose identity is registered already, then marks
    /// the entry as checked on its device.
    pub(super) fn reattach(&self, ifindex: u32, ifname: &str) -> Result<()> {
        self.reattach_with(&mut PinnedMaps::open(&self.dir)?, ifindex, ifname)
    }

    /// [`DeviceRegistration::reattach`] through the classifier's maps.
    /// The mark comes last: set before the check is attached, a kill in
    /// between would leave the device's every frame unstamped, and so
    /// spoofed (dropped under enforce) at the parent, with nothing to show
    /// why.
    pub(super) fn reattach_with(
        &self,
        maps: &mut PinnedMaps,
        ifindex: u32,
        ifname: &str,
    ) -> Result<()> {
        devices::attach(&self.dir, ifindex, ifname, self.hook, self.identity.slot)?;
        maps.mark_device_checked(&self.identity)?;
        Ok(())
    }
}

impl Controller {
    /// Attaches the classifier to `net`'s root device unless a network on
    /// it did already. Returns whether this call attached it.
    pub(super) fn attach_datapath(&self, net: &Network) -> Result<bool> {
        self.attach_root(net.root().0, net.xdp_mode, net.max_endpoints)
    }

    /// [`Controller::attach_datapath`] by root device, XDP mode and
    /// endpoint capacity.
    pub(super) fn attach_root(
        &self,
        root: &str,
        xdp_mode: XdpMode,
        max_endpoints: u32,
    ) -> Result<bool> {
        let dir = pin_dir(root)?;
        match attachment(root)? {
            Attachment::Attached => {
                self.claim_classifier(root)?;
                return Ok(false);
            }
            Attachment::Absent => {}
            // Left by an interrupted attach or detach: pins alone would
            // pass for an attached classifier.
            Attachment::Broken => Classifier::remove(None, root).map_err(|e| {
                anyhow!(
                    "removing the broken classifier pins of {root} ({}): {e}",
                    dir.display()
                )
            })?,
        }
        let mut classifier = Classifier::attach_sized(None, root, Some(xdp_mode), max_endpoints)
            .with_context(|| format!("attaching the classifier to {root}"))?;
        let result = (|| -> Result<()> {
            let name = root.to_owned();
            let link =
                crate::netlink::run(None, move |nl| async move { nl.require_link(&name).await })?;
            if let Some(mac) = link.mac {
                classifier.endpoints()?.insert_root(mac.octets())?;
            }
            self.claim_classifier(root)
        })();
        if let Err(e) = result {
            let _ = classifier.detach();
            return Err(e.context(format!("attaching the classifier to {root}")));
        }
        Ok(true)
    }

    /// The owner mark of this state directory ([`pinned::OWNER_PREFIX`]).
    pub(super) fn owner_mark(&self) -> Result<String> {
        Ok(pinned::owner_mark(self.state_files()?.path()))
    }

    /// Whether the classifier pinned for `root` is kept by another state
    /// directory than this one (pins made before the marks: no).
    pub(super) fn kept_elsewhere(&self, root: &str) -> Result<bool> {
        let Some(owner) = pinned::owner(&pin_dir(root)?) else {
            return Ok(false);
        };
        Ok(owner != self.owner_mark()?)
    }

    /// Marks the classifier of `root` as this state directory's, or refuses
    /// one that another state directory keeps: one root's pins are one
    /// table, which one state (under one lock) must account for.
    pub(super) fn claim_classifier(&self, root: &str) -> Result<()> {
        let dir = pin_dir(root)?;
        let mine = self.owner_mark()?;
        match pinned::owner(&dir) {
            Some(o) if o == mine => Ok(()),
            Some(o) => bail!(
                "the classifier on {root} is kept by another mvnet state directory than {}; \
                 every network on one root device must be kept in one: use the state directory \
                 of the other networks on {root} (for mvnet-cni, the same \"stateDir\" in every \
                 network config whose master is on {root}; the default is {}), or, if that \
                 directory was moved here, hand the classifier over with `rmdir {}`",
                self.state_files()?.path().display(),
                crate::store::DEFAULT_STATE_DIR,
                dir.join(o).display()
            ),
            None => Ok(pinned::set_owner(&dir, &mine)?),
        }
    }

    /// The endpoint capacity (`--max-endpoints`) of a network on `root`
    /// (other than network `except`): the attached classifier's, as its
    /// pinned maps say; without one attached, the one the other networks
    /// on the root recorded (what `restore` attaches); else `requested`, or
    /// the default. Every network on a root shares its classifier, so a
    /// `requested` capacity other than the root's is refused.
    pub(super) fn endpoint_capacity(
        &self,
        root: &str,
        requested: Option<u32>,
        except: Option<&str>,
    ) -> Result<u32> {
        if let Some(n) = requested {
            crate::datapath::check_capacity(n)?;
        }
        let others: Vec<&Network> = self
            .state
            .networks
            .values()
            .filter(|n| n.root().0 == root && Some(n.id.as_str()) != except)
            .collect();
        // Without a request, the root's recorded capacity answers without
        // touching the kernel (docker sync asks for every network).
        if let (None, Some(n)) = (requested, others.first()) {
            return Ok(n.max_endpoints);
        }
        let attached = match attachment(root)? {
            Attachment::Attached => Some(PinnedMaps::open(&pin_dir(root)?)?.capacity()?),
            _ => None,
        };
        let Some(have) = attached.or_else(|| others.first().map(|n| n.max_endpoints)) else {
            return Ok(requested.unwrap_or(macvlan_common::DEFAULT_ENDPOINTS));
        };
        match requested {
            Some(n) if n != have => {
                let names: Vec<&str> = others.iter().map(|n| n.name.as_str()).collect();
                let users = if names.is_empty() {
                    String::new()
                } else {
                    format!(" (shared by network {})", names.join(", "))
                };
                bail!(
                    "the classifier on {root} was attached with --max-endpoints {have}{users}, \
                     and every network on one root device shares it; omit --max-endpoints or \
                     give {have}, or remove the networks on {root} first to attach it with {n}"
                )
            }
            _ => Ok(have),
        }
    }

    /// Detaches the classifier from `root` if no network uses it any more.
    pub(super) fn detach_datapath_if_unused(&self, root: &str) -> Result<()> {
        // Another state directory's (a refused claim rolls back here).
        if self.state.networks.values().any(|n| n.root().0 == root) || self.kept_elsewhere(root)? {
            return Ok(());
        }
        Classifier::remove(None, root)
            .map_err(|e| anyhow!("detaching the classifier from {root}: {e}"))
    }

    pub(super) fn pinned_maps(&self, net: &Network) -> Result<Classifier> {
        let (root, _) = net.root();
        Classifier::open(None, root).map_err(|e| {
            let pins = pin_dir(root).map(|d| d.join(macvlan_common::map_names::ENDPOINTS));
            if pins.is_ok_and(|p| p.exists()) {
                // Pinned, but not readable now (ENOMEM, EMFILE, EPERM).
                return anyhow!("opening the classifier of {root}: {e:#}; retry");
            }
            anyhow!(
                "the classifier of {root} is not attached ({e}); run `mvnet restore` to re-attach it \
                 (under `ip netns exec`, which gives mvnet a private /sys without the pins in \
                 /sys/fs/bpf, use `nsenter --net=/run/netns/NAME mvnet ...` instead)"
            )
        })
    }

    /// Puts `ep` into the classifier's endpoint table (before its link is up).
    pub(super) fn datapath_add(&self, net: &Network, ep: &Endpoint) -> Result<()> {
        let mut maps = self.pinned_maps(net)?;
        maps.add_endpoint(entry(net, ep))?;
        drop(maps);
        self.reregister_device(net, ep)
    }

    /// Registers the device of `ep` with the classifier if the device
    /// exists already: `restore` re-attaching a classifier whose pins were
    /// lost while the containers lived. The old classifier's endpoint
    /// program stays attached to the device, checking against orphaned
    /// maps, so it is detached first. (On `run`/`connect` the device does
    /// not exist yet; `endpoint::plumb` registers it.) Also what `restore`
    /// finishes for an entry never marked as checked on its device.
    pub(super) fn reregister_device(&self, net: &Network, ep: &Endpoint) -> Result<()> {
        let Some(c) = self
            .state
            .containers
            .holder_of_endpoint(&ep.id)
            .and_then(|id| self.state.containers.get(id))
        else {
            return Ok(());
        };
        if !c.netns.exists() {
            return Ok(());
        }
        let Some(registration) = DeviceRegistration::of(net, ep)? else {
            return Ok(());
        };
        let ns = NetNs::from_path(&c.netns);
        let ifname = ep.ifname.clone();
        let foreign = c.owner.is_foreign();
        let taken = crate::netns::run_in(Some(&ns), move || -> Result<Option<u32>> {
            let Some(index) = crate::sys::net::if_index(&ifname) else {
                return Ok(None);
            };
            if let Some(held) = registration.registered(index)? {
                // Registered already (a writer killed before it attached
                // the check or marked the entry): finished.
                if registration.is_mine(&held) {
                    registration.reattach(index, &ifname)?;
                    return Ok(None);
                }
                // Another runtime numbered this device: the number may be
                // another endpoint's device's in another namespace.
                if foreign {
                    return Ok(Some(index));
                }
            }
            registration.register(index, &ifname)?;
            Ok(None)
        })?
        .with_context(|| {
            format!(
                "registering {} of {} with the classifier",
                ep.ifname, c.name
            )
        })?;
        if let Some(index) = taken {
            eprintln!("{}", super::foreign::foreign_device_note(c, ep, index));
        }
        Ok(())
    }

    /// Takes `ep` out of the classifier's endpoint table (after its link is
    /// gone). Missing pins (classifier gone) are not an error; pins that
    /// cannot be opened are: the entry would stay, and under enforce pass
    /// frames for a MAC no endpoint has any more.
    pub(super) fn datapath_remove(&self, net: &Network, ep: &Endpoint) -> Result<()> {
        if !pin_dir(net.root().0)?
            .join(macvlan_common::map_names::ENDPOINTS)
            .exists()
        {
            return Ok(());
        }
        let mut maps = self.pinned_maps(net)?;
        let vlan = net.root().1;
        // A failed lookup is an error: taken for no entry, the entry's
        // device entries would be left behind it.
        if let Some(entry) = maps.endpoints()?.lookup(ep.mac.octets(), vlan)? {
            maps.remove_devices(entry.slot)?;
        }
        let vlans = self.root_vlans(net.root().0);
        maps.endpoints()?
            .remove_among(ep.mac.octets(), vlan, &vlans)?;
        Ok(())
    }

    /// The VLANs of the networks on `root` (0 for its untagged ones), each
    /// once: where an endpoint there may share a MAC with another.
    pub(super) fn root_vlans(&self, root: &str) -> Vec<u16> {
        let mut vlans: Vec<u16> = self
            .state
            .networks
            .values()
            .filter(|n| n.root().0 == root)
            .map(|n| n.root().1)
            .collect();
        vlans.sort_unstable();
        vlans.dedup();
        vlans
    }

    /// Writes the classifier's policy for `net`'s VLAN (and the root-wide
    /// malformed-frame rule) from all networks on its root.
    pub(super) fn apply_policy(&self, net: &Network) -> Result<()> {
        let (root, vid) = net.root();
        self.apply_root_policy(root, Some(vid))
    }

    /// The policy the state gives the classifier of `root`: the bits of
    /// VLAN `vid` (or of every VLAN of the root with a network) and
    /// whether any network on the root enforces (`DROP_MALFORMED`). A VLAN
    /// enforces if any network on it enforces.
    pub(super) fn root_policy(&self, root: &str, vid: Option<u16>) -> (Vec<(u16, u32)>, bool) {
        let on_root: Vec<&Network> = self
            .state
            .networks
            .values()
            .filter(|n| n.root().0 == root)
            .collect();
        let mut vids: Vec<u16> = match vid {
            Some(v) => vec![v],
            None => on_root.iter().map(|n| n.root().1).collect(),
        };
        vids.sort_unstable();
        vids.dedup();
        let vlans = vids
            .into_iter()
            .map(|v| {
                let on_vlan: Vec<&Network> = on_root
                    .iter()
                    .copied()
                    .filter(|n| n.root().1 == v)
                    .collect();
                let mut flags = 0;
                for n in on_vlan.iter().filter(|n| n.policy == Policy::Enforce) {
                    flags |= vlan_policy::ENFORCE;
                    if n.drop_broadcast {
                        flags |= vlan_policy::DROP_BROADCAST;
                    }
                    if n.drop_multicast {
                        flags |= vlan_policy::DROP_MULTICAST;
                    }
                }
                // Bridge-mode frames between endpoints of an 802.1Q
                // network never pass the root: counted by the sender's
                // device check (see `vlan_policy::BRIDGE`). A VLAN whose
                // last network went has none.
                if v != 0
                    && !on_vlan.is_empty()
                    && on_vlan.iter().all(|n| n.mode == MacvlanMode::Bridge)
                {
                    flags |= vlan_policy::BRIDGE;
                }
                (v, flags)
            })
            .collect();
        let any = on_root.iter().any(|n| n.policy == Policy::Enforce);
        (vlans, any)
    }

    /// Whether a network on `root` is on an 802.1Q sub-interface of it
    /// (`config_flags::VLANS_AT_TC`).
    pub(super) fn root_has_vlans(&self, root: &str) -> bool {
        self.state
            .networks
            .values()
            .any(|n| n.root().0 == root && n.root().1 != 0)
    }

    /// Writes the policy of VLAN `vid` (or every VLAN of the root) of
    /// `root` as the state has it (`root_policy`). The operator's override
    /// (`config_flags::ENFORCE`, set with bpftool) is kept.
    pub(super) fn apply_root_policy(&self, root: &str, vid: Option<u16>) -> Result<()> {
        let Some(first) = self.state.networks.values().find(|n| n.root().0 == root) else {
            return Ok(());
        };
        let mut maps = self.pinned_maps(first)?;
        let (vlans, any) = self.root_policy(root, vid);
        for (v, flags) in vlans {
            maps.set_vlan_policy(v, flags)?;
        }
        let kept = maps.config()?.flags & config_flags::ENFORCE;
        let mut flags = kept;
        if any {
            flags |= config_flags::DROP_MALFORMED;
        }
        if self.root_has_vlans(root) {
            flags |= config_flags::VLANS_AT_TC;
        }
        maps.set_config(Config { flags, _pad: 0 })?;
        // Endpoint flags carry the policy for the egress source checks.
        for c in self.state.containers.values() {
            for ep in c.endpoints.values() {
                if let Some(n) = self.state.networks.get(&ep.network_id) {
                    if n.root().0 == root {
                        maps.endpoints()?.update_flags(
                            ep.mac.octets(),
                            n.root().1,
                            n.policy == Policy::Enforce,
                        )?;
                    }
                }
            }
        }
        Ok(())
    }
}
