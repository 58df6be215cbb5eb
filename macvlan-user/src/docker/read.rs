//! Reading what Docker has: its macvlan networks whose parent is in this
//! namespace, and the endpoints of its running containers on them, named
//! as the links in each sandbox are.
use std::{collections::HashMap, path::Path};

use anyhow::Result;
use futures::{StreamExt as _, TryStreamExt as _};

use super::{client::Engine, mapping};
use crate::{
    controller::foreign::{ForeignContainer, ForeignEndpoint, ForeignNetwork, Unreadable},
    model::{Mac, Policy, XdpMode},
    netlink,
    netns::NetNs,
};

/// Containers inspected at once (each is one request to dockerd).
const CONCURRENCY: usize = 16;

/// Everything Docker has that mvnet can count, and what it cannot.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub networks: Vec<ForeignNetwork>,
    pub containers: Vec<(ForeignContainer, Vec<ForeignEndpoint>)>,
    /// Networks and endpoints left out, each with the reason and the fix.
    pub problems: Vec<String>,
    /// When the read began: records adopted since (by a watcher, while
    /// this read ran without the state's lock) are newer than it.
    pub read_at: Option<std::time::SystemTime>,
    /// Running containers and networks whose report could not be read or
    /// mapped: their records are kept as they are (see `problems`).
    pub unread: Unreadable,
}

impl Snapshot {
    pub fn endpoints(&self) -> usize {
        self.containers.iter().map(|(_, e)| e.len()).sum()
    }

    /// Docker network id → name, of the networks taken.
    pub fn network_names(&self) -> HashMap<String, String> {
        self.networks
            .iter()
            .map(|n| (n.id.clone(), n.name.clone()))
            .collect()
    }
}

/// What the policy and XDP mode of adopted networks are.
#[derive(Clone, Copy, Debug)]
pub struct Adopt {
    pub policy: Policy,
    pub xdp_mode: XdpMode,
    /// `--max-endpoints` for a root the classifier is not on yet.
    pub max_endpoints: Option<u32>,
}

/// Reads every macvlan network and every running container's endpoints on
/// them.
pub async fn snapshot(engine: &Engine, adopt: Adopt) -> Result<Snapshot> {
    let mut snap = Snapshot {
        read_at: Some(std::time::SystemTime::now()),
        ..Default::default()
    };
    for n in engine.macvlan_networks().await? {
        match network(&n, adopt) {
            Ok(net) => snap.networks.push(net),
            Err(LeftOut::Cannot(problem)) => snap.problems.push(problem),
            Err(LeftOut::Unread(problem)) => {
                snap.problems.push(problem);
                snap.unread
                    .networks
                    .insert(n.id.clone().unwrap_or_default());
            }
        }
    }
    let wanted = snap.network_names();
    if wanted.is_empty() {
        return Ok(snap);
    }
    let ids = engine.running_containers().await?;
    let seen: Vec<(String, Seen)> =
        futures::stream::iter(ids)
            .map(|id| {
                let wanted = &wanted;
                async move {
                    Ok::<_, anyhow::Error>((id.clone(), container(engine, &id, wanted).await?))
                }
            })
            .buffer_unordered(CONCURRENCY)
            .try_collect()
            .await?;
    for (id, s) in seen {
        match s {
            Seen::Gone => {}
            Seen::Unreadable(problem) => {
                snap.problems.push(problem);
                snap.unread.containers.insert(id);
            }
            Seen::Running {
                container,
                endpoints,
                problems,
            } => {
                snap.problems.extend(problems);
                if !endpoints.is_empty() {
                    snap.containers.push((container, endpoints));
                }
            }
        }
    }
    snap.containers.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    Ok(snap)
}

/// Why a Docker network is not taken.
#[derive(Debug)]
pub enum LeftOut {
    /// It cannot be counted here: its options do not map, or its parent is
    /// not a link of this namespace.
    Cannot(String),
    /// Its parent could not be read this time: what is recorded of it is
    /// kept.
    Unread(String),
}

