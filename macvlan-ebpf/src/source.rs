//! Source checks on an endpoint's own device (`mvnet_tc_endpoint`, TC
//! egress on the macvlan inside the container's namespace).
//!
//! The parent's egress cannot tell which endpoint sent a frame: macvlan has
//! already switched the skb to the lower device, and bridge-mode frames to
//! another local endpoint never reach it. Here the device the frame leaves
//! by is `skb->ifindex` (or, for a check run from a cls_bpf filter, the
//! filter's classid), and that device's identity comes from
//! ENDPOINT_DEVICES, so another endpoint's MAC or address is a spoof like
//! any foreign one.
//!
//! Valid, from an endpoint device:
//! * no VLAN tag at all: the endpoint's VLAN, if any, is added below it by
//!   the 802.1Q parent, so any tag in its bytes (or skb metadata) is forged;
//! * source MAC = the endpoint's;
//! * IPv4: source = its address, or 0.0.0.0 for DHCP only (UDP 68 → 67);
//! * ARP: sender MAC = its MAC, sender IP = its address or 0.0.0.0 (an
//!   RFC 5227 probe, which claims no address);
//! * IPv6: source = its global address, the link-local address derived
//!   from its MAC (EUI-64), or :: (DAD, MLD) for ICMPv6 and hop-by-hop
//!   (MLD) only; in neighbour discovery, every source or target
//!   link-layer address option = its MAC and the target of a neighbour
//!   advertisement, or of a solicitation from :: (DAD), = its own address
//!   ([`nd_is_own`]);
//! * any other Ethertype carries no address we check and passes.
//!
//! A header cut short is malformed: the IPv4 header with its options, the
//! UDP header of a DHCP frame, the 28-byte Ethernet/IPv4 ARP body (other
//! address sizes too), the IPv6 header, a neighbour discovery message's
//! fixed part and options; so is a wrong IP version. The
//! test crate's `source_model` states the same rules independently.
//! Invalid frames are counted per
//! endpoint (ENDPOINT_TX_INVALID) and dropped when the endpoint's VLAN
//! enforces; a dropped frame is also counted as a TC egress verdict, since
//! the parent's egress will never see it.
//!
//! A valid frame leaves stamped with its endpoint's slot in its skb's cb
//! (`macvlan_common::device_stamp`), which the parent's egress
//! (`classify::egress`) requires of every frame from an endpoint with
//! checks: a frame sent with PACKET_QDISC_BYPASS skips this program
//! (`dev_direct_xmit` runs no TC egress) but not the parent's, and arrives
//! there unstamped; one that a qdisc on the device rewrote after this
//! program (into another endpoint's or the root's) arrives stamped with
//! another slot than its source MAC's.
use aya_ebpf::programs::TcContext;
use macvlan_common::{
    device_key_of_classid, device_stamp, is_tag_tpid, mac_word, vlan_policy, DeviceIdentity, Hook,
    Verdict, ETH_P_ARP, ETH_P_IPV4, ETH_P_IPV6,
};

use crate::{
    classify::{
        count_endpoint_rx, count_verdict, count_vlan, endpoint_slot, enforcing, vlan_policy_flags,
        Action, Frame,
    },
    maps::{ENDPOINT_DEVICES, ENDPOINT_TX_INVALID, ENDPOINT_TX_INVALID_SEEN},
    parse,
};

const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ICMPV6: u8 = 58;

