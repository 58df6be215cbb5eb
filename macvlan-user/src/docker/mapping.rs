//! Docker's objects in mvnet's terms: a macvlan network as a foreign
//! network, a running container's endpoints on such networks as a foreign
//! container and its endpoints. Pure: the kernel part (the interface name of
//! each endpoint inside the sandbox) is [`super::sync`]'s.
use std::{
    collections::{BTreeMap, HashMap},
    net::{Ipv4Addr, Ipv6Addr},
    path::PathBuf,
};

use bollard::models::{ContainerInspectResponse, Network};

use crate::{
    controller::foreign::{ForeignContainer, ForeignEndpoint, ForeignNetwork},
    model::{Mac, MacvlanMode, Owner, Policy, XdpMode},
};

/// One endpoint of a container as Docker reports it, before its interface
/// name in the sandbox is known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    pub network_id: String,
    /// Docker's name of the network (for messages).
    pub network: String,
    pub mac: Mac,
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
}

/// A Docker macvlan network as a foreign network with the given policy.
///
/// `Options.parent` is the parent (`eth0`, or `eth0.10`: root `eth0`, VLAN
/// 10); without one Docker made a dummy link `dm-<id:12>`. An unknown
/// `macvlan_mode` is an error naming the network.
pub fn network(n: &Network, policy: Policy, xdp_mode: XdpMode) -> Result<ForeignNetwork, String> {
    let id = n.id.clone().unwrap_or_default();
    let name = n.name.clone().unwrap_or_else(|| id.clone());
    if id.is_empty() {
        return Err(format!("Docker network {name} has no id"));
    }
    let options: BTreeMap<String, String> = n
        .options
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let parent = match options.get("parent").filter(|p| !p.is_empty()) {
        Some(p) => p.clone(),
        None => format!("dm-{}", &id[..id.len().min(12)]),
    };
    let mode = match options.get("macvlan_mode").filter(|m| !m.is_empty()) {
        None => MacvlanMode::Bridge,
        Some(m) => MacvlanMode::parse(m).ok_or_else(|| {
            format!(
                "Docker network {name} has macvlan_mode {m:?}, which mvnet does not know \
                 (bridge, vepa, private, passthru)"
            )
        })?,
    };
    Ok(ForeignNetwork {
        owner: Owner::Docker,
        id,
        name,
        parent,
        mode,
        policy,
        xdp_mode,
        max_endpoints: None,
        options,
    })
}

/// A running container and its endpoints on the networks `wanted` holds
/// (Docker network id → name). None when it is not running or has no
/// sandbox (no network namespace to count in).
pub fn container(
    c: &ContainerInspectResponse,
    wanted: &HashMap<String, String>,
) -> Option<Result<(ForeignContainer, Vec<Attachment>), String>> {
    let running = c.state.as_ref().and_then(|s| s.running) == Some(true);
    let settings = c.network_settings.as_ref()?;
    let sandbox = settings.sandbox_key.as_deref().filter(|k| !k.is_empty());
    let (true, Some(sandbox)) = (running, sandbox) else {
        return None;
    };
    let id = c.id.clone()?;
    let name = c
        .name
        .as_deref()
        .map(|n| n.trim_start_matches('/').to_owned())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| id[..id.len().min(12)].to_owned());
    let mut attachments = Vec::new();
    for (net_name, ep) in settings.networks.iter().flatten() {
        let Some(network_id) = ep.network_id.as_deref().filter(|i| wanted.contains_key(*i)) else {
            continue;
        };
        let network = wanted[network_id].clone();
        let mac = match ep.mac_address.as_deref().unwrap_or_default() {
            "" => {
                return Some(Err(format!(
                    "Docker container {name} has no MAC address on network {net_name}"
                )))
            }
            m => match m.parse::<Mac>() {
                Ok(mac) => mac,
                Err(e) => {
                    return Some(Err(format!(
                        "Docker container {name} on network {net_name}: MAC address {m:?}: {e}"
                    )))
                }
            },
        };
        let ipv4 = ep
            .ip_address
            .as_deref()
            .filter(|a| !a.is_empty())
            .map(str::parse)
            .transpose();
        let ipv6 = ep
            .global_ipv6_address
            .as_deref()
            .filter(|a| !a.is_empty())
            .map(str::parse)
            .transpose();
        let (Ok(ipv4), Ok(ipv6)) = (ipv4, ipv6) else {
            return Some(Err(format!(
                "Docker container {name} on network {net_name}: an address Docker reports \
                 does not parse ({:?}, {:?})",
                ep.ip_address, ep.global_ipv6_address
            )));
        };
        attachments.push(Attachment {
            network_id: network_id.to_owned(),
            network,
            mac,
            ipv4,
            ipv6,
        });
    }
    attachments.sort_by(|a, b| a.network_id.cmp(&b.network_id));
    Some(Ok((
        ForeignContainer {
            owner: Owner::Docker,
            id,
            name,
            netns: PathBuf::from(sandbox),
            pod: None,
        },
        attachments,
    )))
}