impl std::fmt::Display for LeftOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LeftOut::Cannot(p) | LeftOut::Unread(p) => f.write_str(p),
        }
    }
}

/// A Docker network as a foreign network, if its parent is a link of this
/// namespace; else the reason, never a guess at another link.
pub fn network(n: &bollard::models::Network, adopt: Adopt) -> Result<ForeignNetwork, LeftOut> {
    let mut net = mapping::network(n, adopt.policy, adopt.xdp_mode).map_err(LeftOut::Cannot)?;
    net.max_endpoints = adopt.max_endpoints;
    let parent = net.parent.clone();
    match netlink::run(None, |nl| async move { nl.link(&parent).await }) {
        Ok(Some(_)) => Ok(net),
        Ok(None) => {
            let ino = crate::netns::current_inode()
                .map(|i| i.to_string())
                .unwrap_or_else(|_| "?".into());
            Err(LeftOut::Cannot(format!(
                "Docker network {} (parent {}): no link {} in this network namespace (inode \
                 {ino}), so its containers are not counted; run mvnet in the namespace where \
                 dockerd made the network, e.g. `nsenter --net=/proc/$(pidof dockerd)/ns/net \
                 mvnet docker ...`",
                net.name, net.parent, net.parent
            )))
        }
        Err(e) => Err(LeftOut::Unread(format!(
            "Docker network {}: reading link {}: {e:#}; what mvnet has of it is kept as it \
             was, and the next sync reads it again",
            net.name, net.parent
        ))),
    }
}

/// One Docker container as seen now.
pub enum Seen {
    /// Gone, stopped, or without a sandbox: it has no endpoint to count.
    Gone,
    /// Running, with its endpoints on the wanted networks and what of them
    /// could not be mapped.
    Running {
        container: ForeignContainer,
        endpoints: Vec<ForeignEndpoint>,
        problems: Vec<String>,
    },
    /// Running, but what Docker reports about it does not map.
    Unreadable(String),
}

/// Reads one container and its endpoints on `wanted` networks.
pub async fn container(
    engine: &Engine,
    id: &str,
    wanted: &HashMap<String, String>,
) -> Result<Seen> {
    let Some(c) = engine.container(id).await? else {
        return Ok(Seen::Gone);
    };
    let (container, attachments) = match mapping::container(&c, wanted) {
        None => return Ok(Seen::Gone),
        Some(Ok(x)) => x,
        Some(Err(problem)) => return Ok(Seen::Unreadable(problem)),
    };
    if attachments.is_empty() {
        return Ok(Seen::Running {
            container,
            endpoints: Vec::new(),
            problems: Vec::new(),
        });
    }
    let netns = container.netns.clone();
    let ifnames = match tokio::task::spawn_blocking(move || ifnames(&netns)).await? {
        Ok(m) => m,
        // It stopped between the inspect and now: its die event follows.
        Err(_) if !container.netns.exists() => return Ok(Seen::Gone),
        Err(e) => {
            return Ok(Seen::Unreadable(format!(
                "Docker container {}: reading the links of its namespace {}: {e:#}",
                container.name,
                container.netns.display()
            )))
        }
    };
    let (endpoints, problems) = mapping::endpoints(&container, &attachments, &ifnames);
    Ok(Seen::Running {
        container,
        endpoints,
        problems,
    })
}

/// MAC → link name of the links in the namespace at `netns` (loopback and
/// links without a MAC left out).
pub fn ifnames(netns: &Path) -> Result<HashMap<Mac, String>> {
    let ns = NetNs::from_path(netns);
    let links = netlink::run(Some(&ns), |nl| async move { nl.links().await })?;
    Ok(links
        .into_iter()
        .filter_map(|l| Some((l.mac.filter(|m| m.octets() != [0; 6])?, l.name)))
        .collect())
}