/// Checks a frame leaving an endpoint's device: what to do with it, and
/// the value to [`stamp`] it with.
#[inline(always)]
pub fn endpoint_egress(ctx: &TcContext, frame: &Frame) -> (Action, u32) {
    // SAFETY: the context pointer is valid for the program's duration.
    let (ifindex, classid) = unsafe { ((*ctx.skb.skb).ifindex, (*ctx.skb.skb).tc_classid) };
    // A device checked through tcx is keyed by its ifindex, one checked
    // from a cls_bpf filter by the filter's classid, which cls_bpf wrote to
    // `tc_classid` just before this run (see `DEVICE_KEY_CLASSID`). The
    // ifindex comes first: tcx sets no classid, so there `tc_classid` is
    // whatever the stack left in the skb's cb (IP options among it), which
    // must never pick a tcx device's identity. The kernel keeps it in 16
    // bits (`qdisc_skb_cb`), the minor of the filter's classid.
    // A device without an entry is not (or no longer) an endpoint: the
    // controller inserts the entry before it attaches this program and
    // removes it only after the device is gone.
    let id = match ENDPOINT_DEVICES.get_ptr(ifindex) {
        Some(id) => id,
        None => match ENDPOINT_DEVICES.get_ptr(device_key_of_classid(classid as u16)) {
            Some(id) => id,
            None => return (Action::Pass, 0),
        },
    };
    // SAFETY: hash value pointer valid until the program returns.
    let id = unsafe { &*id };
    let verdict = source_verdict(frame, id);
    if verdict == Verdict::Delivered {
        count_bridged(ctx, frame, id);
        return (Action::Pass, device_stamp(id.slot));
    }
    // On the wire, with a tag the VLAN device left in skb metadata (such
    // a frame is always invalid here: see `source_verdict`).
    let bytes = frame.len();
    if let Some(c) = ENDPOINT_TX_INVALID.get_ptr_mut(id.slot) {
        // SAFETY: per-CPU slot, no other writer on this CPU.
        unsafe { (*c).add(bytes) };
    }
    flag_tx_invalid(id.slot);
    // An invalid frame passed under observe goes on without the stamp
    // (whatever the IP layer left in the cb), so the parent's egress sees
    // it as unchecked too.
    if enforcing(id.vlan as u32) {
        count_verdict(Hook::TcEgress, verdict, bytes);
        (Action::Drop, 0)
    } else {
        // Passed, so a bridge-mode neighbour gets it as it gets valid ones.
        count_bridged(ctx, frame, id);
        (Action::Pass, 0)
    }
}

/// Counts a unicast frame that passed (valid, or invalid under observe)
/// from an endpoint of an 802.1Q network to another endpoint of its VLAN
/// for the receiver, at the length the receiver counts (`skb->len`, not
/// the wire's `wire_len`), where its VLAN's
/// networks are in bridge mode (`vlan_policy::BRIDGE`): macvlan hands such
/// a frame over through the VLAN device (`dev_forward_skb` to `eth0.10`),
/// and no hook on the root sees it, as it sees the bridge-mode frames of
/// untagged networks (counted `rx_local` at TC ingress, as this one is).
#[inline(always)]
fn count_bridged(ctx: &TcContext, frame: &Frame, id: &DeviceIdentity) {
    if id.vlan == 0 || vlan_policy_flags(id.vlan as u32) & vlan_policy::BRIDGE == 0 {
        return;
    }
    let Some(dst) = parse::bytes_at::<6>(frame.data, frame.data_end, 0) else {
        return;
    };
    let dst = mac_word(&dst);
    // Group frames go to every neighbour by copies macvlan makes itself
    // (not compared by `verify`), and to the wire.
    if dst & 1 != 0 {
        return;
    }
    let Some(slot) = endpoint_slot(dst, id.vlan) else {
        return;
    };
    // SAFETY: the context pointer is valid for the program's duration.
    let bytes = u64::from(unsafe { (*ctx.skb.skb).len });
    count_vlan(Hook::TcIngress, id.vlan, bytes);
    count_verdict(Hook::TcIngress, Verdict::Delivered, bytes);
    count_endpoint_rx(true, slot, bytes);
}

/// Sets `slot`'s byte in ENDPOINT_TX_INVALID_SEEN, unless it is set
/// already (a load, not a store, on every later invalid frame: the line
/// stays shared between the CPUs that read it).
#[inline(always)]
fn flag_tx_invalid(slot: u32) {
    let (word, byte) = macvlan_common::tx_seen::at(slot);
    if let Some(w) = ENDPOINT_TX_INVALID_SEEN.get_ptr_mut(word) {
        // SAFETY: the element pointer is valid until the program returns,
        // and `byte` < 8, the element's length. A plain byte store: the
        // controller clears with an atomic AND on the whole element, which
        // cannot undo another byte's store (`tx_seen`).
        unsafe {
            let flag = (w as *mut u8).add(byte as usize);
            if core::ptr::read_volatile(flag) == 0 {
                core::ptr::write_volatile(flag, 1);
            }
        }
    }
}

