//! Anomaly events for `mvnet monitor`, through aya-log, rate-limited so a
//! flood cannot flood the log: one event per (source MAC, kind) per
//! [`REPEAT_NS`], and at most [`EVENTS_PER_SEC`] per CPU per second.
use aya_ebpf::{
    btf_maps::{LruHashMap, PerCpuArray},
    helpers::bpf_ktime_get_ns,
    macros::btf_map,
    EbpfContext,
};
use aya_log_ebpf::warn;
use macvlan_common::{EndpointKey, EventBudget};

const REPEAT_NS: u64 = 10_000_000_000;
const EVENTS_PER_SEC: u64 = 100;

const KIND_UNKNOWN_MAC: u16 = 1;
const KIND_VLAN_MISMATCH: u16 = 2;
const KIND_SPOOFED: u16 = 3;

/// (source MAC, event kind) → when it was last reported.
#[btf_map]
static EVENT_SEEN: LruHashMap<EndpointKey, u64, 4096> = LruHashMap::new();

#[btf_map]
static EVENT_BUDGET: PerCpuArray<EventBudget, 1> = PerCpuArray::new();

#[inline(always)]
fn allow(src: [u8; 6], kind: u16) -> bool {
    let now = unsafe { bpf_ktime_get_ns() };
    let key = EndpointKey::new(src, kind);
    if let Some(last) = EVENT_SEEN.get_ptr(key) {
        // SAFETY: value pointer valid until the program returns.
        if now.wrapping_sub(unsafe { *last }) < REPEAT_NS {
            return false;
        }
    }
    let Some(budget) = EVENT_BUDGET.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: per-CPU slot, no other writer on this CPU.
    let budget = unsafe { &mut *budget };
    if now.wrapping_sub(budget.window_start_ns) >= 1_000_000_000 {
        budget.window_start_ns = now;
        budget.count = 0;
    }
    if budget.count >= EVENTS_PER_SEC {
        return false;
    }
    budget.count += 1;
    let _ = EVENT_SEEN.insert(key, now, 0);
    true
}

#[inline(always)]
pub fn unknown_mac<C: EbpfContext>(ctx: &C, dst: [u8; 6], src: [u8; 6], vlan: u16) {
    if allow(src, KIND_UNKNOWN_MAC) {
        warn!(
            ctx,
            "unknown_mac dst={:mac} src={:mac} vlan={}", dst, src, vlan
        );
    }
}

#[inline(always)]
pub fn vlan_mismatch<C: EbpfContext>(ctx: &C, dst: [u8; 6], src: [u8; 6], vlan: u16) {
    if allow(src, KIND_VLAN_MISMATCH) {
        warn!(
            ctx,
            "vlan_mismatch dst={:mac} src={:mac} vlan={}", dst, src, vlan
        );
    }
}

#[inline(always)]
pub fn spoofed<C: EbpfContext>(ctx: &C, src: [u8; 6], vlan: u16) {
    if allow(src, KIND_SPOOFED) {
        warn!(ctx, "spoofed src={:mac} vlan={}", src, vlan);
    }
}
