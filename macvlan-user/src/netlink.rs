//! Our one door to rtnetlink. The rest of mvnet speaks in links, parents
//! and addresses; only this module builds netlink messages.
//!
//! Every call runs inside a namespace chosen by the caller ([`run`]), on a
//! connection made in that namespace once per command and reused
//! ([`connections`]): one socket and the runtime that drives it per
//! namespace, never one per call.
use std::{future::Future, net::IpAddr, os::fd::AsRawFd};

use futures::TryStreamExt as _;
use rtnetlink::{
    packet_route::{
        address::{AddressAttribute, AddressFlags, AddressHeaderFlags},
        link::{LinkAttribute, LinkMessage},
        route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol},
    },
    LinkDummy, LinkMacVlan, LinkUnspec, LinkVeth, LinkVlan, RouteMessageBuilder,
};
use thiserror::Error;

use crate::{
    model::{Mac, MacvlanMode},
    netns::{self, NetNs, NetnsError},
};

pub mod connections;
pub mod tc;

#[derive(Debug, Error)]
pub enum NetlinkError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("cannot open a netlink socket: {0}")]
    Socket(#[source] std::io::Error),
    #[error("cannot start the netlink runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("{op}: {message}")]
    Request {
        op: String,
        message: String,
        errno: Option<i32>,
    },
    #[error("link {0} not found; list links with `ip link`")]
    LinkNotFound(String),
    #[error("the netlink socket closed before the kernel answered (a request could not be sent, as the warning above says); retry")]
    Closed,
}

impl NetlinkError {
    /// The kernel's errno, for a request the kernel refused.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Request { errno, .. } => *errno,
            _ => None,
        }
    }
}

fn request_error(op: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetlinkError {
    let op = op.into();
    move |e| {
        let errno = match &e {
            rtnetlink::Error::NetlinkError(msg) => msg.code.map(|c| -c.get()),
            _ => None,
        };
        let message = match errno {
            Some(n) => std::io::Error::from_raw_os_error(n).to_string(),
            None => e.to_string(),
        };
        NetlinkError::Request { op, message, errno }
    }
}

pub type Result<T> = std::result::Result<T, NetlinkError>;

/// Kernel link counters (IFLA_STATS64).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_dropped: u64,
    pub tx_dropped: u64,
    pub multicast: u64,
}

/// What we know of a link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Option<Mac>,
    pub up: bool,
    /// IFLA_IFALIAS: `mvnet:<endpoint id>` on the links mvnet makes.
    pub alias: Option<String>,
}

/// A link's lower device as the kernel reports it (IFLA_LINK and
/// IFLA_LINK_NETNSID): a macvlan's parent, possibly in another namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LowerLink {
    /// The link itself.
    pub link: Link,
    /// Its kind (IFLA_INFO_KIND: "macvlan", "veth", ...).
    pub kind: Option<String>,
    /// For a macvlan: its mode.
    pub macvlan_mode: Option<MacvlanMode>,
    /// The lower device's ifindex, in the namespace [`Self::lower_netnsid`]
    /// names (or this link's own when that is `None`).
    pub lower_index: Option<u32>,
    /// The namespace id (as seen from this link's namespace) where the
    /// lower device lives.
    pub lower_netnsid: Option<i32>,
    /// For a VLAN link (kind "vlan"): its id (IFLA_VLAN_ID).
    pub vlan_id: Option<u16>,
    /// For a VLAN link: the Ethertype of its tag (IFLA_VLAN_PROTOCOL,
    /// 0x8100 for 802.1Q, 0x88a8 for 802.1ad).
    pub vlan_protocol: Option<u16>,
}

