//! The map ABI shared by mvnet's eBPF classifier (`macvlan-ebpf`) and its
//! controller (`macvlan-user`).
//!
//! Every type that crosses the kernel/user boundary is defined here once, as
//! `#[repr(C)]` plain data with explicit padding, so both sides agree on the
//! layout byte for byte and BTF describes it field by field for `bpftool`.
#![no_std]

/// Endpoint slots per root device unless `--max-endpoints` says otherwise:
/// the size the object's per-endpoint maps are compiled with. The
/// controller sets the real size of each root's maps when it loads the
/// classifier (see [`endpoint_map_sizes`]); their `max_entries` then record it.
pub const DEFAULT_ENDPOINTS: u32 = 4096;

/// The largest `--max-endpoints`: slots are 16 bits in the direct index's
/// words (see [`direct`]).
pub const MAX_ENDPOINTS: u32 = 1 << 16;

/// Endpoint hash capacity for `capacity` endpoint slots: every endpoint has
/// an exact (MAC, VLAN) entry plus one (MAC, [`VLAN_ANY`]) entry used to
/// tell a VLAN mismatch from an unknown MAC, and the root device's own MAC
/// has one ([`VLAN_ROOT`]), so that a full table still fits beside it.
pub const fn endpoint_keys(capacity: u32) -> u32 {
    2 * capacity + 1
}

/// [`endpoint_keys`] of [`DEFAULT_ENDPOINTS`]: the compiled hash size.
pub const ENDPOINT_KEYS: u32 = endpoint_keys(DEFAULT_ENDPOINTS);

