//! mvnet's classifiers, attached to a macvlan parent ("root") device.
//!
//! * `mvnet_xdp` — XDP on the parent: every frame from the wire, before the
//!   macvlan rx_handler picks a child.
//! * `mvnet_tc_ingress` — TC ingress on the parent: what XDP did not count.
//!   XDP marks every frame it classified in the frame's XDP metadata, and TC
//!   passes marked frames untouched; it classifies bridge-mode frames from
//!   one endpoint to another (they re-enter the parent via dev_forward_skb
//!   and never pass XDP), frames of a driver that keeps no metadata, frames
//!   with no XDP program at all, and frames whose tag the NIC took out
//!   before XDP (the tag is then in skb metadata).
//! * `mvnet_tc_egress` — TC egress on the parent: frames endpoints send out.
//! * `mvnet_tc_endpoint` — TC egress on each endpoint's own macvlan device,
//!   in the container's namespace: the source checks, by device.
//!
//! All three share one parser and one set of maps; see `macvlan-common` for
//! the map ABI.
#![no_std]
#![no_main]

mod classify;
mod events;
mod maps;
mod parse;
mod source;

use aya_ebpf::{
    bindings::{xdp_action, TC_ACT_OK, TC_ACT_SHOT},
    helpers::generated::bpf_xdp_adjust_meta,
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use classify::{Action, Frame};
use macvlan_common::{is_tag_tpid, xdp_mark, Hook};

#[xdp]
pub fn mvnet_xdp(ctx: XdpContext) -> u32 {
    // Room for the mark that tells TC ingress this frame is counted. A
    // driver that keeps no XDP metadata refuses it: TC ingress then
    // classifies and counts every frame, and XDP leaves them all to it.
    // SAFETY: the context is the program's own.
    if unsafe { bpf_xdp_adjust_meta(ctx.ctx, -(xdp_mark::LEN as i32)) } != 0 {
        return xdp_action::XDP_PASS;
    }
    // After the helper every packet pointer is reloaded and checked again.
    let (meta, data, data_end) = (ctx.metadata(), ctx.data(), ctx.data_end());
    if meta + xdp_mark::LEN > data {
        return xdp_action::XDP_PASS;
    }
    let frame = Frame {
        data,
        data_end,
        // XDP sees the tag in the bytes unless the NIC stripped it.
        meta_vlan: 0,
        napi_id: 0,
        skb_len: 0,
    };
    let tagged = match parse::ptr_at::<u16>(data, data_end, 12) {
        // SAFETY: bounds checked by ptr_at.
        Some(t) => is_tag_tpid(u16::from_be(unsafe { *t })),
        None => false,
    };
    // On a root with 802.1Q networks, tagged frames are TC's (see
    // `config_flags::VLANS_AT_TC`); otherwise XDP's mark tells TC that XDP
    // counted the frame.
    let action = if tagged && classify::vlans_at_tc() {
        Action::Defer
    } else {
        classify::ingress(&ctx, &frame, Hook::XdpIngress)
    };
    let mark = match action {
        Action::Defer => 0,
        _ => xdp_mark::word(tagged),
    };
    // SAFETY: meta + LEN <= data was checked above; the metadata area is
    // ours until the program returns (no helper since changes the packet).
    unsafe { *(meta as *mut u32) = mark };
    match action {
        Action::Pass | Action::Defer => xdp_action::XDP_PASS,
        Action::Drop => xdp_action::XDP_DROP,
    }
}

/// Returns XDP_PASS and nothing else: the baseline the benchmarks measure
/// the classifier against (never attached by the controller).
#[xdp]
pub fn mvnet_xdp_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// Returns TC_ACT_OK and nothing else: with `mvnet_xdp_pass`, the
/// end-to-end benchmark's baseline attached the way the classifier is
/// (never attached by the controller).
#[classifier]
pub fn mvnet_tc_pass(_ctx: TcContext) -> i32 {
    TC_ACT_OK as i32
}

#[classifier]
pub fn mvnet_tc_ingress(ctx: TcContext) -> i32 {
    if classify::counted_by_xdp(&ctx) {
        return TC_ACT_OK as i32;
    }
    let frame = Frame::from_tc(&ctx, false);
    match classify::ingress(&ctx, &frame, Hook::TcIngress) {
        // TC never defers (`Action::Defer` is XDP's).
        Action::Pass | Action::Defer => TC_ACT_OK as i32,
        Action::Drop => TC_ACT_SHOT as i32,
    }
}

#[classifier]
pub fn mvnet_tc_egress(ctx: TcContext) -> i32 {
    let frame = Frame::from_tc(&ctx, true);
    match classify::egress(&ctx, &frame, source::stamped(&ctx)) {
        // TC never defers (`Action::Defer` is XDP's).
        Action::Pass | Action::Defer => TC_ACT_OK as i32,
        Action::Drop => TC_ACT_SHOT as i32,
    }
}

#[classifier]
pub fn mvnet_tc_endpoint(ctx: TcContext) -> i32 {
    let frame = Frame::from_tc(&ctx, true);
    let (action, stamp) = source::endpoint_egress(&ctx, &frame);
    source::stamp(&ctx, stamp);
    match action {
        // TC never defers (`Action::Defer` is XDP's).
        Action::Pass | Action::Defer => TC_ACT_OK as i32,
        Action::Drop => TC_ACT_SHOT as i32,
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

/// The least any per-endpoint counting costs, for the benchmarks to print
/// beside the classifier (never attached by the controller): the
/// destination MAC of an untagged frame, one direct-index lookup and one
/// counter in this CPU's stripe. No VLAN parse, no per-VLAN or per-verdict
/// counters, no hash fallback, no policy. `mvnet_tc_floor` is the same at
/// TC, where `--xdp-mode auto` classifies on a veth.
#[xdp]
pub fn mvnet_xdp_floor(ctx: XdpContext) -> u32 {
    classify::floor(ctx.data(), ctx.data_end());
    xdp_action::XDP_PASS
}

/// `mvnet_xdp_floor` at TC (never attached by the controller).
#[classifier]
pub fn mvnet_tc_floor(ctx: TcContext) -> i32 {
    classify::floor(ctx.data(), ctx.data_end());
    TC_ACT_OK as i32
}
