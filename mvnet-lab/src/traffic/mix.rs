//! The frame mix of a traffic run, taken from mvnet's own state: one flow
//! per endpoint (its MAC, tagged with its network's VLAN), plus flows to
//! MACs no endpoint has and flows to known MACs on a VLAN that is not
//! theirs.
use std::{collections::BTreeSet, path::PathBuf};

use anyhow::{bail, Result};
use serde::Serialize;

use mvnet::model::{Mac, State};

use crate::lab::frames::{FrameSpec, Tag};

/// What the classifier should make of a flow's frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FlowKind {
    /// To an endpoint's MAC on its own VLAN: delivered.
    Valid,
    /// To a MAC no endpoint has.
    UnknownMac,
    /// To an endpoint's MAC, tagged with a VLAN that is not its own.
    WrongVlan,
}

impl FlowKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FlowKind::Valid => "valid",
            FlowKind::UnknownMac => "unknown_mac",
            FlowKind::WrongVlan => "wrong_vlan",
        }
    }
}

/// An endpoint traffic is aimed at.
#[derive(Clone, Debug)]
pub struct Target {
    pub container: String,
    pub network: String,
    pub ifname: String,
    pub netns: PathBuf,
    pub mac: Mac,
    /// Its network's VLAN on the root device (0 = untagged).
    pub vlan: u16,
}

/// Frames to one destination MAC with one tag.
#[derive(Clone, Debug)]
pub struct Flow {
    pub kind: FlowKind,
    pub dst: Mac,
    /// The 802.1Q tag on the wire (0 = untagged).
    pub vlan: u16,
    /// Frames to send.
    pub count: u64,
    /// Index into [`Mix::targets`] of the endpoint owning `dst`, if any.
    pub target: Option<usize>,
}

impl Flow {
    pub fn label(&self, mix: &Mix) -> String {
        match self.target {
            Some(t) => format!("{} {}", self.kind.as_str(), mix.targets[t].container),
            None => self.kind.as_str().to_owned(),
        }
    }

    /// The frame this flow sends, `size` bytes long (without FCS, in
    /// [`super::limits::SIZE`]), from `src`.
    pub fn frame(&self, src: [u8; 6], size: usize) -> Result<Vec<u8>> {
        let sizes = super::limits::SIZE;
        if !sizes.contains(&(size as u64)) {
            bail!(
                "a frame of {size} bytes is out of range: give a size from {} to {} (without FCS)",
                sizes.start(),
                sizes.end()
            );
        }
        let mut spec = FrameSpec::udp4(self.dst.octets(), src);
        if self.vlan != 0 {
            spec = spec.tagged(&[Tag::dot1q(self.vlan)]);
        }
        let bare = {
            let mut s = spec.clone();
            s.data_len = 0;
            s.build()?.len()
        };
        // At most 46 bytes of headers: always below the smallest size.
        spec.data_len = size - bare;
        Ok(spec.build()?)
    }
}

/// What to send.
#[derive(Clone, Debug)]
pub struct MixSpec {
    /// Only endpoints of these networks (all networks when empty).
    pub networks: Vec<String>,
    /// Frames per flow.
    pub count: u64,
    /// Flows to unknown MACs.
    pub unknown: u32,
    /// Flows to known MACs on a VLAN that is not theirs.
    pub wrong_vlan: u32,
}

/// The flows of one run, all on one root device.
#[derive(Clone, Debug)]
pub struct Mix {
    pub root: String,
    pub targets: Vec<Target>,
    pub flows: Vec<Flow>,
}