/// Writes `value` to `__sk_buff.cb[0]`: the endpoint's stamp
/// (`macvlan_common::device_stamp`) on a frame that passed the checks, for
/// the parent's egress.
/// Called once per program run: the verifier takes a context store only
/// at a constant offset from the context pointer itself, and two stores
/// on different branches let LLVM share one `ctx + 48` register between
/// them ("dereference of modified ctx ptr").
#[inline(always)]
pub fn stamp(ctx: &TcContext, value: u32) {
    // SAFETY: the context pointer is valid for the program's duration, and
    // TC programs may write cb[0..5].
    unsafe { core::ptr::write_volatile(&raw mut (*ctx.skb.skb).cb[0], value) };
}

/// The slot of the endpoint whose device's checks the frame on the
/// parent's egress passed on its way, if it did (see [`stamp`]).
#[inline(always)]
pub fn stamped(ctx: &TcContext) -> Option<u32> {
    // SAFETY: as in `stamp`.
    macvlan_common::stamped_slot(unsafe { (*ctx.skb.skb).cb[0] })
}

/// `Delivered` for a valid frame, else `Spoofed` or `Malformed`.
#[inline(always)]
fn source_verdict(frame: &Frame, id: &DeviceIdentity) -> Verdict {
    if frame.meta_vlan != 0 {
        return Verdict::Spoofed;
    }
    let (data, end) = (frame.data, frame.data_end);
    let Some(eth) = parse::bytes_at::<14>(data, end, 0) else {
        return Verdict::Malformed;
    };
    let src = [eth[6], eth[7], eth[8], eth[9], eth[10], eth[11]];
    if mac_word(&src) != mac_word(&id.mac) {
        return Verdict::Spoofed;
    }
    let proto = u16::from_be_bytes([eth[12], eth[13]]);
    if is_tag_tpid(proto) {
        return Verdict::Spoofed;
    }
    let l3 = parse::ETH_HLEN;
    let own = match proto {
        ETH_P_IPV4 => ipv4_source_is_own(data, end, l3, id.ipv4),
        ETH_P_ARP => arp_sender_is_own(data, end, l3, &id.mac, id.ipv4),
        ETH_P_IPV6 => ipv6_source_is_own(data, end, l3, &id.mac, &id.ipv6),
        _ => Some(true),
    };
    match own {
        Some(true) => Verdict::Delivered,
        Some(false) => Verdict::Spoofed,
        None => Verdict::Malformed,
    }
}

/// Whether the IPv4 source at `l3` is `own` (0.0.0.0 = none), or 0.0.0.0
/// from a DHCP client. `None` for a header cut short. Also used by the
/// parent's egress (`classify::egress`).
#[inline(always)]
pub fn ipv4_source_is_own(data: usize, end: usize, l3: usize, own: [u8; 4]) -> Option<bool> {
    let h = parse::bytes_at::<20>(data, end, l3)?;
    let ihl = (h[0] & 0x0f) as usize;
    if h[0] >> 4 != 4 || ihl < 5 {
        return None;
    }
    // The whole header, options included, must be there. `ihl` is 4 bits,
    // so the offset is bounded for the verifier.
    parse::bytes_at::<1>(data, end, l3 + ihl * 4 - 1)?;
    let src = [h[12], h[13], h[14], h[15]];
    if own != [0; 4] && src == own {
        return Some(true);
    }
    if src != [0; 4] || h[9] != IPPROTO_UDP {
        return Some(false);
    }
    // 0.0.0.0: a DHCP client (UDP 68 → 67) only; the UDP header must be
    // whole.
    let udp = parse::bytes_at::<8>(data, end, l3 + ihl * 4)?;
    Some(udp[..4] == [0, 68, 0, 67])
}