/// The maps sized by the endpoint capacity, as (name, entries for
/// `capacity` slots on a machine with `stripes` possible CPUs, see
/// [`stripes`]): what the controller sets at load time.
pub const fn endpoint_map_sizes(capacity: u32, stripes: u32) -> [(&'static str, u32); 8] {
    [
        (map_names::ENDPOINTS, endpoint_keys(capacity)),
        (map_names::ENDPOINT_INDEX, direct::index_words(capacity)),
        (map_names::ENDPOINT_STATS, capacity * stripes),
        (map_names::ENDPOINT_MISMATCH, capacity),
        (map_names::ENDPOINT_MALFORMED, capacity),
        (map_names::ENDPOINT_DEVICES, capacity),
        (map_names::ENDPOINT_TX_INVALID, capacity),
        (
            map_names::ENDPOINT_TX_INVALID_SEEN,
            tx_seen::words(capacity),
        ),
    ]
}

/// Which slots' ENDPOINT_TX_INVALID ever counted (map
/// ENDPOINT_TX_INVALID_SEEN): one byte per slot, 8 to an element, set to
/// 1 by the endpoint-device program when it counts an invalid frame of
/// that slot and cleared by the controller when the slot is given to a
/// new endpoint. A reader of every endpoint's invalid count looks up only
/// the slots flagged here: the per-CPU array itself has no cheap full
/// read (a batch lookup of 65,536 slots takes about 29 ms, see
/// [`stripes`]), and nearly every slot is zero.
///
/// Bytes, not bits: a byte is set with a plain store, where a bit needs an
/// atomic OR (the program takes no atomics), and the controller clears one
/// with an atomic AND on its word, which no store of another byte can
/// undo. `BPF_F_MMAPABLE`, so the controller reads every flag through one
/// mapping.
pub mod tx_seen {
    /// `BPF_F_MMAPABLE`.
    pub const MAP_FLAGS: usize = super::stripes::MAP_FLAGS;
    /// Slots per element (its bytes).
    pub const SLOTS_PER_WORD: u32 = 8;

    /// Elements for `capacity` slots.
    pub const fn words(capacity: u32) -> u32 {
        capacity.div_ceil(SLOTS_PER_WORD)
    }

    /// The element holding `slot`'s flag, and the flag's byte in it.
    #[inline(always)]
    pub const fn at(slot: u32) -> (u32, u32) {
        (slot / SLOTS_PER_WORD, slot % SLOTS_PER_WORD)
    }
}

/// The per-endpoint counters ([`EndpointCounters`], map ENDPOINT_STATS):
/// one `BPF_F_MMAPABLE` array striped by CPU, `[cpu][slot]`, so that the
/// controller reads all of them through one mapping with no system call
/// per element (a per-CPU array's batch lookup costs a `get_next_key`, a
/// copy from every CPU and two `copy_to_user` per element: about 29 ms
/// at 65,536 slots).
///
/// Stripe `cpu` is written only by programs running on that CPU, as a
/// per-CPU map's copy is (see the classifier's `count_endpoint_rx`). There
/// is one stripe per possible CPU (`/sys/devices/system/cpu/possible`, what
/// aya's `nr_cpus` counts), each `capacity` elements long: the classifier
/// learns the capacity at load time from its global [`CAPACITY_GLOBAL`].
pub mod stripes {
    /// `BPF_F_MMAPABLE`.
    pub const MAP_FLAGS: usize = 1 << 10;
    /// The classifier's global (`.rodata`, set by the loader) holding the
    /// root's endpoint capacity: the length of each stripe.
    pub const CAPACITY_GLOBAL: &str = "ENDPOINT_CAPACITY";

    /// The element of `slot` in the stripe of `cpu`, for a root of
    /// `capacity` slots. `slot < capacity` is the caller's to check.
    #[inline(always)]
    pub const fn index(cpu: u32, capacity: u32, slot: u32) -> u32 {
        cpu * capacity + slot
    }
}

/// Number of VLAN counters: one per 12-bit VLAN id, 0 meaning untagged.
pub const VLAN_SLOTS: u32 = 4096;

/// The `vlan` of an [`EndpointKey`] that indexes a MAC on whatever VLAN its
/// endpoint is on. Never a real VLAN id (those are 12 bits).
pub const VLAN_ANY: u16 = 0xffff;

/// The `vlan` of an [`EndpointKey`] that marks the root device's own MAC:
/// frames it sends (its host stack, its VLAN sub-interfaces) are not
/// spoofed. Never a real VLAN id.
pub const VLAN_ROOT: u16 = 0xfffe;

/// Ethernet types the parser knows.
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;
pub const ETH_P_IPV4: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_ARP: u16 = 0x0806;
/// Pre-standard QinQ TPIDs some switches still use: a tag to us.
pub const ETH_P_QINQ1: u16 = 0x9100;
pub const ETH_P_QINQ2: u16 = 0x9200;
pub const ETH_P_QINQ3: u16 = 0x9300;

/// Whether Ethertype `t` announces a VLAN tag (802.1Q, 802.1ad or a
/// pre-standard QinQ TPID).
#[inline(always)]
pub const fn is_tag_tpid(t: u16) -> bool {
    matches!(
        t,
        ETH_P_8021Q | ETH_P_8021AD | ETH_P_QINQ1 | ETH_P_QINQ2 | ETH_P_QINQ3
    )
}

/// Pin names of the maps, under the root device's pin directory.
pub mod map_names {
    pub const ENDPOINTS: &str = "ENDPOINTS";
    pub const ENDPOINT_STATS: &str = "ENDPOINT_STATS";
    pub const VLAN_STATS: &str = "VLAN_STATS";
    pub const VERDICT_STATS: &str = "VERDICT_STATS";
    pub const CONFIG: &str = "CONFIG";
    pub const VLAN_POLICY: &str = "VLAN_POLICY";
    pub const ENDPOINT_INDEX: &str = "ENDPOINT_INDEX";
    pub const ENDPOINT_MISMATCH: &str = "ENDPOINT_MISMATCH";
    pub const ENDPOINT_MALFORMED: &str = "ENDPOINT_MALFORMED";
    pub const ENDPOINT_DEVICES: &str = "ENDPOINT_DEVICES";
    pub const ENDPOINT_TX_INVALID: &str = "ENDPOINT_TX_INVALID";
    pub const ENDPOINT_TX_INVALID_SEEN: &str = "ENDPOINT_TX_INVALID_SEEN";
}

/// Program names as they appear in the object file.
pub mod program_names {
    pub const XDP: &str = "mvnet_xdp";
    pub const TC_INGRESS: &str = "mvnet_tc_ingress";
    pub const TC_EGRESS: &str = "mvnet_tc_egress";
    /// TC egress on each endpoint's own macvlan device (inside the
    /// container's namespace): the source checks, by device.
    pub const TC_ENDPOINT: &str = "mvnet_tc_endpoint";
    /// Returns XDP_PASS only: the benchmarks' baseline.
    pub const XDP_PASS: &str = "mvnet_xdp_pass";
    /// Returns TC_ACT_OK only: the end-to-end benchmark attaches it to TC
    /// ingress and egress beside `XDP_PASS`, as the classifier is attached.
    pub const TC_PASS: &str = "mvnet_tc_pass";
    /// The least per-endpoint counting can cost: the datapath benchmark's
    /// reference row.
    pub const XDP_FLOOR: &str = "mvnet_xdp_floor";
    /// `XDP_FLOOR` at TC ingress: the end-to-end benchmark's reference for
    /// the classifier at TC alone.
    pub const TC_FLOOR: &str = "mvnet_tc_floor";
}

/// Key of the endpoint map: destination MAC and VLAN id, 8 bytes so the
/// kernel hashes it with the word-wise jhash2 path.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct EndpointKey {
    pub mac: [u8; 6],
    /// 0 = untagged, 1..=4094 = 802.1Q VLAN id, [`VLAN_ANY`] = any.
    pub vlan: u16,
}