impl Mix {
    /// Builds the mix from mvnet's state.
    pub fn from_state(state: &State, spec: &MixSpec) -> Result<Mix> {
        for n in &spec.networks {
            if !state.networks.values().any(|x| &x.name == n || &x.id == n) {
                bail!("network {n} not found; list them with `mvnet network ls`");
            }
        }
        let mut targets = Vec::new();
        let mut roots = BTreeSet::new();
        for c in state.containers.values() {
            for ep in c.endpoints.values() {
                let Some(net) = state.networks.get(&ep.network_id) else {
                    continue;
                };
                if !spec.networks.is_empty()
                    && !spec.networks.iter().any(|n| *n == net.name || *n == net.id)
                {
                    continue;
                }
                let (root, vlan) = net.root();
                roots.insert(root.to_owned());
                targets.push(Target {
                    container: c.name.clone(),
                    network: net.name.clone(),
                    ifname: ep.ifname.to_string(),
                    netns: c.netns.clone(),
                    mac: ep.mac,
                    vlan,
                });
            }
        }
        let root = match roots.len() {
            0 => bail!(
                "no endpoints to send to; start containers with `mvnet run --network NET ...` first"
            ),
            1 => roots.into_iter().next().unwrap_or_default(),
            _ => bail!(
                "the endpoints are on several root devices ({}); choose networks on one of them with --network",
                roots.into_iter().collect::<Vec<_>>().join(", ")
            ),
        };
        // Every VLAN a network on this root uses (0 for one on the root itself).
        let root_vlans: BTreeSet<u16> = state
            .networks
            .values()
            .filter(|n| n.root().0 == root)
            .map(|n| n.root().1)
            .collect();
        let mut flows: Vec<Flow> = targets
            .iter()
            .enumerate()
            .map(|(i, t)| Flow {
                kind: FlowKind::Valid,
                dst: t.mac,
                vlan: t.vlan,
                count: spec.count,
                target: Some(i),
            })
            .collect();
        let known: BTreeSet<Mac> = state
            .containers
            .values()
            .flat_map(|c| c.endpoints.values().map(|e| e.mac))
            .collect();
        let target_vlans: Vec<u16> = targets
            .iter()
            .map(|t| t.vlan)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut next = 0u32;
        for i in 0..spec.unknown {
            // Locally administered, outside Docker's 02:42 range.
            let dst = loop {
                let b = next.to_be_bytes();
                next += 1;
                let mac = Mac::new([0x06, 0xfe, b[0], b[1], b[2], b[3]]);
                if !known.contains(&mac) {
                    break mac;
                }
            };
            flows.push(Flow {
                kind: FlowKind::UnknownMac,
                dst,
                vlan: target_vlans[i as usize % target_vlans.len()],
                count: spec.count,
                target: None,
            });
        }
        for i in 0..spec.wrong_vlan {
            let t = i as usize % targets.len();
            let own = targets[t].vlan;
            // Another VLAN of this root where there is one (its frames then
            // reach that VLAN's device, which has no such MAC); else a VLAN
            // no network uses.
            let vlan = root_vlans
                .iter()
                .copied()
                .filter(|v| *v != own && *v != 0)
                .nth(i as usize / targets.len())
                .or_else(|| root_vlans.iter().copied().find(|v| *v != own))
                .unwrap_or(if own == 4094 { 4093 } else { 4094 });
            flows.push(Flow {
                kind: FlowKind::WrongVlan,
                dst: targets[t].mac,
                vlan,
                count: spec.count,
                target: Some(t),
            });
        }
        Ok(Mix {
            root,
            targets,
            flows,
        })
    }

    /// Frames the whole mix sends.
    pub fn total(&self) -> u64 {
        self.flows.iter().map(|f| f.count).sum()
    }

