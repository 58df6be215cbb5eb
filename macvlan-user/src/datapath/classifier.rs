//! The classifier of one root device: the one lifecycle that the
//! controller, the lab, the tests and the benchmarks share. It is attached
//! once (XDP, TC ingress, TC egress) and pinned in bpffs (see [`pinned`]),
//! so it outlives the process that attached it; every later command opens
//! it by its root and namespace, changes its endpoint table and policy and
//! reads its counters through [`PinnedMaps`] (which it derefs to), and the
//! last user detaches it.
use std::{
    ops::{Deref, DerefMut},
    path::{Path, PathBuf},
};

use super::{
    pinned::{self, PinnedMaps},
    DatapathError, XdpMode,
};
use crate::netns::NetNs;

/// A handle on the pinned classifier of `root` in a network namespace.
pub struct Classifier {
    root: String,
    ns: Option<NetNs>,
    dir: PathBuf,
    maps: PinnedMaps,
    /// How XDP went on, when this handle attached it.
    xdp_mode: Option<XdpMode>,
}

impl Classifier {
    /// Loads the classifier and attaches it to `root` in `ns` (`None`: the
    /// calling thread's namespace), pinned; XDP as `xdp_mode` asks (auto:
    /// TC alone on a veth with tcx, see [`super::hooks`]; else native,
    /// falling back to generic). Refuses if one is attached there already.
    /// On error nothing stays.
    pub fn attach(
        ns: Option<&NetNs>,
        root: &str,
        xdp_mode: XdpMode,
    ) -> Result<Classifier, DatapathError> {
        Self::attach_hooks(ns, root, Some(xdp_mode))
    }

    /// [`Classifier::attach`], with XDP or (`None`) with the TC programs
    /// alone, which then count every frame themselves: what the tests
    /// compare XDP's counting against. The control plane passes its
    /// `--xdp-mode`.
    pub fn attach_hooks(
        ns: Option<&NetNs>,
        root: &str,
        xdp_mode: Option<XdpMode>,
    ) -> Result<Classifier, DatapathError> {
        Self::attach_sized(ns, root, xdp_mode, macvlan_common::DEFAULT_ENDPOINTS)
    }

    /// [`Classifier::attach_hooks`] with room for `capacity` endpoints
    /// (`--max-endpoints`, 1 to 65,536): the size of its per-endpoint
    /// maps, fixed until it is detached.
    pub fn attach_sized(
        ns: Option<&NetNs>,
        root: &str,
        xdp_mode: Option<XdpMode>,
        capacity: u32,
    ) -> Result<Classifier, DatapathError> {
        let name = root.to_owned();
        let (dir, mode) = crate::netns::run_in(ns, move || {
            let dir = pinned::pin_dir(pinned::netns_inode(None)?, &name);
            let mode = pinned::attach_hooks(&name, &dir, xdp_mode, capacity)?;
            Ok::<_, DatapathError>((dir, mode))
        })??;
        let maps = match PinnedMaps::open(&dir) {
            Ok(m) => m,
            Err(e) => {
                let _ = Self::remove(ns, root);
                return Err(e);
            }
        };
        Ok(Classifier {
            root: root.to_owned(),
            ns: ns.cloned(),
            dir,
            maps,
            xdp_mode: mode,
        })
    }

    /// Opens the classifier pinned for `root` in `ns` (`None`: the calling
    /// thread's namespace).
    pub fn open(ns: Option<&NetNs>, root: &str) -> Result<Classifier, DatapathError> {
        let dir = Self::dir_of(ns, root)?;
        Ok(Classifier {
            maps: PinnedMaps::open(&dir)?,
            root: root.to_owned(),
            ns: ns.cloned(),
            dir,
            xdp_mode: None,
        })
    }

    /// Where the classifier of `root` in `ns` is pinned.
    pub fn dir_of(ns: Option<&NetNs>, root: &str) -> Result<PathBuf, DatapathError> {
        Ok(pinned::pin_dir(pinned::netns_inode(ns)?, root))
    }

    /// Detaches this classifier from its root and removes its pins.
    pub fn detach(self) -> Result<(), DatapathError> {
        let Classifier { root, ns, maps, .. } = self;
        drop(maps);
        Self::remove(ns.as_ref(), &root)
    }

    /// Detaches whatever is pinned for `root` in `ns` and removes the pins,
    /// also when they are broken (an interrupted attach or detach, the
    /// device gone) and cannot be opened.
    pub fn remove(ns: Option<&NetNs>, root: &str) -> Result<(), DatapathError> {
        let name = root.to_owned();
        crate::netns::run_in(ns, move || {
            let dir = pinned::pin_dir(pinned::netns_inode(None)?, &name);
            pinned::detach(&name, &dir)
        })?
    }

    pub fn root(&self) -> &str {
        &self.root
    }

    /// Its pin directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// How XDP was attached, when this handle attached it (`None` also
    /// for TC alone).
    pub fn xdp_mode(&self) -> Option<XdpMode> {
        self.xdp_mode
    }

    /// Whether the kernel has it attached (see [`pinned::is_attached`]).
    pub fn is_attached(&self) -> bool {
        pinned::is_attached(&self.dir)
    }
}

impl Deref for Classifier {
    type Target = PinnedMaps;

    fn deref(&self) -> &PinnedMaps {
        &self.maps
    }
}

impl DerefMut for Classifier {
    fn deref_mut(&mut self) -> &mut PinnedMaps {
        &mut self.maps
    }
}
