//! The ingress classifier on crafted and random frames, run through
//! BPF_PROG_TEST_RUN.
//!
//! The programs are loaded (never attached) from the object the controller
//! embeds and the endpoint table is filled through the map ABI. Each frame
//! is checked for its exact return code under the drop policy in force
//! (CONFIG flags, VLAN_POLICY) and for every counter it moves: the (hook,
//! verdict) counter, its VLAN counter, the endpoint counter of a delivered
//! frame, for a VLAN mismatch XDP passes the mismatch counter of the MAC's
//! owner, for a malformed frame XDP passes the malformed counter of the
//! owner of its destination MAC, and nothing else in any of the five
//! counter maps. The expected
//! outcomes of the crafted frames are written out by hand; those of random
//! frames come from [`reference`], a plain-Rust classifier that the crafted
//! table checks first.
//!
//! What BPF_PROG_TEST_RUN accepts (found on Linux 6.18; both runners
//! answer EINVAL otherwise, before the program runs):
//! * XDP: at least ETH_HLEN (14) bytes of frame. XDP metadata in front
//!   (`ctx_in.data`) does not help: the frame after it must still be 14
//!   bytes. So the parser's "shorter than the Ethernet header" branch cannot
//!   be run here; neither can it on a real device (AF_PACKET pads a short
//!   frame to the header length, NICs drop runts). Those lengths are still
//!   run, and each must be refused with nothing counted, or, on a kernel
//!   that runs them, be counted as malformed.
//! * TC (skb runner): at least 14 bytes, and when the Ethernet type is IPv4
//!   or IPv6 also the whole IP header (34 or 54 bytes in all). Such frames
//!   too must be refused with nothing counted, or be classified as usual.
//! * The skb runner builds the skb from the bytes without VLAN untagging:
//!   `vlan_present` is 0 and the tag stays in the bytes, so TC parses the
//!   same bytes as XDP and must reach the same verdicts.
use crate::rng::Rng;
use std::time::Instant;

use aya::{
    maps::{Array, HashMap, PerCpuArray},
    programs::{ProgramError, SchedClassifier, Xdp},
    sys::SyscallError,
    Ebpf, TestRun, TestRunOptions,
};
use macvlan_common::{
    config_flags, map_names, program_names, vlan_policy, Config, Counter, Endpoint,
    EndpointCounters, EndpointKey, Hook, Verdict, VlanCounters, DEFAULT_ENDPOINTS, ETH_P_8021AD,
    ETH_P_8021Q, VERDICT_SLOTS, VLAN_ANY, VLAN_SLOTS,
};
use mvnet::datapath::{self, EndpointEntry};
use mvnet_lab::lab::frames::{FrameSpec, Payload, Tag};

use crate::common::require_root;

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;

const ETH_HLEN: usize = 14;
const EINVAL: i32 = 22;

#[derive(Clone, Copy, Debug)]
struct Ep {
    mac: [u8; 6],
    vlan: u16,
    slot: u32,
}

// Slots are neither 0 nor consecutive, so a frame counted in the wrong slot
// (or in a slot taken from the wrong field) shows.
const EP_UNTAGGED: Ep = Ep {
    mac: [0x02, 0x42, 0x0a, 0x00, 0x00, 0x02],
    vlan: 0,
    slot: 5,
};
const EP_VLAN10: Ep = Ep {
    mac: [0x02, 0x42, 0x0a, 0x0a, 0x00, 0x02],
    vlan: 10,
    slot: 9,
};
const EP_VLAN20: Ep = Ep {
    mac: [0x02, 0x42, 0x0a, 0x14, 0x00, 0x02],
    vlan: 20,
    slot: DEFAULT_ENDPOINTS - 1,
};
const ENDPOINTS: [Ep; 3] = [EP_UNTAGGED, EP_VLAN10, EP_VLAN20];

/// A unicast MAC that is no endpoint.
const UNKNOWN: [u8; 6] = [0x02, 0x99, 0x00, 0x00, 0x00, 0x01];
/// Source of wire frames: no endpoint.
const WIRE_SRC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];
const BROADCAST: [u8; 6] = [0xff; 6];
const MCAST4: [u8; 6] = [0x01, 0x00, 0x5e, 0x00, 0x00, 0x01];
const MCAST6: [u8; 6] = [0x33, 0x33, 0x00, 0x00, 0x00, 0x01];

/// The classifier object, programs loaded, endpoint table filled.
struct Rig {
    ebpf: Ebpf,
    /// What CONFIG and VLAN_POLICY hold.
    policy: Policy,
}

/// The drop policy: CONFIG flags and the VLAN_POLICY array.
#[derive(Clone)]
struct Policy {
    config: u32,
    vlans: Vec<u32>,
}

impl Policy {
    /// Whether a frame with `outcome` is dropped, as classify.rs documents
    /// it: only unknown_mac, vlan_mismatch, malformed (and spoofed, an
    /// egress verdict) are ever dropped; all of them under CONFIG ENFORCE;
    /// malformed ones (which have no VLAN) under CONFIG DROP_MALFORMED; the
    /// others under VLAN_POLICY ENFORCE of their VLAN (an S-tag id folded
    /// into its 12 bits, as for the VLAN counters).
    fn drops(&self, outcome: &Outcome) -> bool {
        let droppable = matches!(
            outcome.verdict,
            Verdict::UnknownMac | Verdict::VlanMismatch | Verdict::Malformed | Verdict::Spoofed
        );
        if !droppable {
            return false;
        }
        if self.config & config_flags::ENFORCE != 0 {
            return true;
        }
        match outcome.vlan {
            None => self.config & config_flags::DROP_MALFORMED != 0,
            Some(vlan) => {
                let enforces =
                    |v: u16| self.vlans[usize::from(v & 0x0fff)] & vlan_policy::ENFORCE != 0;
                // A frame for an endpoint on the wrong VLAN is also dropped
                // when the endpoint's own network enforces: macvlan would
                // hand it to the endpoint by MAC.
                enforces(vlan) || outcome.home.is_some_and(enforces)
            }
        }
    }

    fn describe(&self) -> String {
        let vlans: Vec<String> = (0..self.vlans.len())
            .filter(|&v| self.vlans[v] != 0)
            .map(|v| format!("{v}:{:#x}", self.vlans[v]))
            .collect();
        format!(
            "CONFIG {:#x}, VLAN_POLICY [{}]",
            self.config,
            vlans.join(" ")
        )
    }
}

/// How a rig's endpoint table is filled.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Table {
    /// As the controller fills it: hash and direct index.
    Indexed,
    /// The hash only: the fallback path.
    HashOnly,
}

impl Rig {
    fn new() -> Self {
        Self::with_table(Table::Indexed)
    }

    fn with_table(table: Table) -> Self {
        let mut ebpf = datapath::load().expect("loading the classifier object");
        let xdp: &mut Xdp = ebpf
            .program_mut(program_names::XDP)
            .expect("XDP program")
            .try_into()
            .expect("XDP program type");
        xdp.load().expect("loading mvnet_xdp");
        let tc: &mut SchedClassifier = ebpf
            .program_mut(program_names::TC_INGRESS)
            .expect("TC ingress program")
            .try_into()
            .expect("TC ingress program type");
        tc.load().expect("loading mvnet_tc_ingress");

        match table {
            // Through the controller's table: the hash and the direct index.
            Table::Indexed => {
                let mut table = datapath::endpoint_table(&mut ebpf).expect("endpoint table");
                for ep in ENDPOINTS {
                    table
                        .insert_at(
                            EndpointEntry {
                                mac: ep.mac,
                                vlan: ep.vlan,
                                ipv4: None,
                                ipv6: None,
                                enforce: false,
                            },
                            ep.slot,
                        )
                        .unwrap();
                    assert!(table.is_indexed(ep.mac, ep.vlan), "{ep:?} not indexed");
                }
            }
            // The hash alone, as EndpointTable::insert_at writes it (the
            // exact key and the VLAN_ANY key, after reserving the MAC's
            // source word): every lookup takes the fallback path, as for
            // an endpoint whose index word collides.
            Table::HashOnly => {
                {
                    let mut index: aya::maps::Array<_, u64> = aya::maps::Array::try_from(
                        ebpf.map_mut(map_names::ENDPOINT_INDEX)
                            .expect("ENDPOINT_INDEX map"),
                    )
                    .expect("ENDPOINT_INDEX type");
                    use macvlan_common::{direct, mac_word, DEFAULT_ENDPOINTS};
                    for ep in ENDPOINTS {
                        let mac = mac_word(&ep.mac);
                        index
                            .set(direct::source_index(mac), direct::RESERVED, 0)
                            .unwrap();
                        // And its bit in the source filter.
                        let (at, bit) =
                            direct::source_bit(mac, direct::source_words(DEFAULT_ENDPOINTS));
                        let word = index.get(&at, 0).unwrap();
                        index.set(at, word | 1 << bit, 0).unwrap();
                    }
                }
                let mut table: HashMap<_, EndpointKey, Endpoint> =
                    HashMap::try_from(ebpf.map_mut(map_names::ENDPOINTS).expect("ENDPOINTS map"))
                        .expect("ENDPOINTS type");
                for ep in ENDPOINTS {
                    let value = Endpoint {
                        slot: ep.slot,
                        vlan: ep.vlan,
                        flags: 0,
                        ipv4: [0; 4],
                        ipv6: [0; 16],
                    };
                    table
                        .insert(EndpointKey::new(ep.mac, ep.vlan), value, 0)
                        .unwrap();
                    table
                        .insert(EndpointKey::new(ep.mac, VLAN_ANY), value, 0)
                        .unwrap();
                }
            }
        }
        {
            let table: HashMap<_, EndpointKey, Endpoint> =
                HashMap::try_from(ebpf.map(map_names::ENDPOINTS).expect("ENDPOINTS map"))
                    .expect("ENDPOINTS type");
            assert_eq!(table.keys().count(), 2 * ENDPOINTS.len());
        }

        let rig = Self {
            ebpf,
            policy: Policy {
                config: 0,
                vlans: vec![0; VLAN_SLOTS as usize],
            },
        };
        assert!(
            rig.counters() == Counters::zero(),
            "fresh maps have nonzero counters"
        );
        rig
    }