/// A link message as a [`LowerLink`]: its kind, macvlan mode, VLAN id and
/// protocol, and its lower device (IFLA_LINK, IFLA_LINK_NETNSID).
pub fn lower_link_of(msg: &LinkMessage) -> LowerLink {
    use rtnetlink::packet_route::link::{InfoData, InfoMacVlan, InfoVlan, LinkInfo};
    let mut out = LowerLink {
        link: link_from_message(msg),
        kind: None,
        macvlan_mode: None,
        lower_index: None,
        lower_netnsid: None,
        vlan_id: None,
        vlan_protocol: None,
    };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::Link(i) => out.lower_index = Some(*i),
            LinkAttribute::LinkNetNsId(n) => out.lower_netnsid = Some(*n),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    match info {
                        LinkInfo::Kind(k) => out.kind = Some(k.to_string()),
                        LinkInfo::Data(InfoData::MacVlan(data)) => {
                            for d in data {
                                if let InfoMacVlan::Mode(m) = d {
                                    out.macvlan_mode = MacvlanMode::from_kernel(*m);
                                }
                            }
                        }
                        LinkInfo::Data(InfoData::Vlan(data)) => {
                            for d in data {
                                match d {
                                    InfoVlan::Id(id) => out.vlan_id = Some(*id),
                                    InfoVlan::Protocol(p) => {
                                        out.vlan_protocol = Some(u16::from(*p))
                                    }
                                    _ => {}
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// A netlink connection inside one namespace.
#[derive(Clone)]
pub struct Netlink {
    handle: rtnetlink::Handle,
}

/// Runs `f` with the netlink connection of `ns` (or of the caller's
/// namespace) and returns its result. `f` runs on a thread inside that
/// namespace, so whatever else it does (files under /proc/sys/net, BPF
/// attachments by ifindex) happens there too: for `ns`, a thread of its
/// own; for the caller's namespace, the calling thread, unless that thread
/// is running async code already (a tokio runtime's, or another `run`'s),
/// which cannot block on `f`.
pub fn run<T, F, Fut>(ns: Option<&NetNs>, f: F) -> Result<T>
where
    T: Send,
    F: FnOnce(Netlink) -> Fut + Send,
    Fut: Future<Output = Result<T>>,
{
    // The namespace's inode, which names its connection.
    let inode = match ns {
        Some(ns) => netns::inode(ns.path()),
        None => Some(netns::current_inode().map_err(NetlinkError::Socket)?),
    };
    if ns.is_none() && tokio::runtime::Handle::try_current().is_err() {
        return run_here(inode, f);
    }
    netns::run_in(ns, move || run_here(inode, f))?
}

/// [`run`] in `ns` without waiting: `f` starts on a new thread of `scope`
/// inside `ns`, and [`Pending::join`] gives its result.
pub fn spawn<'scope, T, F, Fut>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    ns: &'scope NetNs,
    f: F,
) -> Result<Pending<'scope, T>>
where
    T: Send + 'scope,
    F: FnOnce(Netlink) -> Fut + Send + 'scope,
    Fut: Future<Output = Result<T>>,
{
    let inode = netns::inode(ns.path());
    Ok(Pending(netns::spawn_in(scope, Some(ns), move || {
        run_here(inode, f)
    })?))
}

/// A [`spawn`]ed call.
pub struct Pending<'scope, T>(netns::Spawned<'scope, Result<T>>);

impl<T> Pending<'_, T> {
    /// Waits for the call and returns its result.
    pub fn join(self) -> Result<T> {
        self.0.join()?
    }
}

/// [`run`] on the calling thread, which a [`crate::netns::spawn_in`] of
/// `ns` started: one thread inside `ns` for several calls.
pub fn run_inside<T, F, Fut>(ns: &NetNs, f: F) -> Result<T>
where
    F: FnOnce(Netlink) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    run_here(netns::inode(ns.path()), f)
}

/// Runs `f` on the calling thread with the connection of its namespace
/// (inode `inode`).
fn run_here<T, F, Fut>(inode: Option<u64>, f: F) -> Result<T>
where
    F: FnOnce(Netlink) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let lease = connections::checkout(inode)?;
    lease.block_on(f(Netlink {
        handle: lease.handle(),
    }))
}

