//! Verdicts and counting, shared by the XDP and TC programs.
use aya_ebpf::{helpers::bpf_get_smp_processor_id, programs::TcContext, EbpfContext};
use macvlan_common::{
    config_flags, direct, endpoint_flags, is_tag_tpid, mac_bytes, mac_word, stripes, vlan_policy,
    xdp_mark, Endpoint, EndpointCounters, EndpointKey, Hook, Verdict, ETH_P_ARP, ETH_P_IPV4,
    ETH_P_IPV6, MAC_MASK, VLAN_ANY, VLAN_ROOT, VLAN_SLOTS,
};

use crate::{
    events,
    maps::{
        CONFIG, ENDPOINTS, ENDPOINT_CAPACITY, ENDPOINT_INDEX, ENDPOINT_MALFORMED,
        ENDPOINT_MISMATCH, ENDPOINT_SOURCE_WORDS, ENDPOINT_STATS, VERDICT_STATS, VLAN_POLICY,
        VLAN_STATS,
    },
    parse::{self, Ethernet},
};

/// A frame as the programs see it.
pub struct Frame {
    pub data: usize,
    pub data_end: usize,
    /// `TPID << 16 | TCI` of a tag already taken out of the bytes (TC
    /// only), 0 for none. See `parse::ethernet`.
    pub meta_vlan: u32,
    /// TC: the NAPI instance that received the frame, 0 for none (XDP: 0).
    /// Non-zero only for frames a device's NAPI poll received (the kernel
    /// reports ids above NR_CPUS only), never for the bridge-mode frames
    /// macvlan forwards through the backlog.
    pub napi_id: u32,
    /// TC: the skb's bytes, 0 for XDP, whose bytes are the frame's.
    /// `data_end - data` would be the linear head alone: some 66 bytes of
    /// a TCP skb whose payload is in page fragments. On egress, as the
    /// qdisc layer counts them (`wire_len`, set by `__dev_queue_xmit`
    /// before TC egress runs: every segment of a GSO skb with its
    /// headers); on ingress the skb's length, which holds the Ethernet
    /// header while the program runs (`wire_len` there is what an earlier
    /// hop left, not this frame's).
    pub skb_len: u32,
}

impl Frame {
    #[inline(always)]
    pub fn from_tc(ctx: &TcContext, egress: bool) -> Self {
        // SAFETY: the context pointer is valid for the program's duration.
        let skb = unsafe { &*ctx.skb.skb };
        let meta_vlan = if skb.vlan_present != 0 {
            // vlan_proto is in network order in __sk_buff.
            (u16::from_be(skb.vlan_proto as u16) as u32) << 16 | (skb.vlan_tci & 0xffff)
        } else {
            0
        };
        Frame {
            data: ctx.data(),
            data_end: ctx.data_end(),
            meta_vlan,
            napi_id: skb.napi_id,
            skb_len: if egress && skb.wire_len != 0 {
                skb.wire_len
            } else {
                skb.len
            },
        }
    }

    /// The frame's length on the wire: its bytes (TC: the skb's, see
    /// `skb_len`), plus the 4 of a tag already taken out of them (TC), so
    /// that every hook counts the same bytes for the same frame.
    #[inline(always)]
    pub(crate) fn len(&self) -> u64 {
        let tag = if self.meta_vlan != 0 { 4 } else { 0 };
        let bytes = if self.skb_len != 0 {
            self.skb_len as u64
        } else {
            (self.data_end - self.data) as u64
        };
        bytes + tag
    }
}

/// Whether XDP classified and counted this frame, which TC ingress then
/// passes untouched: XDP's mark is in the frame's metadata (see
/// `macvlan_common::xdp_mark`), and XDP saw the frame's tag if it has one.
/// A tag in skb metadata that XDP did not see was taken out by the NIC
/// before XDP: XDP classified that frame as untagged, TC classifies it on
/// its VLAN.
#[inline(always)]
pub fn counted_by_xdp(ctx: &TcContext) -> bool {
    // SAFETY: the context pointer is valid for the program's duration.
    let skb = unsafe { &*ctx.skb.skb };
    let (meta, data) = (skb.data_meta as usize, skb.data as usize);
    // The verifier accepts a metadata read checked against `data`.
    if meta + 4 > data {
        return false;
    }
    // SAFETY: bounds checked just above.
    let word = unsafe { *(meta as *const u32) };
    match xdp_mark::read(word) {
        Some(tagged) => tagged || skb.vlan_present == 0,
        None => false,
    }
}