/// Whether an ARP body at `l3` is from the endpoint with `mac` and `ipv4`
/// (0.0.0.0 = none): sender MAC its MAC, sender IP its address, or 0.0.0.0
/// in a probe (RFC 5227) for its own address (any, while it has none: a
/// DHCP client probes the address it was offered). A probe for another's
/// address makes a host that is configuring it give it up, as a duplicate
/// address probe does in IPv6. `None` for a body cut short or of other
/// address sizes (not ARP an endpoint sends). Also used by the parent's
/// egress (`classify::egress`).
#[inline(always)]
pub fn arp_sender_is_own(
    data: usize,
    end: usize,
    l3: usize,
    mac: &[u8; 6],
    ipv4: [u8; 4],
) -> Option<bool> {
    // Ethernet/IPv4 ARP: sender MAC at 8, sender IP at 14, target IP at 24
    // (28 bytes).
    let a = parse::bytes_at::<28>(data, end, l3)?;
    if a[4] != 6 || a[5] != 4 {
        return None;
    }
    let sha = [a[8], a[9], a[10], a[11], a[12], a[13]];
    let spa = [a[14], a[15], a[16], a[17]];
    let tpa = [a[24], a[25], a[26], a[27]];
    let ip_ok = if spa == [0; 4] {
        ipv4 == [0; 4] || tpa == ipv4
    } else {
        ipv4 != [0; 4] && spa == ipv4
    };
    Some(mac_word(&sha) == mac_word(mac) && ip_ok)
}

/// Whether the IPv6 packet at `l3` is from the endpoint with `mac` and
/// global `ipv6` (:: = none): its source that address or the EUI-64
/// link-local of its MAC, or :: for ICMPv6 and hop-by-hop (DAD, MLD) only,
/// and its neighbour discovery its own (`nd_is_own`). `None` for a header
/// cut short or not version 6. Also used by the parent's egress
/// (`classify::egress`), for endpoints whose device has no checks.
#[inline(always)]
pub fn ipv6_source_is_own(
    data: usize,
    end: usize,
    l3: usize,
    mac: &[u8; 6],
    ipv6: &[u8; 16],
) -> Option<bool> {
    let h = parse::bytes_at::<40>(data, end, l3)?;
    if h[0] >> 4 != 6 {
        return None;
    }
    let mut src = [0u8; 16];
    src.copy_from_slice(&h[8..24]);
    let own = is_own_address(&src, mac, ipv6)
        || (src == [0; 16] && (h[6] == IPPROTO_ICMPV6 || h[6] == IPPROTO_HOPOPTS));
    if !own {
        return Some(false);
    }
    nd_is_own(data, end, l3, &h, mac, ipv6)
}

/// Whether `addr` is the endpoint's: its global `ipv6` (:: for none) or
/// the EUI-64 link-local of its `mac`.
#[inline(always)]
fn is_own_address(addr: &[u8; 16], mac: &[u8; 6], ipv6: &[u8; 16]) -> bool {
    (*ipv6 != [0; 16] && addr == ipv6) || *addr == eui64_link_local(mac)
}

/// The link-local address the kernel derives from `mac` (EUI-64).
#[inline(always)]
fn eui64_link_local(m: &[u8; 6]) -> [u8; 16] {
    [
        0xfe,
        0x80,
        0,
        0,
        0,
        0,
        0,
        0,
        m[0] ^ 0x02,
        m[1],
        m[2],
        0xff,
        0xfe,
        m[3],
        m[4],
        m[5],
    ]
}

const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_DSTOPTS: u8 = 60;
/// Extension headers walked to find an ICMPv6 header; a chain longer than
/// this is malformed (no endpoint sends one).
const MAX_EXT_HEADERS: usize = 4;
/// Options of one neighbour discovery message walked; more is malformed
/// (a router advertisement carries a handful).
const MAX_ND_OPTIONS: usize = 16;
const ND_ROUTER_SOLICIT: u8 = 133;
const ND_ROUTER_ADVERT: u8 = 134;
const ND_NEIGHBOUR_SOLICIT: u8 = 135;
const ND_NEIGHBOUR_ADVERT: u8 = 136;
const ND_OPT_SOURCE_LLADDR: u8 = 1;
const ND_OPT_TARGET_LLADDR: u8 = 2;

