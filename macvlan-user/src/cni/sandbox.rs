//! The container's side of a chained ADD: the interface the macvlan plugin
//! made in CNI_NETNS, its real MAC and mode, and its parent, found through
//! the link's IFLA_LINK and IFLA_LINK_NETNSID, which must name a link of
//! mvnet-cni's own namespace (where the classifier goes).
use std::path::Path;

use macvlan_common::ETH_P_ARP;

use super::spec::{CniError, CniResult, Code};
use crate::{
    model::{Mac, MacvlanMode},
    netlink,
    netns::{self, NetNs},
};

/// A macvlan in a container and its parent in mvnet's namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SandboxLink {
    pub mac: Mac,
    pub mode: MacvlanMode,
    /// The parent's name in mvnet's namespace.
    pub parent: String,
}

/// mvnet's own namespace, as a file the netlink thread can open from
/// inside the container's namespace (the main thread never leaves ours).
const OWN_NETNS: &str = "/proc/self/ns/net";

/// The container's namespace at `path`, which must be one.
pub fn open(path: &Path) -> CniResult<NetNs> {
    match netns::is_network_namespace(path) {
        Ok(true) => Ok(NetNs::from_path(path)),
        Ok(false) => Err(CniError::new(
            Code::UnknownContainer,
            format!("CNI_NETNS {} is not a network namespace", path.display()),
        )),
        Err(e) => Err(CniError::new(
            Code::UnknownContainer,
            format!("failed to open netns {:?}: {e}", path.display().to_string()),
        )),
    }
}

/// Finds `ifname` in `ns`: it must be a macvlan whose parent is a link of
/// mvnet's namespace.
pub fn find(ns: &NetNs, ifname: &str) -> CniResult<SandboxLink> {
    let own = NetNs::from_path(OWN_NETNS);
    let name = ifname.to_owned();
    let (lower, nsid) = netlink::run(Some(ns), move |nl| async move {
        let Some(lower) = nl.lower_link(&name).await? else {
            return Ok((None, None));
        };
        let nsid = nl.nsid_of(&own).await?;
        Ok((Some(lower), nsid))
    })
    .map_err(|e| {
        CniError::new(
            Code::Io,
            format!("reading {ifname} in {}: {e}", ns.path().display()),
        )
    })?;
    let where_ = ns.path().display();
    let Some(lower) = lower else {
        return Err(CniError::new(
            Code::InvalidConfig,
            format!("there is no interface {ifname} in the container's namespace {where_}; put mvnet-cni after the macvlan plugin in the conflist (or give \"master\" to let mvnet-cni create it)"),
        ));
    };
    if lower.kind.as_deref() != Some("macvlan") {
        return Err(CniError::new(
            Code::InvalidConfig,
            format!(
                "{ifname} in {where_} is a {} link, not a macvlan; mvnet-cni counts macvlan endpoints: chain it after the macvlan plugin",
                lower.kind.as_deref().unwrap_or("plain")
            ),
        ));
    }
    let (Some(mac), Some(mode)) = (lower.link.mac, lower.macvlan_mode) else {
        return Err(CniError::new(
            Code::InvalidConfig,
            format!("{ifname} in {where_} has no MAC address or a macvlan mode mvnet does not handle (source)"),
        ));
    };
    let Some(index) = lower.lower_index else {
        return Err(CniError::new(
            Code::Io,
            format!("the kernel reports no parent (IFLA_LINK) for {ifname} in {where_}"),
        ));
    };
    // Without IFLA_LINK_NETNSID the parent is in the container's own
    // namespace; with it, the id must be the one the container's
    // namespace gives ours.
    match (lower.lower_netnsid, nsid) {
        (Some(a), Some(b)) if a == b => {}
        _ => {
            return Err(CniError::new(
                Code::InvalidConfig,
                format!(
                    "the parent of {ifname} (ifindex {index}) is not in mvnet-cni's network namespace (inode {}); run the container runtime, and so its CNI plugins, in the namespace of the macvlan's master",
                    crate::netns::current_inode().unwrap_or_default()
                ),
            ))
        }
    }
    let parent = netlink::run(None, move |nl| async move { nl.link_by_index(index).await })
        .map_err(|e| CniError::new(Code::Io, format!("reading the parent of {ifname}: {e}")))?
        .ok_or_else(|| {
            CniError::new(
                Code::Io,
                format!(
                    "the parent of {ifname} (ifindex {index}) is gone from mvnet-cni's namespace"
                ),
            )
        })?;
    Ok(SandboxLink {
        mac,
        mode,
        parent: parent.name,
    })
}