    fn set_config_flags(&mut self, flags: u32) {
        let mut config: Array<_, Config> =
            Array::try_from(self.ebpf.map_mut(map_names::CONFIG).expect("CONFIG map"))
                .expect("CONFIG type");
        config.set(0, Config { flags, _pad: 0 }, 0).unwrap();
        assert_eq!(config.get(&0, 0).unwrap().flags, flags);
        self.policy.config = flags;
    }

    fn set_vlan_policy(&mut self, vlan: u16, flags: u32) {
        let mut policy: Array<_, u32> = Array::try_from(
            self.ebpf
                .map_mut(map_names::VLAN_POLICY)
                .expect("VLAN_POLICY map"),
        )
        .expect("VLAN_POLICY type");
        assert_eq!(policy.len(), VLAN_SLOTS);
        policy.set(u32::from(vlan), flags, 0).unwrap();
        self.policy.vlans[usize::from(vlan)] = flags;
    }

    /// Sets CONFIG and every VLAN_POLICY entry that differs from `policy`.
    fn set_policy(&mut self, policy: &Policy) {
        self.set_config_flags(policy.config);
        for vlan in 0..VLAN_SLOTS as u16 {
            let flags = policy.vlans[usize::from(vlan)];
            if self.policy.vlans[usize::from(vlan)] != flags {
                self.set_vlan_policy(vlan, flags);
            }
        }
    }

    /// Runs `frame` `repeat` times through the program of `hook`; the return
    /// value is the program's (of the last run).
    fn run(&self, hook: Hook, frame: &[u8], repeat: u32) -> Result<u32, ProgramError> {
        let opts = TestRunOptions {
            data_in: Some(frame),
            repeat,
            ..TestRunOptions::new()
        };
        let result = match hook {
            Hook::XdpIngress => {
                let xdp: &Xdp = self
                    .ebpf
                    .program(program_names::XDP)
                    .unwrap()
                    .try_into()
                    .unwrap();
                xdp.test_run(opts)
            }
            Hook::TcIngress => {
                let tc: &SchedClassifier = self
                    .ebpf
                    .program(program_names::TC_INGRESS)
                    .unwrap()
                    .try_into()
                    .unwrap();
                tc.test_run(opts)
            }
            Hook::TcEgress => unreachable!("egress is not tested here"),
        };
        result.map(|r| r.return_value)
    }

    fn run_ok(&self, hook: Hook, frame: &[u8], repeat: u32) -> u32 {
        self.run(hook, frame, repeat).unwrap_or_else(|e| {
            panic!(
                "test run of {} on {} failed: {e:?}",
                hook.name(),
                hex(frame)
            )
        })
    }

    fn per_cpu_sum<V: aya::Pod + Default>(
        &self,
        name: &str,
        len: u32,
        merge: impl Fn(&mut V, &V),
    ) -> Vec<V> {
        let array: PerCpuArray<_, V> =
            PerCpuArray::try_from(self.ebpf.map(name).expect(name)).expect(name);
        assert_eq!(array.len(), len, "{name} size");
        array
            .iter()
            .map(|values| {
                let mut total = V::default();
                for v in values.expect(name).iter() {
                    merge(&mut total, v);
                }
                total
            })
            .collect()
    }

    /// The verdict counters of `hook` only (cheap: 7 lookups).
    fn verdicts(&self, hook: Hook) -> Vec<Counter> {
        let array: PerCpuArray<_, Counter> = PerCpuArray::try_from(
            self.ebpf
                .map(map_names::VERDICT_STATS)
                .expect("VERDICT_STATS"),
        )
        .unwrap();
        Verdict::ALL
            .iter()
            .map(|v| {
                let mut total = Counter::default();
                for c in array.get(&v.index(hook), 0).unwrap().iter() {
                    total.merge(c);
                }
                total
            })
            .collect()
    }

    /// Every counter, summed over CPUs.
    fn counters(&self) -> Counters {
        Counters {
            verdicts: self.per_cpu_sum(map_names::VERDICT_STATS, VERDICT_SLOTS, Counter::merge),
            endpoints: {
                let map = self
                    .ebpf
                    .map(map_names::ENDPOINT_STATS)
                    .expect("ENDPOINT_STATS");
                let all = datapath::endpoint_counters(map).expect("ENDPOINT_STATS");
                assert_eq!(all.len(), DEFAULT_ENDPOINTS as usize, "ENDPOINT_STATS size");
                all
            },
            mismatch: self.per_cpu_sum(
                map_names::ENDPOINT_MISMATCH,
                DEFAULT_ENDPOINTS,
                Counter::merge,
            ),
            malformed: self.per_cpu_sum(
                map_names::ENDPOINT_MALFORMED,
                DEFAULT_ENDPOINTS,
                Counter::merge,
            ),
            vlans: self.per_cpu_sum(map_names::VLAN_STATS, VLAN_SLOTS, |a, b| {
                let (a, b): (&mut VlanCounters, &VlanCounters) = (a, b);
                a.rx_xdp.merge(&b.rx_xdp);
                a.rx_tc.merge(&b.rx_tc);
                a.tx_tc.merge(&b.tx_tc);
            }),
        }
    }
}

/// Whether BPF_PROG_TEST_RUN on this kernel refuses `frame` for `hook`
/// (see the module comment).
fn kernel_refuses(hook: Hook, frame: &[u8]) -> bool {
    if frame.len() < ETH_HLEN {
        return true;
    }
    let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
    hook == Hook::TcIngress
        && match ethertype {
            0x0800 => frame.len() < ETH_HLEN + 20,
            0x86dd => frame.len() < ETH_HLEN + 40,
            _ => false,
        }
}

fn is_einval(e: &ProgramError) -> bool {
    matches!(e, ProgramError::SyscallError(SyscallError { io_error, .. })
        if io_error.raw_os_error() == Some(EINVAL))
}

fn hex(frame: &[u8]) -> String {
    let bytes: Vec<String> = frame.iter().map(|b| format!("{b:02x}")).collect();
    format!("[{} bytes] {}", frame.len(), bytes.join(" "))
}

/// All three counter maps, summed over CPUs.
#[derive(Clone, PartialEq, Eq)]
struct Counters {
    verdicts: Vec<Counter>,
    endpoints: Vec<EndpointCounters>,
    /// ENDPOINT_MISMATCH, by slot.
    mismatch: Vec<Counter>,
    /// ENDPOINT_MALFORMED, by slot.
    malformed: Vec<Counter>,
    vlans: Vec<VlanCounters>,
}

impl Counters {
    fn zero() -> Self {
        Self {
            verdicts: vec![Counter::default(); VERDICT_SLOTS as usize],
            endpoints: vec![EndpointCounters::default(); DEFAULT_ENDPOINTS as usize],
            mismatch: vec![Counter::default(); DEFAULT_ENDPOINTS as usize],
            malformed: vec![Counter::default(); DEFAULT_ENDPOINTS as usize],
            vlans: vec![VlanCounters::default(); VLAN_SLOTS as usize],
        }
    }

    /// Adds what `repeat` runs of a `len`-byte frame with `outcome` at
    /// `hook` must count, `dropped` or passed.
    fn add(&mut self, hook: Hook, outcome: &Outcome, len: usize, repeat: u32, dropped: bool) {
        let add = |c: &mut Counter| {
            c.frames += u64::from(repeat);
            c.bytes += len as u64 * u64::from(repeat);
        };
        add(&mut self.verdicts[outcome.verdict.index(hook) as usize]);
        if let Some(vlan) = outcome.vlan {
            let v = &mut self.vlans[usize::from(vlan & 0x0fff)];
            match hook {
                Hook::XdpIngress => add(&mut v.rx_xdp),
                Hook::TcIngress => add(&mut v.rx_tc),
                Hook::TcEgress => add(&mut v.tx_tc),
            }
        }
        if let Some(slot) = outcome.slot {
            let e = &mut self.endpoints[slot as usize];
            match hook {
                // Bridge-mode frames (from a local endpoint) reach TC
                // ingress only. TC ingress classifies only what XDP did
                // not count (a test run's frame carries no XDP mark), so
                // it counts wire frames too.
                Hook::TcIngress if outcome.src_local => add(&mut e.rx_local),
                Hook::XdpIngress | Hook::TcIngress => add(&mut e.rx_wire),
                Hook::TcEgress => {}
            }
        }
        // A VLAN mismatch or malformed wire frame let through counts for
        // the MAC's owner.
        let from_wire = hook == Hook::XdpIngress || !outcome.src_local;
        if let (true, Some(owner), false) = (from_wire, outcome.owner, dropped) {
            match outcome.verdict {
                Verdict::Malformed => add(&mut self.malformed[owner as usize]),
                _ => add(&mut self.mismatch[owner as usize]),
            }
        }
    }

