//! Docker-shaped JSON views of networks and containers.
use serde_json::{json, Map, Value};

use super::Controller;
use crate::model::{Container, Network, ParentOrigin};

impl Controller {
    /// `mvnet network inspect`: Docker's fields and names.
    pub fn network_json(&self, net: &Network) -> Value {
        let config: Vec<Value> = net
            .pools
            .iter()
            .map(|p| {
                let mut m = Map::new();
                m.insert("Subnet".into(), json!(p.config.subnet.to_string()));
                if let Some(r) = &p.config.ip_range {
                    m.insert("IPRange".into(), json!(r.to_string()));
                }
                // Docker 20.10 shows a gateway here only if one was given.
                if let Some(g) = p.config.gateway.filter(|_| !p.config.implicit_gateway) {
                    m.insert("Gateway".into(), json!(g.to_string()));
                }
                if !p.config.aux_addresses.is_empty() {
                    let aux: Map<String, Value> = p
                        .config
                        .aux_addresses
                        .iter()
                        .map(|(k, v)| (k.clone(), json!(v.to_string())))
                        .collect();
                    m.insert("AuxiliaryAddresses".into(), Value::Object(aux));
                }
                Value::Object(m)
            })
            .collect();
        let mut containers = Map::new();
        for c in self.state.containers.values() {
            if let Some(ep) = c.endpoints.get(&net.id) {
                let prefix = |a: std::net::IpAddr| {
                    net.pools
                        .iter()
                        .find(|p| p.config.subnet.contains(a))
                        .map(|p| format!("{a}/{}", p.config.subnet.prefix()))
                        .unwrap_or_default()
                };
                containers.insert(
                    c.id.clone(),
                    json!({
                        "Name": c.name,
                        "EndpointID": ep.id,
                        "MacAddress": ep.mac.to_string(),
                        "IPv4Address": ep.ipv4.map(|a| prefix(a.into())).unwrap_or_default(),
                        "IPv6Address": ep.ipv6.map(|a| prefix(a.into())).unwrap_or_default(),
                    }),
                );
            }
        }
        // The parent mvnet uses; for a dummy it made (no parent given),
        // the options as given, as Docker's inspect shows them.
        let mut options = Map::new();
        let dummy = net.parent_origin == ParentOrigin::CreatedDummy;
        if !dummy {
            options.insert("parent".into(), json!(net.parent));
        }
        for (k, v) in &net.options {
            if k != "parent" || dummy {
                options.insert(k.clone(), json!(v));
            }
        }
        let root = net.root().0;
        let attached = super::datapath::attachment(root)
            .is_ok_and(|a| a == super::datapath::Attachment::Attached);
        // The attached classifier's capacity as its pinned maps record it;
        // without one, what the network recorded (and `restore` attaches).
        let max_endpoints = attached
            .then(|| {
                let dir = super::datapath::pin_dir(root).ok()?;
                crate::datapath::pinned::PinnedMaps::open(&dir)
                    .ok()?
                    .capacity()
                    .ok()
            })
            .flatten()
            .unwrap_or(net.max_endpoints);
        // The hooks it runs on, as its pinned links say, and why.
        let hooks = attached
            .then(|| crate::datapath::hooks::in_use(&super::datapath::pin_dir(root).ok()?))
            .flatten();
        json!({
            "Name": net.name,
            "Id": net.id,
            "Created": net.created,
            "Scope": "local",
            "Driver": "macvlan",
            "EnableIPv6": net.enable_ipv6,
            "IPAM": { "Driver": "default", "Options": {}, "Config": config },
            "Internal": net.internal,
            "Attachable": false,
            "Ingress": false,
            "ConfigFrom": { "Network": "" },
            "ConfigOnly": false,
            "Containers": containers,
            "Options": options,
            "Labels": net.labels,
            // mvnet's own: the classifier on the root device, with whether
            // it is attached as the kernel says (not as the state claims).
            "Classifier": {
                "Root": net.root().0,
                "Vlan": net.root().1,
                "Policy": net.policy.as_str(),
                "Attached": attached,
                "MaxEndpoints": max_endpoints,
                "XdpMode": net.xdp_mode.as_str(),
                "Hooks": hooks.map_or(&[][..], |h| h.names()),
                "HooksReason": hooks.map_or("", |h| h.reason(Some(net.xdp_mode))),
            },
        })
    }

