//! Snapshots for the unit tests of `top`'s model and view.
use std::time::{Instant, SystemTime};

use macvlan_common::{Counter, EndpointCounters};

use crate::{
    datapath::{hooks::HookSet, VerdictTable},
    model::{Mac, Policy, XdpMode},
    stats::{EndpointStats, NetworkStats, RootStats, Snapshot},
};

/// An endpoint of `container` that received `rx` 60-byte frames from the
/// wire; its slot is the MAC's last byte.
pub fn endpoint(container: &str, mac: [u8; 6], rx: u64) -> EndpointStats {
    EndpointStats {
        container: container.into(),
        container_id: format!("id-{container}").into(),
        owner: Default::default(),
        ifname: "eth0".into(),
        mac: Mac::new(mac),
        ipv4: None,
        ipv6: None,
        slot: Some(mac[5] as u32),
        counters: EndpointCounters {
            rx_wire: Counter {
                frames: rx,
                bytes: rx * 60,
            },
            ..Default::default()
        },
        tx_invalid: Counter::default(),
    }
}

/// An observing network on eth0.
pub fn network(name: &str, vlan: u16, endpoints: Vec<EndpointStats>) -> NetworkStats {
    NetworkStats {
        id: format!("id-{name}"),
        name: name.into(),
        owner: Default::default(),
        parent: "eth0".into(),
        root: "eth0".into(),
        vlan,
        policy: Policy::Observe,
        endpoints,
    }
}

/// `networks` on an attached eth0 with (empty) counters for `vlans`.
pub fn snapshot(vlans: &[u16], verdicts: VerdictTable, networks: Vec<NetworkStats>) -> Snapshot {
    Snapshot {
        taken: SystemTime::now(),
        at: Instant::now(),
        roots: vec![RootStats {
            root: "eth0".into(),
            attached: true,
            hooks: Some(HookSet::TcOnly),
            xdp_mode: Some(XdpMode::Auto),
            endpoints: networks.iter().map(|n| n.endpoints.len()).sum(),
            capacity: 4096,
            vlans: vlans.iter().map(|v| (*v, Default::default())).collect(),
            verdicts,
        }],
        networks,
    }
}