    /// The verdict counters of `hook`, in [`Verdict::ALL`] order.
    fn verdicts_of(&self, hook: Hook) -> Vec<Counter> {
        Verdict::ALL
            .iter()
            .map(|v| self.verdicts[v.index(hook) as usize])
            .collect()
    }

    /// Every entry that differs from `want`, one per line.
    fn diff(&self, want: &Counters) -> String {
        let mut out = String::new();
        for h in Hook::ALL {
            for v in Verdict::ALL {
                let i = v.index(h) as usize;
                if self.verdicts[i] != want.verdicts[i] {
                    out += &format!(
                        "  VERDICT_STATS[{} {}]: got {:?}, want {:?}\n",
                        h.name(),
                        v.name(),
                        self.verdicts[i],
                        want.verdicts[i]
                    );
                }
            }
        }
        for (i, (g, w)) in self.endpoints.iter().zip(&want.endpoints).enumerate() {
            if g != w {
                out += &format!("  ENDPOINT_STATS[{i}]: got {g:?}, want {w:?}\n");
            }
        }
        for (i, (g, w)) in self.mismatch.iter().zip(&want.mismatch).enumerate() {
            if g != w {
                out += &format!("  ENDPOINT_MISMATCH[{i}]: got {g:?}, want {w:?}\n");
            }
        }
        for (i, (g, w)) in self.malformed.iter().zip(&want.malformed).enumerate() {
            if g != w {
                out += &format!("  ENDPOINT_MALFORMED[{i}]: got {g:?}, want {w:?}\n");
            }
        }
        for (i, (g, w)) in self.vlans.iter().zip(&want.vlans).enumerate() {
            if g != w {
                out += &format!("  VLAN_STATS[{i}]: got {g:?}, want {w:?}\n");
            }
        }
        out
    }

    #[track_caller]
    fn assert_eq(&self, want: &Counters, what: &str) {
        if self != want {
            panic!("counters after {what}:\n{}", self.diff(want));
        }
    }
}

/// What the classifier must make of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Outcome {
    verdict: Verdict,
    /// The parsed VLAN (outer tag id, 0x1000 set for an 802.1ad S-tag; 0 =
    /// untagged); `None` when the frame did not parse.
    vlan: Option<u16>,
    /// The endpoint slot of a delivered frame.
    slot: Option<u32>,
    /// The source MAC is an endpoint's (bridge-mode frame at TC ingress).
    src_local: bool,
    /// For a VLAN mismatch: the VLAN of the endpoint that owns the MAC.
    home: Option<u16>,
    /// For a VLAN mismatch, and for a malformed frame to a unicast MAC: the
    /// slot of the endpoint that owns the MAC.
    owner: Option<u32>,
}

const MALFORMED: Outcome = Outcome {
    verdict: Verdict::Malformed,
    vlan: None,
    slot: None,
    src_local: false,
    home: None,
    owner: None,
};

/// The classifier's rules (parse.rs, classify.rs) in plain Rust:
/// * shorter than the 14-byte Ethernet header → malformed;
/// * a type of 0x8100 or 0x88a8 announces a 4-byte tag (TCI, next type); up
///   to two tags are parsed, a tag cut short → malformed; whatever follows
///   the second tag is payload, even a third tag;
/// * the outermost tag decides the VLAN: its 12-bit id, 0x1000 added for an
///   802.1ad S-tag (which matches no endpoint); untagged = 0;
/// * group bit in the destination → broadcast (ff:ff:ff:ff:ff:ff) or
///   multicast; else (MAC, VLAN) an endpoint's → delivered to its slot;
///   else MAC an endpoint's on another VLAN → vlan_mismatch; else
///   unknown_mac.
fn reference(frame: &[u8]) -> Outcome {
    // A malformed frame still has an owner if its first 6 bytes are an
    // endpoint's (unicast) MAC.
    let malformed = Outcome {
        owner: frame
            .get(0..6)
            .filter(|dst| dst[0] & 1 == 0)
            .and_then(|dst| ENDPOINTS.iter().find(|e| e.mac == dst))
            .map(|e| e.slot),
        ..MALFORMED
    };
    if frame.len() < ETH_HLEN {
        return malformed;
    }
    let be16 = |at: usize| {
        frame
            .get(at..at + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
    };
    let mut ethertype = be16(12).unwrap();
    let mut at = ETH_HLEN;
    let mut vlan = None;
    // The outer tag decides, unless it is a priority tag (802.1Q id 0)
    // with a tag inside: the kernel strips it and takes the inner one's.
    let mut priority = false;
    for _ in 0..2 {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            break;
        }
        let Some(tci) = be16(at) else {
            return malformed;
        };
        let service = if ethertype == ETH_P_8021AD { 0x1000 } else { 0 };
        let id = (tci & 0x0fff) | service;
        match vlan {
            None => {
                vlan = Some(id);
                priority = ethertype == ETH_P_8021Q && id == 0;
            }
            Some(_) if priority => {
                vlan = Some(id);
                priority = false;
            }
            Some(_) => {}
        }
        let Some(next) = be16(at + 2) else {
            return malformed;
        };
        ethertype = next;
        at += 4;
    }
    let vlan = vlan.unwrap_or(0);
    let dst = &frame[0..6];
    let src = &frame[6..12];
    let (verdict, slot) = if dst[0] & 1 != 0 {
        if dst == BROADCAST {
            (Verdict::Broadcast, None)
        } else {
            (Verdict::Multicast, None)
        }
    } else if let Some(ep) = ENDPOINTS.iter().find(|e| e.mac == dst && e.vlan == vlan) {
        (Verdict::Delivered, Some(ep.slot))
    } else if ENDPOINTS.iter().any(|e| e.mac == dst) {
        (Verdict::VlanMismatch, None)
    } else {
        (Verdict::UnknownMac, None)
    };
    Outcome {
        verdict,
        vlan: Some(vlan),
        slot,
        src_local: ENDPOINTS.iter().any(|e| e.mac == src),
        home: match verdict {
            Verdict::VlanMismatch => ENDPOINTS.iter().find(|e| e.mac == dst).map(|e| e.vlan),
            _ => None,
        },
        owner: match verdict {
            Verdict::VlanMismatch => ENDPOINTS.iter().find(|e| e.mac == dst).map(|e| e.slot),
            _ => None,
        },
    }
}

fn expected_return(hook: Hook, outcome: &Outcome, policy: &Policy) -> u32 {
    match (hook, policy.drops(outcome)) {
        (Hook::XdpIngress, false) => XDP_PASS,
        (Hook::XdpIngress, true) => XDP_DROP,
        (_, false) => TC_ACT_OK,
        (_, true) => TC_ACT_SHOT,
    }
}

/// A crafted frame and what must become of it, written out by hand (not
/// computed by [`reference`]).
struct Case {
    name: String,
    frame: Vec<u8>,
    want: Want,
}

/// Verdict, parsed VLAN (see [`Outcome::vlan`]) and endpoint slot.
type Want = (Verdict, Option<u16>, Option<u32>);

/// Delivered to `ep`, the frame on VLAN `vlan`.
fn to(ep: Ep, vlan: u16) -> Want {
    (Verdict::Delivered, Some(vlan), Some(ep.slot))
}
fn mismatch(vlan: u16) -> Want {
    (Verdict::VlanMismatch, Some(vlan), None)
}
fn unknown(vlan: u16) -> Want {
    (Verdict::UnknownMac, Some(vlan), None)
}
fn broadcast(vlan: u16) -> Want {
    (Verdict::Broadcast, Some(vlan), None)
}
fn multicast(vlan: u16) -> Want {
    (Verdict::Multicast, Some(vlan), None)
}
const MALFORMED_WANT: Want = (Verdict::Malformed, None, None);
/// Parsed VLAN of an outer 802.1ad tag with this id.
const fn s_tag(id: u16) -> u16 {
    0x1000 | id
}

/// A UDP/IPv4 frame (60 bytes untagged) with these tags, outer first.
fn frame(dst: [u8; 6], src: [u8; 6], tags: &[Tag]) -> Vec<u8> {
    FrameSpec::udp4(dst, src).tagged(tags).build().unwrap()
}

/// Ethernet header + tags and nothing after: the shortest frame that
/// parses with these tags. The last type is 0x88b5 (local experimental),
/// not IP, so that the skb runner takes it.
fn header_only(dst: [u8; 6], tags: &[Tag]) -> Vec<u8> {
    let mut f = frame(dst, WIRE_SRC, tags);
    let len = ETH_HLEN + 4 * tags.len();
    f.truncate(len);
    f[len - 2..].copy_from_slice(&[0x88, 0xb5]);
    f
}

