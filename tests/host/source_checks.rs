//! The source checks on an endpoint's device (`mvnet_tc_endpoint`) through
//! BPF_PROG_TEST_RUN, against the reference model of
//! [`super::source_model`]: a crafted table (the rows, the
//! valid exceptions, a frame cut inside every tag and header) and a
//! property test over 1M random frames under enforce.
//!
//! The skb runner puts the frame on the loopback device of the calling
//! namespace, so the program sees ifindex 1: the identity under test is
//! registered there. What the runner refuses (shorter than 14 bytes, or an
//! IPv4/IPv6 Ethertype without a whole IP header: EINVAL before the program
//! runs) is checked to be refused with nothing counted.
use crate::rng::Rng;
use std::{
    net::{Ipv4Addr, Ipv6Addr},
    time::Instant,
};

use aya::{
    maps::{Array, HashMap, PerCpuArray},
    programs::{ProgramError, SchedClassifier},
    sys::SyscallError,
    Ebpf, TestRun, TestRunOptions,
};
use macvlan_common::{
    device_stamp, map_names, program_names, vlan_policy, Counter, DeviceIdentity, Hook, Verdict,
};
use mvnet::datapath;

use crate::{
    common::require_root,
    source_model::{
        advert, arp, cut, ethernet, icmp6, judge, nd, nd_target, ndp_solicit, parent_passes,
        solicit, udp4, udp6, with, Identity, Judgement, Sender, Stamp,
    },
};

const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;
/// The loopback device's ifindex: where the skb runner puts the frame.
const LOOPBACK: u32 = 1;
/// The slot of the endpoint under test (not 0, so a count in the wrong
/// slot shows).
const SLOT: u32 = 77;
const VLAN: u16 = 0;

const ME: Identity = Identity {
    mac: [0x02, 0x42, 0x0a, 0x62, 0x00, 0x0b],
    ipv4: Some(Ipv4Addr::new(10, 98, 0, 11)),
    ipv6: Some(Ipv6Addr::new(0x2001, 0xdb8, 0x62, 0, 0, 0, 0, 0x0b)),
};
/// Another endpoint of the same network.
const OTHER: Identity = Identity {
    mac: [0x02, 0x42, 0x0a, 0x62, 0x00, 0x0c],
    ipv4: Some(Ipv4Addr::new(10, 98, 0, 12)),
    ipv6: Some(Ipv6Addr::new(0x2001, 0xdb8, 0x62, 0, 0, 0, 0, 0x0c)),
};
const PEER: [u8; 6] = [0x02, 0x42, 0x0a, 0x62, 0x00, 0x01];

struct Rig {
    ebpf: Ebpf,
}

impl Rig {
    fn new(id: &Identity, enforce: bool) -> Rig {
        let mut ebpf = datapath::load().expect("loading the classifier object");
        let p: &mut SchedClassifier = ebpf
            .program_mut(program_names::TC_ENDPOINT)
            .expect("endpoint program")
            .try_into()
            .expect("program type");
        p.load().expect("loading mvnet_tc_endpoint");
        let mut devices: HashMap<_, u32, DeviceIdentity> = HashMap::try_from(
            ebpf.map_mut(map_names::ENDPOINT_DEVICES)
                .expect("ENDPOINT_DEVICES"),
        )
        .unwrap();
        let value = DeviceIdentity {
            mac: id.mac,
            vlan: VLAN,
            slot: SLOT,
            ipv4: id.ipv4.map(|a| a.octets()).unwrap_or_default(),
            ipv6: id.ipv6.map(|a| a.octets()).unwrap_or_default(),
        };
        devices.insert(LOOPBACK, value, 0).unwrap();
        let mut policy: Array<_, u32> =
            Array::try_from(ebpf.map_mut(map_names::VLAN_POLICY).unwrap()).unwrap();
        policy
            .set(
                u32::from(VLAN),
                if enforce { vlan_policy::ENFORCE } else { 0 },
                0,
            )
            .unwrap();
        Rig { ebpf }
    }

    /// The program's return value, or `None` if the runner refused the frame.
    fn run(&self, frame: &[u8]) -> Option<u32> {
        self.run_stamped(frame).map(|(ret, _)| ret)
    }

    /// The program's return value and the `cb[0]` it left (the stamp the
    /// parent's egress looks for), or `None` if the runner refused the
    /// frame. The cb starts as [`CB_LEFTOVER`], as a real skb's may hold
    /// what the IP layer left there.
    fn run_stamped(&self, frame: &[u8]) -> Option<(u32, u32)> {
        let p: &SchedClassifier = self
            .ebpf
            .program(program_names::TC_ENDPOINT)
            .unwrap()
            .try_into()
            .unwrap();
        let ctx_in = skb_ctx(CB_LEFTOVER);
        let mut ctx_out = [0u8; SKB_CTX_LEN];
        let opts = TestRunOptions {
            data_in: Some(frame),
            ctx_in: Some(&ctx_in),
            ctx_out: Some(&mut ctx_out),
            repeat: 1,
            ..TestRunOptions::new()
        };
        match p.test_run(opts) {
            Ok(r) => Some((r.return_value, cb0(&ctx_out))),
            Err(ProgramError::SyscallError(SyscallError { io_error, .. }))
                if io_error.raw_os_error() == Some(libc::EINVAL) =>
            {
                None
            }
            Err(e) => panic!("test run on {frame:02x?}: {e:?}"),
        }
    }

    fn sum(&self, name: &str, index: u32) -> Counter {
        sum(&self.ebpf, name, index)
    }

    /// The slots flagged in ENDPOINT_TX_INVALID_SEEN (`tx_seen`), read
    /// element by element, ascending.
    fn flagged(&self) -> Vec<u32> {
        let a: Array<_, [u8; 8]> =
            Array::try_from(self.ebpf.map(map_names::ENDPOINT_TX_INVALID_SEEN).unwrap()).unwrap();
        let mut out = Vec::new();
        for i in 0..a.len() {
            for (b, flag) in a.get(&i, 0).unwrap().into_iter().enumerate() {
                // The program stores 1 and nothing else.
                assert!(flag <= 1, "element {i} byte {b}: {flag}");
                if flag == 1 {
                    out.push(i * 8 + b as u32);
                }
            }
        }
        out
    }

    /// (frames counted invalid for the endpoint, TC egress spoofed, TC
    /// egress malformed, TC egress delivered).
    fn counts(&self) -> [u64; 4] {
        let v = |verdict: Verdict| {
            self.sum(map_names::VERDICT_STATS, verdict.index(Hook::TcEgress))
                .frames
        };
        [
            self.sum(map_names::ENDPOINT_TX_INVALID, SLOT).frames,
            v(Verdict::Spoofed),
            v(Verdict::Malformed),
            v(Verdict::Delivered),
        ]
    }
}

