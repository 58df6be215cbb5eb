//! Intent before action: every writer saves what it is about to do
//! ([`Intent`]) before its first kernel effect, and clears it in the same
//! save that records the result. A writer killed in between leaves the
//! intent in the state; the next writer (at open) or `mvnet restore`
//! rolls it back (run, connect, network create: what they made is removed
//! and the reserved addresses go back) or finishes it (stop, rm,
//! disconnect, network rm: they only take things away).
use anyhow::{anyhow, Result};

use super::{endpoint, Controller};
use crate::{
    model::{Container, Endpoint, Intent, MacvlanMode, Network},
    netlink,
    netns::{self, NetNs},
};

/// The context of an error from a command's last save (its kernel work
/// done): what that means for the user.
#[derive(Debug)]
pub(super) struct CommitFailed(String);

impl std::fmt::Display for CommitFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What recovering one interrupted command did.
pub struct Recovered {
    /// E.g. "rolled back the interrupted run of container web".
    pub what: String,
    pub result: Result<()>,
}

impl Intent {
    /// Whether recovery finishes this change (else it rolls it back).
    fn finishes(&self) -> bool {
        matches!(
            self,
            Intent::Disconnect { .. }
                | Intent::Stop { .. }
                | Intent::Remove { .. }
                | Intent::RemoveNetwork { .. }
        )
    }
}

impl Controller {
    /// Records `intent` durably before the kernel is touched.
    pub(super) fn begin(&mut self, intent: Intent) -> Result<()> {
        self.state.pending.push(intent);
        if let Err(e) = self.save() {
            self.state.pending.pop();
            return Err(e);
        }
        Ok(())
    }

    /// Clears this command's intent in the same save as its result. When
    /// that save fails, the intent stays on disk (the last save there was
    /// `begin`'s): a removal is then finished by the next writer or
    /// `mvnet restore`, and [`Controller::fail`] rolls back the rest.
    pub(super) fn commit(&mut self) -> Result<()> {
        let intent = self.state.pending.pop();
        let Err(e) = self.store.save(&self.state) else {
            return Ok(());
        };
        let Some(intent) = intent else {
            return Err(anyhow!(e));
        };
        // Named as the state on disk has it (this one may have lost it).
        let what = match self.store.load() {
            Ok(saved) => intent.describe(&saved),
            Err(_) => intent.describe(&self.state),
        };
        let msg = if intent.finishes() {
            format!(
                "the {what} is done in the kernel, but saving the state failed, so the state still records it as under way; once that is fixed, the next mvnet command that changes state, or `mvnet restore`, finishes it"
            )
        } else {
            format!("saving the result of the {what} failed")
        };
        self.state.pending.push(intent);
        Err(anyhow!(e).context(CommitFailed(msg)))
    }

    /// After `error` in a command that records `begin`'s intent: rolls
    /// back what it made, or (for a removal) gives up on it, leaving what
    /// the state says; returns `error`. A removal whose last save failed
    /// ([`CommitFailed`]) is left recorded: the kernel no longer has what
    /// the state had, and the next writer finishes it.
    pub(super) fn fail(&mut self, error: anyhow::Error) -> anyhow::Error {
        // What is on disk is the state before the command, plus its intent
        // (the command's only other save is its last step).
        match self.store.load() {
            Ok(saved) => self.state = saved,
            Err(e) => return error.context(format!("re-reading the state: {e}")),
        }
        let Some(intent) = self.state.pending.last().cloned() else {
            return error;
        };
        let committing = error.downcast_ref::<CommitFailed>().is_some();
        if committing && intent.finishes() {
            return error;
        }
        let undone = if intent.finishes() {
            Ok(())
        } else {
            self.roll_back(&intent)
        };
        self.state.pending.pop();
        let saved = self.save();
        match (undone, saved) {
            (Ok(()), Ok(())) if committing => error.context("it was undone"),
            (Ok(()), Ok(())) => error,
            (Err(e), _) | (_, Err(e)) => error.context(format!(
                "undoing it failed too ({e:#}); run `mvnet restore` to converge"
            )),
        }
    }

    /// Rolls back or finishes every change an earlier, killed command left
    /// pending (with `dry`, only says what it would do).
    pub fn recover(&mut self, dry: bool) -> Vec<Recovered> {
        let mut done = Vec::new();
        let mut failed = Vec::new();
        while let Some(intent) = self.state.pending.last().cloned() {
            let verb = match (intent.finishes(), dry) {
                (true, true) => "would finish",
                (true, false) => "finished",
                (false, true) => "would roll back",
                (false, false) => "rolled back",
            };
            let what = format!("{verb} the interrupted {}", intent.describe(&self.state));
            let before = self.state.pending.len();
            let result = if dry {
                Ok(())
            } else if intent.finishes() {
                self.finish(&intent)
            } else {
                self.roll_back(&intent).and_then(|()| self.commit())
            };
            if self.state.pending.len() == before {
                failed.extend(self.state.pending.pop());
            }
            done.push(Recovered { what, result });
        }
        if !failed.is_empty() {
            failed.reverse();
            self.state.pending = failed;
            if !dry {
                let _ = self.save();
            }
        }
        done
    }