fn crafted_cases() -> Vec<Case> {
    let (q, ad) = (Tag::dot1q, Tag::dot1ad);
    let (u, v10, v20, src) = (EP_UNTAGGED.mac, EP_VLAN10.mac, EP_VLAN20.mac, WIRE_SRC);
    let mut pcp = frame(v10, src, &[q(10)]);
    pcp[14] = 0xb0; // TCI 0xb00a: PCP 5, DEI 1, id 10
    let arp = FrameSpec::udp4(BROADCAST, src)
        .payload(Payload::Arp {
            sender: [192, 0, 2, 1].into(),
            target: [192, 0, 2, 2].into(),
        })
        .build()
        .unwrap();
    let udp6 = FrameSpec::udp4(MCAST6, src)
        .payload(Payload::Udp6 {
            src: "2001:db8::1".parse().unwrap(),
            dst: "ff02::1".parse().unwrap(),
        })
        .build()
        .unwrap();
    let not_broadcast = [0xff, 0xff, 0xff, 0xff, 0xff, 0xfe];
    // One line per case: name, frame, expectation.
    #[rustfmt::skip]
    let table: Vec<(&str, Vec<u8>, Want)> = vec![
        ("untagged to the untagged endpoint", frame(u, src, &[]), to(EP_UNTAGGED, 0)),
        ("802.1Q 10 to the VLAN 10 endpoint", frame(v10, src, &[q(10)]), to(EP_VLAN10, 10)),
        ("802.1Q 20 to the VLAN 20 endpoint", frame(v20, src, &[q(20)]), to(EP_VLAN20, 20)),
        ("802.1Q 10 with PCP 5, DEI 1", pcp, to(EP_VLAN10, 10)),
        ("priority tag (802.1Q 0) to the untagged one", frame(u, src, &[q(0)]), to(EP_UNTAGGED, 0)),
        // A priority tag around a tag: the kernel strips it and delivers on
        // the inner tag's VLAN, which decides.
        ("priority tag + 802.1Q 10 to the VLAN 10 endpoint", frame(v10, src, &[q(0), q(10)]),
            to(EP_VLAN10, 10)),
        ("priority tag + 802.1Q 20 to the untagged one", frame(u, src, &[q(0), q(20)]),
            mismatch(20)),
        ("priority tag + 802.1ad 10", frame(v10, src, &[q(0), ad(10)]), mismatch(s_tag(10))),
        // QinQ: the outer tag decides.
        ("QinQ 802.1Q 10 + 802.1Q 30", frame(v10, src, &[q(10), q(30)]), to(EP_VLAN10, 10)),
        ("QinQ 802.1Q 10 + 802.1ad 20", frame(v10, src, &[q(10), ad(20)]), to(EP_VLAN10, 10)),
        ("QinQ 802.1Q 20 + 802.1Q 10", frame(v10, src, &[q(20), q(10)]), mismatch(20)),
        ("three tags (the third is payload)", frame(v10, src, &[q(10), q(20), q(30)]),
            to(EP_VLAN10, 10)),
        // An outer 802.1ad S-tag belongs to no 802.1Q endpoint.
        ("802.1ad 10 to the VLAN 10 endpoint", frame(v10, src, &[ad(10)]), mismatch(s_tag(10))),
        ("802.1ad 10 + 802.1Q 10", frame(v10, src, &[ad(10), q(10)]), mismatch(s_tag(10))),
        ("802.1ad 10 + 802.1Q 30", frame(v10, src, &[ad(10), q(30)]), mismatch(s_tag(10))),
        ("802.1ad 0 to the untagged endpoint", frame(u, src, &[ad(0)]), mismatch(s_tag(0))),
        // Known MAC, other VLAN.
        ("VLAN 10 endpoint on 802.1Q 20", frame(v10, src, &[q(20)]), mismatch(20)),
        ("VLAN 10 endpoint untagged", frame(v10, src, &[]), mismatch(0)),
        ("untagged endpoint on 802.1Q 10", frame(u, src, &[q(10)]), mismatch(10)),
        ("VLAN 20 endpoint on 802.1Q 10", frame(v20, src, &[q(10)]), mismatch(10)),
        ("unknown MAC untagged", frame(UNKNOWN, src, &[]), unknown(0)),
        ("unknown MAC on 802.1Q 10", frame(UNKNOWN, src, &[q(10)]), unknown(10)),
        ("unknown MAC on 802.1ad 10", frame(UNKNOWN, src, &[ad(10)]), unknown(s_tag(10))),
        ("unknown MAC on QinQ 30 + 10", frame(UNKNOWN, src, &[q(30), q(10)]), unknown(30)),
        ("broadcast ARP untagged", arp, broadcast(0)),
        ("broadcast on 802.1Q 10", frame(BROADCAST, src, &[q(10)]), broadcast(10)),
        ("broadcast on 802.1ad 10", frame(BROADCAST, src, &[ad(10)]), broadcast(s_tag(10))),
        ("IPv4 multicast 01:00:5e:00:00:01", frame(MCAST4, src, &[]), multicast(0)),
        ("IPv6 multicast 33:33:00:00:00:01", udp6, multicast(0)),
        ("IPv4 multicast on 802.1Q 20", frame(MCAST4, src, &[q(20)]), multicast(20)),
        ("group bit, not broadcast", frame(not_broadcast, src, &[]), multicast(0)),
        // Bridge mode: the source is an endpoint. XDP, which never looks at
        // the source, counts rx_wire; TC ingress counts rx_local.
        ("endpoint to endpoint, untagged to VLAN 10", frame(v10, u, &[q(10)]), to(EP_VLAN10, 10)),
        ("endpoint to endpoint, VLAN 20 to untagged", frame(u, v20, &[]), to(EP_UNTAGGED, 0)),
        ("endpoint to an unknown MAC", frame(UNKNOWN, v10, &[q(10)]), unknown(10)),
        ("endpoint to broadcast", frame(BROADCAST, v10, &[q(10)]), broadcast(10)),
        // The shortest frames that parse.
        ("14-byte untagged", header_only(u, &[]), to(EP_UNTAGGED, 0)),
        ("14-byte broadcast", header_only(BROADCAST, &[]), broadcast(0)),
        ("18-byte 802.1Q 10", header_only(v10, &[q(10)]), to(EP_VLAN10, 10)),
        ("22-byte QinQ 10 + 30", header_only(v10, &[q(10), q(30)]), to(EP_VLAN10, 10)),
    ];
    let mut cases: Vec<Case> = table
        .into_iter()
        .map(|(name, frame, want)| Case {
            name: name.to_owned(),
            frame,
            want,
        })
        .collect();
    let mut cut = |name: &str, frame: &[u8], lens: std::ops::Range<usize>, want: Want| {
        for len in lens {
            cases.push(Case {
                name: format!("{name} cut to {len} bytes"),
                frame: frame[..len].to_vec(),
                want,
            });
        }
    };
    let (h, bad) = (ETH_HLEN, MALFORMED_WANT);
    let (untagged, bcast) = (frame(u, src, &[]), frame(BROADCAST, src, &[]));
    let (tagged, s_tagged) = (frame(v10, src, &[q(10)]), frame(v10, src, &[ad(10)]));
    // Shorter than the Ethernet header.
    cut("untagged", &untagged, 0..h, bad);
    cut("broadcast", &bcast, 0..h, bad);
    // Cut inside the (outer) tag.
    cut("802.1Q 10", &tagged, h..h + 4, bad);
    cut("802.1ad 10", &s_tagged, h..h + 4, bad);
    // Cut inside the inner tag.
    let qinq = frame(v10, src, &[q(10), q(30)]);
    cut("QinQ 10 + 30", &qinq, h + 4..h + 8, bad);
    // Issue 13: `88a8 TCI 8100 TCI` (20 bytes) to an endpoint's MAC; under
    // observe XDP passes it and counts it for that endpoint.
    let s_qinq = frame(u, src, &[ad(10), q(20)]);
    cut(
        "802.1ad 10 + 802.1Q 20 to the untagged endpoint",
        &s_qinq,
        h + 4..h + 8,
        bad,
    );
    // A third tag cut short is payload: the frame is whole to the parser.
    let three = frame(v10, src, &[q(10), q(20), q(30)]);
    cut("three tags", &three, h + 8..h + 12, to(EP_VLAN10, 10));
    cases
}

/// Checks that the hand-written expectations and the reference classifier
/// agree, and returns each case with its outcome.
fn checked_cases() -> Vec<(Case, Outcome)> {
    crafted_cases()
        .into_iter()
        .map(|c| {
            let outcome = reference(&c.frame);
            assert_eq!(
                (outcome.verdict, outcome.vlan, outcome.slot),
                c.want,
                "reference classifier disagrees with the table on {}: {}",
                c.name,
                hex(&c.frame)
            );
            (c, outcome)
        })
        .collect()
}

/// How closely [`run_table`] looks at the counters after each frame.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Check {
    /// Every counter of every map after each frame.
    EveryCounter,
    /// The hook's verdict counters after each frame, every counter after
    /// the table (8,000 lookups less per frame).
    Verdicts,
}

/// Runs every case through `hook` under the rig's policy, checking return
/// codes and counters. A frame the kernel refuses to run (see
/// [`kernel_refuses`]) must be refused with EINVAL and count nothing. Each
/// frame runs `repeat` times in one BPF_PROG_TEST_RUN. Returns (run,
/// refused).
fn run_table(rig: &Rig, hook: Hook, repeat: u32, check: Check) -> (usize, usize) {
    let (mut run, mut refused) = (0, 0);
    let mut want = rig.counters();
    for (case, outcome) in checked_cases() {
        let what = format!(
            "{} ({}, {}): {}",
            case.name,
            hook.name(),
            rig.policy.describe(),
            hex(&case.frame)
        );
        match rig.run(hook, &case.frame, repeat) {
            Ok(rc) => {
                assert_eq!(
                    rc,
                    expected_return(hook, &outcome, &rig.policy),
                    "return code of {what}"
                );
                let dropped = rig.policy.drops(&outcome);
                want.add(hook, &outcome, case.frame.len(), repeat, dropped);
                run += 1;
            }
            Err(e) if is_einval(&e) && kernel_refuses(hook, &case.frame) => refused += 1,
            Err(e) => panic!("test run of {what} failed: {e:?}"),
        }
        match check {
            Check::EveryCounter => rig.counters().assert_eq(&want, &what),
            Check::Verdicts => assert_eq!(
                rig.verdicts(hook),
                want.verdicts_of(hook),
                "verdict counters after {what}"
            ),
        }
    }
    rig.counters().assert_eq(
        &want,
        &format!("the table ({}, {})", hook.name(), rig.policy.describe()),
    );
    (run, refused)
}