/// The MAC of `ifname` in `ns`, if it is there.
pub fn mac_of(ns: &NetNs, ifname: &str) -> CniResult<Option<Mac>> {
    let name = ifname.to_owned();
    netlink::run(Some(ns), move |nl| async move { nl.link(&name).await })
        .map(|l| l.and_then(|l| l.mac))
        .map_err(|e| {
            CniError::new(
                Code::Io,
                format!("reading {ifname} in {}: {e}", ns.path().display()),
            )
        })
}

/// An ARP announcement (RFC 5227 2.3) of `ip` by `mac`: a broadcast
/// request whose sender and target address are both `ip`, as the macvlan
/// plugin's gratuitous ARP is.
pub fn announcement(mac: Mac, ip: std::net::Ipv4Addr) -> [u8; 42] {
    let mut f = [0u8; 42];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&mac.octets());
    f[12..14].copy_from_slice(&ETH_P_ARP.to_be_bytes());
    // Ethernet, IPv4, 6- and 4-byte addresses, request.
    f[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f[22..28].copy_from_slice(&mac.octets());
    f[28..32].copy_from_slice(&ip.octets());
    // Target MAC unknown (zero), target address its own.
    f[38..42].copy_from_slice(&ip.octets());
    f
}

/// Sends an ARP announcement of each of `ips` from `ifname` in `ns` (by
/// `mac`, its MAC). The first the macvlan plugin sent went out before the
/// device had its source checks, from a MAC the classifier did not know
/// yet, so a root that enforces dropped it at its egress; neighbours that
/// still map a reused address to a former container's MAC learn the new
/// one from this. Best effort, as the plugin's own: an error is returned
/// for the caller to report, never to fail the ADD on.
pub fn announce(
    ns: &NetNs,
    ifname: &str,
    mac: Mac,
    ips: &[std::net::Ipv4Addr],
) -> Result<(), String> {
    let frames: Vec<[u8; 42]> = ips.iter().map(|ip| announcement(mac, *ip)).collect();
    let name = ifname.to_owned();
    ns.run(move || -> std::io::Result<()> {
        let index = crate::sys::net::if_index(&name)
            .ok_or_else(|| std::io::Error::from_raw_os_error(libc::ENODEV))?;
        // Protocol 0: a socket that sends and receives nothing.
        let sock = crate::sys::packet::PacketSocket::new(0)?;
        for f in &frames {
            sock.send_to(f, index as i32, ETH_P_ARP, [0xff; 6])?;
        }
        Ok(())
    })
    .map_err(|e| e.to_string())?
    .map_err(|e| format!("announcing the addresses of {ifname}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_announcement_claims_the_address_for_the_mac() {
        let mac = Mac::new([0x02, 0x42, 0x0a, 0x41, 0x00, 0x03]);
        let f = announcement(mac, std::net::Ipv4Addr::new(10, 65, 0, 3));
        let want: Vec<u8> = [
            &[0xff; 6][..],
            &mac.octets(),
            &[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1],
            &mac.octets(),
            &[10, 65, 0, 3],
            &[0; 6],
            &[10, 65, 0, 3],
        ]
        .concat();
        assert_eq!(f.to_vec(), want);
    }
}
