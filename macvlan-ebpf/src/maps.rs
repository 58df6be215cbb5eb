//! The classifier's maps. BTF-defined (`#[btf_map]`) so that `bpftool map
//! dump` prints named fields. Counters live in per-CPU arrays, or in an
//! array striped by CPU (ENDPOINT_STATS): the hot path never takes an
//! atomic.
//!
//! The per-endpoint maps are compiled with `DEFAULT_ENDPOINTS` entries;
//! the controller resizes them at load time to the root's
//! `--max-endpoints` (`macvlan_common::endpoint_map_sizes`). Nothing here
//! depends on their size: array lookups are bounds-checked by the kernel.
use aya_ebpf::{
    btf_maps::{Array, HashMap, PerCpuArray},
    macros::btf_map,
    Global,
};
use macvlan_common::{
    direct, stripes, tx_seen, Config, Counter, DeviceIdentity, Endpoint, EndpointCounters,
    EndpointKey, VlanCounters, DEFAULT_ENDPOINTS, ENDPOINT_KEYS, VERDICT_SLOTS, VLAN_SLOTS,
};

/// The direct index in front of ENDPOINTS (see `macvlan_common::direct`),
/// after it the fill word the controller keeps (`direct::FILL`, never
/// read here), then the source filter (`direct::SOURCE_BASE`). Compiled
/// without the filter; the loader sizes it (`direct::index_words`).
/// Mmapable so the controller can write each word atomically.
#[btf_map]
pub static ENDPOINT_INDEX: Array<u64, { direct::WORDS as usize }, { direct::MAP_FLAGS }> =
    Array::new();

/// The root's endpoint capacity (`--max-endpoints`), set by the loader
/// (`macvlan_common::stripes::CAPACITY_GLOBAL`): the length of each CPU's
/// stripe of ENDPOINT_STATS. In `.rodata`, frozen once loaded, so the
/// verifier knows its value.
#[unsafe(no_mangle)]
pub static ENDPOINT_CAPACITY: Global<u32> = Global::new(DEFAULT_ENDPOINTS);

/// Words of the source filter in ENDPOINT_INDEX (a power of two), set by
/// the loader (`macvlan_common::direct::SOURCE_WORDS_GLOBAL`). In
/// `.rodata`, frozen once loaded.
#[unsafe(no_mangle)]
pub static ENDPOINT_SOURCE_WORDS: Global<u32> =
    Global::new(direct::source_words(DEFAULT_ENDPOINTS));

/// (destination MAC, VLAN) → endpoint. Written by the controller only.
#[btf_map]
pub static ENDPOINTS: HashMap<EndpointKey, Endpoint, { ENDPOINT_KEYS as usize }> = HashMap::new();

/// Per-endpoint counters, striped by CPU (`macvlan_common::stripes`):
/// element `cpu * ENDPOINT_CAPACITY + slot`. Compiled for one stripe; the
/// controller sizes it to one stripe per possible CPU at load time.
/// Mmapable, so that the controller reads every counter through one
/// mapping; see `count_endpoint_rx` for why it needs no atomics.
#[btf_map]
pub static ENDPOINT_STATS: Array<
    EndpointCounters,
    { DEFAULT_ENDPOINTS as usize },
    { stripes::MAP_FLAGS },
> = Array::new();

/// Per-endpoint, indexed by `Endpoint::slot`: frames to the endpoint's MAC
/// on another VLAN that XDP passed (observe). With no VLAN device for
/// their tag macvlan hands them to the endpoint by MAC, so `mvnet verify`
/// needs them to explain the kernel's count. A map of its own, not a field
/// of EndpointCounters, so that pins made before it keep their layout.
#[btf_map]
pub static ENDPOINT_MISMATCH: PerCpuArray<Counter, { DEFAULT_ENDPOINTS as usize }> =
    PerCpuArray::new();

/// Per-endpoint, indexed by `Endpoint::slot`: malformed frames to the
/// endpoint's MAC that XDP passed (observe). The kernel may untag what the
/// parser could not and deliver them by MAC (a truncated QinQ frame), so
/// `mvnet verify` needs them as it needs ENDPOINT_MISMATCH.
#[btf_map]
pub static ENDPOINT_MALFORMED: PerCpuArray<Counter, { DEFAULT_ENDPOINTS as usize }> =
    PerCpuArray::new();

/// Ifindex of an endpoint's macvlan device (in its container's namespace)
/// → what that device may send as. Read by `mvnet_tc_endpoint`, which is
/// attached to that device only. Ifindexes are per namespace: the
/// controller creates every endpoint device with an ifindex derived from
/// its slot, unique among this root's endpoints (see the controller's
/// `datapath::devices`), because `bpf_get_netns_cookie` is not available
/// to TC programs before Linux 6.14 and the VM kernel is 6.1.
#[btf_map]
pub static ENDPOINT_DEVICES: HashMap<u32, DeviceIdentity, { DEFAULT_ENDPOINTS as usize }> =
    HashMap::new();

/// Per-endpoint, indexed by `Endpoint::slot`: frames the endpoint's own
/// device sent that failed the source checks (a tag, another source MAC
/// or address, truncated), dropped under enforce, passed under observe.
#[btf_map]
pub static ENDPOINT_TX_INVALID: PerCpuArray<Counter, { DEFAULT_ENDPOINTS as usize }> =
    PerCpuArray::new();

/// One byte per slot, 8 to an element: 1 once that slot's
/// ENDPOINT_TX_INVALID has counted (`macvlan_common::tx_seen`), so the
/// controller reads only those slots of it. Mmapable for the controller,
/// which clears a slot's byte when it gives the slot to a new endpoint.
#[btf_map]
pub static ENDPOINT_TX_INVALID_SEEN: Array<
    [u8; tx_seen::SLOTS_PER_WORD as usize],
    { tx_seen::words(DEFAULT_ENDPOINTS) as usize },
    { tx_seen::MAP_FLAGS },
> = Array::new();

/// Per-VLAN counters, indexed by VLAN id (0 = untagged).
#[btf_map]
pub static VLAN_STATS: PerCpuArray<VlanCounters, { VLAN_SLOTS as usize }> = PerCpuArray::new();

/// Per-(hook, verdict) counters, indexed by `Verdict::index(hook)`.
#[btf_map]
pub static VERDICT_STATS: PerCpuArray<Counter, { VERDICT_SLOTS as usize }> = PerCpuArray::new();

/// Per-VLAN policy bits (`vlan_policy`), indexed by VLAN id.
#[btf_map]
pub static VLAN_POLICY: Array<u32, { VLAN_SLOTS as usize }> = Array::new();

/// Settings for this root device (one element).
#[btf_map]
pub static CONFIG: Array<Config, 1> = Array::new();