/// The policies the crafted frames run under, after "observe" (nothing
/// set): each with the drops it must cause.
fn policies() -> Vec<Policy> {
    let none = Policy {
        config: 0,
        vlans: vec![0; VLAN_SLOTS as usize],
    };
    let with_vlans = |config: u32, vlans: &[(u16, u32)]| {
        let mut p = Policy {
            config,
            ..none.clone()
        };
        for &(v, flags) in vlans {
            p.vlans[usize::from(v)] = flags;
        }
        p
    };
    vec![
        // Enforce on the whole root.
        with_vlans(config_flags::ENFORCE, &[]),
        // Only the ENFORCE bit of CONFIG enforces everything; DROP_MALFORMED
        // (also in here) drops malformed frames only.
        with_vlans(!(config_flags::ENFORCE | config_flags::VLANS_AT_TC), &[]),
        with_vlans(config_flags::DROP_MALFORMED, &[]),
        // Per VLAN: VLAN 10 enforces (so do S-tag 10 frames, folded), the
        // others do not; a policy bit other than ENFORCE does nothing.
        with_vlans(
            0,
            &[(10, vlan_policy::ENFORCE), (20, !vlan_policy::ENFORCE)],
        ),
        with_vlans(
            config_flags::DROP_MALFORMED,
            &[(0, vlan_policy::ENFORCE), (30, vlan_policy::ENFORCE)],
        ),
        // CONFIG ENFORCE overrides a VLAN policy that does not enforce.
        with_vlans(config_flags::ENFORCE | 0x8000_0000, &[(20, 0x2)]),
        none,
    ]
}

#[test]
fn xdp_crafted_frames_observe() {
    require_root();
    let rig = Rig::new();
    let (run, refused) = run_table(&rig, Hook::XdpIngress, 1, Check::EveryCounter);
    eprintln!("XDP: {run} crafted frames run, {refused} refused by the kernel");
}

#[test]
fn xdp_crafted_frames_under_every_policy() {
    require_root();
    let mut rig = Rig::new();
    // Each policy is read per frame: switching needs no reload. Every other
    // round runs each frame 5 times in one test run.
    for (i, policy) in policies().iter().enumerate() {
        rig.set_policy(policy);
        let repeat = if i % 2 == 0 { 1 } else { 5 };
        run_table(&rig, Hook::XdpIngress, repeat, Check::Verdicts);
    }
}

/// On a root with 802.1Q networks (`VLANS_AT_TC`) XDP classifies only
/// untagged unicast to an untagged endpoint (its fast path) and leaves
/// every other frame to TC, unmarked, uncounted and never dropped: XDP
/// cannot see a tag a veth peer or a NIC left in skb metadata, and would
/// drop a valid VLAN 10 frame whose tag it did not see as a VLAN mismatch.
/// TC ingress classifies and enforces them.
#[test]
fn xdp_leaves_tagged_frames_and_its_slow_path_to_tc_on_a_root_with_vlans() {
    require_root();
    let mut rig = Rig::new();
    let enforce = |rig: &mut Rig, config: u32| {
        rig.set_config_flags(config | config_flags::DROP_MALFORMED);
        rig.set_vlan_policy(0, vlan_policy::ENFORCE | vlan_policy::DROP_BROADCAST);
        rig.set_vlan_policy(10, vlan_policy::ENFORCE);
    };
    let cases = [
        // (frame, XDP return, TC return)
        (frame(EP_UNTAGGED.mac, WIRE_SRC, &[]), XDP_PASS, TC_ACT_OK),
        (
            frame(EP_VLAN10.mac, WIRE_SRC, &[Tag::dot1q(10)]),
            XDP_PASS,
            TC_ACT_OK,
        ),
        // What XDP sees of a VLAN 10 frame whose tag is in metadata, and of
        // a frame for a VLAN the root has no network on.
        (frame(EP_VLAN10.mac, WIRE_SRC, &[]), XDP_PASS, TC_ACT_SHOT),
        (frame(UNKNOWN, WIRE_SRC, &[]), XDP_PASS, TC_ACT_SHOT),
        (frame(BROADCAST, WIRE_SRC, &[]), XDP_PASS, TC_ACT_SHOT),
        (
            frame(UNKNOWN, WIRE_SRC, &[Tag::dot1q(10)]),
            XDP_PASS,
            TC_ACT_SHOT,
        ),
    ];
    // Without the flag, XDP decides on all of them.
    enforce(&mut rig, 0);
    let got: Vec<u32> = cases
        .iter()
        .map(|(f, _, _)| rig.run_ok(Hook::XdpIngress, f, 1))
        .collect();
    assert_eq!(
        got,
        [XDP_PASS, XDP_PASS, XDP_DROP, XDP_DROP, XDP_DROP, XDP_DROP]
    );
    let xdp_before = rig.verdicts(Hook::XdpIngress);
    let sum = |v: &[Counter]| v.iter().map(|c| c.frames).sum::<u64>();
    assert_eq!(sum(&xdp_before), 6);

    enforce(&mut rig, config_flags::VLANS_AT_TC);
    let before = rig.counters();
    for (f, xdp, _) in &cases {
        assert_eq!(rig.run_ok(Hook::XdpIngress, f, 3), *xdp, "{}", hex(f));
    }
    let after = rig.counters();
    let xdp = rig.verdicts(Hook::XdpIngress);
    // The fast path's frame only, 3 times.
    assert_eq!(sum(&xdp) - sum(&xdp_before), 3);
    assert_eq!(
        xdp[Verdict::Delivered as usize].frames - xdp_before[Verdict::Delivered as usize].frames,
        3
    );
    let rx = |c: &Counters, ep: Ep| c.endpoints[ep.slot as usize].rx_wire.frames;
    assert_eq!(rx(&after, EP_UNTAGGED) - rx(&before, EP_UNTAGGED), 3);
    assert_eq!(rx(&after, EP_VLAN10), rx(&before, EP_VLAN10));
    // TC ingress (no XDP mark in its test runs: what XDP left) classifies
    // and enforces them on their VLAN.
    let tc_before = rig.verdicts(Hook::TcIngress);
    for (f, _, tc) in &cases {
        assert_eq!(rig.run_ok(Hook::TcIngress, f, 1), *tc, "{}", hex(f));
    }
    let tc = rig.verdicts(Hook::TcIngress);
    let d = |v: Verdict| tc[v as usize].frames - tc_before[v as usize].frames;
    assert_eq!(
        [
            d(Verdict::Delivered),
            d(Verdict::VlanMismatch),
            d(Verdict::UnknownMac),
            d(Verdict::Broadcast)
        ],
        [2, 1, 2, 1]
    );
    assert_eq!(rx(&rig.counters(), EP_VLAN10) - rx(&after, EP_VLAN10), 1);
}

#[test]
fn tc_ingress_crafted_frames_under_every_policy() {
    require_root();
    let mut rig = Rig::new();
    let (run, refused) = run_table(&rig, Hook::TcIngress, 1, Check::EveryCounter);
    eprintln!("TC ingress: {run} crafted frames run, {refused} refused by the kernel");
    for (i, policy) in policies().iter().enumerate() {
        rig.set_policy(policy);
        let repeat = if i % 2 == 0 { 3 } else { 1 };
        run_table(&rig, Hook::TcIngress, repeat, Check::Verdicts);
    }
}

/// The hash alone (the path of an endpoint the direct index has no room
/// for) reaches the same verdicts and counts as the index.
#[test]
fn crafted_frames_through_the_hash_fallback() {
    require_root();
    let mut rig = Rig::with_table(Table::HashOnly);
    run_table(&rig, Hook::XdpIngress, 1, Check::EveryCounter);
    run_table(&rig, Hook::TcIngress, 2, Check::EveryCounter);
    rig.set_policy(&policies()[0]);
    run_table(&rig, Hook::XdpIngress, 3, Check::Verdicts);
}