/// Element `index` of the per-CPU counter array `name`, summed over CPUs.
fn sum(ebpf: &Ebpf, name: &str, index: u32) -> Counter {
    let a: PerCpuArray<_, Counter> = PerCpuArray::try_from(ebpf.map(name).unwrap()).unwrap();
    let mut total = Counter::default();
    for c in a.get(&index, 0).unwrap().iter() {
        total.merge(c);
    }
    total
}

/// Room for a `struct __sk_buff` (192 bytes from Linux 5.18; the runner
/// takes a longer context if the rest is zero, and copies back as much as
/// it has).
pub const SKB_CTX_LEN: usize = 256;
/// Offset of `cb[0]` in `struct __sk_buff`.
const CB0: usize = 48;
/// What `cb[0]` holds before the endpoint program runs.
const CB_LEFTOVER: u32 = 0x5a5a_5a5a;

/// A `struct __sk_buff` context for the skb runner: all zero (the runner's
/// defaults) but `cb[0]`.
pub fn skb_ctx(cb0: u32) -> [u8; SKB_CTX_LEN] {
    let mut ctx = [0u8; SKB_CTX_LEN];
    ctx[CB0..CB0 + 4].copy_from_slice(&cb0.to_ne_bytes());
    ctx
}

/// `cb[0]` of a context the runner wrote back.
pub fn cb0(ctx: &[u8]) -> u32 {
    u32::from_ne_bytes(ctx[CB0..CB0 + 4].try_into().unwrap())
}

/// Whether the skb runner refuses `frame` (see the module comment).
fn runner_refuses(frame: &[u8]) -> bool {
    if frame.len() < 14 {
        return true;
    }
    match u16::from_be_bytes([frame[12], frame[13]]) {
        0x0800 => frame.len() < 14 + 20,
        0x86dd => frame.len() < 14 + 40,
        _ => false,
    }
}

/// What the program must return and count for a frame the reference
/// judges `j`: (return value, [invalid, spoofed, malformed, delivered]).
fn expected(j: Judgement, enforce: bool) -> (u32, [u64; 4]) {
    match (j, enforce) {
        (Judgement::Valid, _) => (TC_ACT_OK, [0; 4]),
        (_, false) => (TC_ACT_OK, [1, 0, 0, 0]),
        (Judgement::Spoofed, true) => (TC_ACT_SHOT, [1, 1, 0, 0]),
        (Judgement::Malformed, true) => (TC_ACT_SHOT, [1, 0, 1, 0]),
    }
}