impl EndpointKey {
    pub const fn new(mac: [u8; 6], vlan: u16) -> Self {
        Self { mac, vlan }
    }

    /// The key of a MAC held as a [`mac_word`].
    #[inline(always)]
    pub const fn from_word(mac: u64, vlan: u16) -> Self {
        // SAFETY: 8 bytes of plain data either way; on a little-endian
        // machine (bpfel, x86) the word's bytes are the MAC's bytes in
        // order, then the VLAN's. One register store instead of eight byte
        // stores on the classifier's path.
        unsafe { core::mem::transmute::<u64, EndpointKey>((mac & MAC_MASK) | (vlan as u64) << 48) }
    }
}

/// The bits of a [`mac_word`].
pub const MAC_MASK: u64 = 0xffff_ffff_ffff;

/// A MAC as the classifier holds it: its six bytes in the low 48 bits of a
/// `u64`, in memory order (what a little-endian 8-byte load of a frame's
/// address gives, masked). The first byte, whose low bit marks group
/// addresses, is the word's lowest byte.
#[inline(always)]
pub const fn mac_word(mac: &[u8; 6]) -> u64 {
    u64::from_le_bytes([mac[0], mac[1], mac[2], mac[3], mac[4], mac[5], 0, 0])
}

/// The bytes of a [`mac_word`].
#[inline(always)]
pub const fn mac_bytes(word: u64) -> [u8; 6] {
    let b = word.to_le_bytes();
    [b[0], b[1], b[2], b[3], b[4], b[5]]
}

/// Value of the endpoint map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Endpoint {
    /// Index into [`EndpointCounters`] arrays; below the root's capacity
    /// (at most [`MAX_ENDPOINTS`]).
    pub slot: u32,
    /// The endpoint's own VLAN (0 = untagged).
    pub vlan: u16,
    /// [`endpoint_flags`] bits.
    pub flags: u16,
    /// The endpoint's IPv4 address in network order (0.0.0.0 = none).
    pub ipv4: [u8; 4],
    /// The endpoint's IPv6 address (:: = none).
    pub ipv6: [u8; 16],
}

/// Value of the device identity map (`ENDPOINT_DEVICES`), keyed by the
/// ifindex of the endpoint's macvlan device: what that device may send as.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct DeviceIdentity {
    /// The endpoint's MAC: the only source MAC (and ARP sender MAC) allowed.
    pub mac: [u8; 6],
    /// The endpoint's VLAN (0 = untagged); its policy applies.
    pub vlan: u16,
    /// The endpoint's slot, for its counters.
    pub slot: u32,
    /// The endpoint's IPv4 address in network order (0.0.0.0 = none).
    pub ipv4: [u8; 4],
    /// The endpoint's global IPv6 address (:: = none).
    pub ipv6: [u8; 16],
}

pub mod endpoint_flags {
    /// Frames that are invalid for this endpoint are dropped, not only counted.
    pub const ENFORCE: u16 = 1 << 0;
    /// The endpoint's device has the source checks (`mvnet_tc_endpoint`,
    /// registered in ENDPOINT_DEVICES): every frame of its own that reaches
    /// the parent's egress carries its stamp ([`device_stamp`](super::device_stamp));
    /// one without it skipped the checks (PACKET_QDISC_BYPASS, AF_XDP).
    pub const DEVICE_CHECKED: u16 = 1 << 1;
}

/// The high half of what `mvnet_tc_endpoint` writes to `__sk_buff.cb[0]`
/// of a frame that passed its source checks (0 for any other frame), for
/// the parent's egress to see; the low half is the slot of the endpoint
/// whose device checked it ([`device_stamp`]). The kernel keeps it in
/// `qdisc_skb_cb(skb)->data`, which nothing between the endpoint device's
/// TC egress and the parent's (a qdisc on the device, `macvlan_queue_xmit`,
/// `__dev_queue_xmit` on the lower device, an 802.1Q device's xmit) writes;
/// a process cannot set it (a packet socket's skb starts zeroed, and there
/// is no socket option for it). The slot is there because a qdisc on the
/// device runs after its TC egress: its filter actions (`skbmod`, `pedit`)
/// may rewrite a checked frame into another endpoint's or the root's, and
/// the stamp must then not vouch for it.
pub const DEVICE_STAMP: u32 = 0x6d76_0000;

/// The stamp of a frame that endpoint `slot`'s device checked (slots are
/// below [`MAX_ENDPOINTS`], 2^16).
pub const fn device_stamp(slot: u32) -> u32 {
    DEVICE_STAMP | (slot & 0xffff)
}