/// Two endpoints whose direct-index words collide: the first is indexed,
/// the second lives in the hash only; both get their frames in their own
/// slots, and each leaves the table cleanly (the survivor keeps its
/// frames, the removed one becomes an unknown MAC).
#[test]
fn direct_index_collisions_fall_back_to_the_hash() {
    require_root();
    let mut rig = Rig::new();
    // Same bytes 4 and 5, VLAN 0: the same index word; different keys.
    let a = [0x02, 0x42, 0x0a, 0x01, 0x77, 0x33];
    let b = [0x02, 0x42, 0x0a, 0x02, 0x77, 0x33];
    let (slot_a, slot_b) = (100, 200);
    {
        let mut table = datapath::endpoint_table(&mut rig.ebpf).unwrap();
        for (mac, slot) in [(a, slot_a), (b, slot_b)] {
            let entry = EndpointEntry {
                mac,
                vlan: 0,
                ipv4: None,
                ipv6: None,
                enforce: false,
            };
            table.insert_at(entry, slot).unwrap();
        }
        assert!(table.is_indexed(a, 0));
        assert!(!table.is_indexed(b, 0), "b collides with a");
    }
    let send = |rig: &Rig, mac: [u8; 6], n: u32| {
        let f = frame(mac, WIRE_SRC, &[]);
        assert_eq!(rig.run_ok(Hook::XdpIngress, &f, n), XDP_PASS);
        f.len() as u64
    };
    let len = send(&rig, a, 3);
    send(&rig, b, 5);
    let c = rig.counters();
    assert_eq!(c.endpoints[slot_a as usize].rx_wire.frames, 3);
    assert_eq!(c.endpoints[slot_b as usize].rx_wire.frames, 5);
    assert_eq!(c.endpoints[slot_b as usize].rx_wire.bytes, 5 * len);

    // a leaves: its word is freed, b is still found through the hash.
    datapath::endpoint_table(&mut rig.ebpf)
        .unwrap()
        .remove(a, 0)
        .unwrap();
    let unknown_before = rig.verdicts(Hook::XdpIngress)[1].frames;
    send(&rig, a, 2);
    send(&rig, b, 4);
    let c = rig.counters();
    assert_eq!(c.endpoints[slot_a as usize].rx_wire.frames, 3);
    assert_eq!(c.endpoints[slot_b as usize].rx_wire.frames, 9);
    assert_eq!(
        rig.verdicts(Hook::XdpIngress)[1].frames - unknown_before,
        2,
        "frames to the removed MAC are unknown_mac"
    );
    // b leaves too; a re-enters and takes the free word again.
    let mut table = datapath::endpoint_table(&mut rig.ebpf).unwrap();
    table.remove(b, 0).unwrap();
    table
        .insert_at(
            EndpointEntry {
                mac: a,
                vlan: 0,
                ipv4: None,
                ipv6: None,
                enforce: false,
            },
            slot_a,
        )
        .unwrap();
    assert!(table.is_indexed(a, 0));
}

/// TC ingress tells a bridge-mode frame (its source an endpoint's MAC)
/// from a wire frame by the MAC's source word (`direct::source_index`)
/// before any hash lookup: a zero word means "no endpoint". That word may
/// have held another endpoint's key; when that endpoint leaves, the word
/// must not go back to 0 while the MAC whose source word it is remains.
#[test]
fn source_word_stays_set_when_its_key_leaves() {
    require_root();
    use macvlan_common::{direct, mac_word};
    let mut rig = Rig::new();
    let b = [0x02, 0x42, 0x0a, 0x03, 0x10, 0x20];
    // c's own index word (VLAN 0) is b's source word.
    let si = direct::source_index(mac_word(&b));
    let c = [0x02, 0x42, 0x0a, 0x04, si as u8, (si >> 8) as u8];
    assert_eq!(direct::index(mac_word(&c), 0), si);
    let (slot_b, slot_c) = (300, 301);
    let entry = |mac| EndpointEntry {
        mac,
        vlan: 0,
        ipv4: None,
        ipv6: None,
        enforce: false,
    };
    {
        let mut table = datapath::endpoint_table(&mut rig.ebpf).unwrap();
        table.insert_at(entry(c), slot_c).unwrap();
        table.insert_at(entry(b), slot_b).unwrap();
        assert!(table.is_indexed(c, 0) && table.is_indexed(b, 0));
        table.remove(c, 0).unwrap();
    }
    let to = EP_UNTAGGED;
    let before = rig.counters().endpoints[to.slot as usize];
    assert_eq!(
        rig.run_ok(Hook::TcIngress, &frame(to.mac, b, &[]), 3),
        TC_ACT_OK
    );
    assert_eq!(
        rig.run_ok(Hook::TcIngress, &frame(to.mac, WIRE_SRC, &[]), 2),
        TC_ACT_OK
    );
    let after = rig.counters().endpoints[to.slot as usize];
    assert_eq!(
        (
            after.rx_local.frames - before.rx_local.frames,
            after.rx_wire.frames - before.rx_wire.frames
        ),
        (3, 2),
        "(rx_local, rx_wire): b's frames are bridge-mode, WIRE_SRC's from the wire"
    );
}

/// With every slot of the largest capacity taken, the index has no zero
/// word left, so it can no longer prove a frame's source is no endpoint's;
/// the source filter still does for all but about one MAC in 64, and TC
/// ingress still tells bridge-mode frames (an endpoint's source) from wire
/// frames, whichever way it finds out.
#[test]
fn a_full_table_still_proves_wire_sources_without_the_hash() {
    require_root();
    use macvlan_common::{direct, MAX_ENDPOINTS};
    let capacity = MAX_ENDPOINTS;
    let mut ebpf = datapath::load_with_capacity(capacity).expect("loading at 65536");
    let tc: &mut SchedClassifier = ebpf
        .program_mut(program_names::TC_INGRESS)
        .unwrap()
        .try_into()
        .unwrap();
    tc.load().unwrap();
    // Docker-style MACs, 02:42 + an address of 10.64.0.0/14, slot by slot.
    let mac_of = |slot: u32| {
        let [_, b, c, d] = (0x0a40_0000 + slot).to_be_bytes();
        [0x02, 0x42, 0x0a, b, c, d]
    };
    let other = |i: u32| {
        let [_, b, c, d] = i.to_be_bytes();
        [0x02, 0x43, 0x0a, b, c, d]
    };
    {
        let mut table = datapath::endpoint_table(&mut ebpf).unwrap();
        for slot in 0..capacity {
            let entry = EndpointEntry {
                mac: mac_of(slot),
                vlan: 0,
                ipv4: None,
                ipv6: None,
                enforce: false,
            };
            table.insert_at(entry, slot).unwrap();
        }
        for slot in (0..capacity).step_by(97) {
            assert_eq!(table.source_marked(mac_of(slot)), Some(true), "slot {slot}");
        }
        let probes = 20_000;
        let marked = (0..probes)
            .filter(|i| table.source_marked(other(*i)) == Some(true))
            .count();
        assert!(
            marked * 40 <= probes as usize,
            "{marked} of {probes} MACs that are no endpoint's are marked in the source filter"
        );
    }
    {
        let index: aya::maps::Array<_, u64> =
            aya::maps::Array::try_from(ebpf.map(map_names::ENDPOINT_INDEX).unwrap()).unwrap();
        let zero = (0..direct::SLOTS)
            .filter(|i| index.get(i, 0).unwrap() == 0)
            .count();
        assert_eq!(zero, 0, "index words still 0 with every slot taken");
    }
    // Through TC ingress: frames to slot 7 from an unmarked wire source,
    // and from endpoint 9 (bridge mode).
    let wire = (0..)
        .map(other)
        .find(|m| {
            datapath::endpoint_table(&mut ebpf)
                .unwrap()
                .source_marked(*m)
                == Some(false)
        })
        .unwrap();
    let tc: &SchedClassifier = ebpf
        .program(program_names::TC_INGRESS)
        .unwrap()
        .try_into()
        .unwrap();
    for (src, repeat) in [(wire, 5), (mac_of(9), 3)] {
        let f = frame(mac_of(7), src, &[]);
        let opts = TestRunOptions {
            data_in: Some(&f),
            repeat,
            ..TestRunOptions::new()
        };
        assert_eq!(tc.test_run(opts).unwrap().return_value, TC_ACT_OK);
    }
    let c = datapath::endpoint_counters(ebpf.map(map_names::ENDPOINT_STATS).unwrap()).unwrap();
    assert_eq!(
        (c[7].rx_wire.frames, c[7].rx_local.frames),
        (5, 3),
        "(rx_wire, rx_local) of slot 7: 5 frames from the wire, 3 from endpoint 9"
    );
}

/// An endpoint MAC whose source-filter bit is clear (written by a writer
/// that does not keep the filter) is found and marked by the resync that
/// `mvnet restore` runs, and only that one.
#[test]
fn a_clear_source_bit_is_found_and_marked_again() {
    require_root();
    use macvlan_common::{direct, mac_word, DEFAULT_ENDPOINTS};
    let mut rig = Rig::new();
    let ep = ENDPOINTS[0];
    {
        let mut index: aya::maps::Array<_, u64> =
            aya::maps::Array::try_from(rig.ebpf.map_mut(map_names::ENDPOINT_INDEX).unwrap())
                .unwrap();
        let (at, bit) =
            direct::source_bit(mac_word(&ep.mac), direct::source_words(DEFAULT_ENDPOINTS));
        let word = index.get(&at, 0).unwrap();
        assert_eq!(word >> bit & 1, 1, "insert_at set the bit");
        index.set(at, word & !(1 << bit), 0).unwrap();
    }
    let table = datapath::endpoint_table(&mut rig.ebpf).unwrap();
    assert_eq!(table.source_marked(ep.mac), Some(false));
    assert_eq!(table.resync(false).unmarked, 1, "counted, not fixed");
    assert_eq!(table.source_marked(ep.mac), Some(false));
    assert_eq!(table.resync(true).unmarked, 1);
    assert_eq!(table.source_marked(ep.mac), Some(true));
    assert_eq!(table.resync(true).unmarked, 0);
}