fn crafted() -> Vec<(&'static str, Vec<u8>)> {
    let m = ME.mac;
    let own4 = ME.ipv4.unwrap();
    let own6 = ME.ipv6.unwrap();
    let gw = Ipv4Addr::new(10, 98, 0, 1);
    let any4 = Ipv4Addr::UNSPECIFIED;
    let foreign4 = Ipv4Addr::new(10, 98, 0, 77);
    let foreign_mac = [0x02, 0x66, 0, 0, 0, 1];
    let ll = ME.link_local();
    let ll_peer: Ipv6Addr = "fe80::1".parse().unwrap();
    let e = |src: [u8; 6], tags: &[(u16, u16)], ty: u16, p: &[u8]| {
        with(ethernet(PEER, src, tags, ty), p)
    };
    let valid_udp = udp4(own4, gw, 40000, 9);
    let mut options = udp4(own4, gw, 40000, 9);
    // IHL 6: one option word (NOPs) after the 20-byte header.
    options[0] = 0x46;
    options.splice(20..20, [1, 1, 1, 1]);
    let mut dhcp_options = udp4(any4, Ipv4Addr::BROADCAST, 68, 67);
    dhcp_options[0] = 0x46;
    dhcp_options.splice(20..20, [1, 1, 1, 1]);
    let mut ihl4 = valid_udp.clone();
    ihl4[0] = 0x44;
    let mut v6_in_v4 = valid_udp.clone();
    v6_in_v4[0] = 0x65;
    let mut arp_hlen = arp(m, own4, gw);
    arp_hlen[4] = 8;
    let mut v4_in_v6 = udp6(ll, ll_peer);
    v4_in_v6[0] = 0x40;
    let mut dad_udp = udp6(Ipv6Addr::UNSPECIFIED, ll_peer);
    dad_udp[6] = 17;
    let mut hop_by_hop = ndp_solicit(Ipv6Addr::UNSPECIFIED, ll_peer, ll);
    hop_by_hop[6] = 0;
    vec![
        ("own MAC and IPv4", e(m, &[], 0x0800, &valid_udp)),
        (
            "own MAC and global IPv6",
            e(m, &[], 0x86dd, &udp6(own6, ll_peer)),
        ),
        ("own link-local IPv6", e(m, &[], 0x86dd, &udp6(ll, ll_peer))),
        (
            "NDP from the link-local",
            e(m, &[], 0x86dd, &ndp_solicit(ll, ll_peer, ll_peer)),
        ),
        (
            "DAD NDP from ::",
            e(
                m,
                &[],
                0x86dd,
                &ndp_solicit(Ipv6Addr::UNSPECIFIED, ll_peer, ll),
            ),
        ),
        (
            "MLD-style hop-by-hop from ::",
            e(m, &[], 0x86dd, &hop_by_hop),
        ),
    ]
    .into_iter()
    .chain(neighbour_discovery())
    .chain(vec![
        ("UDP from :: (not NDP)", e(m, &[], 0x86dd, &dad_udp)),
        (
            "DHCP from 0.0.0.0",
            e(m, &[], 0x0800, &udp4(any4, Ipv4Addr::BROADCAST, 68, 67)),
        ),
        (
            "DHCP from 0.0.0.0 behind IPv4 options",
            e(m, &[], 0x0800, &dhcp_options),
        ),
        (
            "UDP 67 -> 68 from 0.0.0.0",
            e(m, &[], 0x0800, &udp4(any4, gw, 67, 68)),
        ),
        (
            "ARP from own MAC and IPv4",
            e(m, &[], 0x0806, &arp(m, own4, gw)),
        ),
        (
            "ARP probe from 0.0.0.0",
            e(m, &[], 0x0806, &arp(m, any4, own4)),
        ),
        (
            "LLDP (no address)",
            e(m, &[], 0x88cc, &[0x02, 0x07, 0x04, 1, 2, 3, 4, 5, 6]),
        ),
        ("IPv4 with options", e(m, &[], 0x0800, &options)),
        (
            "foreign source MAC",
            e(foreign_mac, &[], 0x0800, &valid_udp),
        ),
        (
            "spoofed IPv4",
            e(m, &[], 0x0800, &udp4(foreign4, gw, 40000, 9)),
        ),
        (
            "spoofed ARP sender IP",
            e(m, &[], 0x0806, &arp(m, foreign4, gw)),
        ),
        (
            "ARP with another sender MAC",
            e(m, &[], 0x0806, &arp(OTHER.mac, own4, gw)),
        ),
        (
            "ARP probe for another's address",
            e(m, &[], 0x0806, &arp(m, any4, foreign4)),
        ),
        (
            "global IPv6 from a foreign address",
            e(
                m,
                &[],
                0x86dd,
                &udp6("2001:db8::66".parse().unwrap(), ll_peer),
            ),
        ),
        (
            "the other endpoint's link-local",
            e(m, &[], 0x86dd, &udp6(OTHER.link_local(), ll_peer)),
        ),
        (
            "the other endpoint's MAC and IPv4",
            e(
                OTHER.mac,
                &[],
                0x0800,
                &udp4(OTHER.ipv4.unwrap(), gw, 40000, 9),
            ),
        ),
        (
            "the other endpoint's MAC and IPv6",
            e(OTHER.mac, &[], 0x86dd, &udp6(OTHER.ipv6.unwrap(), ll_peer)),
        ),
        (
            "own MAC, the other endpoint's IPv4",
            e(m, &[], 0x0800, &udp4(OTHER.ipv4.unwrap(), gw, 40000, 9)),
        ),
        (
            "foreign MAC + 802.1Q VID 10",
            e(foreign_mac, &[(0x8100, 10)], 0x0800, &valid_udp),
        ),
        (
            "own MAC + VID 10 + spoofed IPv4",
            e(m, &[(0x8100, 10)], 0x0800, &udp4(foreign4, gw, 40000, 9)),
        ),
        (
            "own MAC + VID 10 + own IPv4",
            e(m, &[(0x8100, 10)], 0x0800, &valid_udp),
        ),
        (
            "own MAC + VID 0 (priority tag)",
            e(m, &[(0x8100, 0)], 0x0800, &valid_udp),
        ),
        (
            "foreign MAC + 802.1ad VID 10",
            e(foreign_mac, &[(0x88a8, 10)], 0x0800, &valid_udp),
        ),
        (
            "own MAC + QinQ",
            e(m, &[(0x88a8, 10), (0x8100, 20)], 0x0800, &valid_udp),
        ),
        (
            "own MAC + three VID 0 tags + spoofed IPv4",
            e(
                m,
                &[(0x8100, 0), (0x8100, 0), (0x8100, 0)],
                0x0800,
                &udp4(foreign4, gw, 40000, 9),
            ),
        ),
        (
            "own MAC + 0x9100 tag",
            e(m, &[(0x9100, 10)], 0x0800, &valid_udp),
        ),
        (
            "own MAC + 0x9200 tag",
            e(m, &[(0x9200, 10)], 0x0800, &valid_udp),
        ),
        (
            "own MAC + 0x9300 tag",
            e(m, &[(0x9300, 10)], 0x0800, &valid_udp),
        ),
        (
            "cut inside an 802.1Q tag",
            cut(&e(m, &[(0x8100, 10)], 0x0800, &[]), 16),
        ),
        (
            "cut after an 802.1Q tag",
            e(m, &[(0x8100, 10)], 0x0800, &[]),
        ),
        (
            "QinQ cut inside the inner tag",
            cut(&e(m, &[(0x88a8, 10), (0x8100, 20)], 0x0800, &[]), 20),
        ),
        ("IPv4 IHL 4", e(m, &[], 0x0800, &ihl4)),
        ("IPv4 version 6", e(m, &[], 0x0800, &v6_in_v4)),
        (
            "IPv4 options cut",
            cut(&e(m, &[], 0x0800, &options), 14 + 22),
        ),
        (
            "DHCP cut inside UDP",
            cut(
                &e(m, &[], 0x0800, &udp4(any4, Ipv4Addr::BROADCAST, 68, 67)),
                14 + 20 + 6,
            ),
        ),
        (
            "DHCP behind options cut inside UDP",
            cut(&e(m, &[], 0x0800, &dhcp_options), 14 + 24 + 4),
        ),
        (
            "ARP cut at 27 bytes",
            cut(&e(m, &[], 0x0806, &arp(m, own4, gw)), 14 + 27),
        ),
        (
            "ARP cut at 8 bytes",
            cut(&e(m, &[], 0x0806, &arp(m, own4, gw)), 14 + 8),
        ),
        (
            "ARP with 8-byte hardware addresses",
            e(m, &[], 0x0806, &arp_hlen),
        ),
        ("ARP header only", e(m, &[], 0x0806, &[])),
        ("IPv6 version 4", e(m, &[], 0x86dd, &v4_in_v6)),
        // Refused by the runner (see the module comment): checked for that.
        (
            "IPv4 cut at 10 bytes",
            cut(&e(m, &[], 0x0800, &valid_udp), 24),
        ),
        (
            "IPv6 cut at 30 bytes",
            cut(&e(m, &[], 0x86dd, &udp6(ll, ll_peer)), 44),
        ),
        (
            "Ethernet cut at 13 bytes",
            cut(&e(m, &[], 0x0800, &valid_udp), 13),
        ),
    ])
    .collect()
}