pub enum Action {
    Pass,
    Drop,
    /// XDP only: leave the frame, unmarked and uncounted, to TC ingress
    /// (see [`vlans_at_tc`]).
    Defer,
}

/// Whether XDP leaves tagged frames and frames off its fast path to TC
/// ingress on this root (`config_flags::VLANS_AT_TC`).
#[inline(always)]
pub fn vlans_at_tc() -> bool {
    match CONFIG.get(0) {
        Some(cfg) => cfg.flags & config_flags::VLANS_AT_TC != 0,
        None => false,
    }
}

/// `vlan` argument of [`enforcing`] for a malformed frame, which has no
/// VLAN to take a policy from. (A plain integer, not an `Option`: see
/// `parse::ethernet` on why the verifier dislikes `Option` payloads.)
const NO_VLAN: u32 = u32::MAX;

/// Whether an invalid frame on VLAN `vlan` (or [`NO_VLAN`]) is dropped.
#[inline(always)]
pub(crate) fn enforcing(vlan: u32) -> bool {
    let flags = match CONFIG.get(0) {
        Some(cfg) => cfg.flags,
        None => 0,
    };
    if flags & config_flags::ENFORCE != 0 {
        return true;
    }
    if vlan == NO_VLAN {
        return flags & config_flags::DROP_MALFORMED != 0;
    }
    match VLAN_POLICY.get(vlan & (VLAN_SLOTS - 1)) {
        Some(p) => *p & vlan_policy::ENFORCE != 0,
        None => false,
    }
}

#[inline(always)]
pub(crate) fn count_verdict(hook: Hook, verdict: Verdict, bytes: u64) {
    if let Some(c) = VERDICT_STATS.get_ptr_mut(verdict.index(hook)) {
        // SAFETY: per-CPU slot, no other writer on this CPU.
        unsafe { (*c).add(bytes) };
    }
}

#[inline(always)]
pub(crate) fn count_vlan(hook: Hook, vlan: u16, bytes: u64) {
    // S-tag marked ids fold into their 12-bit id for the per-VLAN table.
    let index = (vlan as u32) & (VLAN_SLOTS - 1);
    if let Some(c) = VLAN_STATS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, no other writer on this CPU.
        let c = unsafe { &mut *c };
        match hook {
            Hook::XdpIngress => c.rx_xdp.add(bytes),
            Hook::TcIngress => c.rx_tc.add(bytes),
            Hook::TcEgress => c.tx_tc.add(bytes),
        }
    }
}

/// Whether `src` is an endpoint's MAC (on any VLAN). A clear bit in the
/// source filter proves it is not (`macvlan_common::direct::SOURCE_BASE`):
/// one array load instead of a hash lookup for nearly every wire frame,
/// however full the table. (An ENDPOINT_INDEX the loader did not size has
/// no filter: the array returns no pointer, and the hash decides.)
#[inline(always)]
fn is_local_source(src: u64) -> bool {
    let (at, bit) = direct::source_bit(src, ENDPOINT_SOURCE_WORDS.load());
    if let Some(word) = ENDPOINT_INDEX.get_ptr(at) {
        // SAFETY: as in direct_slot. Bits are only ever set, each with one
        // atomic operation.
        if unsafe { core::ptr::read_volatile(word) } >> bit & 1 == 0 {
            return false;
        }
    }
    ENDPOINTS
        .get_ptr(EndpointKey::from_word(src, VLAN_ANY))
        .is_some()
}

/// The slot of endpoint (`mac`, `vlan`) if the direct index has it: one
/// inlined array load and a compare, the common case.
#[inline(always)]
pub(crate) fn direct_slot(mac: u64, vlan: u16) -> Option<u32> {
    let word = ENDPOINT_INDEX.get_ptr(direct::index(mac, vlan))?;
    // SAFETY: array value pointer, valid for the program's duration. One
    // 64-bit load: the controller replaces the word with one atomic store,
    // so it is never seen half-written.
    let word = unsafe { core::ptr::read_volatile(word) };
    if word & direct::KEY_MASK == direct::key(mac, vlan) {
        Some(direct::slot(word))
    } else {
        None
    }
}

/// The slot of endpoint (`mac`, `vlan`): the direct index, else the hash.
#[inline(always)]
pub(crate) fn endpoint_slot(mac: u64, vlan: u16) -> Option<u32> {
    if let Some(slot) = direct_slot(mac, vlan) {
        return Some(slot);
    }
    let ep = ENDPOINTS.get_ptr(EndpointKey::from_word(mac, vlan))?;
    // SAFETY: hash value pointer valid until the program returns.
    Some(unsafe { (*ep).slot })
}