/// The one link a GETLINK by name or index answers, `None` for ENODEV.
async fn first_link(
    mut stream: impl futures::Stream<Item = std::result::Result<LinkMessage, rtnetlink::Error>> + Unpin,
    op: impl FnOnce() -> String,
) -> Result<Option<Link>> {
    match stream.try_next().await {
        Ok(Some(msg)) => Ok(Some(link_from_message(&msg))),
        Ok(None) => Ok(None),
        Err(rtnetlink::Error::NetlinkError(m))
            if m.code.map(|c| -c.get()) == Some(libc::ENODEV) =>
        {
            Ok(None)
        }
        Err(e) => Err(request_error(op())(e)),
    }
}

fn link_from_message(msg: &LinkMessage) -> Link {
    let mut link = Link {
        index: msg.header.index,
        name: String::new(),
        mac: None,
        up: msg
            .header
            .flags
            .contains(rtnetlink::packet_route::link::LinkFlags::Up),
        alias: None,
    };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => link.name = n.clone(),
            LinkAttribute::IfAlias(a) => link.alias = Some(a.clone()),
            LinkAttribute::Address(a) if a.len() == 6 => {
                link.mac = Some(Mac::new([a[0], a[1], a[2], a[3], a[4], a[5]]))
            }
            _ => {}
        }
    }
    link
}

impl Netlink {
    /// The link called `name`, if it exists.
    pub async fn link(&self, name: &str) -> Result<Option<Link>> {
        let stream = self
            .handle
            .link()
            .get()
            .match_name(name.to_owned())
            .execute();
        first_link(stream, || format!("get link {name}")).await
    }

    /// The link called `name`, which must exist.
    pub async fn require_link(&self, name: &str) -> Result<Link> {
        self.link(name)
            .await?
            .ok_or_else(|| NetlinkError::LinkNotFound(name.to_owned()))
    }

    /// All links of this namespace.
    pub async fn links(&self) -> Result<Vec<Link>> {
        let msgs: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(request_error("list links"))?;
        Ok(msgs.iter().map(link_from_message).collect())
    }

    /// Creates a veth pair `name` <-> `peer`.
    pub async fn add_veth(&self, name: &str, peer: &str) -> Result<()> {
        self.handle
            .link()
            .add(LinkVeth::new(name, peer).build())
            .execute()
            .await
            .map_err(request_error(format!("create veth pair {name}/{peer}")))
    }

    /// Creates macvlan `name` on `parent` (of this namespace) directly inside
    /// the namespace `ns`.
    pub async fn add_macvlan_in(
        &self,
        name: &str,
        parent: u32,
        mode: MacvlanMode,
        mac: Option<Mac>,
        ns: &NetNs,
    ) -> Result<()> {
        self.add_macvlan_at(name, parent, mode, mac, ns, None).await
    }

    /// As [`Self::add_macvlan_in`], with the new link's ifindex in `ns`
    /// chosen by the caller (`None`: by the kernel). A taken ifindex is
    /// refused with EEXIST or EBUSY.
    pub async fn add_macvlan_at(
        &self,
        name: &str,
        parent: u32,
        mode: MacvlanMode,
        mac: Option<Mac>,
        ns: &NetNs,
        index: Option<u32>,
    ) -> Result<()> {
        let file = std::fs::File::open(ns.path()).map_err(|e| NetlinkError::Request {
            op: format!("open namespace {}", ns.path().display()),
            message: e.to_string(),
            errno: e.raw_os_error(),
        })?;
        // qlen 0, as Docker's driver creates its macvlans (the link has no
        // queue either way: its qdisc is noqueue).
        let mut builder = LinkMacVlan::new(name, parent, mode.into())
            .setns_by_fd(file.as_raw_fd())
            .txqueuelen(0);
        if let Some(mac) = mac {
            builder = builder.address(mac.octets().to_vec());
        }
        let mut message = builder.build();
        if let Some(index) = index {
            message.header.index = index;
        }
        self.handle
            .link()
            .add(message)
            .execute()
            .await
            .map_err(request_error(format!(
                "create macvlan {name} in namespace {}",
                ns.path().display()
            )))
    }