/// TC and XDP reach the same verdict on every crafted frame both can run,
/// also when both run on one set of maps.
#[test]
fn tc_ingress_and_xdp_agree() {
    require_root();
    let rig = Rig::new();
    for (case, _) in checked_cases() {
        if kernel_refuses(Hook::TcIngress, &case.frame) {
            continue;
        }
        let before = rig.counters();
        rig.run_ok(Hook::XdpIngress, &case.frame, 3);
        rig.run_ok(Hook::TcIngress, &case.frame, 3);
        let after = rig.counters();
        let delta = |h: Hook| -> Vec<u64> {
            Verdict::ALL
                .iter()
                .map(|v| {
                    let i = v.index(h) as usize;
                    after.verdicts[i].frames - before.verdicts[i].frames
                })
                .collect()
        };
        assert_eq!(
            delta(Hook::TcIngress),
            delta(Hook::XdpIngress),
            "{}: {}",
            case.name,
            hex(&case.frame)
        );
        assert_eq!(delta(Hook::XdpIngress).iter().sum::<u64>(), 3);
    }
}

/// A random frame of 0..=128 bytes into `buf`: random bytes, with about a
/// quarter of destinations an endpoint's MAC, one in sixteen broadcast, and
/// 0, 1 or 2 tags (802.1Q or 802.1ad, random PCP/DEI, id 0, 10, 20 or
/// random) followed by a type that is sometimes yet another tag.
fn random_frame(rng: &mut Rng, buf: &mut Vec<u8>) {
    buf.clear();
    for _ in 0..16 {
        buf.extend_from_slice(&rng.next().to_le_bytes());
    }
    match rng.below(16) {
        0..=3 => buf[0..6].copy_from_slice(&ENDPOINTS[rng.below(3) as usize].mac),
        4 => buf[0..6].copy_from_slice(&BROADCAST),
        5 => buf[0] &= !1, // unicast, random (unknown)
        _ => {}
    }
    if rng.below(8) == 0 {
        buf[6..12].copy_from_slice(&ENDPOINTS[rng.below(3) as usize].mac);
    }
    let tags = rng.below(3) as usize;
    for t in 0..tags {
        let at = 12 + 4 * t;
        let tpid = if rng.below(4) == 0 {
            ETH_P_8021AD
        } else {
            ETH_P_8021Q
        };
        let id = match rng.below(4) {
            0 => 0,
            1 => 10,
            2 => 20,
            _ => rng.below(4096) as u16,
        };
        let tci = ((rng.below(16) as u16) << 12) | id;
        buf[at..at + 2].copy_from_slice(&tpid.to_be_bytes());
        buf[at + 2..at + 4].copy_from_slice(&tci.to_be_bytes());
    }
    let at = 12 + 4 * tags;
    let ethertype: u16 = match rng.below(8) {
        0 => ETH_P_8021Q,
        1 => ETH_P_8021AD,
        2 => 0x86dd,
        3 => 0x0806,
        4..=5 => 0x0800,
        _ => rng.next() as u16,
    };
    buf[at..at + 2].copy_from_slice(&ethertype.to_be_bytes());
    buf.truncate(rng.below(129) as usize);
}

/// Runs one random frame through `hook` and checks its return code against
/// the reference. Returns the reference outcome, or `None` if the kernel
/// refused to run the frame (EINVAL, and only where [`kernel_refuses`]).
fn run_random(rig: &Rig, hook: Hook, frame: &[u8]) -> Option<Outcome> {
    let outcome = reference(frame);
    match rig.run(hook, frame, 1) {
        Ok(rc) => {
            assert_eq!(
                rc,
                expected_return(hook, &outcome, &rig.policy),
                "return code at {} ({}), reference outcome {outcome:?}: {}",
                hook.name(),
                rig.policy.describe(),
                hex(frame)
            );
            Some(outcome)
        }
        Err(e) if is_einval(&e) && kernel_refuses(hook, frame) => None,
        Err(e) => panic!(
            "test run at {} of {} failed: {e:?}",
            hook.name(),
            hex(frame)
        ),
    }
}

/// The policies random frames run under, a quarter of the frames each.
fn random_policies() -> Vec<Policy> {
    let none = Policy {
        config: 0,
        vlans: vec![0; VLAN_SLOTS as usize],
    };
    let mut per_vlan = Policy {
        config: config_flags::DROP_MALFORMED,
        ..none.clone()
    };
    per_vlan.vlans[10] = vlan_policy::ENFORCE;
    per_vlan.vlans[0] = vlan_policy::ENFORCE;
    let mut other_vlans = none.clone();
    other_vlans.vlans[20] = vlan_policy::ENFORCE;
    for v in (1..VLAN_SLOTS as usize).step_by(7) {
        other_vlans.vlans[v] = vlan_policy::ENFORCE;
    }
    vec![
        none,
        Policy {
            config: config_flags::ENFORCE,
            ..per_vlan.clone()
        },
        per_vlan,
        other_vlans,
    ]
}

/// Random frames through `hook` until `frames` were classified, a quarter
/// under each of [`random_policies`], each frame checked against the
/// reference classifier: its return code at once, the hook's verdict
/// counters after every batch, every counter of every map at the end.
/// Returns the final counters.
fn random_frames_match_the_reference(hook: Hook, frames: u64, seed: u64) -> Counters {
    const BATCH: u64 = 4096;
    let start = Instant::now();
    let mut rig = Rig::new();
    let mut rng = Rng(seed);
    let mut want = Counters::zero();
    let mut buf = Vec::with_capacity(128);
    let (mut classified, mut refused) = (0u64, 0u64);
    let policies = random_policies();
    let mut phase = usize::MAX;
    while classified < frames {
        let now = (classified * policies.len() as u64 / frames) as usize;
        if now != phase {
            phase = now;
            rig.set_policy(&policies[phase]);
        }
        let batch_seed = rng.0;
        for _ in 0..BATCH {
            random_frame(&mut rng, &mut buf);
            match run_random(&rig, hook, &buf) {
                Some(outcome) => {
                    want.add(hook, &outcome, buf.len(), 1, rig.policy.drops(&outcome));
                    classified += 1;
                }
                None => refused += 1,
            }
        }
        let got = rig.verdicts(hook);
        let wanted = want.verdicts_of(hook);
        if got != wanted {
            find_culprit(&rig, hook, batch_seed, BATCH);
            panic!(
                "{} verdict counters after {classified} frames: got {got:?}, want {wanted:?}",
                hook.name()
            );
        }
    }
    let got = rig.counters();
    let total: u64 = got.verdicts_of(hook).iter().map(|c| c.frames).sum();
    assert_eq!(total, classified);
    got.assert_eq(&want, &format!("{classified} random frames"));
    let summary: Vec<String> = Verdict::ALL
        .iter()
        .zip(got.verdicts_of(hook))
        .map(|(v, c)| format!("{} {}", v.name(), c.frames))
        .collect();
    eprintln!(
        "{}: {classified} random frames classified in {:.1?} ({refused} refused by the \
         kernel): {}",
        hook.name(),
        start.elapsed(),
        summary.join(", ")
    );
    // Every ingress verdict was exercised, in quantity; spoofed is egress's.
    for (v, c) in Verdict::ALL.iter().zip(got.verdicts_of(hook)) {
        if *v == Verdict::Spoofed {
            assert_eq!(c.frames, 0);
        } else {
            assert!(
                c.frames > frames / 100,
                "only {} {} frames",
                c.frames,
                v.name()
            );
        }
    }
    got
}

/// At least a million random frames through mvnet_xdp.
#[test]
fn xdp_random_frames_match_the_reference() {
    require_root();
    let got = random_frames_match_the_reference(Hook::XdpIngress, 1_000_000, 0x6d76_6e65_745f_7864);
    // Delivery to every endpoint, in quantity.
    for ep in ENDPOINTS {
        let frames = got.endpoints[ep.slot as usize].rx_wire.frames;
        assert!(frames > 5_000, "only {frames} frames to slot {}", ep.slot);
    }
}

/// Random frames through mvnet_tc_ingress: the same rules, and the kernel
/// refuses exactly what [`kernel_refuses`] says (IPv4/IPv6 types included).
#[test]
fn tc_ingress_random_frames_match_the_reference() {
    require_root();
    let got = random_frames_match_the_reference(Hook::TcIngress, 200_000, 0x7463_5f69_6e67_7273);
    // Bridge-mode frames (source an endpoint) delivered to every endpoint.
    for ep in ENDPOINTS {
        let frames = got.endpoints[ep.slot as usize].rx_local.frames;
        assert!(
            frames > 100,
            "only {frames} bridged frames to slot {}",
            ep.slot
        );
    }
}

/// Replays a batch frame by frame and panics at the first frame whose
/// verdict differs from the reference.
fn find_culprit(rig: &Rig, hook: Hook, seed: u64, n: u64) {
    let mut rng = Rng(seed);
    let mut buf = Vec::with_capacity(128);
    for _ in 0..n {
        random_frame(&mut rng, &mut buf);
        let before = rig.verdicts(hook);
        let Some(outcome) = run_random(rig, hook, &buf) else {
            continue;
        };
        let after = rig.verdicts(hook);
        let got: Vec<Verdict> = Verdict::ALL
            .iter()
            .zip(before.iter().zip(&after))
            .filter(|(_, (b, a))| a.frames != b.frames)
            .map(|(v, _)| *v)
            .collect();
        if got != [outcome.verdict] {
            panic!(
                "frame at {} {}: classifier counted {got:?}, reference says {outcome:?}",
                hook.name(),
                hex(&buf)
            );
        }
    }
}