/// The slot whose device stamped a frame with `cb0`, if it is a stamp.
pub const fn stamped_slot(cb0: u32) -> Option<u32> {
    if cb0 & 0xffff_0000 == DEVICE_STAMP {
        Some(cb0 & 0xffff)
    } else {
        None
    }
}

/// How ENDPOINT_DEVICES is keyed. A device whose check runs from a cls_bpf
/// filter (clsact: every foreign endpoint, and every endpoint before Linux
/// 6.6) is keyed by its endpoint's slot with this bit set: the filter
/// carries the slot as its classid's minor (TCA_BPF_CLASSID), and
/// `cls_bpf_classify` copies that to `skb->tc_classid` before it runs the
/// program, so it tells apart devices that share an ifindex in different
/// namespaces (every sandbox numbers its first device 2). A device checked
/// through tcx (no classid there) is keyed by its ifindex, which is below
/// 2^31 and chosen by mvnet per slot.
pub const DEVICE_KEY_CLASSID: u32 = 1 << 31;

/// The major of the classid of a device's cls_bpf filter ("mv").
pub const DEVICE_CLASSID_MAJOR: u16 = 0x6d76;

/// The ENDPOINT_DEVICES key of a device whose filter's classid minor is
/// `minor` (see [`DEVICE_KEY_CLASSID`]).
pub const fn device_key_of_classid(minor: u16) -> u32 {
    DEVICE_KEY_CLASSID | minor as u32
}

/// A frame and byte counter.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Counter {
    pub frames: u64,
    pub bytes: u64,
}

impl Counter {
    #[inline(always)]
    pub fn add(&mut self, bytes: u64) {
        self.frames += 1;
        self.bytes += bytes;
    }

    pub fn merge(&mut self, other: &Counter) {
        self.frames += other.frames;
        self.bytes += other.bytes;
    }
}

/// Per-endpoint counters (an array striped by CPU, see [`stripes`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct EndpointCounters {
    /// Delivered to the endpoint, from the wire (counted by XDP on the parent).
    pub rx_wire: Counter,
    /// Delivered to the endpoint from another endpoint on the same parent
    /// (bridge mode; seen only by TC ingress).
    pub rx_local: Counter,
    /// Valid frames the endpoint sent (delivered at TC egress on the
    /// parent); its spoofed and malformed ones are counted under their
    /// verdict, and by its device as ENDPOINT_TX_INVALID.
    pub tx: Counter,
}

/// Per-VLAN counters (a per-CPU array indexed by VLAN id).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct VlanCounters {
    /// Frames seen by XDP on the parent.
    pub rx_xdp: Counter,
    /// Frames seen by TC ingress on the parent.
    pub rx_tc: Counter,
    /// Frames seen by TC egress on the parent.
    pub tx_tc: Counter,
}

/// Where a frame was classified.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Hook {
    XdpIngress = 0,
    TcIngress = 1,
    TcEgress = 2,
}

impl Hook {
    pub const COUNT: u32 = 3;
    pub const ALL: [Hook; 3] = [Hook::XdpIngress, Hook::TcIngress, Hook::TcEgress];

    pub const fn name(self) -> &'static str {
        match self {
            Hook::XdpIngress => "xdp_ingress",
            Hook::TcIngress => "tc_ingress",
            Hook::TcEgress => "tc_egress",
        }
    }
}

/// What the classifier decided about a frame.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verdict {
    /// Unicast to a known endpoint on its VLAN (ingress), or a valid frame
    /// from a known endpoint (egress).
    Delivered = 0,
    /// Unicast to a MAC that is no endpoint of this parent.
    UnknownMac = 1,
    /// Unicast to a known endpoint's MAC, but on another VLAN.
    VlanMismatch = 2,
    /// Too short for the headers it announces.
    Malformed = 3,
    Broadcast = 4,
    Multicast = 5,
    /// Egress: source MAC or IP that is not the sending endpoint's.
    Spoofed = 6,
}

impl Verdict {
    pub const COUNT: u32 = 7;
    pub const ALL: [Verdict; 7] = [
        Verdict::Delivered,
        Verdict::UnknownMac,
        Verdict::VlanMismatch,
        Verdict::Malformed,
        Verdict::Broadcast,
        Verdict::Multicast,
        Verdict::Spoofed,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Verdict::Delivered => "delivered",
            Verdict::UnknownMac => "unknown_mac",
            Verdict::VlanMismatch => "vlan_mismatch",
            Verdict::Malformed => "malformed",
            Verdict::Broadcast => "broadcast",
            Verdict::Multicast => "multicast",
            Verdict::Spoofed => "spoofed",
        }
    }

    /// Index of (hook, verdict) in the verdict counter array.
    #[inline(always)]
    pub const fn index(self, hook: Hook) -> u32 {
        hook as u32 * Verdict::COUNT + self as u32
    }
}