    /// Finishes a removal: the same step the command runs after its intent.
    fn finish(&mut self, intent: &Intent) -> Result<()> {
        match intent {
            Intent::Stop { container_id } if self.state.containers.contains_key(container_id) => {
                self.stop_apply(container_id).map(drop)
            }
            Intent::Remove { container_id } if self.state.containers.contains_key(container_id) => {
                self.remove_apply(container_id).map(drop)
            }
            Intent::Disconnect {
                container_id,
                network_id,
            } if self
                .state
                .containers
                .get(container_id)
                .is_some_and(|c| c.endpoints.contains_key(network_id)) =>
            {
                self.disconnect_apply(network_id, container_id).map(drop)
            }
            Intent::RemoveNetwork { network_id }
                if self.state.networks.contains_key(network_id) =>
            {
                self.remove_network_apply(network_id).map(drop)
            }
            // Already done before the crash (or the object is gone).
            _ => self.commit(),
        }
    }

    /// Removes what the change of `intent` may have made; idempotent.
    pub(super) fn roll_back(&mut self, intent: &Intent) -> Result<()> {
        match intent {
            Intent::Run { container } => self.roll_back_run(container),
            Intent::Start { container } => self.undo_namespace(container),
            Intent::Connect {
                container_id,
                netns,
                endpoint,
            } => self.roll_back_connect(container_id, netns, endpoint),
            Intent::CreateNetwork {
                network,
                create_parent,
            } => self.roll_back_create_network(network, *create_parent),
            _ => Ok(()),
        }
    }

    fn roll_back_run(&mut self, c: &Container) -> Result<()> {
        if self
            .state
            .containers
            .get(&c.id)
            .is_some_and(|stored| stored.name == c.name)
        {
            self.state.containers.remove(&c.id);
        }
        self.undo_namespace(c)?;
        self.remove_log(&c.id);
        Ok(())
    }

    /// Ends the processes in the namespace `run` or `start` made for `c`,
    /// deletes it and releases its endpoints (the state keeps whatever it
    /// had before the command: nothing for `run`, the stopped container
    /// for `start`).
    fn undo_namespace(&mut self, c: &Container) -> Result<()> {
        let ns = NetNs::from_path(&c.netns);
        if let Some(ino) = netns::inode(&c.netns) {
            let left = netns::kill_all(ino, std::time::Duration::from_secs(2));
            if !left.is_empty() {
                return Err(anyhow!(
                    "processes {left:?} in network namespace {} do not end; kill them, then run `mvnet restore`",
                    c.netns.display()
                ));
            }
        }
        if let Some(name) = ns.name() {
            if c.netns.exists() {
                netns::delete(name)?;
            }
        }
        for ep in c.endpoints.values() {
            self.release_endpoint(ep);
        }
        Ok(())
    }

    fn roll_back_connect(
        &mut self,
        container_id: &str,
        path: &std::path::Path,
        ep: &Endpoint,
    ) -> Result<()> {
        if let Some(c) = self.state.containers.get_mut(container_id) {
            if c.endpoints
                .get(&ep.network_id)
                .is_some_and(|e| e.id == ep.id)
            {
                c.endpoints.remove(&ep.network_id);
            }
        }
        let passthru = self
            .state
            .networks
            .get(&ep.network_id)
            .is_some_and(|n| n.mode == MacvlanMode::Passthru);
        if netns::is_namespace(path) {
            let ns = NetNs::from_path(path);
            let tmp = endpoint::temp_name(ep);
            let ifname = ep.ifname.clone();
            let mac = ep.mac;
            netlink::run(Some(&ns), move |nl| async move {
                for l in nl.links().await? {
                    // The link under its temporary name, or renamed already
                    // (the container had no link of that name before).
                    let ours =
                        l.name == tmp || (l.name == ifname && (passthru || l.mac == Some(mac)));
                    if ours {
                        nl.delete(l.index).await?;
                    }
                }
                Ok(())
            })
            .map_err(|e| anyhow!(e))?;
        }
        self.release_endpoint(ep);
        Ok(())
    }

    fn roll_back_create_network(&mut self, net: &Network, create_parent: bool) -> Result<()> {
        self.state.networks.remove(&net.id);
        let (root, vid) = net.root();
        if self.state.networks.values().any(|n| n.root().0 == root) {
            // Shared root: only this VLAN's policy may have changed. A
            // classifier that is not attached now gets it back from
            // `restore`, which writes every policy.
            let _ = self.apply_root_policy(root, Some(vid));
        } else {
            self.detach_datapath_if_unused(root)?;
        }
        let shared_parent = self.state.networks.values().any(|n| n.parent == net.parent);
        if create_parent && !shared_parent {
            super::network::delete_link_if_present(&net.parent)?;
        }
        Ok(())
    }
}
