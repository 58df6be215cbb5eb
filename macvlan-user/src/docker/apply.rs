//! The state changes `sync` and `watch` make, through the reconciling
//! core's foreign-endpoint calls. Each takes the state lock for as long as
//! it runs, and no longer: a watcher never holds other writers up.
use std::path::Path;

use anyhow::Result;

use super::read::Snapshot;
use crate::{
    controller::{
        foreign::{ConvergeReport, ForeignContainer, ForeignEndpoint, ForeignNetwork},
        Controller,
    },
    model::Owner,
};

/// Whether a state object is one of Docker's.
pub fn docker(owner: &Owner) -> bool {
    *owner == Owner::Docker
}

/// A writer's controller, as the CLI's: locked, in the state's namespace,
/// with what a killed command left finished or rolled back.
fn open(state_dir: &Path) -> Result<Controller> {
    let mut ctl = Controller::open(state_dir)?;
    ctl.check_namespace()?;
    for rec in ctl.recover(false) {
        match rec.result {
            Ok(()) => eprintln!("mvnet: {}", rec.what),
            Err(e) => eprintln!(
                "mvnet: warning: {}: {e:#}; run `mvnet restore` to converge",
                rec.what
            ),
        }
    }
    Ok(ctl)
}

/// Of what a snapshot read, what the state holds after the converge.
#[derive(Debug, Default)]
pub struct InTable {
    /// The ids of the networks adopted (the others were refused).
    pub networks: std::collections::BTreeSet<String>,
    pub endpoints: usize,
    /// Containers with an endpoint in the table.
    pub containers: usize,
}

/// Makes the state and classifiers hold exactly what Docker has; what the
/// state then holds of it, read under the same lock.
pub fn converge(state_dir: &Path, snap: &Snapshot) -> Result<(ConvergeReport, InTable)> {
    let mut ctl = open(state_dir)?;
    let report = ctl.converge_foreign(
        docker,
        snap.networks.clone(),
        snap.containers.clone(),
        snap.read_at,
        &snap.unread,
    )?;
    let state = &ctl.state;
    let mut table = InTable {
        networks: snap
            .networks
            .iter()
            .filter(|n| state.networks.contains_key(&n.id))
            .map(|n| n.id.clone())
            .collect(),
        ..Default::default()
    };
    for (c, eps) in &snap.containers {
        let Some(k) = state.containers.get(&c.id) else {
            continue;
        };
        let n = eps
            .iter()
            .filter(|e| {
                table.networks.contains(&e.network_id)
                    && k.endpoints.values().any(|k| k.network_id == e.network_id)
            })
            .count();
        table.endpoints += n;
        table.containers += usize::from(n > 0);
    }
    Ok((report, table))
}

pub fn adopt_network(state_dir: &Path, n: ForeignNetwork) -> Result<()> {
    open(state_dir)?.adopt_network(n)
}

pub fn forget_network(state_dir: &Path, id: &str) -> Result<()> {
    open(state_dir)?.forget_network(id)
}

pub fn forget_container(state_dir: &Path, id: &str) -> Result<()> {
    open(state_dir)?.forget_container(id)
}

pub fn forget_endpoint(state_dir: &Path, container_id: &str, network_id: &str) -> Result<()> {
    open(state_dir)?.forget_endpoint(container_id, network_id)
}

/// Makes one container's endpoints in the state exactly `endpoints`
/// (adding, replacing what changed, forgetting the rest); returns one line
/// per change.
pub fn container(
    state_dir: &Path,
    c: &ForeignContainer,
    endpoints: Vec<ForeignEndpoint>,
) -> Result<Vec<String>> {
    let mut ctl = open(state_dir)?;
    let known = ctl.state.containers.get(&c.id).cloned();
    let mut changes = Vec::new();
    let net_name = |ctl: &Controller, id: &str| {
        ctl.state
            .networks
            .get(id)
            .map(|n| n.name.clone())
            .unwrap_or_else(|| id.to_owned())
    };
    let mut items = Vec::new();
    let mut lines = Vec::new();
    for ep in &endpoints {
        let same = known.as_ref().is_some_and(|k| {
            k.netns == c.netns
                && k.endpoints.values().any(|e| {
                    e.network_id == ep.network_id
                        && e.mac == ep.mac
                        && e.ifname == ep.ifname
                        && e.ipv4 == ep.ipv4
                        && e.ipv6 == ep.ipv6
                })
        });
        if same {
            continue;
        }
        lines.push(format!(
            "+ endpoint {} {} {} on {}",
            c.name,
            ep.ifname,
            ep.mac,
            net_name(&ctl, &ep.network_id)
        ));
        items.push((c.clone(), ep.clone()));
    }
    // One batch: one save for all of the container's endpoints.
    for (line, result) in lines.into_iter().zip(ctl.adopt_endpoints(items)) {
        result?;
        changes.push(line);
    }
    for e in known.iter().flat_map(|k| k.endpoints.values()) {
        if !endpoints.iter().any(|ep| ep.network_id == e.network_id) {
            let line = format!(
                "- endpoint {} {} {} on {}",
                c.name,
                e.ifname,
                e.mac,
                net_name(&ctl, &e.network_id)
            );
            ctl.forget_endpoint(&c.id, &e.network_id)?;
            changes.push(line);
        }
    }
    Ok(changes)
}

/// Whether the state holds Docker's container `id` (read without the
/// lock).
pub fn knows_container(state_dir: &Path, id: &str) -> bool {
    Controller::snapshot(state_dir).is_ok_and(|ctl| {
        ctl.state
            .containers
            .get(id)
            .is_some_and(|c| docker(&c.owner))
    })
}