/// Size of the verdict counter array.
pub const VERDICT_SLOTS: u32 = Hook::COUNT * Verdict::COUNT;

/// The direct endpoint index: the fast path in front of the ENDPOINTS hash.
///
/// An array of [`direct::SLOTS`] `u64`s indexed by the low 16 bits of the
/// MAC mixed with the VLAN id; each word packs the rest of the key, the
/// endpoint's slot and a valid bit. A frame whose word matches needs one
/// inlined array load instead of a hash lookup (jhash, bucket walk, key
/// compare), which dominated the classifier's cost. Two endpoints whose
/// words would collide keep the second in the hash only; a miss always
/// falls back to the hash, so the index is an accelerator, never the truth.
///
/// One word per entry so that a reader never sees half an update: the
/// controller writes it with a single atomic 64-bit store through an mmap of
/// the (`BPF_F_MMAPABLE`) array, and the program reads it with one load.
pub mod direct {
    /// Index entries: 64 Ki words, 512 KiB.
    pub const SLOTS: u32 = 1 << 16;
    /// The map's entries: the index, then one word ([`FILL`]) that the
    /// program never reads.
    pub const WORDS: u32 = SLOTS + 1;
    /// The word after the index: how many endpoints the ENDPOINTS hash
    /// holds (its keys on a real VLAN, not the VLAN_ANY twins or the
    /// root's), which the controller adds to and takes from with atomic
    /// operations through the mapping as it inserts and removes them, so
    /// that a reader counts them without walking the hash (262,144 buckets
    /// at 65,536 slots). Pins made before it have [`SLOTS`] words only.
    ///
    /// The count is the word's low half ([`FILL_COUNT`]). The high half
    /// ([`FILL_STRAYS_SHIFT`]) counts the ENDPOINT_DEVICES entries under a
    /// key that is not one of its slot's own (a device that existed before
    /// its slot was, registered again by `restore` with the ifindex it
    /// has): while it is 0, removing a slot's devices looks at the slot's
    /// own keys alone instead of reading the whole table. It is counted up
    /// before such an entry is added and down after one is deleted, so a
    /// writer killed in between leaves it too high (the table is read),
    /// never too low.
    pub const FILL: u32 = SLOTS;
    /// The endpoint count's bits of the [`FILL`] word.
    pub const FILL_COUNT: u64 = 0xffff_ffff;
    /// Where the stray device keys' count starts in the [`FILL`] word.
    pub const FILL_STRAYS_SHIFT: u32 = 32;
    /// `BPF_F_MMAPABLE`.
    pub const MAP_FLAGS: usize = 1 << 10;
    pub const VALID: u64 = 1 << 63;
    /// Slot bits 0..14 sit at word bits 48..62 and slot bit 15 at word bit
    /// 47 (the key takes bits 0..44, the valid bit 63). A slot below 4096
    /// gives the word of the 12-bit layout before `--max-endpoints`, so
    /// classifiers pinned by an earlier mvnet (4096 slots) read the words
    /// this one writes, and the other way round.
    const SLOT_SHIFT: u32 = 48;
    const SLOT_LOW: u64 = 0x7fff;
    const SLOT_HIGH_BIT: u32 = 47;
    /// The bits that identify the key: MAC bytes 0..4, VLAN, valid.
    pub const KEY_MASK: u64 = VALID | 0x1fff_ffff_ffff;

    /// Where the key (`mac`, a [`mac_word`](super::mac_word), `vlan`) lives.
    #[inline(always)]
    pub const fn index(mac: u64, vlan: u16) -> u32 {
        // MAC bytes 4 and 5: the ones that differ between Docker's MACs
        // (02:42 + the IPv4 address).
        let low = (mac >> 32) as u32 & 0xffff;
        // Spread VLANs so that endpoints with the same low MAC bytes on two
        // VLANs (Docker MACs of .2 on two networks) land apart; VLAN 0
        // leaves the MAC bits as they are.
        (low ^ (vlan as u32).wrapping_mul(0x9e37)) & (SLOTS - 1)
    }

    /// The key part of a word: MAC bytes 0..4, the VLAN (13 bits, with the
    /// S-tag mark), and the valid bit. The low MAC bytes are implied by the
    /// index.
    #[inline(always)]
    pub const fn key(mac: u64, vlan: u16) -> u64 {
        VALID | (mac & 0xffff_ffff) | ((vlan as u64 & 0x1fff) << 32)
    }

