//! What an endpoint may send, written out independently of the eBPF code:
//! the reference model of the source checks on an endpoint's own device
//! (`mvnet_tc_endpoint`), on etherparse's header parsers, and the frames
//! the tests send.
//!
//! The rules (README, "What enforce guarantees"):
//! * no VLAN tag (802.1Q, 802.1ad, 0x9100/0x9200/0x9300) anywhere in what
//!   the device sends: the endpoint's own VLAN is added below it;
//! * source MAC = the endpoint's;
//! * IPv4 (a whole header): source = its address; 0.0.0.0 only for DHCP
//!   (a whole UDP header, 68 → 67);
//! * ARP (28 bytes, 6-byte hardware and 4-byte protocol addresses): sender
//!   MAC = its MAC, sender IP = its address, or 0.0.0.0 in a probe whose
//!   target is its address (any target while it has none);
//! * IPv6 (a whole header): source = its global address, the EUI-64
//!   link-local of its MAC, or :: for ICMPv6 / hop-by-hop (DAD, MLD);
//! * neighbour discovery (router and neighbour solicitations and
//!   advertisements, found behind up to 4 extension headers): every
//!   source or target link-layer address option = its MAC, the target of
//!   a neighbour advertisement or of a solicitation from :: (DAD) = its
//!   global or EUI-64 link-local address; a
//!   fixed part or option past the payload length or the frame, an option
//!   of length 0, more than 16 options, more than 4 extension headers, a
//!   fragmented message or any ICMPv6 header under 4 bytes is malformed;
//!   a later fragment passes;
//! * other Ethertypes carry nothing checked.
//!
//! A header cut short is malformed; both malformed and spoofed frames are
//! dropped under enforce and passed under observe.
use std::net::{Ipv4Addr, Ipv6Addr};

use etherparse::{
    Ethernet2HeaderSlice, Ipv4HeaderSlice, Ipv6HeaderSlice, PacketBuilder, UdpHeaderSlice,
};

/// What an endpoint is.
#[derive(Clone, Copy, Debug)]
pub struct Identity {
    pub mac: [u8; 6],
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
}

/// The reference's verdict on a frame from the endpoint's device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Judgement {
    Valid,
    Spoofed,
    Malformed,
}

impl Identity {
    /// The EUI-64 link-local address of the endpoint's MAC.
    pub fn link_local(&self) -> Ipv6Addr {
        let m = self.mac;
        Ipv6Addr::from([
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
        ])
    }
}

const TAG_TPIDS: [u16; 5] = [0x8100, 0x88a8, 0x9100, 0x9200, 0x9300];

/// Judges `frame` as sent by the device of `id`.
pub fn judge(frame: &[u8], id: &Identity) -> Judgement {
    use Judgement::*;
    let Ok(eth) = Ethernet2HeaderSlice::from_slice(frame) else {
        return Malformed;
    };
    if eth.source() != id.mac {
        return Spoofed;
    }
    let ether_type = eth.ether_type().0;
    if TAG_TPIDS.contains(&ether_type) {
        return Spoofed;
    }
    let l3 = &frame[14..];
    let own = match ether_type {
        0x0800 => ipv4_is_own(l3, id),
        0x0806 => arp_is_own(l3, id),
        0x86dd => ipv6_is_own(l3, id),
        _ => Some(true),
    };
    match own {
        Some(true) => Valid,
        Some(false) => Spoofed,
        None => Malformed,
    }
}

fn ipv4_is_own(l3: &[u8], id: &Identity) -> Option<bool> {
    let h = Ipv4HeaderSlice::from_slice(l3).ok()?;
    let src = h.source_addr();
    if id.ipv4 == Some(src) {
        return Some(true);
    }
    if !src.is_unspecified() || h.protocol().0 != 17 {
        return Some(false);
    }
    let udp = UdpHeaderSlice::from_slice(&l3[h.slice().len()..]).ok()?;
    Some(udp.source_port() == 68 && udp.destination_port() == 67)
}