    /// Creates the 802.1Q link `name` with VLAN id `vid` on `parent`.
    pub async fn add_vlan(&self, name: &str, parent: u32, vid: u16) -> Result<()> {
        self.handle
            .link()
            .add(LinkVlan::new(name, parent, vid).build())
            .execute()
            .await
            .map_err(request_error(format!("create 802.1Q link {name}")))
    }

    /// Moves link `index` into the namespace `ns`.
    pub async fn move_to(&self, index: u32, ns: &NetNs) -> Result<()> {
        let file = std::fs::File::open(ns.path()).map_err(|e| NetlinkError::Request {
            op: format!("open namespace {}", ns.path().display()),
            message: e.to_string(),
            errno: e.raw_os_error(),
        })?;
        self.handle
            .link()
            .set(
                LinkUnspec::new_with_index(index)
                    .setns_by_fd(file.as_raw_fd())
                    .build(),
            )
            .execute()
            .await
            .map_err(request_error(format!(
                "move link {index} to namespace {}",
                ns.path().display()
            )))
    }

    pub async fn rename(&self, index: u32, name: &str) -> Result<()> {
        self.handle
            .link()
            .set(
                LinkUnspec::new_with_index(index)
                    .name(name.to_owned())
                    .build(),
            )
            .execute()
            .await
            .map_err(request_error(format!("rename link {index} to {name}")))
    }

    /// Renames link `index` to `name` and sets its alias (IFLA_IFALIAS) to
    /// `alias`, in one request. (The kernel ignores an alias given at
    /// creation, so marks are set here.)
    pub async fn rename_marked(&self, index: u32, name: &str, alias: &str) -> Result<()> {
        let mut msg = LinkUnspec::new_with_index(index)
            .name(name.to_owned())
            .build();
        msg.attributes
            .push(LinkAttribute::IfAlias(alias.to_owned()));
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(request_error(format!("rename link {index} to {name}")))
    }

    pub async fn set_up(&self, index: u32) -> Result<()> {
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(request_error(format!("set link {index} up")))
    }

    /// Sets the MAC address of link `index`.
    pub async fn set_mac(&self, index: u32, mac: Mac) -> Result<()> {
        self.handle
            .link()
            .set(
                LinkUnspec::new_with_index(index)
                    .address(mac.octets().to_vec())
                    .build(),
            )
            .execute()
            .await
            .map_err(request_error(format!("set the MAC of link {index}")))
    }