#[inline(always)]
/// The verdict for the destination of `eth` when the direct index did not
/// have it (see [`ingress`]), the endpoint slot of a delivered frame (for a
/// VLAN mismatch: of the endpoint that owns the MAC), and for a VLAN
/// mismatch that endpoint's VLAN (else [`NO_VLAN`]).
fn verdict_for_destination(eth: &Ethernet) -> (Verdict, Option<u32>, u32) {
    // The group bit: the low bit of the first byte, the word's lowest.
    if eth.dst & 1 != 0 {
        let broadcast = eth.dst == MAC_MASK;
        return (
            if broadcast {
                Verdict::Broadcast
            } else {
                Verdict::Multicast
            },
            None,
            NO_VLAN,
        );
    }
    // A key the direct index could not hold (its word went to another key
    // with the same index).
    if let Some(ep) = ENDPOINTS.get_ptr(EndpointKey::from_word(eth.dst, eth.vlan)) {
        // SAFETY: hash value pointer valid until the program returns; the
        // controller never rewrites a live entry in place.
        let slot = unsafe { (*ep).slot };
        return (Verdict::Delivered, Some(slot), NO_VLAN);
    }
    if let Some(ep) = ENDPOINTS.get_ptr(EndpointKey::from_word(eth.dst, VLAN_ANY)) {
        // SAFETY: as above.
        let (home, slot) = unsafe { ((*ep).vlan as u32, (*ep).slot) };
        return (Verdict::VlanMismatch, Some(slot), home);
    }
    // The root device's own MAC (on any VLAN: its VLAN sub-interfaces share
    // it): host traffic, valid, for no endpoint.
    if ENDPOINTS
        .get_ptr(EndpointKey::from_word(eth.dst, VLAN_ROOT))
        .is_some()
    {
        return (Verdict::Delivered, None, NO_VLAN);
    }
    (Verdict::UnknownMac, None, NO_VLAN)
}

#[inline(always)]
pub(crate) fn vlan_policy_flags(vlan: u32) -> u32 {
    if vlan == NO_VLAN {
        return 0;
    }
    match VLAN_POLICY.get(vlan & (VLAN_SLOTS - 1)) {
        Some(p) => *p,
        None => 0,
    }
}

#[inline(always)]
/// What to do with a frame of `verdict` on VLAN `vlan` ([`NO_VLAN`] for a
/// malformed one). `home` is, for a VLAN mismatch, the VLAN of the
/// endpoint that owns the MAC (else [`NO_VLAN`]): such a frame is dropped
/// when either VLAN enforces, since with no VLAN device for the frame's tag
/// macvlan would hand it to the endpoint by MAC. On egress, for a spoofed
/// frame with a local endpoint's MAC on another VLAN, it is that
/// endpoint's VLAN, whose policy applies as well.
fn action_for(verdict: Verdict, vlan: u32, home: u32) -> Action {
    match verdict {
        Verdict::UnknownMac | Verdict::Malformed | Verdict::Spoofed if enforcing(vlan) => {
            Action::Drop
        }
        // Egress: a local endpoint's MAC on a VLAN that is not its own, so
        // its home VLAN's policy applies too.
        Verdict::Spoofed if home != NO_VLAN && enforcing(home) => Action::Drop,
        Verdict::VlanMismatch if enforcing(vlan) || (home != NO_VLAN && enforcing(home)) => {
            Action::Drop
        }
        // Broadcast and multicast pass unless an enforcing network on the
        // VLAN asks for them to be dropped.
        Verdict::Broadcast | Verdict::Multicast => {
            let flags = vlan_policy_flags(vlan);
            let bit = if verdict == Verdict::Broadcast {
                vlan_policy::DROP_BROADCAST
            } else {
                vlan_policy::DROP_MULTICAST
            };
            if flags & vlan_policy::ENFORCE != 0 && flags & bit != 0 {
                Action::Drop
            } else {
                Action::Pass
            }
        }
        _ => Action::Pass,
    }
}