fn arp_is_own(l3: &[u8], id: &Identity) -> Option<bool> {
    if l3.len() < 28 || l3[4] != 6 || l3[5] != 4 {
        return None;
    }
    let spa = Ipv4Addr::new(l3[14], l3[15], l3[16], l3[17]);
    let tpa = Ipv4Addr::new(l3[24], l3[25], l3[26], l3[27]);
    let ip_ok = match id.ipv4 {
        // A probe (RFC 5227) for its own address only.
        Some(own) => spa == own || (spa.is_unspecified() && tpa == own),
        None => spa.is_unspecified(),
    };
    Some(l3[8..14] == id.mac && ip_ok)
}

fn ipv6_is_own(l3: &[u8], id: &Identity) -> Option<bool> {
    let h = Ipv6HeaderSlice::from_slice(l3).ok()?;
    let src = h.source_addr();
    let next = h.next_header().0;
    let from_own = id.ipv6 == Some(src)
        || src == id.link_local()
        || (src.is_unspecified() && (next == 58 || next == 0));
    if !from_own {
        return Some(false);
    }
    neighbour_discovery_is_own(
        l3,
        next,
        40 + usize::from(h.payload_length()),
        src.is_unspecified(),
        id,
    )
}

/// RFC 4861's messages that bind addresses to MACs, read from `l3` (the
/// IPv6 packet) whose first next header is `first` and whose payload ends
/// at `message_end` (bytes past the frame are missing: malformed);
/// `from_unspecified`: its source is ::.
fn neighbour_discovery_is_own(
    l3: &[u8],
    first: u8,
    message_end: usize,
    from_unspecified: bool,
    id: &Identity,
) -> Option<bool> {
    let (mut at, mut next, mut fragmented, mut headers) = (40usize, first, false, 0);
    while next != 58 {
        let ext = matches!(next, 0 | 43 | 44 | 60);
        if !ext {
            return Some(true);
        }
        if headers == 4 {
            return None;
        }
        headers += 1;
        if next == 44 {
            let f = l3.get(at..at + 4)?;
            if u16::from_be_bytes([f[2], f[3]]) & 0xfff8 != 0 {
                return Some(true);
            }
            fragmented = true;
            next = f[0];
            at += 8;
        } else {
            let e = l3.get(at..at + 2)?;
            next = e[0];
            at += 8 * (1 + usize::from(e[1]));
        }
    }
    // The ICMPv6 header must be whole, whatever its type.
    let fixed = match l3.get(at..at + 4)?[0] {
        133 => 8,
        134 => 16,
        135 | 136 => 24,
        _ => return Some(true),
    };
    if fragmented || at + fixed > message_end {
        return None;
    }
    // An advertisement names the address it answers for; a duplicate
    // address probe (a solicitation from ::), the address it would take.
    if l3[at] == 136 || (l3[at] == 135 && from_unspecified) {
        let target = Ipv6Addr::from(<[u8; 16]>::try_from(l3.get(at + 8..at + 24)?).ok()?);
        if id.ipv6 != Some(target) && target != id.link_local() {
            return Some(false);
        }
    }
    let mut option = at + fixed;
    let mut options = 0;
    while option < message_end {
        if options == 16 {
            return None;
        }
        options += 1;
        let o = l3.get(option..option + 2)?;
        let len = 8 * usize::from(o[1]);
        if len == 0 || option + len > message_end {
            return None;
        }
        if (o[0] == 1 || o[0] == 2) && *l3.get(option + 2..option + 8)? != id.mac {
            return Some(false);
        }
        option += len;
    }
    Some(true)
}

// ---- frames -------------------------------------------------------------

/// Ethernet header: `dst`, `src`, then each `(TPID, TCI)` tag, then `ether_type`.
pub fn ethernet(dst: [u8; 6], src: [u8; 6], tags: &[(u16, u16)], ether_type: u16) -> Vec<u8> {
    let mut f = Vec::with_capacity(64);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    for (tpid, tci) in tags {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&tci.to_be_bytes());
    }
    f.extend_from_slice(&ether_type.to_be_bytes());
    f
}