    /// The word for the key with endpoint slot `slot` (< 65,536).
    #[inline(always)]
    pub const fn word(mac: u64, vlan: u16, slot: u32) -> u64 {
        let slot = slot as u64;
        key(mac, vlan) | (slot & SLOT_LOW) << SLOT_SHIFT | (slot >> 15 & 1) << SLOT_HIGH_BIT
    }

    /// The slot of a word whose key part matched.
    #[inline(always)]
    pub const fn slot(word: u64) -> u32 {
        ((word >> SLOT_SHIFT) & SLOT_LOW | (word >> (SLOT_HIGH_BIT - 15)) & 0x8000) as u32
    }

    /// A word that holds no key ([`VALID`] clear, so it matches none) but
    /// is not empty. The controller never sets a word back to 0: removing
    /// a key leaves `RESERVED`, and before it puts an endpoint's MAC in the
    /// ENDPOINTS hash it reserves the word at [`source_index`] of that MAC
    /// if it is 0. So while the word at `source_index(mac)` is 0, no
    /// endpoint (on any VLAN) has `mac`: TC ingress of a classifier pinned
    /// before the source filter ([`SOURCE_BASE`]) tells a wire frame from
    /// a bridge-mode one by it, without a hash lookup while most words are
    /// 0. A key may still take a reserved word ([`VALID`] clear = free).
    pub const RESERVED: u64 = 1;

    /// The word that says whether `mac` may be an endpoint's on any VLAN
    /// (see [`RESERVED`]): the index of (`mac`, `VLAN_ANY`), a key that is
    /// never in the index itself.
    #[inline(always)]
    pub const fn source_index(mac: u64) -> u32 {
        index(mac, super::VLAN_ANY)
    }

    /// The source filter: after the fill word, a bitmap of
    /// [`source_words`] words with one bit set for every MAC that was ever
    /// an endpoint's ([`source_bit`]), set before the MAC goes into the
    /// ENDPOINTS hash and never cleared. A clear bit proves that a frame's
    /// source is no endpoint's: TC ingress then needs no hash lookup.
    ///
    /// Why a filter of its own: the source word in the index
    /// ([`source_index`]) proves that only while most index words are 0.
    /// With 65,536 endpoints every word of the index is taken, so every
    /// wire frame TC ingress classified (TC alone, as `--xdp-mode auto`
    /// attaches on a veth) paid a hash miss: 35 ns more per frame than at
    /// 64 endpoints, in place (`bench e2e`, scale rounds). 64 bits per
    /// slot keep a filter full of endpoints at one false "maybe" in 64.
    pub const SOURCE_BASE: u32 = WORDS;

    /// The classifier's global (`.rodata`, set by the loader) holding
    /// [`source_words`] of the root's capacity.
    pub const SOURCE_WORDS_GLOBAL: &str = "ENDPOINT_SOURCE_WORDS";

    /// Words of the source filter for a root of `capacity` slots: a power
    /// of two, 64 bits per slot.
    pub const fn source_words(capacity: u32) -> u32 {
        capacity.next_power_of_two()
    }

    /// Entries of ENDPOINT_INDEX for a root of `capacity` slots: the index,
    /// the fill word, the source filter. Pins made before the filter have
    /// [`WORDS`] (or, before the fill word, [`SLOTS`]).
    pub const fn index_words(capacity: u32) -> u32 {
        WORDS + source_words(capacity)
    }

    /// The source filter's bit for `mac` (a [`mac_word`](super::mac_word))
    /// in a filter of `words` words (a power of two): (its word's index in
    /// ENDPOINT_INDEX, from [`SOURCE_BASE`] on, and the bit in it). A
    /// multiplicative hash of all six bytes, its top bits taken: Docker's
    /// MACs differ in their last bytes only.
    #[inline(always)]
    pub const fn source_bit(mac: u64, words: u32) -> (u32, u32) {
        let h = (mac.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as u32;
        let bit = h & (words.wrapping_mul(64).wrapping_sub(1));
        (SOURCE_BASE + (bit >> 6), bit & 63)
    }
}

/// The mark the XDP classifier leaves in a frame's XDP metadata
/// (`bpf_xdp_adjust_meta`) for TC ingress on the same device, which reads
/// it as `__sk_buff.data_meta`: "XDP classified and counted this frame".
/// TC ingress then passes it without counting, so each frame is counted
/// once: by XDP if XDP saw it, else by TC (bridge-mode frames between
/// endpoints, drivers that keep no metadata, no XDP at all).
pub mod xdp_mark {
    /// Bytes of metadata: one `u32` (the kernel takes multiples of 4). The
    /// kernel's VLAN untag before TC ingress moves the metadata with the
    /// MAC header (`skb_reorder_vlan_header`), so TC finds the mark of a
    /// tagged frame too.
    pub const LEN: usize = 4;
    /// The mark's value, with [`TAGGED`] clear.
    pub const MAGIC: u32 = 0x6d76_6e00;
    /// Set when XDP saw a VLAN tag in the frame's bytes. TC ingress
    /// classifies a marked frame anyway when it finds a tag in the skb's
    /// metadata and XDP saw none: a tag the NIC took out before XDP.
    pub const TAGGED: u32 = 1;