/// Classifies a frame arriving on the parent: at XDP, every frame; at TC
/// ingress, the frames XDP did not count (see [`counted_by_xdp`]).
#[inline(always)]
pub fn ingress<C: EbpfContext>(ctx: &C, frame: &Frame, hook: Hook) -> Action {
    let bytes = frame.len();
    let Some(eth) = parse::ethernet(frame.data, frame.data_end, frame.meta_vlan) else {
        count_verdict(hook, Verdict::Malformed, bytes);
        let action = action_for(Verdict::Malformed, NO_VLAN, NO_VLAN);
        if matches!(action, Action::Pass) {
            count_malformed_passed(frame, bytes);
        }
        return action;
    };
    // Fast path: unicast to an endpoint the direct index holds, nearly
    // every frame. Kept apart from the general path below so that LLVM
    // lays it out as one straight run with nothing spilled; interleaved
    // with the rest it cost 3-6 ns more per frame in BPF_PROG_TEST_RUN.
    if eth.dst & 1 == 0 {
        if let Some(slot) = direct_slot(eth.dst, eth.vlan) {
            count_vlan(hook, eth.vlan, bytes);
            count_verdict(hook, Verdict::Delivered, bytes);
            count_endpoint_rx(path_local(hook, frame, &eth), slot, bytes);
            // Delivered frames always pass (see action_for).
            return Action::Pass;
        }
    }
    // Off the fast path, on a root with 802.1Q networks: this untagged
    // frame may carry a tag in skb metadata that XDP cannot see (on the
    // fast path such a frame, to an untagged endpoint's MAC, is counted
    // here and again by TC, which finds the tag and classifies it on its
    // VLAN: a cross-VLAN frame, counted twice, dropped under enforce).
    if hook == Hook::XdpIngress && vlans_at_tc() {
        return Action::Defer;
    }
    count_vlan(hook, eth.vlan, bytes);
    let (verdict, slot, home) = verdict_for_destination(&eth);
    count_verdict(hook, verdict, bytes);
    // Events for frames from the wire (TC ingress sees them only when XDP
    // did not), not for bridge-mode frames from a local endpoint.
    let from_wire = !path_local(hook, frame, &eth);
    if from_wire {
        match verdict {
            Verdict::UnknownMac => {
                events::unknown_mac(ctx, mac_bytes(eth.dst), mac_bytes(eth.src), eth.vlan)
            }
            Verdict::VlanMismatch => {
                events::vlan_mismatch(ctx, mac_bytes(eth.dst), mac_bytes(eth.src), eth.vlan)
            }
            _ => {}
        }
    }

    let action = action_for(verdict, eth.vlan as u32, home);
    if let Some(slot) = slot {
        if verdict == Verdict::Delivered {
            count_endpoint_rx(!from_wire, slot, bytes);
        } else if from_wire && matches!(action, Action::Pass) {
            // A VLAN mismatch let through to the MAC's owner: wire frames,
            // as rx_wire.
            if let Some(c) = ENDPOINT_MISMATCH.get_ptr_mut(slot) {
                // SAFETY: per-CPU slot, no other writer on this CPU.
                unsafe { (*c).add(bytes) };
            }
        }
    }
    action
}

/// A malformed frame passed: counted for the endpoint that owns
/// its destination MAC, if any (ENDPOINT_MALFORMED). The kernel may untag
/// what the parser gave up on and deliver it to that endpoint by MAC.
#[inline(always)]
fn count_malformed_passed(frame: &Frame, bytes: u64) {
    let Some(dst) = parse::bytes_at::<6>(frame.data, frame.data_end, 0) else {
        return;
    };
    let dst = mac_word(&dst);
    if dst & 1 != 0 {
        return;
    }
    if let Some(ep) = ENDPOINTS.get_ptr(EndpointKey::from_word(dst, VLAN_ANY)) {
        // SAFETY: as in verdict_for_destination.
        let slot = unsafe { (*ep).slot };
        if let Some(c) = ENDPOINT_MALFORMED.get_ptr_mut(slot) {
            // SAFETY: per-CPU slot, no other writer on this CPU.
            unsafe { (*c).add(bytes) };
        }
    }
}

/// Whether a frame came from a local endpoint (bridge mode) rather than
/// the wire. XDP sees only wire frames. TC ingress sees the wire frames
/// XDP did not count and bridge-mode frames from a local endpoint, which
/// are the ones whose source is one of ours.
#[inline(always)]
fn path_local(hook: Hook, frame: &Frame, eth: &Ethernet) -> bool {
    // A frame a device's NAPI poll received came from the wire: skip the
    // source lookup (a hash miss for every wire frame otherwise).
    hook == Hook::TcIngress && frame.napi_id == 0 && is_local_source(eth.src)
}