/// IPv4/UDP `src` → `dst`, ports `sport` → `dport`, 18 bytes of data.
pub fn udp4(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16) -> Vec<u8> {
    let b = PacketBuilder::ipv4(src.octets(), dst.octets(), 64).udp(sport, dport);
    let data = [0x5a; 18];
    let mut out = Vec::with_capacity(b.size(data.len()));
    b.write(&mut out, &data).expect("write to Vec");
    out
}

/// IPv6/UDP `src` → `dst`, 18 bytes of data.
pub fn udp6(src: Ipv6Addr, dst: Ipv6Addr) -> Vec<u8> {
    let b = PacketBuilder::ipv6(src.octets(), dst.octets(), 64).udp(40000, 9);
    let data = [0x5a; 18];
    let mut out = Vec::with_capacity(b.size(data.len()));
    b.write(&mut out, &data).expect("write to Vec");
    out
}

/// IPv6 neighbour solicitation for `target` from `src`, no options
/// (checksum not computed: nothing on the path checks it).
pub fn ndp_solicit(src: Ipv6Addr, dst: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
    icmp6(src, dst, &[], &solicit(target, &[]))
}

/// A neighbour discovery message: ICMPv6 `ty`, checksum not computed,
/// `fixed` after the type, code and checksum (RS: 4 reserved bytes; RA:
/// 12; NS, NA: flags and the 16-byte target), then `options`, each `(type,
/// data)` padded to a multiple of 8 bytes.
pub fn nd(ty: u8, fixed: &[u8], options: &[(u8, &[u8])]) -> Vec<u8> {
    let mut m = vec![ty, 0, 0, 0];
    m.extend_from_slice(fixed);
    for (t, data) in options {
        let len = (2 + data.len()).div_ceil(8) * 8;
        let at = m.len();
        m.extend_from_slice(&[*t, (len / 8) as u8]);
        m.extend_from_slice(data);
        m.resize(at + len, 0);
    }
    m
}

/// A neighbour solicitation or advertisement's fixed part: flags (NA:
/// solicited, override) and `target`.
pub fn nd_target(flags: u8, target: Ipv6Addr) -> Vec<u8> {
    let mut f = vec![flags, 0, 0, 0];
    f.extend_from_slice(&target.octets());
    f
}

/// A neighbour solicitation for `target` with `options` (see [`nd`]).
pub fn solicit(target: Ipv6Addr, options: &[(u8, &[u8])]) -> Vec<u8> {
    nd(135, &nd_target(0, target), options)
}

/// A neighbour advertisement for `target` (solicited, override: a reply)
/// with `options` (see [`nd`]).
pub fn advert(target: Ipv6Addr, options: &[(u8, &[u8])]) -> Vec<u8> {
    nd(136, &nd_target(0x60, target), options)
}

/// IPv6 `src` → `dst`, hop limit 255, through extension headers `ext`
/// (each `(type, bytes)`: its first byte is set to the next header here,
/// its length byte is the caller's), to ICMPv6 `message`. The payload
/// length covers them all.
pub fn icmp6(src: Ipv6Addr, dst: Ipv6Addr, ext: &[(u8, Vec<u8>)], message: &[u8]) -> Vec<u8> {
    let mut payload = Vec::new();
    for (i, (_, bytes)) in ext.iter().enumerate() {
        let mut b = bytes.clone();
        b[0] = ext.get(i + 1).map_or(58, |(t, _)| *t);
        payload.extend_from_slice(&b);
    }
    payload.extend_from_slice(message);
    let first = ext.first().map_or(58, |(t, _)| *t);
    let mut h = vec![0x60, 0, 0, 0];
    h.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    h.extend_from_slice(&[first, 255]);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    h.extend_from_slice(&payload);
    h
}

/// An Ethernet/IPv4 ARP request: sender `sha`/`spa`, target `tpa`.
pub fn arp(sha: [u8; 6], spa: Ipv4Addr, tpa: Ipv4Addr) -> Vec<u8> {
    let mut a = vec![0, 1, 0x08, 0, 6, 4, 0, 1];
    a.extend_from_slice(&sha);
    a.extend_from_slice(&spa.octets());
    a.extend_from_slice(&[0; 6]);
    a.extend_from_slice(&tpa.octets());
    a
}

