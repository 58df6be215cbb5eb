//! Normalized facts of a container's network namespace and of Docker-shaped
//! inspect JSON, as `field -> value` pairs that both engines can be held to.
use std::{collections::BTreeMap, path::Path, process::Command};

use serde_json::Value;

pub type Facts = BTreeMap<String, String>;

/// `ip -j ARGS` inside the namespace at `netns`.
fn ip_json(netns: &Path, args: &[&str]) -> Value {
    let out = Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .args(["ip", "-j"])
        .args(args)
        .output()
        .expect("running ip");
    assert!(
        out.status.success(),
        "ip {args:?} in {}: {}",
        netns.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Array(vec![]))
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        v => v.to_string(),
    }
}

/// Replaces the lab's parent MACs (random per lab) by a name.
pub fn normalize_mac(mac: &str, parents: &BTreeMap<String, String>) -> String {
    parents
        .iter()
        .find(|(_, m)| m.as_str() == mac)
        .map(|(p, _)| format!("<mac of {p}>"))
        .unwrap_or_else(|| mac.to_owned())
}

/// The container's links (kind, macvlan mode, MAC, MTU, qlen, state,
/// addresses), `lo`, and its IPv4 and IPv6 main-table routes.
pub fn container(
    prefix: &str,
    netns: &Path,
    parents: &BTreeMap<String, String>,
    facts: &mut Facts,
) {
    let links = ip_json(netns, &["-d", "addr", "show"]);
    let mut names = Vec::new();
    for link in links.as_array().into_iter().flatten() {
        let name = s(&link["ifname"]);
        let flags: Vec<String> = link["flags"]
            .as_array()
            .into_iter()
            .flatten()
            .map(s)
            .collect();
        let key = |f: &str| format!("{prefix}.{name}.{f}");
        facts.insert(
            key("state"),
            if flags.iter().any(|f| f == "UP") {
                "up"
            } else {
                "down"
            }
            .into(),
        );
        let mut addrs = Vec::new();
        let mut nodad = Vec::new();
        for a in link["addr_info"].as_array().into_iter().flatten() {
            let addr = format!("{}/{}", s(&a["local"]), s(&a["prefixlen"]));
            if a["nodad"].as_bool() == Some(true) {
                nodad.push(addr.clone());
            }
            addrs.push(addr);
        }
        addrs.sort();
        nodad.sort();
        facts.insert(key("addrs"), addrs.join(", "));
        // Apart from the addresses, so that a difference in flags is its
        // own field.
        facts.insert(key("addrs_nodad"), nodad.join(", "));
        if name != "lo" {
            let info = &link["linkinfo"];
            facts.insert(key("kind"), s(&info["info_kind"]));
            facts.insert(key("macvlan_mode"), s(&info["info_data"]["mode"]));
            facts.insert(key("mac"), normalize_mac(&s(&link["address"]), parents));
            facts.insert(key("mtu"), s(&link["mtu"]));
            // ip omits txqlen when it is 0.
            facts.insert(
                key("qlen"),
                link["txqlen"].as_u64().unwrap_or(0).to_string(),
            );
        }
        names.push(name);
    }
    names.sort();
    facts.insert(format!("{prefix}.links"), names.join(", "));
    for (family, field) in [("-4", "routes4"), ("-6", "routes6")] {
        let routes = ip_json(netns, &[family, "route", "show", "table", "main"]);
        let mut lines = Vec::new();
        let mut protocols = Vec::new();
        for r in routes.as_array().into_iter().flatten() {
            let mut t = s(&r["dst"]);
            if !r["gateway"].is_null() {
                t += &format!(" via {}", s(&r["gateway"]));
            }
            t += &format!(" dev {}", s(&r["dev"]));
            if let Some(scope) = r["scope"].as_str() {
                t += &format!(" scope {scope}");
            }
            if !r["prefsrc"].is_null() {
                t += &format!(" src {}", s(&r["prefsrc"]));
            }
            // ip omits the default, proto boot. A field of its own.
            protocols.push(format!(
                "{} proto {}",
                s(&r["dst"]),
                r["protocol"].as_str().unwrap_or("boot")
            ));
            lines.push(t);
        }
        lines.sort();
        protocols.sort();
        facts.insert(format!("{prefix}.{field}"), lines.join("; "));
        facts.insert(format!("{prefix}.{field}_proto"), protocols.join("; "));
    }
}

/// Replaces the names of dummy parents (`dm-` and 12 hex digits of the
/// network id, which differ per engine) by their shape.
pub fn normalize_dummy(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("dm-") {
        out.push_str(&rest[..at]);
        let id = &rest[at + 3..];
        let hex = id.chars().take_while(|c| c.is_ascii_hexdigit()).count();
        if hex == 12 {
            out.push_str("dm-<network id>");
            rest = &id[12..];
        } else {
            out.push_str("dm-");
            rest = id;
        }
    }
    out.push_str(rest);
    out
}

/// The network inspect fields issue 14 compares.
pub fn network(prefix: &str, inspect: &Value, facts: &mut Facts) {
    for field in ["Driver", "Options", "Internal", "EnableIPv6"] {
        facts.insert(
            format!("{prefix}.{field}"),
            normalize_dummy(&s(&inspect[field])),
        );
    }
    facts.insert(
        format!("{prefix}.IPAM.Config"),
        s(&inspect["IPAM"]["Config"]),
    );
}

/// Every field of the container's `EndpointSettings` on each network, ids
/// replaced by their shape.
pub fn endpoints(prefix: &str, inspect: &Value, facts: &mut Facts) {
    let short = s(&inspect["Id"]).chars().take(12).collect::<String>();
    let Some(nets) = inspect["NetworkSettings"]["Networks"].as_object() else {
        return;
    };
    let mut names: Vec<&String> = nets.keys().collect();
    names.sort();
    facts.insert(
        format!("{prefix}.inspect.networks"),
        names
            .iter()
            .map(|n| n.as_str())
            .collect::<Vec<_>>()
            .join(", "),
    );
    for (net, ep) in nets {
        for (field, v) in ep.as_object().into_iter().flatten() {
            let value = match field.as_str() {
                "NetworkID" | "EndpointID" => {
                    let id = s(v);
                    if id.len() == 64 && id.chars().all(|c| c.is_ascii_hexdigit()) {
                        "<64-hex id>".into()
                    } else {
                        id
                    }
                }
                _ => s(v).replace(&short, "<short id>"),
            };
            facts.insert(format!("{prefix}.inspect.{net}.{field}"), value);
        }
    }
}