/// The counters of endpoint `slot` in this CPU's stripe of ENDPOINT_STATS
/// (see `macvlan_common::stripes`).
///
/// A stripe is written by one CPU only, as a per-CPU map's copy is, so a
/// plain read-modify-write loses no count: BPF programs run with migration
/// disabled, so the CPU id stays valid until the program returns, and on
/// one CPU our programs never interleave (XDP runs in the driver's NAPI
/// poll, TC in softirq or process context with bottom halves off, and
/// neither can start on a CPU while the other runs there).
#[inline(always)]
pub(crate) fn endpoint_counters(slot: u32) -> Option<*mut EndpointCounters> {
    let capacity = ENDPOINT_CAPACITY.load();
    // A slot past the capacity would land in the next CPU's stripe: the
    // kernel's bounds check covers only the whole array.
    if slot >= capacity {
        return None;
    }
    // SAFETY: no arguments; below nr_cpu_ids, the stripe count.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    ENDPOINT_STATS.get_ptr_mut(stripes::index(cpu, capacity, slot))
}

/// The floor programs' whole work (`mvnet_xdp_floor`, `mvnet_tc_floor`):
/// an untagged destination MAC, one direct-index lookup, one counter.
#[inline(always)]
pub fn floor(data: usize, end: usize) {
    if let Some(p) = parse::ptr_at::<u64>(data, end, 0) {
        // SAFETY: bounds checked by ptr_at (see parse on alignment).
        let mac = unsafe { *p } & MAC_MASK;
        if let Some(slot) = direct_slot(mac, 0) {
            if let Some(c) = endpoint_counters(slot) {
                // SAFETY: this CPU's stripe, no other writer on it.
                unsafe { (*c).rx_wire.add((end - data) as u64) };
            }
        }
    }
}

/// Counts a frame delivered to endpoint `slot` on its path (`local`: see
/// [`path_local`]).
#[inline(always)]
pub(crate) fn count_endpoint_rx(local: bool, slot: u32, bytes: u64) {
    if let Some(c) = endpoint_counters(slot) {
        // SAFETY: this CPU's stripe, no other writer (see above).
        let c = unsafe { &mut *c };
        if local {
            c.rx_local.add(bytes);
        } else {
            c.rx_wire.add(bytes);
        }
    }
}

/// Whether the L3 source of a frame from endpoint `ep` is its own, by the
/// rules of the endpoint device's checks (`source`), which endpoints
/// without them are held to here: the IPv4 source its IPv4 address
/// (0.0.0.0 for DHCP only), the ARP sender its MAC and its IPv4 address
/// (0.0.0.0 in a probe for its own), an IPv6 source its IPv6 address, the
/// EUI-64 link-local of its MAC or :: (DAD, MLD), and its neighbour
/// discovery its own. Headers must be whole. Other protocols carry no
/// address we check. The MAC is the frame's source: the endpoint was
/// looked up by it.
#[inline(always)]
fn l3_source_is_own(frame: &Frame, eth: &Ethernet, ep: &Endpoint) -> Option<bool> {
    let (data, end, l3) = (frame.data, frame.data_end, eth.l3_offset);
    let mac = mac_bytes(eth.src);
    match eth.proto {
        ETH_P_IPV4 => crate::source::ipv4_source_is_own(data, end, l3, ep.ipv4),
        ETH_P_ARP => crate::source::arp_sender_is_own(data, end, l3, &mac, ep.ipv4),
        ETH_P_IPV6 => crate::source::ipv6_source_is_own(data, end, l3, &mac, &ep.ipv6),
        _ => Some(true),
    }
}

/// Whether some network on this root enforces (`DROP_MALFORMED` is set
/// then) or the operator's override is on.
#[inline(always)]
fn root_enforces() -> bool {
    let flags = match CONFIG.get(0) {
        Some(cfg) => cfg.flags,
        None => 0,
    };
    flags & (config_flags::ENFORCE | config_flags::DROP_MALFORMED) != 0
}