/// The endpoints of `attachments`, each named as the link with its MAC in
/// the sandbox (`ifnames`, MAC → name: Docker names them eth0, eth1, … in
/// the order they joined, so the name is read, not guessed). An attachment
/// without such a link is returned as a problem.
pub fn endpoints(
    container: &ForeignContainer,
    attachments: &[Attachment],
    ifnames: &HashMap<Mac, String>,
) -> (Vec<ForeignEndpoint>, Vec<String>) {
    let mut eps = Vec::new();
    let mut problems = Vec::new();
    for a in attachments {
        match ifnames.get(&a.mac) {
            Some(ifname) => eps.push(ForeignEndpoint {
                network_id: a.network_id.clone(),
                ifname: ifname.clone(),
                mac: a.mac,
                ipv4: a.ipv4,
                ipv6: a.ipv6,
            }),
            None => problems.push(format!(
                "Docker container {} on network {}: no link with MAC {} in its namespace {}",
                container.name,
                a.network,
                a.mac,
                container.netns.display()
            )),
        }
    }
    (eps, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `GET /networks` of Docker 20.10 for `docker network create -d
    /// macvlan --subnet 172.16.86.0/24 -o parent=eth0 net`, trimmed.
    const NETWORK: &str = r#"{"Name":"net","Id":"0b5d6f3c2b1a9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a29180716253443526a","Created":"2026-12-01T03:00:00.000000000Z","Scope":"local","Driver":"macvlan","EnableIPv6":false,"IPAM":{"Driver":"default","Options":{},"Config":[{"Subnet":"172.16.86.0/24"}]},"Internal":false,"Attachable":false,"Ingress":false,"ConfigFrom":{"Network":""},"ConfigOnly":false,"Containers":{},"Options":{"parent":"eth0"},"Labels":{}}"#;

    fn net(json: &str) -> Network {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn a_macvlan_network() {
        let n = network(&net(NETWORK), Policy::Enforce, XdpMode::Auto).unwrap();
        assert_eq!(
            n,
            ForeignNetwork {
                owner: Owner::Docker,
                id: "0b5d6f3c2b1a9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a29180716253443526a".into(),
                name: "net".into(),
                parent: "eth0".into(),
                mode: MacvlanMode::Bridge,
                policy: Policy::Enforce,
                xdp_mode: XdpMode::Auto,
                max_endpoints: None,
                options: BTreeMap::from([("parent".into(), "eth0".into())]),
            }
        );
        let trunk = NETWORK.replace(
            r#""Options":{"parent":"eth0"}"#,
            r#""Options":{"parent":"eth0.10","macvlan_mode":"private"}"#,
        );
        let n = network(&net(&trunk), Policy::Observe, XdpMode::Native).unwrap();
        assert_eq!(
            (n.parent.as_str(), n.mode),
            ("eth0.10", MacvlanMode::Private)
        );
        let none = NETWORK.replace(r#""Options":{"parent":"eth0"}"#, r#""Options":{}"#);
        assert_eq!(
            network(&net(&none), Policy::Observe, XdpMode::Auto)
                .unwrap()
                .parent,
            "dm-0b5d6f3c2b1a"
        );
        let odd = NETWORK.replace(
            r#""parent":"eth0""#,
            r#""parent":"eth0","macvlan_mode":"source""#,
        );
        assert_eq!(
            network(&net(&odd), Policy::Observe, XdpMode::Auto).unwrap_err(),
            "Docker network net has macvlan_mode \"source\", which mvnet does not know \
             (bridge, vepa, private, passthru)"
        );
    }

    /// `GET /containers/ID/json` of Docker 20.10, trimmed to what is read.
    const CONTAINER: &str = r#"{"Id":"6f1e2d3c4b5a69788796a5b4c3d2e1f00112233445566778899aabbccddeeff","Name":"/web","State":{"Status":"running","Running":true,"Paused":false,"Restarting":false,"OOMKilled":false,"Dead":false,"Pid":4242,"ExitCode":0,"Error":"","StartedAt":"2026-12-01T03:00:01Z","FinishedAt":"0001-01-01T00:00:00Z"},
    "NetworkSettings":{"Bridge":"","SandboxID":"3c4d","HairpinMode":false,"LinkLocalIPv6Address":"","LinkLocalIPv6PrefixLen":0,"Ports":{},"SandboxKey":"/run/d/netns/3c4d5e6f7a8b","SecondaryIPAddresses":null,"SecondaryIPv6Addresses":null,"EndpointID":"","Gateway":"","GlobalIPv6Address":"","GlobalIPv6PrefixLen":0,"IPAddress":"","IPPrefixLen":0,"IPv6Gateway":"","MacAddress":"",
    "Networks":{"net":{"IPAMConfig":null,"Links":null,"Aliases":["6f1e2d3c4b5a"],"NetworkID":"0b5d6f3c2b1a9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a29180716253443526a","EndpointID":"e1","Gateway":"172.16.86.1","IPAddress":"172.16.86.2","IPPrefixLen":24,"IPv6Gateway":"","GlobalIPv6Address":"2001:db8::2","GlobalIPv6PrefixLen":64,"MacAddress":"02:42:ac:10:56:02","DriverOpts":null},
                "other":{"IPAMConfig":null,"Links":null,"Aliases":null,"NetworkID":"ffff","EndpointID":"e2","Gateway":"","IPAddress":"10.0.0.2","IPPrefixLen":8,"IPv6Gateway":"","GlobalIPv6Address":"","GlobalIPv6PrefixLen":0,"MacAddress":"02:42:0a:00:00:02","DriverOpts":null}}}}"#;

    fn wanted() -> HashMap<String, String> {
        HashMap::from([(
            "0b5d6f3c2b1a9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a29180716253443526a".to_owned(),
            "net".to_owned(),
        )])
    }

    #[test]
    fn a_running_container() {
        let c: ContainerInspectResponse = serde_json::from_str(CONTAINER).unwrap();
        let (fc, atts) = container(&c, &wanted()).unwrap().unwrap();
        assert_eq!(
            fc,
            ForeignContainer {
                owner: Owner::Docker,
                id: "6f1e2d3c4b5a69788796a5b4c3d2e1f00112233445566778899aabbccddeeff".into(),
                name: "web".into(),
                netns: "/run/d/netns/3c4d5e6f7a8b".into(),
                pod: None,
            }
        );
        // Only the endpoint on a wanted (macvlan) network.
        assert_eq!(
            atts,
            vec![Attachment {
                network_id: "0b5d6f3c2b1a9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a29180716253443526a"
                    .into(),
                network: "net".into(),
                mac: "02:42:ac:10:56:02".parse().unwrap(),
                ipv4: Some("172.16.86.2".parse().unwrap()),
                ipv6: Some("2001:db8::2".parse().unwrap()),
            }]
        );
        let ifnames = HashMap::from([("02:42:ac:10:56:02".parse().unwrap(), "eth0".to_owned())]);
        let (eps, problems) = endpoints(&fc, &atts, &ifnames);
        assert!(problems.is_empty());
        assert_eq!(eps[0].ifname, "eth0");
        let (eps, problems) = endpoints(&fc, &atts, &HashMap::new());
        assert!(eps.is_empty());
        assert_eq!(
            problems,
            vec![
                "Docker container web on network net: no link with MAC 02:42:ac:10:56:02 in \
                  its namespace /run/d/netns/3c4d5e6f7a8b"
            ]
        );
    }

    #[test]
    fn stopped_or_sandboxless_containers_have_no_endpoints() {
        let stopped = CONTAINER.replace(r#""Running":true"#, r#""Running":false"#);
        let c: ContainerInspectResponse = serde_json::from_str(&stopped).unwrap();
        assert!(container(&c, &wanted()).is_none());
        let no_sandbox = CONTAINER.replace(
            r#""SandboxKey":"/run/d/netns/3c4d5e6f7a8b""#,
            r#""SandboxKey":"""#,
        );
        let c: ContainerInspectResponse = serde_json::from_str(&no_sandbox).unwrap();
        assert!(container(&c, &wanted()).is_none());
        let bad_mac = CONTAINER.replace("02:42:ac:10:56:02", "02:42:zz:10:56:02");
        let c: ContainerInspectResponse = serde_json::from_str(&bad_mac).unwrap();
        let e = container(&c, &wanted()).unwrap().unwrap_err();
        assert!(
            e.starts_with("Docker container web on network net: MAC address \"02:42:zz:10:56:02\""),
            "{e}"
        );
    }
}