    pub async fn set_down(&self, index: u32) -> Result<()> {
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).down().build())
            .execute()
            .await
            .map_err(request_error(format!("set link {index} down")))
    }

    /// Deletes the link called `name` in one round trip (RTM_DELLINK by
    /// IFLA_IFNAME). `Ok(false)`: there is none.
    pub async fn delete_named(&self, name: &str) -> Result<bool> {
        let mut request = self.handle.link().del(0);
        request
            .message_mut()
            .attributes
            .push(LinkAttribute::IfName(name.to_owned()));
        match request.execute().await {
            Ok(()) => Ok(true),
            Err(rtnetlink::Error::NetlinkError(m))
                if m.code.map(|c| -c.get()) == Some(libc::ENODEV) =>
            {
                Ok(false)
            }
            Err(e) => Err(request_error(format!("delete link {name}"))(e)),
        }
    }

    pub async fn delete(&self, index: u32) -> Result<()> {
        self.handle
            .link()
            .del(index)
            .execute()
            .await
            .map_err(request_error(format!("delete link {index}")))
    }

    /// Adds `addr/prefix` to link `index`. IPv6 addresses are added with
    /// `nodad`, as Docker does: assigned, not autoconfigured, and usable at
    /// once instead of tentative for the 1-2 s of duplicate detection.
    pub async fn add_address(&self, index: u32, addr: IpAddr, prefix: u8) -> Result<()> {
        let mut request = self.handle.address().add(index, addr, prefix);
        if addr.is_ipv6() {
            let message = request.message_mut();
            message.header.flags |= AddressHeaderFlags::Nodad;
            message
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        request
            .execute()
            .await
            .map_err(request_error(format!("add address {addr}/{prefix}")))
    }

    /// Creates a dummy link `name` (the parent of an internal network).
    pub async fn add_dummy(&self, name: &str) -> Result<()> {
        self.handle
            .link()
            .add(LinkDummy::new(name).build())
            .execute()
            .await
            .map_err(request_error(format!("create dummy link {name}")))
    }

    /// Adds a default route via `gateway` on link `index`, `proto boot` as
    /// Docker's (rtnetlink's builder says static otherwise).
    pub async fn add_default_route(&self, index: u32, gateway: IpAddr) -> Result<()> {
        self.handle
            .route()
            .add(default_route(index, gateway))
            .execute()
            .await
            .map_err(request_error(format!("add default route via {gateway}")))
    }

    /// Sets the default route of `gateway`'s family to `gateway` on link
    /// `index`, in place of any (`ip route replace default`), `proto boot`.
    pub async fn replace_default_route(&self, index: u32, gateway: IpAddr) -> Result<()> {
        self.handle
            .route()
            .add(default_route(index, gateway))
            .replace()
            .execute()
            .await
            .map_err(request_error(format!(
                "replace default route via {gateway}"
            )))
    }

    /// The default routes (main table) of one family: (output link, gateway).
    pub async fn default_routes(&self, ipv6: bool) -> Result<Vec<(Option<u32>, Option<IpAddr>)>> {
        Ok(self
            .default_route_messages(ipv6)
            .await?
            .iter()
            .map(|m| {
                let mut oif = None;
                let mut gw = None;
                for a in &m.attributes {
                    match a {
                        RouteAttribute::Oif(i) => oif = Some(*i),
                        RouteAttribute::Gateway(RouteAddress::Inet(g)) => gw = Some((*g).into()),
                        RouteAttribute::Gateway(RouteAddress::Inet6(g)) => gw = Some((*g).into()),
                        _ => {}
                    }
                }
                (oif, gw)
            })
            .collect())
    }

    /// Removes the default routes (main table) of one family (`ip route del
    /// default`); none is fine.
    pub async fn del_default_routes(&self, ipv6: bool) -> Result<()> {
        for msg in self.default_route_messages(ipv6).await? {
            match self.handle.route().del(msg).execute().await {
                Err(rtnetlink::Error::NetlinkError(e))
                    if e.code.map(|c| -c.get()) == Some(libc::ESRCH) => {}
                other => other.map_err(request_error("delete default route"))?,
            }
        }
        Ok(())
    }

    async fn default_route_messages(&self, ipv6: bool) -> Result<Vec<RouteMessage>> {
        let filter = match ipv6 {
            false => RouteMessageBuilder::<std::net::Ipv4Addr>::new().build(),
            true => RouteMessageBuilder::<std::net::Ipv6Addr>::new().build(),
        };
        let routes: Vec<RouteMessage> = self
            .handle
            .route()
            .get(filter)
            .execute()
            .try_collect()
            .await
            .map_err(request_error("list routes"))?;
        Ok(routes
            .into_iter()
            .filter(|m| {
                m.header.destination_prefix_length == 0
                    && m.header.table == RouteHeader::RT_TABLE_MAIN
            })
            .collect())
    }

    /// Removes `addr` from link `index` (no error if it is not there).
    pub async fn del_address(&self, index: u32, addr: IpAddr) -> Result<()> {
        let msgs: Vec<_> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .set_address_filter(addr)
            .execute()
            .try_collect()
            .await
            .map_err(request_error(format!("list addresses of link {index}")))?;
        for msg in msgs {
            self.handle
                .address()
                .del(msg)
                .execute()
                .await
                .map_err(request_error(format!("delete address {addr}")))?;
        }
        Ok(())
    }

    /// The kernel's counters of link `index`.
    pub async fn stats(&self, index: u32) -> Result<LinkStats> {
        let mut stream = self.handle.link().get().match_index(index).execute();
        let msg = stream
            .try_next()
            .await
            .map_err(request_error(format!("get stats of link {index}")))?
            .ok_or_else(|| NetlinkError::LinkNotFound(index.to_string()))?;
        for attr in &msg.attributes {
            if let LinkAttribute::Stats64(s) = attr {
                return Ok(LinkStats {
                    rx_packets: s.rx_packets,
                    rx_bytes: s.rx_bytes,
                    tx_packets: s.tx_packets,
                    tx_bytes: s.tx_bytes,
                    rx_dropped: s.rx_dropped,
                    tx_dropped: s.tx_dropped,
                    multicast: s.multicast,
                });
            }
        }
        Err(NetlinkError::Request {
            op: format!("get stats of link {index}"),
            message: "the kernel sent no IFLA_STATS64".into(),
            errno: None,
        })
    }

    /// Link `name` with its kind and lower device (a macvlan's parent, a
    /// VLAN's real device).
    pub async fn lower_link(&self, name: &str) -> Result<Option<LowerLink>> {
        let mut stream = self
            .handle
            .link()
            .get()
            .match_name(name.to_owned())
            .execute();
        let msg = match stream.try_next().await {
            Ok(Some(msg)) => msg,
            Ok(None) => return Ok(None),
            Err(rtnetlink::Error::NetlinkError(m))
                if m.code.map(|c| -c.get()) == Some(libc::ENODEV) =>
            {
                return Ok(None)
            }
            Err(e) => return Err(request_error(format!("get link {name}"))(e)),
        };
        Ok(Some(lower_link_of(&msg)))
    }

    /// The id this namespace gives the namespace `ns` (RTM_GETNSID with
    /// NETNSA_FD), `None` when it has given it none.
    pub async fn nsid_of(&self, ns: &NetNs) -> Result<Option<i32>> {
        use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_REQUEST};
        use rtnetlink::packet_route::{
            nsid::{NsidAttribute, NsidMessage},
            RouteNetlinkMessage,
        };
        let op = format!("get the nsid of namespace {}", ns.path().display());
        let file = std::fs::File::open(ns.path()).map_err(|e| NetlinkError::Request {
            op: op.clone(),
            message: e.to_string(),
            errno: e.raw_os_error(),
        })?;
        let mut msg = NsidMessage::default();
        msg.attributes
            .push(NsidAttribute::Fd(file.as_raw_fd() as u32));
        let mut req = NetlinkMessage::from(RouteNetlinkMessage::GetNsId(msg));
        req.header.flags = NLM_F_REQUEST;
        let mut handle = self.handle.clone();
        let mut stream = handle.request(req).map_err(request_error(op.clone()))?;
        while let Some(reply) = futures::StreamExt::next(&mut stream).await {
            match reply.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNsId(m)) => {
                    let id = m.attributes.iter().find_map(|a| match a {
                        NsidAttribute::Id(i) => Some(*i),
                        _ => None,
                    });
                    return Ok(id.filter(|i| *i >= 0));
                }
                NetlinkPayload::Error(e) if e.code.is_some() => {
                    return Err(request_error(op)(rtnetlink::Error::NetlinkError(e)))
                }
                _ => {}
            }
        }
        Ok(None)
    }

    /// The link with ifindex `index`, if any.
    pub async fn link_by_index(&self, index: u32) -> Result<Option<Link>> {
        let stream = self.handle.link().get().match_index(index).execute();
        first_link(stream, || format!("get link {index}")).await
    }
}

/// `default via GATEWAY dev INDEX proto boot` (rtnetlink's builder says
/// static otherwise; Docker's routes say boot).
fn default_route(index: u32, gateway: IpAddr) -> RouteMessage {
    match gateway {
        IpAddr::V4(gw) => RouteMessageBuilder::<std::net::Ipv4Addr>::new()
            .output_interface(index)
            .gateway(gw)
            .protocol(RouteProtocol::Boot)
            .build(),
        IpAddr::V6(gw) => RouteMessageBuilder::<std::net::Ipv6Addr>::new()
            .output_interface(index)
            .gateway(gw)
            .protocol(RouteProtocol::Boot)
            .build(),
    }
}