    /// `mvnet container inspect`: Docker's fields and names. Each network
    /// carries moby's `EndpointSettings` as Docker 20.10 has them (20.10
    /// has no `DNSNames`, so neither do we). A stopped container keeps its
    /// networks with the operational data cleared, as moby's
    /// `cleanOperationalData` does: NetworkID, IPAMConfig and Aliases stay.
    pub fn container_json(&self, c: &Container) -> Value {
        let mut networks = Map::new();
        let running = c.endpoints.values().map(|ep| (ep, true));
        let stopped = c.stopped_endpoints.values().map(|ep| (ep, false));
        for (ep, live) in running.chain(stopped) {
            let Some(net) = self.state.networks.get(&ep.network_id) else {
                continue;
            };
            // The gateway and prefix of the subnet each address came from.
            let v4 = ep.ipv4.and_then(|a| net.pool_of(a.into()));
            let v6 = ep.ipv6.and_then(|a| net.pool_of(a.into()));
            // moby's EndpointIPAMConfig: each address omitted when empty.
            let ipam_config = c.ipam_config.get(&net.id).map(|a| {
                let mut m = Map::new();
                if let Some(v4) = a.ipv4 {
                    m.insert("IPv4Address".into(), json!(v4.to_string()));
                }
                if let Some(v6) = a.ipv6 {
                    m.insert("IPv6Address".into(), json!(v6.to_string()));
                }
                Value::Object(m)
            });
            let text = |s: String| if live { s } else { String::new() };
            networks.insert(
                net.name.clone(),
                json!({
                    "IPAMConfig": ipam_config,
                    "Links": null,
                    "Aliases": [c.short_id()],
                    "NetworkID": net.id,
                    "EndpointID": text(ep.id.clone()),
                    "Gateway": text(if net.internal { String::new() } else {
                        v4.and_then(|p| p.config.gateway).map(|g| g.to_string()).unwrap_or_default()
                    }),
                    "IPAddress": text(ep.ipv4.map(|a| a.to_string()).unwrap_or_default()),
                    "IPPrefixLen": if live { v4.map(|p| p.config.subnet.prefix()).unwrap_or(0) } else { 0 },
                    "IPv6Gateway": text(if net.internal { String::new() } else {
                        v6.and_then(|p| p.config.gateway).map(|g| g.to_string()).unwrap_or_default()
                    }),
                    "GlobalIPv6Address": text(ep.ipv6.map(|a| a.to_string()).unwrap_or_default()),
                    "GlobalIPv6PrefixLen": if live { v6.map(|p| p.config.subnet.prefix()).unwrap_or(0) } else { 0 },
                    "MacAddress": text(ep.mac.to_string()),
                    "DriverOpts": c.driver_opts.get(&net.id),
                    // mvnet's own: the interface's name in the namespace.
                    "InterfaceName": ep.ifname,
                }),
            );
        }
        let status = if c.running { "running" } else { "exited" };
        let network_mode = c
            .endpoints
            .values()
            .chain(c.stopped_endpoints.values())
            .next()
            .and_then(|e| self.state.networks.get(&e.network_id))
            .map(|n| n.name.clone())
            .unwrap_or_default();
        json!({
            "Id": c.id,
            "Created": c.created,
            "Name": format!("/{}", c.name),
            "Path": c.command.first().cloned().unwrap_or_default(),
            "Args": c.command.iter().skip(1).collect::<Vec<_>>(),
            "State": {
                "Status": status,
                "Running": c.running,
                "Pid": c.pid.unwrap_or(0),
            },
            "Config": { "Cmd": c.command, "Labels": c.labels },
            "HostConfig": {
                "AutoRemove": c.auto_remove,
                "NetworkMode": network_mode,
            },
            "NetworkSettings": {
                "SandboxKey": if c.running { c.netns.display().to_string() } else { String::new() },
                "Networks": networks,
            },
        })
    }
}