/// `header` followed by `payload`.
pub fn with(mut header: Vec<u8>, payload: &[u8]) -> Vec<u8> {
    header.extend_from_slice(payload);
    header
}

/// The first `len` bytes of `frame`.
pub fn cut(frame: &[u8], len: usize) -> Vec<u8> {
    frame[..len.min(frame.len())].to_vec()
}

/// Whose a source MAC is, as the parent's egress knows it.
#[derive(Clone, Copy, Debug)]
pub enum Sender {
    /// The root device's own MAC: the host's traffic.
    Root,
    /// An endpoint whose device has the source checks.
    Checked(Identity),
    /// An endpoint without them (passthru, a classifier without
    /// ENDPOINT_DEVICES, a device mvnet did not make).
    Unchecked(Identity),
    /// No endpoint's, not the root's.
    Foreign,
}

/// What a frame on the parent's egress carries in its cb.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stamp {
    /// No stamp: no endpoint device's checks passed it (or none ran).
    None,
    /// The stamp of the sender's own device.
    Own,
    /// The stamp of another endpoint's device: a qdisc on that device
    /// rewrote the frame after the check.
    Other,
}

/// The parent egress rule under enforce for frames that may have skipped
/// the device's checks (README, "What enforce guarantees"): whether the
/// frame reaches the wire. `stamp`: whose device's checks it passed on its
/// way. The frame's addresses are read as the device's checks read them
/// (`judge`): the parent holds endpoints without checks to the same rules.
pub fn parent_passes(frame: &[u8], sender: Sender, stamp: Stamp) -> bool {
    match sender {
        // The host's, unless an endpoint's device checked it.
        Sender::Root => stamp == Stamp::None,
        // Its frames reach the parent only through its device, which stamps
        // exactly the valid ones: unstamped is a bypass, whatever it says.
        Sender::Checked(id) => stamp == Stamp::Own && judge(frame, &id) == Judgement::Valid,
        Sender::Unchecked(id) => stamp != Stamp::Other && judge(frame, &id) == Judgement::Valid,
        // On any VLAN, enforcing or not, while a network on the root
        // enforces: nothing but a forgery sends it.
        Sender::Foreign => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Judgement::*;

    const ME: Identity = Identity {
        mac: [0x02, 0x42, 0x0a, 0x00, 0x00, 0x02],
        ipv4: Some(Ipv4Addr::new(10, 0, 0, 2)),
        ipv6: None,
    };

    #[test]
    fn the_reference_judges_the_obvious_cases() {
        let dst = [0x02, 0, 0, 0, 0, 1];
        let own = Ipv4Addr::new(10, 0, 0, 2);
        let gw = Ipv4Addr::new(10, 0, 0, 1);
        let ok = with(ethernet(dst, ME.mac, &[], 0x0800), &udp4(own, gw, 1, 2));
        assert_eq!(judge(&ok, &ME), Valid);
        let tagged = with(
            ethernet(dst, ME.mac, &[(0x8100, 10)], 0x0800),
            &udp4(own, gw, 1, 2),
        );
        assert_eq!(judge(&tagged, &ME), Spoofed);
        assert_eq!(judge(&cut(&ok, 20), &ME), Malformed);
        assert_eq!(judge(&cut(&ok, 13), &ME), Malformed);
        let dhcp = with(
            ethernet(dst, ME.mac, &[], 0x0800),
            &udp4(Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, 68, 67),
        );
        assert_eq!(judge(&dhcp, &ME), Valid);
        let not_dhcp = with(
            ethernet(dst, ME.mac, &[], 0x0800),
            &udp4(Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, 67, 68),
        );
        assert_eq!(judge(&not_dhcp, &ME), Spoofed);
        let ll = with(
            ethernet(dst, ME.mac, &[], 0x86dd),
            &udp6(ME.link_local(), "fe80::1".parse().unwrap()),
        );
        assert_eq!(judge(&ll, &ME), Valid);
        assert_eq!(
            ME.link_local(),
            "fe80::42:aff:fe00:2".parse::<Ipv6Addr>().unwrap()
        );
    }
}
