//! The smoke scenario: classifier on the lab's parent, one macvlan child,
//! exact frame counts checked against the BPF maps and the kernel.
use std::time::Duration;

use anyhow::{ensure, Context as _, Result};
use macvlan_common::{Hook, Verdict};

use super::{
    frames::FrameSpec,
    wire::{self, SendPlan},
    Lab, UPSTREAM_IF,
};
use mvnet::datapath::EndpointEntry;
use mvnet::datapath::{Classifier, XdpMode};
use mvnet::model::Mac;

/// The child's MAC: 02:42 + 172.16.86.2, as Docker would give it.
pub const CHILD_MAC: [u8; 6] = [0x02, 0x42, 0xac, 0x10, 0x56, 0x02];
/// A MAC no endpoint has.
pub const UNKNOWN_MAC: [u8; 6] = [0x02, 0x42, 0xac, 0x10, 0x56, 0xfe];

/// Frames sent and counted in one smoke run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmokeReport {
    pub xdp_mode: XdpMode,
    pub sent_to_child: u64,
    pub sent_to_unknown: u64,
    /// Per-endpoint counter of the child (XDP, from the wire).
    pub child_rx_wire: u64,
    /// Verdict counters at XDP.
    pub xdp_delivered: u64,
    pub xdp_unknown_mac: u64,
    /// The child's own kernel counter (IFLA_STATS64 rx_packets), before and after.
    pub kernel_rx_before: u64,
    pub kernel_rx_after: u64,
    /// Per-VLAN counter of VLAN 0 (untagged) at XDP.
    pub vlan0_xdp: u64,
}

impl SmokeReport {
    /// Checks every count is exact.
    pub fn check(&self) -> Result<()> {
        ensure!(
            self.child_rx_wire == self.sent_to_child,
            "endpoint counter {} != {} frames sent to the child",
            self.child_rx_wire,
            self.sent_to_child
        );
        ensure!(
            self.xdp_delivered == self.sent_to_child,
            "delivered verdicts {} != {} frames sent to the child",
            self.xdp_delivered,
            self.sent_to_child
        );
        ensure!(
            self.xdp_unknown_mac == self.sent_to_unknown,
            "unknown-MAC verdicts {} != {} frames sent to an unknown MAC",
            self.xdp_unknown_mac,
            self.sent_to_unknown
        );
        ensure!(
            self.kernel_rx_after - self.kernel_rx_before == self.sent_to_child,
            "the child's kernel rx counter grew by {}, not {}",
            self.kernel_rx_after - self.kernel_rx_before,
            self.sent_to_child
        );
        ensure!(
            self.vlan0_xdp == self.sent_to_child + self.sent_to_unknown,
            "VLAN 0 counter {} != {} frames sent",
            self.vlan0_xdp,
            self.sent_to_child + self.sent_to_unknown
        );
        Ok(())
    }

    pub fn render(&self) -> String {
        format!(
            "XDP mode:                      {:?}\n\
             frames sent to child {}:  {}\n\
             frames sent to unknown {}: {}\n\
             classifier: endpoint rx (wire) {}\n\
             classifier: verdict delivered  {}\n\
             classifier: verdict unknown    {}\n\
             classifier: VLAN 0 frames      {}\n\
             kernel: child rx_packets       {} -> {} (+{})\n",
            self.xdp_mode,
            Mac::new(CHILD_MAC),
            self.sent_to_child,
            Mac::new(UNKNOWN_MAC),
            self.sent_to_unknown,
            self.child_rx_wire,
            self.xdp_delivered,
            self.xdp_unknown_mac,
            self.vlan0_xdp,
            self.kernel_rx_before,
            self.kernel_rx_after,
            self.kernel_rx_after - self.kernel_rx_before,
        )
    }
}