/// Classifies a frame an endpoint sends out through the parent. `stamped`:
/// the frame passed an endpoint device's source checks on its way
/// (`source::stamped`).
///
/// The rule for frames that skipped those checks (PACKET_QDISC_BYPASS on a
/// packet socket, AF_XDP: `dev_direct_xmit` runs no TC egress on the
/// endpoint's device, but `macvlan_queue_xmit` hands the skb to the
/// parent's `dev_queue_xmit`, whose TC egress runs): a frame with the MAC
/// of an endpoint whose device has checks must carry the stamp, else it is
/// spoofed, whatever its addresses say (they may be that endpoint's whole
/// identity, forged by another); a source MAC that is neither the root's
/// nor any endpoint's is dropped whatever its VLAN while any network on the
/// root enforces. Frames with the root's own MAC are the host's and pass:
/// the parent cannot tell its host stack from a forgery of its MAC, except
/// one stamped by an endpoint's device (`stamped`: the slot of the
/// endpoint whose device checked the frame), which a qdisc on that device
/// rewrote after its check; so is a frame stamped by another endpoint's
/// device than its source MAC's.
#[inline(always)]
pub fn egress<C: EbpfContext>(ctx: &C, frame: &Frame, stamped: Option<u32>) -> Action {
    let hook = Hook::TcEgress;
    let bytes = frame.len();
    let Some(eth) = parse::ethernet(frame.data, frame.data_end, frame.meta_vlan) else {
        count_verdict(hook, Verdict::Malformed, bytes);
        return action_for(Verdict::Malformed, NO_VLAN, NO_VLAN);
    };
    count_vlan(hook, eth.vlan, bytes);
    // The home VLAN of the endpoint whose MAC a spoofed frame carries.
    let mut home = NO_VLAN;
    // The source MAC is no endpoint's (on any VLAN) and not the root's.
    let mut foreign = false;
    let verdict = match ENDPOINTS.get_ptr(EndpointKey::from_word(eth.src, eth.vlan)) {
        // More tags than the parser takes, or a pre-standard TPID: where
        // it gives up, egress calls the frame malformed (no VLAN device
        // of ours sends that).
        _ if is_tag_tpid(eth.proto) => Verdict::Malformed,
        Some(ep) => {
            // SAFETY: as in verdict_for_destination.
            let ep = unsafe { &*ep };
            let checked = ep.flags & endpoint_flags::DEVICE_CHECKED != 0;
            let verdict = match l3_source_is_own(frame, &eth, ep) {
                // Unstamped, its device would have stamped it: it skipped
                // the checks. Stamped by another endpoint's device, that
                // device's qdisc rewrote it after the check.
                Some(true) if stamped.map_or(checked, |s| s != ep.slot) => Verdict::Spoofed,
                Some(true) => Verdict::Delivered,
                Some(false) => Verdict::Spoofed,
                // Too short for the L3 header it announces.
                None => Verdict::Malformed,
            };
            // The endpoint's tx is its own valid frames only: a spoofed
            // or malformed one is the verdict's (and its device's
            // tx_invalid), whether observe passes it or enforce drops it.
            // In this CPU's stripe, as for received frames: in another
            // CPU's, a plain add would race with that CPU's own.
            if verdict == Verdict::Delivered {
                if let Some(c) = endpoint_counters(ep.slot) {
                    // SAFETY: this CPU's stripe, no other writer on it.
                    unsafe { (*c).tx.add(bytes) };
                }
            }
            verdict
        }
        // The root device's own frames (its host stack, its VLAN devices),
        // unless an endpoint's device checked it: then a qdisc on that
        // device rewrote it into the root's after the check, whose VLAN
        // (a tag the rewrite pushed) says nothing of the sender's: dropped
        // as a foreign MAC is.
        None if ENDPOINTS
            .get_ptr(EndpointKey::from_word(eth.src, VLAN_ROOT))
            .is_some() =>
        {
            if stamped.is_some() {
                foreign = true;
                Verdict::Spoofed
            } else {
                Verdict::Delivered
            }
        }
        // A source MAC that is no endpoint's on this VLAN: forged. Frames
        // normally leave an endpoint through its own device's checks
        // (`source`); these are what skipped them (PACKET_QDISC_BYPASS),
        // or a host device that is no endpoint.
        None => {
            if let Some(ep) = ENDPOINTS.get_ptr(EndpointKey::from_word(eth.src, VLAN_ANY)) {
                // SAFETY: as in verdict_for_destination.
                home = unsafe { (*ep).vlan as u32 };
            } else {
                foreign = true;
            }
            Verdict::Spoofed
        }
    };
    count_verdict(hook, verdict, bytes);
    if verdict == Verdict::Spoofed {
        events::spoofed(ctx, mac_bytes(eth.src), eth.vlan);
    }
    let vlan = if verdict == Verdict::Malformed {
        NO_VLAN
    } else {
        eth.vlan as u32
    };
    if foreign && root_enforces() {
        return Action::Drop;
    }
    action_for(verdict, vlan, home)
}