    /// The mark of a frame XDP saw with a tag in its bytes or not.
    #[inline(always)]
    pub const fn word(tagged: bool) -> u32 {
        MAGIC | tagged as u32
    }

    /// Whether `word` is a mark, and then whether XDP saw a tag.
    #[inline(always)]
    pub const fn read(word: u32) -> Option<bool> {
        if word & !TAGGED == MAGIC {
            Some(word & TAGGED != 0)
        } else {
            None
        }
    }
}

/// Per-root-device settings (an array of one element).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Config {
    /// [`config_flags`] bits.
    pub flags: u32,
    pub _pad: u32,
}

pub mod config_flags {
    /// Enforce on every VLAN of this root: drop frames to unknown MACs, on
    /// the wrong VLAN, or malformed (an operator's override).
    pub const ENFORCE: u32 = 1 << 0;
    /// Set while any network on the root enforces. Drop malformed frames (a
    /// malformed frame has no VLAN to take a policy from), and on egress
    /// frames whose source MAC is neither the root's nor an endpoint's,
    /// whatever their VLAN: only a forgery that skipped an endpoint
    /// device's checks sends those (see `DEVICE_STAMP`).
    pub const DROP_MALFORMED: u32 = 1 << 1;
    /// Set while a network on the root is on an 802.1Q sub-interface. XDP
    /// then classifies no tagged frame and no frame off its fast path
    /// (unicast to an untagged endpoint), leaving them unmarked to TC
    /// ingress: XDP cannot see a tag the device delivers in skb metadata
    /// (a veth whose peer sends through a VLAN device, a NIC's RX VLAN
    /// offload) or an outer tag beside one it sees, so its VLAN could be
    /// wrong, and a valid frame dropped as a VLAN mismatch; TC sees both.
    pub const VLANS_AT_TC: u32 = 1 << 2;
}

/// Bits of the per-VLAN policy array (indexed by VLAN id).
pub mod vlan_policy {
    /// A network on this VLAN enforces: drop frames to unknown MACs and to
    /// known MACs on the wrong VLAN.
    pub const ENFORCE: u32 = 1 << 0;
    /// With ENFORCE: drop broadcast frames on this VLAN too.
    pub const DROP_BROADCAST: u32 = 1 << 8;
    /// With ENFORCE: drop multicast frames on this VLAN too.
    pub const DROP_MULTICAST: u32 = 1 << 9;
    /// An 802.1Q VLAN whose networks are all in bridge mode: macvlan hands
    /// a unicast frame between two of its endpoints over through the VLAN
    /// device (`dev_forward_skb` to its lower device), where the root's
    /// hooks never see it, so the sender's device check counts it for the
    /// receiver (`rx_local`, at `tc_ingress`).
    pub const BRIDGE: u32 = 1 << 10;
}