/// Neighbour discovery from the endpoint's own MAC and addresses, its
/// options and target valid or not (issue 13's rule for ARP, in IPv6).
fn neighbour_discovery() -> Vec<(&'static str, Vec<u8>)> {
    let m = ME.mac;
    let own6 = ME.ipv6.unwrap();
    let ll = ME.link_local();
    let ll_peer: Ipv6Addr = "fe80::1".parse().unwrap();
    let all_nodes: Ipv6Addr = "ff02::1".parse().unwrap();
    let all_routers: Ipv6Addr = "ff02::2".parse().unwrap();
    let stranger: Ipv6Addr = "2001:db8:62::77".parse().unwrap();
    let foreign_mac = [0x02, 0x66, 0, 0, 0, 1];
    let six = |src: Ipv6Addr, dst: Ipv6Addr, ext: &[(u8, Vec<u8>)], msg: &[u8]| {
        with(ethernet(PEER, m, &[], 0x86dd), &icmp6(src, dst, ext, msg))
    };
    // One PadN option filling the 8-byte header (its length byte: 0).
    let hop_by_hop = (0u8, vec![0, 0, 1, 4, 0, 0, 0, 0]);
    let destination = (60u8, vec![0, 0, 1, 4, 0, 0, 0, 0]);
    // Offset 0 with more to come; offset 1 (8 bytes in).
    let first_fragment = (44u8, vec![0, 0, 0, 1, 0, 0, 0, 7]);
    let later_fragment = (44u8, vec![0, 0, 0, 8, 0, 0, 0, 7]);
    let mtu: &[u8] = &[0, 0, 0, 0, 5, 220];
    let prefix = [0x40u8; 30];
    let nonce: &[u8] = &[1, 2, 3, 4, 5, 6];
    let mut zero_length = advert(ll, &[]);
    zero_length.extend_from_slice(&[2, 0, 2, 0x42, 0x0a, 0x62, 0, 0x0b]);
    let mut past_payload = six(ll, ll_peer, &[], &advert(ll, &[(2, &m)]));
    // Payload length 4 short: the option runs past the message.
    let len = u16::from_be_bytes([past_payload[18], past_payload[19]]) - 4;
    past_payload[18..20].copy_from_slice(&len.to_be_bytes());
    let many: Vec<(u8, &[u8])> = vec![(14, nonce); 17];
    vec![
        (
            "NA for its link-local with its MAC",
            six(ll, ll_peer, &[], &advert(ll, &[(2, &m)])),
        ),
        (
            "NA for its global address",
            six(own6, ll_peer, &[], &advert(own6, &[])),
        ),
        (
            "RS with its MAC",
            six(ll, all_routers, &[], &nd(133, &[0; 4], &[(1, &m)])),
        ),
        (
            "RA with its MAC, an MTU and a prefix",
            six(
                ll,
                all_nodes,
                &[],
                &nd(
                    134,
                    &[64, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                    &[(1, &m), (5, mtu), (3, &prefix)],
                ),
            ),
        ),
        (
            "NS with its MAC behind destination options",
            six(
                ll,
                ll_peer,
                std::slice::from_ref(&destination),
                &solicit(ll_peer, &[(1, &m)]),
            ),
        ),
        (
            "a later fragment of an NA",
            six(ll, ll_peer, &[later_fragment], &[0x60, 0, 0, 0, 1, 2, 3, 4]),
        ),
        (
            "DAD NS from :: for its global address",
            six(Ipv6Addr::UNSPECIFIED, all_nodes, &[], &solicit(own6, &[])),
        ),
        (
            "NA for a stranger's address",
            six(ll, ll_peer, &[], &advert(stranger, &[(2, &m)])),
        ),
        (
            "DAD NS from :: for a stranger's address",
            six(
                Ipv6Addr::UNSPECIFIED,
                all_nodes,
                &[],
                &solicit(stranger, &[]),
            ),
        ),
        (
            "DAD NS from :: for the other endpoint's link-local",
            six(
                Ipv6Addr::UNSPECIFIED,
                all_nodes,
                &[],
                &solicit(OTHER.link_local(), &[]),
            ),
        ),
        (
            "NA for the other endpoint's link-local",
            six(ll, ll_peer, &[], &advert(OTHER.link_local(), &[])),
        ),
        (
            "NA for its address with another MAC",
            six(own6, ll_peer, &[], &advert(own6, &[(2, &foreign_mac)])),
        ),
        (
            "NS with the other endpoint's MAC",
            six(ll, ll_peer, &[], &solicit(ll_peer, &[(1, &OTHER.mac)])),
        ),
        (
            "RA with another MAC after an MTU",
            six(
                ll,
                all_nodes,
                &[],
                &nd(134, &[0; 12], &[(5, mtu), (1, &foreign_mac)]),
            ),
        ),
        (
            "NA for a stranger behind hop-by-hop and destination options",
            six(
                ll,
                ll_peer,
                &[hop_by_hop.clone(), destination.clone()],
                &advert(stranger, &[]),
            ),
        ),
        (
            "NA from :: for a stranger",
            six(
                Ipv6Addr::UNSPECIFIED,
                all_nodes,
                &[],
                &advert(stranger, &[]),
            ),
        ),
        (
            "another MAC in an NA's third option",
            six(
                ll,
                ll_peer,
                &[],
                &advert(ll, &[(14, nonce), (14, nonce), (2, &foreign_mac)]),
            ),
        ),
        ("ND option of length 0", six(ll, ll_peer, &[], &zero_length)),
        ("ND option past the payload length", past_payload),
        (
            "NA cut inside its target",
            cut(&six(ll, ll_peer, &[], &advert(ll, &[])), 14 + 40 + 12),
        ),
        (
            "a fragmented NA",
            six(ll, ll_peer, &[first_fragment], &advert(ll, &[])),
        ),
        (
            "NA behind five extension headers",
            six(
                ll,
                ll_peer,
                &[
                    hop_by_hop,
                    destination.clone(),
                    destination.clone(),
                    destination.clone(),
                    destination,
                ],
                &advert(ll, &[]),
            ),
        ),
        (
            "NA with 17 options",
            six(ll, ll_peer, &[], &advert(ll, &many)),
        ),
    ]
}

#[test]
fn endpoint_source_checks_match_the_reference_on_crafted_frames() {
    require_root();
    let cases = crafted();
    // The reference's reading of the table: guards against a model that
    // passes or refuses everything.
    let judged: Vec<Judgement> = cases.iter().map(|(_, f)| judge(f, &ME)).collect();
    let count = |j| judged.iter().filter(|x| **x == j).count();
    assert_eq!(
        (
            count(Judgement::Valid),
            count(Judgement::Spoofed),
            count(Judgement::Malformed)
        ),
        (19, 35, 19),
        "{judged:?}"
    );
    for enforce in [false, true] {
        let rig = Rig::new(&ME, enforce);
        let mut ran = 0;
        for ((what, frame), j) in cases.iter().zip(&judged) {
            let before = rig.counts();
            let got = rig.run_stamped(frame);
            let after = rig.counts();
            let delta: Vec<u64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
            if runner_refuses(frame) {
                assert_eq!(got, None, "{what}: the runner should refuse it");
                assert_eq!(delta, [0; 4], "{what}: counted though refused");
                continue;
            }
            ran += 1;
            let (ret, counts) = expected(*j, enforce);
            // Valid frames leave stamped for the parent's egress; any other
            // leaves with the cb cleared, passed or not.
            let stamp = if *j == Judgement::Valid {
                device_stamp(SLOT)
            } else {
                0
            };
            assert_eq!(
                got,
                Some((ret, stamp)),
                "{what} ({j:?}, enforce {enforce}): {frame:02x?}"
            );
            assert_eq!(delta, counts, "{what} ({j:?}, enforce {enforce}): counters");
            // The endpoint's flag is up from its first invalid frame on,
            // and no other slot's ever is.
            let want: &[u32] = if after[0] > 0 { &[SLOT] } else { &[] };
            assert_eq!(
                rig.flagged(),
                want,
                "{what} ({j:?}, enforce {enforce}): flag"
            );
        }
        assert_eq!(ran, cases.len() - 3);
    }
    // An endpoint with no IPv4 address: nothing but DHCP from 0.0.0.0.
    let v6_only = Identity { ipv4: None, ..ME };
    let rig = Rig::new(&v6_only, true);
    let own4 = ME.ipv4.unwrap();
    let gw = Ipv4Addr::new(10, 98, 0, 1);
    for (frame, ret) in [
        (udp4(own4, gw, 40000, 9), TC_ACT_SHOT),
        (udp4(Ipv4Addr::UNSPECIFIED, gw, 40000, 9), TC_ACT_SHOT),
        (
            udp4(Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, 68, 67),
            TC_ACT_OK,
        ),
    ] {
        let frame = with(ethernet(PEER, ME.mac, &[], 0x0800), &frame);
        assert_eq!(
            judge(&frame, &v6_only) == Judgement::Valid,
            ret == TC_ACT_OK
        );
        assert_eq!(rig.run(&frame), Some(ret), "{frame:02x?}");
    }
}

/// Valid frames of every kind the endpoint sends.
fn valid_templates() -> Vec<Vec<u8>> {
    let m = ME.mac;
    let own4 = ME.ipv4.unwrap();
    let gw = Ipv4Addr::new(10, 98, 0, 1);
    let ll = ME.link_local();
    let ll_peer: Ipv6Addr = "fe80::1".parse().unwrap();
    let e = |ty: u16, p: &[u8]| with(ethernet(PEER, m, &[], ty), p);
    let t = vec![
        e(0x0800, &udp4(own4, gw, 40000, 9)),
        e(
            0x0800,
            &udp4(Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, 68, 67),
        ),
        e(0x0806, &arp(m, own4, gw)),
        e(0x0806, &arp(m, Ipv4Addr::UNSPECIFIED, own4)),
        e(0x86dd, &udp6(ME.ipv6.unwrap(), ll_peer)),
        e(0x86dd, &udp6(ll, ll_peer)),
        e(0x86dd, &ndp_solicit(Ipv6Addr::UNSPECIFIED, ll_peer, ll)),
        e(0x86dd, &ndp_solicit(ll, ll_peer, ll_peer)),
        e(0x86dd, &icmp6(ll, ll_peer, &[], &advert(ll, &[(2, &m)]))),
        e(
            0x86dd,
            &icmp6(
                ll,
                "ff02::1".parse().unwrap(),
                &[],
                &nd(134, &[0; 12], &[(1, &m), (5, &[0, 0, 0, 0, 5, 220])]),
            ),
        ),
        e(
            0x86dd,
            &icmp6(
                ll,
                ll_peer,
                &[(60, vec![0, 0, 1, 4, 0, 0, 0, 0])],
                &solicit(ll_peer, &[(1, &m)]),
            ),
        ),
        e(0x88cc, &[0x02, 0x07, 0x04, 1, 2, 3, 4, 5, 6]),
    ];
    for f in &t {
        assert_eq!(judge(f, &ME), Judgement::Valid, "{f:02x?}");
    }
    t
}

/// One random frame into `out`: a valid template, then with some chance
/// each: bytes mutated (more often in the headers), the source MAC
/// replaced (the other endpoint's or random), 1-3 tags inserted after the
/// MACs (802.1Q, 802.1ad, 0x9100, or a random type), cut short.
fn random_frame(rng: &mut Rng, templates: &[Vec<u8>], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&templates[rng.below(templates.len() as u64) as usize]);
    if rng.below(3) == 0 {
        for _ in 0..=rng.below(3) {
            let i = if rng.below(4) == 0 {
                rng.below(out.len() as u64)
            } else {
                // The headers: source MAC, type, IP/ARP header, ports.
                6 + rng.below((out.len() as u64 - 6).min(50))
            } as usize;
            out[i] = if rng.below(2) == 0 {
                rng.next() as u8
            } else {
                out[i] ^ (1 << rng.below(8))
            };
        }
    }
    match rng.below(8) {
        0 => out[6..12].copy_from_slice(&OTHER.mac),
        1 => {
            for b in &mut out[6..12] {
                *b = rng.next() as u8;
            }
        }
        _ => {}
    }
    if rng.below(6) == 0 {
        for _ in 0..=rng.below(3) {
            let tpid: u16 = match rng.below(4) {
                0 => 0x8100,
                1 => 0x88a8,
                2 => 0x9100,
                _ => rng.next() as u16,
            };
            let tci = rng.next() as u16;
            let at = 12;
            out.splice(
                at..at,
                tpid.to_be_bytes().into_iter().chain(tci.to_be_bytes()),
            );
        }
    }
    if rng.below(5) == 0 {
        let len = 14 + rng.below(out.len() as u64 - 13) as usize;
        out.truncate(len);
    }
}