/// The neighbour discovery rules, IPv6's counterpart of the ARP sender
/// check (RFC 4861): in a router or neighbour solicitation, a router or
/// neighbour advertisement, every source or target link-layer address
/// option must carry the endpoint's MAC, and the target of a neighbour
/// advertisement, or of a solicitation from :: (duplicate address
/// detection), must be its own address ([`is_own_address`]). Else a neighbour would map another's
/// address to the sender's MAC, or the sender's address to another's MAC;
/// or a host configuring an address would take the endpoint's probe for
/// a duplicate and give the address up (RFC 4862 5.4.3).
/// Also applied by the parent's egress (`classify::egress`) to endpoints
/// without device checks. `h` is the packet's IPv6 header, at `l3`, which
/// the caller has read and checked.
///
/// The ICMPv6 header is found behind hop-by-hop, routing, destination
/// options and fragment headers (at most [`MAX_EXT_HEADERS`]), and must be
/// whole (4 bytes), whatever its type; a later
/// fragment has none and passes, and a fragmented ND message is malformed
/// (receivers ignore those, RFC 6980). The message ends where the IPv6
/// payload length says; an option that runs past it, or one of length 0,
/// is malformed (receivers discard those, RFC 4861 4.6). Other packets
/// pass: `Some(true)`.
///
/// Offsets only ever grow by bounded steps (an extension header at most
/// 2048 bytes, an option 2040), so the verifier knows each stays far below
/// its 64 KiB packet-offset limit without a mask.
#[inline(always)]
pub fn nd_is_own(
    data: usize,
    end: usize,
    l3: usize,
    h: &[u8; 40],
    mac: &[u8; 6],
    ipv6: &[u8; 16],
) -> Option<bool> {
    let bound = l3 + 40 + u16::from_be_bytes([h[4], h[5]]) as usize;
    let unspecified = h[8..24] == [0; 16];
    let mut next = h[6];
    let mut off = l3 + 40;
    let mut fragment = false;
    for _ in 0..MAX_EXT_HEADERS {
        match next {
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS => {
                let e = parse::bytes_at::<2>(data, end, off)?;
                next = e[0];
                off += (e[1] as usize + 1) * 8;
            }
            IPPROTO_FRAGMENT => {
                let e = parse::bytes_at::<4>(data, end, off)?;
                // A later fragment: no upper-layer header in it.
                if u16::from_be_bytes([e[2], e[3]]) >> 3 != 0 {
                    return Some(true);
                }
                fragment = true;
                next = e[0];
                off += 8;
            }
            _ => break,
        }
    }
    match next {
        IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_FRAGMENT => return None,
        IPPROTO_ICMPV6 => {}
        _ => return Some(true),
    }
    // The whole ICMPv6 header (type, code, checksum). (A 1-byte read would
    // compile to `data + off >= end`, from which the verifier learns no
    // range.)
    let ty = parse::bytes_at::<4>(data, end, off)?[0];
    let body = match ty {
        ND_ROUTER_SOLICIT => 8,
        ND_ROUTER_ADVERT => 16,
        ND_NEIGHBOUR_SOLICIT | ND_NEIGHBOUR_ADVERT => 24,
        _ => return Some(true),
    };
    if fragment || off + body > bound {
        return None;
    }
    if ty == ND_NEIGHBOUR_ADVERT || (ty == ND_NEIGHBOUR_SOLICIT && unspecified) {
        let target = parse::bytes_at::<16>(data, end, off + 8)?;
        if !is_own_address(&target, mac, ipv6) {
            return Some(false);
        }
    }
    let mut opt = off + body;
    for _ in 0..MAX_ND_OPTIONS {
        if opt >= bound {
            return Some(true);
        }
        let o = parse::bytes_at::<2>(data, end, opt)?;
        let len = o[1] as usize * 8;
        if len == 0 || opt + len > bound {
            return None;
        }
        if o[0] == ND_OPT_SOURCE_LLADDR || o[0] == ND_OPT_TARGET_LLADDR {
            let lladdr = parse::bytes_at::<6>(data, end, opt + 2)?;
            if mac_word(&lladdr) != mac_word(mac) {
                return Some(false);
            }
        }
        opt += len;
    }
    if opt >= bound {
        Some(true)
    } else {
        None
    }
}