/// Frames the smoke scenario sends to the child, and to an unknown MAC
/// (each send must finish within 60 s).
pub const TO_CHILD: std::ops::RangeInclusive<u64> = 1..=1_000_000;
pub const TO_UNKNOWN: std::ops::RangeInclusive<u64> = 0..=1_000_000;

/// Runs the smoke scenario in a fresh lab: XDP (`mode`) on the parent, a
/// macvlan child in a container namespace, `to_child` frames to the child's
/// MAC and `to_unknown` to an unknown MAC from upstream.
pub fn run(mode: XdpMode, to_child: u64, to_unknown: u64) -> Result<SmokeReport> {
    ensure!(
        TO_CHILD.contains(&to_child) && TO_UNKNOWN.contains(&to_unknown),
        "smoke sends 1 to 1000000 frames to the child and 0 to 1000000 to an unknown MAC \
         (asked: {to_child} and {to_unknown})"
    );
    let mut lab = Lab::new().context("building the lab")?;
    let mut dp = Classifier::attach(Some(lab.host()), super::PARENT, mode)
        .context("attaching the classifier to the lab parent")?;
    let report = measure(&mut lab, &mut dp, mode, to_child, to_unknown);
    // Pinned like the controller's: detached and unpinned whatever happened.
    dp.detach()?;
    drop(lab);
    report
}

fn measure(
    lab: &mut Lab,
    dp: &mut Classifier,
    mode: XdpMode,
    to_child: u64,
    to_unknown: u64,
) -> Result<SmokeReport> {
    // The endpoint enters the map before its link goes up.
    let slot = dp.endpoints()?.insert(EndpointEntry {
        mac: CHILD_MAC,
        vlan: 0,
        ipv4: None,
        ipv6: None,
        enforce: false,
    })?;
    let c1 = lab.add_container("c1")?;
    lab.add_macvlan(&c1, CHILD_MAC)?;

    let src = lab.mac_of(lab.upstream(), UPSTREAM_IF)?;
    let before = dp.counters()?;
    let kernel_before = lab.link_stats(&c1, "eth0")?;

    let to_child_frame = FrameSpec::udp4(CHILD_MAC, src).build()?;
    let to_unknown_frame = FrameSpec::udp4(UNKNOWN_MAC, src).build()?;
    let xdp_total = |dp: &Classifier| -> u64 {
        dp.counters()
            .map(|c| c.verdicts.total(Hook::XdpIngress).frames)
            .unwrap_or(0)
    };
    let base = xdp_total(dp);
    for (frame, count) in [(&to_child_frame, to_child), (&to_unknown_frame, to_unknown)] {
        let already = xdp_total(dp) - base;
        let frames = [frame.clone()];
        wire::send(
            lab.upstream(),
            UPSTREAM_IF,
            &SendPlan {
                frames: &frames,
                rounds: count,
                deadline: Duration::from_secs(60),
                burst: 64,
            },
            |sent| xdp_total(dp) - base >= already + sent,
        )?;
    }

    let after = dp.counters()?;
    let kernel_after = lab.link_stats(&c1, "eth0")?;
    let delta =
        |h: Hook, v: Verdict| after.verdicts.get(h, v).frames - before.verdicts.get(h, v).frames;
    let report = SmokeReport {
        xdp_mode: dp.xdp_mode().unwrap_or(mode),
        sent_to_child: to_child,
        sent_to_unknown: to_unknown,
        child_rx_wire: after.endpoint(slot).rx_wire.frames - before.endpoint(slot).rx_wire.frames,
        xdp_delivered: delta(Hook::XdpIngress, Verdict::Delivered),
        xdp_unknown_mac: delta(Hook::XdpIngress, Verdict::UnknownMac),
        kernel_rx_before: kernel_before.rx_packets,
        kernel_rx_after: kernel_after.rx_packets,
        vlan0_xdp: after.vlan(0).rx_xdp.frames - before.vlan(0).rx_xdp.frames,
    };
    Ok(report)
}