/// Rate limit state of the anomaly events (per CPU).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct EventBudget {
    pub window_start_ns: u64,
    pub count: u64,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are #[repr(C)] plain data without implicit padding.
    unsafe impl aya::Pod for super::EndpointKey {}
    unsafe impl aya::Pod for super::Endpoint {}
    unsafe impl aya::Pod for super::Counter {}
    unsafe impl aya::Pod for super::EndpointCounters {}
    unsafe impl aya::Pod for super::VlanCounters {}
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::DeviceIdentity {}
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_are_fixed() {
        assert_eq!(size_of::<EndpointKey>(), 8);
        assert_eq!(size_of::<Endpoint>(), 28);
        assert_eq!(size_of::<Counter>(), 16);
        assert_eq!(size_of::<EndpointCounters>(), 48);
        assert_eq!(size_of::<VlanCounters>(), 48);
        assert_eq!(size_of::<Config>(), 8);
        assert_eq!(size_of::<DeviceIdentity>(), 32);
    }

    /// The source filter stays inside its words, and Docker-style MACs
    /// (02:42 + an IPv4 address, differing in their last bytes) spread
    /// over it: a filter holding as many MACs as slots marks about one
    /// other MAC in 64.
    #[test]
    fn the_source_filter_spreads_docker_macs_over_its_bits() {
        for capacity in [1, 64, 4096, 4097, MAX_ENDPOINTS] {
            let words = direct::source_words(capacity);
            assert!(words.is_power_of_two() && words >= capacity, "{capacity}");
            assert_eq!(direct::index_words(capacity), direct::WORDS + words);
            let mut bits = std::vec![0u64; words as usize];
            for i in 0..capacity {
                let [_, _, c, d] = (0x0a40_0000 + i).to_be_bytes();
                let (at, bit) =
                    direct::source_bit(mac_word(&[2, 0x42, 10, 64 + (i >> 16) as u8, c, d]), words);
                assert!((direct::SOURCE_BASE..direct::SOURCE_BASE + words).contains(&at));
                assert!(bit < 64);
                bits[(at - direct::SOURCE_BASE) as usize] |= 1 << bit;
            }
            // Other MACs of the same shape, never endpoints'.
            let probes = 20_000u32;
            let marked = (0..probes)
                .filter(|i| {
                    let [_, b, c, d] = i.to_be_bytes();
                    let (at, bit) = direct::source_bit(mac_word(&[2, 0x42, 11, b, c, d]), words);
                    bits[(at - direct::SOURCE_BASE) as usize] >> bit & 1 == 1
                })
                .count();
            // Expected: capacity / (64 words), at most 1/64 = 1.6%.
            assert!(
                marked * 40 <= probes as usize,
                "{capacity}: {marked} of {probes} marked"
            );
        }
    }

    #[test]
    fn direct_words_round_trip_and_keep_keys_apart() {
        let a = mac_word(&[0x02, 0x42, 0xac, 0x12, 0x00, 0x02]);
        let b = mac_word(&[0x02, 0x42, 0xac, 0x13, 0x00, 0x02]);
        let w = direct::word(a, 10, 4095);
        assert_eq!(direct::slot(w), 4095);
        assert_eq!(w & direct::KEY_MASK, direct::key(a, 10));
        // The largest slot keeps the key and the valid bit intact.
        let w = direct::word(a, 0x1fff, MAX_ENDPOINTS - 1);
        assert_eq!(direct::slot(w), MAX_ENDPOINTS - 1);
        assert_eq!(w & direct::KEY_MASK, direct::key(a, 0x1fff));
        assert_eq!(direct::slot(direct::word(a, 0, 0)), 0);
        for slot in [1, 4095, 4096, 0x7fff, 0x8000, 0xabcd] {
            let w = direct::word(a, 10, slot);
            assert_eq!(direct::slot(w), slot);
            assert_eq!(w & direct::KEY_MASK, direct::key(a, 10));
        }
        // Below 4096, the word of the 12-bit layout of earlier pins.
        assert_eq!(direct::word(a, 10, 4095), direct::key(a, 10) | 4095 << 48);
        assert_ne!(direct::key(a, 10), direct::key(a, 11));
        assert_ne!(direct::key(a, 0), direct::key(b, 0));
        // Service-tag marked ids are kept apart from plain ones.
        assert_ne!(direct::key(a, 10), direct::key(a, 0x100a));
        // The same low bytes on two VLANs land apart.
        assert_ne!(direct::index(a, 0), direct::index(b, 10));
        assert_eq!(direct::index(a, 0), 0x0200);
        assert!(direct::index(a, 4094) < direct::SLOTS);
    }

    #[test]
    fn mac_words_and_keys_agree() {
        let m = [0x02, 0x42, 0xac, 0x12, 0x00, 0x02];
        assert_eq!(mac_bytes(mac_word(&m)), m);
        assert_eq!(mac_word(&m) & 1, 0);
        assert_eq!(mac_word(&[0x01, 0, 0x5e, 0, 0, 1]) & 1, 1);
        assert_eq!(
            EndpointKey::from_word(mac_word(&m), 10),
            EndpointKey::new(m, 10)
        );
        assert_eq!(
            EndpointKey::from_word(mac_word(&m) | 0xabcd << 48, VLAN_ANY),
            EndpointKey::new(m, VLAN_ANY)
        );
    }

    #[test]
    fn xdp_marks_read_back() {
        assert_eq!(xdp_mark::read(xdp_mark::word(false)), Some(false));
        assert_eq!(xdp_mark::read(xdp_mark::word(true)), Some(true));
        // The first bytes of a MAC (what the untag leaves) are no mark.
        assert_eq!(
            xdp_mark::read(u32::from_le_bytes([0x02, 0x42, 0xac, 0x10])),
            None
        );
        assert_eq!(xdp_mark::read(0), None);
    }

    #[test]
    fn verdict_indices_are_dense() {
        let mut seen = [false; VERDICT_SLOTS as usize];
        for h in Hook::ALL {
            for v in Verdict::ALL {
                let i = v.index(h) as usize;
                assert!(!seen[i]);
                seen[i] = true;
            }
        }
        assert!(seen.iter().all(|s| *s));
    }
}
