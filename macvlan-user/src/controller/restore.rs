//! `mvnet restore`: after a reboot or a parent lost behind our back,
//! recreate the parents we own and the endpoints whose namespaces still
//! exist; purge what can no longer be restored.
use anyhow::Result;

use super::{endpoint, network::create_parent, Controller};
use crate::{
    model::{ParentOrigin, Teardown},
    netlink,
    netns::NetNs,
};

/// What a restore did, for the user.
#[derive(Debug, Default)]
pub struct RestoreReport {
    pub parents_recreated: Vec<String>,
    pub endpoints_recreated: Vec<String>,
    pub containers_purged: Vec<String>,
    /// Stops, removals and disconnects whose last save had failed, now
    /// finished.
    pub teardowns_finished: Vec<String>,
    pub classifiers_attached: Vec<String>,
    pub problems: Vec<String>,
}

fn link_exists(ns: Option<&NetNs>, name: &str) -> Result<bool> {
    let name = name.to_owned();
    Ok(netlink::run(ns, move |nl| async move { nl.link(&name).await })?.is_some())
}

impl Controller {
    pub fn restore(&mut self) -> Result<RestoreReport> {
        let mut report = RestoreReport::default();
        let mut created = std::collections::BTreeSet::new();
        for net in self.state.networks.values() {
            if link_exists(None, &net.parent)? || created.contains(&net.parent) {
                continue;
            }
            if net.parent_origin == ParentOrigin::Existing {
                report.problems.push(format!(
                    "network {}: parent {} is missing and was not created by mvnet; bring it back, then run `mvnet restore` again",
                    net.name, net.parent
                ));
                continue;
            }
            match create_parent(&net.parent, net.parent_origin, net.vlan.as_ref()) {
                Ok(()) => {
                    created.insert(net.parent.clone());
                    report.parents_recreated.push(net.parent.clone());
                }
                Err(e) => report.problems.push(format!("network {}: {e:#}", net.name)),
            }
        }

        self.finish_teardowns(&mut report);
        self.restore_datapath(&mut report)?;

        let containers: Vec<_> = self.state.containers.values().cloned().collect();
        for c in containers {
            if self.state.teardowns.contains_key(&c.id) {
                // Finishing it failed (a problem is reported): not restored.
                continue;
            }
            if !c.running && c.endpoints.is_empty() {
                // Stopped: holds nothing in the kernel; `start` brings it back.
                continue;
            }
            let ns_alive = c.netns.exists();
            if !ns_alive {
                // Out of the classifier too, and addresses back to the pools.
                for ep in c.endpoints.values() {
                    self.release_endpoint(ep);
                }
                self.state.containers.remove(&c.id);
                let _ = self
                    .state_files()
                    .remove(&super::container::log_name(&c.id));
                report.containers_purged.push(c.name.clone());
                continue;
            }
            self.restore_endpoints(&c.id, &mut report)?;
        }
        self.save()?;
        Ok(report)
    }

    /// Finishes the teardowns that were recorded but not completed.
    fn finish_teardowns(&mut self, report: &mut RestoreReport) {
        for (id, teardown) in self.state.teardowns.clone() {
            let Some(c) = self.state.containers.get(&id).cloned() else {
                self.state.teardowns.remove(&id);
                continue;
            };
            let (what, done) = match &teardown {
                Teardown::Stop => ("stop", self.finish_stop(&c)),
                Teardown::Remove => {
                    let done = self.finish_remove(&c);
                    if done.is_ok() {
                        let _ = self
                            .state_files()
                            .remove(&super::container::log_name(&c.id));
                    }
                    ("removal", done)
                }
                Teardown::Disconnect { network_id } => {
                    ("disconnect", self.finish_disconnect(&id, network_id))
                }
            };
            match done {
                Ok(()) => report
                    .teardowns_finished
                    .push(format!("{what} of container {}", c.name)),
                Err(e) => report
                    .problems
                    .push(format!("container {}: finishing its {what}: {e:#}", c.name)),
            }
        }
    }

    /// Re-attaches the classifier where its pins are gone (bpffs is empty
    /// after a reboot) and puts back every endpoint of that root.
    fn restore_datapath(&mut self, report: &mut RestoreReport) -> Result<()> {
        let mut roots: Vec<String> = self
            .state
            .networks
            .values()
            .map(|n| n.root().0.to_owned())
            .collect();
        roots.sort();
        roots.dedup();
        for root in roots {
            let dir = super::datapath::pin_dir(&root)?;
            if crate::datapath::pinned::is_attached(&dir) {
                continue;
            }
            let nets: Vec<_> = self
                .state
                .networks
                .values()
                .filter(|n| n.root().0 == root)
                .cloned()
                .collect();
            if let Err(e) = self.attach_datapath(&nets[0]) {
                report.problems.push(format!("classifier on {root}: {e:#}"));
                continue;
            }
            for c in self.state.containers.values() {
                if !c.netns.exists() {
                    continue;
                }
                for ep in c.endpoints.values() {
                    if let Some(net) = nets.iter().find(|n| n.id == ep.network_id) {
                        if let Err(e) = self.datapath_add(net, ep) {
                            report
                                .problems
                                .push(format!("classifier entry of {}: {e:#}", c.name));
                        }
                    }
                }
            }
            self.apply_root_policy(&root, None)?;
            report.classifiers_attached.push(root);
        }
        Ok(())
    }

    fn restore_endpoints(&mut self, cid: &str, report: &mut RestoreReport) -> Result<()> {
        let c = self.state.containers[cid].clone();
        let ns = NetNs::from_path(&c.netns);
        // Links of removed endpoints whose deletion a crash interrupted.
        let _ = endpoint::reap_all(&ns);
        for ep in c.endpoints.values() {
            if link_exists(Some(&ns), &ep.ifname)? {
                continue;
            }
            let Some(net) = self.state.networks.get(&ep.network_id) else {
                continue;
            };
            match endpoint::plumb(net, ep, &ns) {
                Ok(()) => report
                    .endpoints_recreated
                    .push(format!("{}/{} on {}", c.name, ep.ifname, net.name)),
                Err(e) => report
                    .problems
                    .push(format!("container {} on {}: {e:#}", c.name, net.name)),
            }
        }
        Ok(())
    }
}
