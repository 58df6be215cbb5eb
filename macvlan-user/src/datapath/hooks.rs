//! Which hooks of a root device the classifier runs on, and why.
//!
//! `--xdp-mode auto` puts XDP where it saves work and leaves it off where
//! it costs more than it saves. On a veth, a native XDP program switches
//! the device's receive path to NAPI (`veth_enable_xdp`: every frame then
//! goes through the peer's ptr_ring and a NAPI poll instead of straight
//! into the stack), which costs more per frame than the whole classifier;
//! there TC ingress classifies every frame alone. On a NIC the driver
//! runs XDP before any skb exists, and XDP stays. TC alone is used only
//! where its links can be pinned (tcx, Linux 6.6+): on older kernels the
//! TC programs are clsact filters with nothing the kernel could be asked
//! about, and the pinned XDP link is what says the classifier is there.
use std::path::Path;

use super::{pinned, DatapathError, XdpMode};

/// The hooks the classifier of a root device runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookSet {
    /// XDP counts the wire frames and marks them; TC ingress counts what
    /// XDP did not see (bridge-mode frames); TC egress what leaves.
    XdpAndTc,
    /// TC ingress counts every frame arriving, TC egress what leaves.
    TcOnly,
}

impl HookSet {
    /// The hooks by name, as `stats --json` and `network inspect` list them.
    pub fn names(self) -> &'static [&'static str] {
        match self {
            HookSet::XdpAndTc => &["xdp", "tc_ingress", "tc_egress"],
            HookSet::TcOnly => &["tc_ingress", "tc_egress"],
        }
    }

    /// Why the classifier runs on these hooks, for the network's
    /// `--xdp-mode` (`None`: not known, e.g. several networks share the root).
    pub fn reason(self, requested: Option<XdpMode>) -> &'static str {
        // One line of `stats` each (under 80 columns); the README says more.
        match (self, requested) {
            (HookSet::TcOnly, Some(XdpMode::Auto) | None) => {
                "tc only: veth parent, native XDP would switch its receive path to NAPI"
            }
            (HookSet::TcOnly, Some(_)) => "tc only: attached without XDP",
            (HookSet::XdpAndTc, Some(XdpMode::Native)) => {
                "xdp + tc: --xdp-mode native; XDP counts wire frames, TC ingress the rest"
            }
            (HookSet::XdpAndTc, Some(XdpMode::Generic)) => {
                "xdp + tc: --xdp-mode generic; XDP counts wire frames, TC ingress the rest"
            }
            (HookSet::XdpAndTc, _) => {
                "xdp + tc: not a veth (or no tcx); XDP counts wire frames, TC ingress the rest"
            }
        }
    }
}

/// The XDP mode to attach with on `root` (in the calling thread's
/// namespace) for `requested`: `None` (TC only) for auto on a veth where
/// TC links can be pinned, else `requested` as it is.
pub fn resolve(root: &str, requested: Option<XdpMode>) -> Result<Option<XdpMode>, DatapathError> {
    if requested != Some(XdpMode::Auto) || !pinned::uses_tcx() {
        return Ok(requested);
    }
    let name = root.to_owned();
    let kind = crate::netlink::run(None, move |nl| async move { nl.lower_link(&name).await })
        .map_err(|e| DatapathError::Device(format!("reading the kind of {root}: {e:#}")))?
        .and_then(|l| l.kind);
    Ok(choose(kind.as_deref(), true))
}

/// `--xdp-mode auto` on a device of `kind` (IFLA_INFO_KIND; `None` for a
/// physical NIC, which has none), `tcx`: whether TC links can be pinned.
pub fn choose(kind: Option<&str>, tcx: bool) -> Option<XdpMode> {
    if tcx && kind == Some("veth") {
        None
    } else {
        Some(XdpMode::Auto)
    }
}

/// The hooks the classifier pinned in `dir` is attached to, as the kernel
/// says (`None`: not attached; see [`pinned::is_attached`]).
pub fn in_use(dir: &Path) -> Option<HookSet> {
    if !pinned::is_attached(dir) {
        return None;
    }
    Some(if dir.join(pinned::LINK_XDP).exists() {
        HookSet::XdpAndTc
    } else {
        HookSet::TcOnly
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_is_tc_only_on_veth_with_tcx() {
        assert_eq!(choose(Some("veth"), true), None);
        // Without tcx nothing but the XDP link could be pinned.
        assert_eq!(choose(Some("veth"), false), Some(XdpMode::Auto));
        // A NIC (no kind) and other virtual devices keep XDP.
        assert_eq!(choose(None, true), Some(XdpMode::Auto));
        assert_eq!(choose(Some("bond"), true), Some(XdpMode::Auto));
    }

    #[test]
    fn reasons_name_the_hooks_and_the_cause() {
        let tc = HookSet::TcOnly.reason(Some(XdpMode::Auto));
        assert!(tc.starts_with("tc only: veth parent, native XDP would switch"));
        let native = HookSet::XdpAndTc.reason(Some(XdpMode::Native));
        assert!(native.starts_with("xdp + tc: --xdp-mode native"));
        assert_eq!(HookSet::TcOnly.names(), ["tc_ingress", "tc_egress"]);
        assert_eq!(
            HookSet::XdpAndTc.names(),
            ["xdp", "tc_ingress", "tc_egress"]
        );
    }
}