/// Issue 13: 1M random egress frames under enforce; no frame the reference
/// calls invalid passes and every valid one does, and every drop is counted.
#[test]
fn one_million_random_egress_frames_under_enforce_match_the_reference() {
    require_root();
    const FRAMES: u64 = 1_000_000;
    let started = Instant::now();
    let rig = Rig::new(&ME, true);
    let templates = valid_templates();
    let mut rng = Rng(0x6d76_6e65_7431_3300);
    let mut frame = Vec::with_capacity(128);
    let (mut valid, mut spoofed, mut malformed, mut refused) = (0u64, 0u64, 0u64, 0u64);
    let mut wrong = Vec::new();
    for _ in 0..FRAMES {
        random_frame(&mut rng, &templates, &mut frame);
        let j = judge(&frame, &ME);
        let Some((got, stamp)) = rig.run_stamped(&frame) else {
            assert!(runner_refuses(&frame), "refused: {frame:02x?}");
            refused += 1;
            continue;
        };
        if (stamp == device_stamp(SLOT)) != (j == Judgement::Valid) && wrong.len() < 10 {
            wrong.push(format!("{j:?} but left cb[0] {stamp:#x}: {frame:02x?}"));
        }
        match j {
            Judgement::Valid => valid += 1,
            Judgement::Spoofed => spoofed += 1,
            Judgement::Malformed => malformed += 1,
        }
        if got != expected(j, true).0 && wrong.len() < 10 {
            wrong.push(format!("{j:?} but returned {got}: {frame:02x?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // Every kind is well represented (the generator is not degenerate).
    for (what, n) in [
        ("valid", valid),
        ("spoofed", spoofed),
        ("malformed", malformed),
    ] {
        assert!(n > FRAMES / 50, "only {n} {what} frames");
    }
    assert!(refused < FRAMES / 10, "{refused} refused");
    assert_eq!(
        rig.counts(),
        [spoofed + malformed, spoofed, malformed, 0],
        "counters after {valid} valid, {spoofed} spoofed, {malformed} malformed"
    );
    eprintln!(
        "{FRAMES} frames: {valid} valid, {spoofed} spoofed, {malformed} malformed, {refused} refused by the runner; {:?}",
        started.elapsed()
    );
}

/// One random neighbour discovery frame (or near one) from the endpoint's
/// MAC and addresses into `out`: ICMPv6 type 133-137 or another, behind 0
/// to 5 extension headers (hop-by-hop, routing, destination options of
/// random length, fragments first or later), an NA target its own or
/// another's, 0 to 18 options (link-layer address options with its MAC,
/// another endpoint's or a random one, others; lengths 0 to 3), then the
/// payload length off by a little or the frame cut short, now and then.
fn random_nd_frame(rng: &mut Rng, out: &mut Vec<u8>) {
    let ll = ME.link_local();
    let pick = |rng: &mut Rng, xs: &[Ipv6Addr]| xs[rng.below(xs.len() as u64) as usize];
    let addresses = [
        ll,
        ME.ipv6.unwrap(),
        Ipv6Addr::UNSPECIFIED,
        OTHER.link_local(),
        OTHER.ipv6.unwrap(),
        "2001:db8:62::77".parse().unwrap(),
    ];
    // Mostly its own sources, so that the ND rules decide.
    let src = if rng.below(8) == 0 {
        pick(rng, &addresses)
    } else {
        pick(rng, &addresses[..3])
    };
    let mut ext = Vec::new();
    for _ in 0..[0, 0, 0, 1, 1, 2, 4, 5][rng.below(8) as usize] {
        let header = match rng.below(5) {
            0 => (0u8, vec![0; 8 * (1 + rng.below(3) as usize)]),
            1 => (43, vec![0; 8 * (1 + rng.below(2) as usize)]),
            2 => (60, vec![0; 8 * (1 + rng.below(3) as usize)]),
            3 => (44, vec![0, 0, 0, 1, 0, 0, 0, 9]),
            _ => (44, vec![0, 0, (rng.below(4) as u8) << 3, 8, 0, 0, 0, 9]),
        };
        ext.push(header);
    }
    for (t, bytes) in &mut ext {
        if *t != 44 {
            // The length byte: the header's 8-byte units beyond the first.
            bytes[1] = (bytes.len() / 8 - 1) as u8;
        }
    }
    let ty = [133u8, 134, 135, 136, 136, 136, 137, 128][rng.below(8) as usize];
    let fixed = match ty {
        133 => vec![0; 4],
        134 => vec![64, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        135 | 136 => nd_target(0x60, pick(rng, &addresses)),
        _ => vec![0; 4 + 4 * rng.below(5) as usize],
    };
    let mut message = nd(ty, &fixed, &[]);
    let options = [0, 0, 1, 1, 2, 3, 5, 17, 18][rng.below(9) as usize];
    for _ in 0..options {
        let t = [1u8, 1, 2, 2, 3, 5, 14][rng.below(7) as usize];
        let len = [1u8, 1, 1, 1, 1, 2, 3, 0][rng.below(8) as usize];
        let at = message.len();
        message.extend_from_slice(&[t, len]);
        let mac = match rng.below(6) {
            0 => OTHER.mac,
            1 => [rng.next() as u8, 0x42, 0x0a, 0x62, 0, rng.next() as u8],
            _ => ME.mac,
        };
        message.extend_from_slice(&mac);
        message.resize(at + 8 * usize::from(len.max(1)), 0);
    }
    out.clear();
    out.extend_from_slice(&ethernet(PEER, ME.mac, &[], 0x86dd));
    out.extend_from_slice(&icmp6(src, "ff02::1".parse().unwrap(), &ext, &message));
    match rng.below(8) {
        0 => {
            let len = u16::from_be_bytes([out[18], out[19]]);
            let off = [1u16, 4, 8, 24][rng.below(4) as usize];
            let len = if rng.below(2) == 0 {
                len.saturating_sub(off)
            } else {
                len + off
            };
            out[18..20].copy_from_slice(&len.to_be_bytes());
        }
        1 => {
            let len = 14 + 40 + rng.below(out.len() as u64 - 53) as usize;
            out.truncate(len);
        }
        _ => {}
    }
}

/// The neighbour discovery rules (`nd_is_own` in the eBPF source) against
/// the reference over 200k random ND frames under enforce: options, targets,
/// extension headers, fragments, lengths.
#[test]
fn random_neighbour_discovery_frames_match_the_reference() {
    require_root();
    const FRAMES: u64 = 200_000;
    let rig = Rig::new(&ME, true);
    let mut rng = Rng(0x6e64_2d72_756c_6573);
    let mut frame = Vec::with_capacity(256);
    let mut seen = [0u64; 3];
    let mut wrong = Vec::new();
    for _ in 0..FRAMES {
        random_nd_frame(&mut rng, &mut frame);
        let j = judge(&frame, &ME);
        let got = rig.run_stamped(&frame);
        seen[j as usize] += 1;
        let want = (
            expected(j, true).0,
            if j == Judgement::Valid {
                device_stamp(SLOT)
            } else {
                0
            },
        );
        if got != Some(want) && wrong.len() < 10 {
            wrong.push(format!("{j:?} but got {got:?}: {frame:02x?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    for (what, n) in ["valid", "spoofed", "malformed"].iter().zip(seen) {
        assert!(n > FRAMES / 10, "only {n} {what} frames: {seen:?}");
    }
    assert_eq!(rig.counts(), [seen[1] + seen[2], seen[1], seen[2], 0]);
}

/// The parent's egress (`mvnet_tc_egress`) under enforce, through
/// BPF_PROG_TEST_RUN with the device's stamp in the cb or not, against
/// [`parent_passes`]: frames from an endpoint with device checks pass only
/// stamped; an endpoint without checks is judged by its addresses; a
/// foreign MAC is dropped on any VLAN; the root's own MAC passes.
#[test]
fn parent_egress_takes_a_checked_endpoints_frames_only_with_the_device_stamp() {
    use macvlan_common::{config_flags, Config};
    use mvnet::datapath::EndpointEntry;
    require_root();
    const ROOT: [u8; 6] = [0x02, 0x42, 0x0a, 0x62, 0x00, 0xfe];
    let unchecked = Identity {
        mac: [0x02, 0x42, 0x0a, 0x62, 0x00, 0x0d],
        ipv4: Some(Ipv4Addr::new(10, 98, 0, 13)),
        ipv6: None,
    };
    let foreign_mac = [0x02, 0x66, 0, 0, 0, 1];
    let sender = |mac: [u8; 6]| match mac {
        m if m == ROOT => Sender::Root,
        m if m == ME.mac => Sender::Checked(ME),
        m if m == OTHER.mac => Sender::Checked(OTHER),
        m if m == unchecked.mac => Sender::Unchecked(unchecked),
        _ => Sender::Foreign,
    };

    let mut ebpf = egress_loaded();
    // (MAC, slot) of each endpoint.
    let mut slots = Vec::new();
    {
        let mut table = datapath::endpoint_table(&mut ebpf).unwrap();
        table.insert_root(ROOT).unwrap();
        for id in [ME, OTHER, unchecked] {
            let slot = table
                .insert(EndpointEntry {
                    mac: id.mac,
                    vlan: VLAN,
                    ipv4: id.ipv4,
                    ipv6: id.ipv6,
                    enforce: true,
                })
                .unwrap();
            slots.push((id.mac, slot));
        }
        for id in [ME, OTHER] {
            table.mark_device_checked(id.mac, VLAN).unwrap();
        }
    }
    let slot_of = |mac: [u8; 6]| slots.iter().find(|(m, _)| *m == mac).map(|(_, s)| *s);
    let mut policy: Array<_, u32> =
        Array::try_from(ebpf.map_mut(map_names::VLAN_POLICY).unwrap()).unwrap();
    policy
        .set(u32::from(VLAN), vlan_policy::ENFORCE, 0)
        .unwrap();
    // As the controller sets it while a network on the root enforces.
    let mut config: Array<_, Config> =
        Array::try_from(ebpf.map_mut(map_names::CONFIG).unwrap()).unwrap();
    config
        .set(
            0,
            Config {
                flags: config_flags::DROP_MALFORMED,
                _pad: 0,
            },
            0,
        )
        .unwrap();
    let p: &SchedClassifier = ebpf
        .program(program_names::TC_EGRESS)
        .unwrap()
        .try_into()
        .unwrap();

    let gw = Ipv4Addr::new(10, 98, 0, 1);
    let foreign4 = Ipv4Addr::new(10, 98, 0, 77);
    let ll_peer: Ipv6Addr = "fe80::1".parse().unwrap();
    let e = |src: [u8; 6], tags: &[(u16, u16)], ty: u16, payload: Vec<u8>| {
        with(ethernet(PEER, src, tags, ty), &payload)
    };
    let stranger: Ipv6Addr = "2001:db8:62::77".parse().unwrap();
    let ll = |id: Identity| id.link_local();
    let mut frames = Vec::new();
    for id in [ME, OTHER, unchecked] {
        let own4 = id.ipv4.unwrap();
        let m = id.mac;
        frames.extend([
            e(m, &[], 0x0800, udp4(own4, gw, 40000, 9)),
            e(
                m,
                &[],
                0x0800,
                udp4(Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, 68, 67),
            ),
            e(m, &[], 0x0806, arp(m, own4, gw)),
            e(m, &[], 0x0806, arp(m, Ipv4Addr::UNSPECIFIED, own4)),
            e(m, &[], 0x86dd, udp6(id.link_local(), ll_peer)),
            e(m, &[], 0x0800, udp4(foreign4, gw, 40000, 9)),
            e(m, &[], 0x0806, arp(m, foreign4, gw)),
            // A probe for another's address; a link-local not derived from
            // its MAC, as a neighbour solicitation's source too; :: for
            // anything but ICMPv6 and hop-by-hop.
            e(m, &[], 0x0806, arp(m, Ipv4Addr::UNSPECIFIED, foreign4)),
            e(m, &[], 0x86dd, udp6(ll_peer, ll(id))),
            e(
                m,
                &[],
                0x86dd,
                icmp6(ll_peer, ll(id), &[], &solicit(ll(id), &[(1, &m)])),
            ),
            e(m, &[], 0x86dd, udp6(Ipv6Addr::UNSPECIFIED, ll_peer)),
            // Neighbour discovery: its own, a stranger's target, another MAC.
            e(
                m,
                &[],
                0x86dd,
                icmp6(ll(id), ll_peer, &[], &advert(ll(id), &[(2, &m)])),
            ),
            e(
                m,
                &[],
                0x86dd,
                icmp6(ll(id), ll_peer, &[], &advert(stranger, &[])),
            ),
            e(
                m,
                &[],
                0x86dd,
                icmp6(Ipv6Addr::UNSPECIFIED, ll_peer, &[], &solicit(stranger, &[])),
            ),
            e(
                m,
                &[],
                0x86dd,
                icmp6(ll(id), ll_peer, &[], &advert(ll(id), &[(2, &foreign_mac)])),
            ),
        ]);
    }
    // Another endpoint's whole identity from ME's container is, on the
    // parent, that endpoint's frame: covered by OTHER's rows above.
    frames.extend([
        e(ROOT, &[], 0x0800, udp4(gw, foreign4, 1, 2)),
        e(ROOT, &[(0x8100, 10)], 0x0800, udp4(gw, foreign4, 1, 2)),
        e(foreign_mac, &[], 0x0800, udp4(foreign4, gw, 40000, 9)),
        e(
            foreign_mac,
            &[(0x8100, 10)],
            0x0800,
            udp4(foreign4, gw, 40000, 9),
        ),
        e(
            foreign_mac,
            &[(0x88a8, 10)],
            0x0800,
            udp4(foreign4, gw, 40000, 9),
        ),
    ]);

    let (mut passed, mut dropped, mut wrong) = (0, 0, Vec::new());
    // (frames, bytes) each endpoint's passed frames came to.
    let mut sent = std::collections::HashMap::<[u8; 6], (u64, u64)>::new();
    for frame in &frames {
        let src: [u8; 6] = frame[6..12].try_into().unwrap();
        // Unstamped; stamped by its own device (or, for the root and a
        // foreign MAC, by ME's); by another endpoint's device.
        let own = slot_of(src).unwrap_or(slot_of(ME.mac).unwrap());
        let another = if own == slot_of(ME.mac).unwrap() {
            slot_of(OTHER.mac).unwrap()
        } else {
            slot_of(ME.mac).unwrap()
        };
        let own_kind = if slot_of(src).is_some() {
            Stamp::Own
        } else {
            Stamp::Other
        };
        for (stamp, kind) in [
            (0, Stamp::None),
            (CB_LEFTOVER, Stamp::None),
            (device_stamp(own), own_kind),
            (device_stamp(another), Stamp::Other),
        ] {
            let ctx_in = skb_ctx(stamp);
            let opts = TestRunOptions {
                data_in: Some(frame),
                ctx_in: Some(&ctx_in),
                repeat: 1,
                ..TestRunOptions::new()
            };
            let got = p.test_run(opts).expect("test run").return_value;
            let want = if parent_passes(frame, sender(src), kind) {
                passed += 1;
                let n = sent.entry(src).or_default();
                *n = (n.0 + 1, n.1 + frame.len() as u64);
                TC_ACT_OK
            } else {
                dropped += 1;
                TC_ACT_SHOT
            };
            if got != want {
                wrong.push(format!(
                    "{:?}, cb[0] {stamp:#x}: returned {got}, want {want}: {frame:02x?}",
                    sender(src)
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // ME and OTHER: 6 valid kinds with their own stamp; the unchecked
    // endpoint: 6 valid kinds, unstamped (twice) or with its own stamp; the
    // root: 2 frames, unstamped (twice). A stamp of another endpoint's
    // device passes nothing.
    assert_eq!(
        (passed, dropped),
        (2 * 6 + 6 * 3 + 2 * 2, frames.len() * 4 - 34)
    );
    // An endpoint's `tx` is what left as its own, valid frames: none of
    // those dropped as spoofed or malformed (its own MAC with another's
    // address, or unstamped from a checked device) is in it.
    let counters =
        datapath::endpoint_counters(ebpf.map(map_names::ENDPOINT_STATS).unwrap()).unwrap();
    for &(mac, slot) in &slots {
        let tx = counters[slot as usize].tx;
        let want = sent.get(&mac).copied().unwrap_or_default();
        assert_eq!(
            (tx.frames, tx.bytes),
            want,
            "tx of {mac:02x?} (slot {slot})"
        );
    }
}

/// Each CPU counts the frames an endpoint sends in its own stripe of
/// ENDPOINT_STATS (`macvlan_common::stripes`), as it counts received
/// frames, and none is lost when the endpoint sends on every CPU at once:
/// one thread per CPU, each pinned to it, runs the parent's egress on the
/// same frame `RUNS` times, all started together.
#[test]
fn parent_egress_counts_each_cpus_sent_frames_in_its_stripe_and_loses_none() {
    use macvlan_common::EndpointCounters;
    use std::sync::Barrier;
    require_root();
    const RUNS: u32 = 1_000_000;
    let mut ebpf = egress_loaded();
    let (slot, capacity) = insert_me(&mut ebpf);
    let frame = with(
        ethernet(PEER, ME.mac, &[], 0x0800),
        &udp4(ME.ipv4.unwrap(), Ipv4Addr::new(10, 98, 0, 1), 40000, 9),
    );
    let len = frame.len() as u64;
    let cpus = allowed_cpus();
    assert!(!cpus.is_empty());
    let p: &SchedClassifier = ebpf
        .program(program_names::TC_EGRESS)
        .unwrap()
        .try_into()
        .unwrap();
    let start = Barrier::new(cpus.len());
    std::thread::scope(|s| {
        for &cpu in &cpus {
            let (start, frame) = (&start, &frame);
            s.spawn(move || {
                pin_to_cpu(cpu);
                start.wait();
                let r = p
                    .test_run(TestRunOptions {
                        data_in: Some(frame),
                        repeat: RUNS,
                        ..TestRunOptions::new()
                    })
                    .unwrap_or_else(|e| panic!("test run on CPU {cpu}: {e:?}"));
                assert_eq!(r.return_value, TC_ACT_OK, "CPU {cpu}");
            });
        }
    });
    let stats: Array<_, EndpointCounters> =
        Array::try_from(ebpf.map(map_names::ENDPOINT_STATS).unwrap()).unwrap();
    let stripes = datapath::stripes().unwrap();
    let sent = Counter {
        frames: u64::from(RUNS),
        bytes: u64::from(RUNS) * len,
    };
    let mut wrong = Vec::new();
    for cpu in 0..stripes {
        let at = macvlan_common::stripes::index(cpu, capacity, slot);
        let got = stats.get(&at, 0).unwrap();
        let want = EndpointCounters {
            tx: if cpus.contains(&cpu) {
                sent
            } else {
                Counter::default()
            },
            ..Default::default()
        };
        if got != want {
            wrong.push(format!("stripe of CPU {cpu}: {got:?}, want {want:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} threads on CPUs {cpus:?}, {RUNS} frames each:\n{}",
        cpus.len(),
        wrong.join("\n")
    );
    let total = datapath::endpoint_counters(ebpf.map(map_names::ENDPOINT_STATS).unwrap()).unwrap()
        [slot as usize];
    assert_eq!(total.tx.frames, u64::from(RUNS) * cpus.len() as u64);
}

/// The classifier object with the parent's egress program loaded.
/// A GSO skb on the parent's egress is one run of the program for several
/// frames on the wire: its bytes are what the qdisc layer counts for it
/// (`wire_len`: every segment with its headers), not the linear head's.
/// Here 3 segments' worth: the endpoint's `tx` and the verdict count the
/// wire's bytes (one skb, one frame: the kernel's own packet counters, which
/// `verify` holds the counts against, count skbs too).
#[test]
fn parent_egress_counts_a_gso_skbs_bytes_on_the_wire() {
    require_root();
    /// Offset of `wire_len` in `struct __sk_buff`.
    const WIRE_LEN: usize = 160;
    let mut ebpf = egress_loaded();
    let (slot, _) = insert_me(&mut ebpf);
    let frame = with(
        ethernet(PEER, ME.mac, &[], 0x0800),
        &udp4(ME.ipv4.unwrap(), Ipv4Addr::new(10, 98, 0, 1), 40000, 9),
    );
    let wire = 3 * frame.len() as u32 + 2 * 8;
    let mut ctx_in = skb_ctx(0);
    ctx_in[WIRE_LEN..WIRE_LEN + 4].copy_from_slice(&wire.to_ne_bytes());
    let p: &SchedClassifier = ebpf
        .program(program_names::TC_EGRESS)
        .unwrap()
        .try_into()
        .unwrap();
    let ret = p
        .test_run(TestRunOptions {
            data_in: Some(&frame),
            ctx_in: Some(&ctx_in),
            repeat: 1,
            ..TestRunOptions::new()
        })
        .expect("test run")
        .return_value;
    assert_eq!(ret, TC_ACT_OK);
    let counters =
        datapath::endpoint_counters(ebpf.map(map_names::ENDPOINT_STATS).unwrap()).unwrap();
    let tx = counters[slot as usize].tx;
    assert_eq!((tx.frames, tx.bytes), (1, u64::from(wire)));
    let delivered = sum(
        &ebpf,
        map_names::VERDICT_STATS,
        Verdict::Delivered.index(Hook::TcEgress),
    );
    assert_eq!((delivered.frames, delivered.bytes), (1, u64::from(wire)));
}

/// Puts ME (observe) in the table of `ebpf`: its slot and the table's
/// capacity.
fn insert_me(ebpf: &mut Ebpf) -> (u32, u32) {
    let mut table = datapath::endpoint_table(ebpf).unwrap();
    let slot = table
        .insert(mvnet::datapath::EndpointEntry {
            mac: ME.mac,
            vlan: VLAN,
            ipv4: ME.ipv4,
            ipv6: ME.ipv6,
            enforce: false,
        })
        .unwrap();
    (slot, table.capacity())
}

fn egress_loaded() -> Ebpf {
    let mut ebpf = datapath::load().expect("loading the classifier object");
    let p: &mut SchedClassifier = ebpf
        .program_mut(program_names::TC_EGRESS)
        .unwrap()
        .try_into()
        .unwrap();
    p.load().expect("loading mvnet_tc_egress");
    ebpf
}

/// The CPUs this process may run on.
fn allowed_cpus() -> Vec<u32> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; the kernel fills it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) };
    assert_eq!(
        rc,
        0,
        "sched_getaffinity: {}",
        std::io::Error::last_os_error()
    );
    (0..libc::CPU_SETSIZE as u32)
        // SAFETY: the index is below CPU_SETSIZE.
        .filter(|&c| unsafe { libc::CPU_ISSET(c as usize, &set) })
        .collect()
}

/// Pins the calling thread to `cpu`.
fn pin_to_cpu(cpu: u32) {
    // SAFETY: as in allowed_cpus.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    unsafe { libc::CPU_SET(cpu as usize, &mut set) };
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) };
    assert_eq!(
        rc,
        0,
        "pinning to CPU {cpu}: {}",
        std::io::Error::last_os_error()
    );
}