    /// One line per flow, for messages.
    pub fn describe(&self) -> String {
        self.flows
            .iter()
            .map(|f| {
                format!(
                    "  {:<12} {} vlan {:<4} x{}",
                    f.kind.as_str(),
                    f.dst,
                    f.vlan,
                    f.count
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mvnet::model::{Container, Endpoint};

    fn state_with(vlans: &[(&str, Option<u16>)]) -> State {
        let mut state: State = serde_json::from_str(r#"{"networks":{},"containers":{}}"#).unwrap();
        for (i, (name, vlan)) in vlans.iter().enumerate() {
            let id = format!("{i:064}");
            let parent = match vlan {
                Some(v) => format!("eth0.{v}"),
                None => "eth0".into(),
            };
            let net = serde_json::json!({
                "id": id, "name": name, "created": "", "parent": parent,
                "parent_origin": "existing",
                "vlan": vlan.map(|v| ("eth0", v)),
                "mode": "bridge", "internal": false, "enable_ipv6": false,
                "pools": [], "options": {},
            });
            state
                .networks
                .insert(id.clone(), serde_json::from_value(net).unwrap());
            let cid = format!("c{i:063}");
            let mut endpoints = mvnet::model::Endpoints::new();
            endpoints.insert(
                id.clone(),
                Endpoint {
                    id: cid.clone(),
                    network_id: id,
                    ifname: "eth0".into(),
                    mac: Mac::new([2, 0x42, 0, 0, 0, i as u8]),
                    ipv4: None,
                    ipv6: None,
                    rx_base: 0,
                },
            );
            state.containers.insert(
                cid.clone(),
                Container {
                    id: cid,
                    name: format!("c{i}"),
                    created: String::new(),
                    netns: "/run/netns/x".into(),
                    netns_owned: true,
                    netns_inode: None,
                    auto_remove: false,
                    command: vec![],
                    pid: None,
                    running: true,
                    endpoints,
                    ..Default::default()
                },
            );
        }
        state
    }

    #[test]
    fn one_flow_per_endpoint_plus_unknown_and_wrong_vlan() {
        let state = state_with(&[("a", Some(10)), ("b", Some(20))]);
        let mix = Mix::from_state(
            &state,
            &MixSpec {
                networks: vec![],
                count: 7,
                unknown: 2,
                wrong_vlan: 2,
            },
        )
        .unwrap();
        assert_eq!(mix.root, "eth0");
        assert_eq!(mix.flows.len(), 6);
        assert_eq!(mix.total(), 42);
        let wrong: Vec<(u16, u16)> = mix
            .flows
            .iter()
            .filter(|f| f.kind == FlowKind::WrongVlan)
            .map(|f| (mix.targets[f.target.unwrap()].vlan, f.vlan))
            .collect();
        assert_eq!(wrong, [(10, 20), (20, 10)]);
        let unknown: Vec<u16> = mix
            .flows
            .iter()
            .filter(|f| f.kind == FlowKind::UnknownMac)
            .map(|f| f.vlan)
            .collect();
        assert_eq!(unknown, [10, 20]);
    }

    #[test]
    fn untagged_root_gets_an_unused_vlan_for_wrong_vlan_flows() {
        let state = state_with(&[("a", None)]);
        let mix = Mix::from_state(
            &state,
            &MixSpec {
                networks: vec!["a".into()],
                count: 1,
                unknown: 0,
                wrong_vlan: 1,
            },
        )
        .unwrap();
        assert_eq!(mix.flows[1].vlan, 4094);
        assert!(Mix::from_state(
            &state,
            &MixSpec {
                networks: vec!["zz".into()],
                count: 1,
                unknown: 0,
                wrong_vlan: 0
            }
        )
        .is_err());
    }

    #[test]
    fn frames_have_the_requested_size() {
        let f = Flow {
            kind: FlowKind::Valid,
            dst: Mac::new([2, 0, 0, 0, 0, 1]),
            vlan: 10,
            count: 1,
            target: None,
        };
        let src = [2, 0, 0, 0, 0, 2];
        assert_eq!(f.frame(src, 60).unwrap().len(), 60);
        assert_eq!(f.frame(src, 128).unwrap().len(), 128);
        assert_eq!(f.frame(src, 1514).unwrap().len(), 1514);
        assert_eq!(&f.frame(src, 60).unwrap()[12..16], &[0x81, 0, 0, 10]);
        for bad in [0, 59, 1515, 100_000, usize::MAX] {
            assert_eq!(
                f.frame(src, bad).unwrap_err().to_string(),
                format!("a frame of {bad} bytes is out of range: give a size from 60 to 1514 (without FCS)")
            );
        }
    }
}