/// `--max-endpoints 65536`: the per-endpoint maps get 65,536 slots (the
/// hash twice that and the root's key), and endpoints in the highest
/// slots are found through the direct index (16 slot bits in its words)
/// and through the hash fallback, each frame counted in its own slot.
#[test]
fn the_largest_capacity_counts_in_its_highest_slots() {
    require_root();
    let capacity = macvlan_common::MAX_ENDPOINTS;
    assert_eq!(capacity, 65_536);
    let mut ebpf = datapath::load_with_capacity(capacity).expect("loading at 65536");
    let xdp: &mut Xdp = ebpf
        .program_mut(program_names::XDP)
        .unwrap()
        .try_into()
        .unwrap();
    xdp.load().unwrap();
    let stripes = datapath::stripes().unwrap();
    for (name, entries) in macvlan_common::endpoint_map_sizes(capacity, stripes) {
        let map = ebpf.map(name).expect(name);
        let data = match map {
            aya::maps::Map::HashMap(m)
            | aya::maps::Map::PerCpuArray(m)
            | aya::maps::Map::Array(m) => m,
            other => panic!("{name}: {other:?}"),
        };
        assert_eq!(data.info().unwrap().max_entries(), entries, "{name}");
    }
    // ENDPOINT_STATS: one stripe of `capacity` per possible CPU;
    // ENDPOINT_INDEX: the index, the fill word and 64 bits of source
    // filter per slot.
    let sizes = macvlan_common::endpoint_map_sizes(capacity, stripes);
    assert!(sizes.contains(&(map_names::ENDPOINT_STATS, capacity * stripes)));
    assert!(sizes.contains(&(map_names::ENDPOINT_INDEX, (1 << 16) + 1 + capacity)));
    // ENDPOINT_TX_INVALID_SEEN: a byte per slot, 8 to an element.
    assert!(sizes.contains(&(map_names::ENDPOINT_TX_INVALID_SEEN, capacity / 8)));
    // Same bytes 4 and 5 as `indexed`: one index word, so `hashed` lives
    // in the hash only.
    let indexed = [0x02, 0x42, 0x0a, 0x00, 0xff, 0xfe];
    let hashed = [0x02, 0x42, 0x0a, 0x01, 0xff, 0xfe];
    let second = [0x02, 0x42, 0x0a, 0x00, 0x10, 0x00];
    let (slot_indexed, slot_hashed, slot_second) = (capacity - 1, capacity - 2, 4096);
    {
        let mut table = datapath::endpoint_table(&mut ebpf).unwrap();
        assert_eq!(table.capacity(), capacity);
        for (mac, slot) in [
            (indexed, slot_indexed),
            (hashed, slot_hashed),
            (second, slot_second),
        ] {
            let entry = EndpointEntry {
                mac,
                vlan: 0,
                ipv4: None,
                ipv6: None,
                enforce: false,
            };
            table.insert_at(entry, slot).unwrap();
        }
        assert!(table.is_indexed(indexed, 0));
        assert!(table.is_indexed(second, 0));
        assert!(!table.is_indexed(hashed, 0), "hashed collides with indexed");
        // The lowest free slot comes next.
        let next = table
            .insert(EndpointEntry {
                mac: [0x02, 0x42, 0x0a, 0x00, 0x00, 0x07],
                vlan: 0,
                ipv4: None,
                ipv6: None,
                enforce: false,
            })
            .unwrap();
        assert_eq!(next, 0);
    }
    let xdp: &Xdp = ebpf
        .program(program_names::XDP)
        .unwrap()
        .try_into()
        .unwrap();
    let mut len = 0;
    for (mac, n) in [(indexed, 3), (hashed, 5), (second, 7)] {
        let f = frame(mac, WIRE_SRC, &[]);
        len = f.len() as u64;
        let r = xdp
            .test_run(TestRunOptions {
                data_in: Some(&f),
                repeat: n,
                ..TestRunOptions::new()
            })
            .unwrap();
        assert_eq!(r.return_value, XDP_PASS);
    }
    let stats = datapath::endpoint_counters(ebpf.map(map_names::ENDPOINT_STATS).unwrap()).unwrap();
    assert_eq!(stats.len(), capacity as usize);
    let rx = |slot: u32| stats[slot as usize].rx_wire;
    assert_eq!(rx(slot_indexed).frames, 3);
    assert_eq!(rx(slot_indexed).bytes, 3 * len);
    assert_eq!(rx(slot_hashed).frames, 5);
    assert_eq!(rx(slot_second).frames, 7);
    assert_eq!(rx(0).frames, 0);
}

/// The fill word beside the direct index counts the endpoints in the
/// table without walking the hash: a new key adds one, a replaced one
/// nothing, a removed one takes one away, and endpoints kept in the hash
/// only (their index word taken) count as well.
#[test]
fn the_fill_word_counts_the_table() {
    require_root();
    let mut ebpf = datapath::load().unwrap();
    let mut table = datapath::endpoint_table(&mut ebpf).unwrap();
    let entry = |mac: [u8; 6], vlan: u16| EndpointEntry {
        mac,
        vlan,
        ipv4: None,
        ipv6: None,
        enforce: false,
    };
    // Same bytes 4 and 5: the second lives in the hash only.
    let (a, b, c) = (
        [0x02, 0x42, 0x0a, 0x00, 0x00, 0x02],
        [0x02, 0x42, 0x0a, 0x01, 0x00, 0x02],
        [0x02, 0x42, 0x0a, 0x00, 0x00, 0x03],
    );
    assert_eq!(table.len(), 0);
    table.insert_at(entry(a, 0), 0).unwrap();
    table.insert_at(entry(b, 0), 1).unwrap();
    table.insert_at(entry(c, 10), 2).unwrap();
    assert!(!table.is_indexed(b, 0));
    assert_eq!(table.len(), 3);
    // Replaced (the enforce flag, another slot): still three.
    table
        .insert_at(
            EndpointEntry {
                enforce: true,
                ..entry(a, 0)
            },
            4,
        )
        .unwrap();
    table.insert_root([0x02, 0, 0, 0, 0, 1]).unwrap();
    assert_eq!(table.len(), 3);
    table.remove(b, 0).unwrap();
    assert_eq!(table.len(), 2);
    // A key that is not there is no error (a retry) and counts nothing.
    table.remove(b, 0).unwrap();
    assert_eq!(table.len(), 2);
    // The lowest free slot, from a walk of the hash: 0, 1 and 3 are free.
    assert_eq!(table.insert(entry(b, 20)).unwrap(), 0);
    assert_eq!(table.len(), 3);
    // `restore`'s check: the count agrees with a walk of the hash.
    assert_eq!(table.resync(false).count, None);
}

/// A capacity outside 1..=65536 is refused before anything is loaded.
#[test]
fn an_out_of_range_capacity_is_refused() {
    for bad in [0, 65_537] {
        let err = datapath::load_with_capacity(bad).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "--max-endpoints {bad} is out of range; give a capacity from 1 to 65536 (default 4096)"
            )
        );
    }
}

/// One MAC on two VLANs of a root (a MAC is unique per network only, so
/// `--mac-address` can do it): when either endpoint leaves, the MAC's
/// VLAN_ANY entry goes to the one that stays, so a frame to the MAC on a
/// third VLAN is still that endpoint's VLAN mismatch (counted for it, and
/// dropped by its VLAN's enforce), not an unknown MAC. With no endpoint
/// left on the MAC, the entry goes.
#[test]
fn a_mac_on_two_vlans_keeps_its_mismatch_entry_while_one_stays() {
    require_root();
    let mac = [0x02, 0x42, 0x0a, 0x63, 0x00, 0x07];
    let (slot10, slot20) = (11, 12);
    for (leaving, staying, staying_slot) in [(10, 20, slot20), (20, 10, slot10)] {
        let mut rig = Rig::new();
        {
            let mut table = datapath::endpoint_table(&mut rig.ebpf).unwrap();
            for (vlan, slot) in [(10, slot10), (20, slot20)] {
                let entry = EndpointEntry {
                    mac,
                    vlan,
                    ipv4: None,
                    ipv6: None,
                    enforce: false,
                };
                table.insert_at(entry, slot).unwrap();
            }
            table.remove_among(mac, leaving, &[0, 10, 20]).unwrap();
            let any = table.get(mac, VLAN_ANY).expect("the MAC's VLAN_ANY entry");
            assert_eq!((any.vlan, any.slot), (staying, staying_slot));
        }
        let f = frame(mac, WIRE_SRC, &[Tag::dot1q(30)]);
        assert_eq!(rig.run_ok(Hook::XdpIngress, &f, 3), XDP_PASS);
        let c = rig.counters();
        assert_eq!(
            c.verdicts[Verdict::VlanMismatch.index(Hook::XdpIngress) as usize].frames,
            3,
            "leaving {leaving}"
        );
        assert_eq!(c.mismatch[staying_slot as usize].frames, 3);
        // The staying endpoint's VLAN enforces: its MAC on VLAN 30 is
        // dropped, as macvlan would hand the frame to it by MAC.
        rig.set_vlan_policy(staying, vlan_policy::ENFORCE);
        assert_eq!(rig.run_ok(Hook::XdpIngress, &f, 1), XDP_DROP);
        // The last one leaves: the entry goes with it.
        let mut table = datapath::endpoint_table(&mut rig.ebpf).unwrap();
        table.remove_among(mac, staying, &[0, 10, 20]).unwrap();
        assert!(table.get(mac, VLAN_ANY).is_none());
    }
}
