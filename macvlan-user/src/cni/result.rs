//! Results: the spec's result object in the format of the config's
//! cniVersion (0.3.1 and 0.4.0 carry `ips[].version`; 1.0.0 and later do
//! not), and what mvnet-cni reads from a previous plugin's result.
use std::net::IpAddr;

use serde_json::{json, Value};

use super::spec::{CniError, CniResult, Code, Version};

/// `result` in the format of `version`, with its `cniVersion` set.
pub fn convert(result: &Value, version: Version) -> CniResult<Value> {
    let mut out = result.clone();
    let Some(obj) = out.as_object_mut() else {
        return Err(CniError::new(
            Code::Decode,
            "prevResult is not a JSON object",
        ));
    };
    obj.insert("cniVersion".into(), json!(version.to_string()));
    if let Some(ips) = obj.get_mut("ips").and_then(Value::as_array_mut) {
        for ip in ips {
            let family = ip_address(ip).map(|(a, _)| if a.is_ipv4() { "4" } else { "6" });
            let Some(ip) = ip.as_object_mut() else {
                continue;
            };
            if version.has_ip_version_field() {
                if let Some(f) = family {
                    ip.insert("version".into(), json!(f));
                }
            } else {
                ip.remove("version");
            }
        }
    }
    Ok(out)
}

/// An `ips[]` element's address and prefix length.
fn ip_address(ip: &Value) -> Option<(IpAddr, u8)> {
    let (addr, prefix) = ip.get("address")?.as_str()?.split_once('/')?;
    Some((addr.parse().ok()?, prefix.parse().ok()?))
}

/// What a previous result says of interface `ifname` in the sandbox: its
/// MAC as reported, and the addresses assigned to it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SandboxInterface {
    pub mac: Option<String>,
    pub addresses: Vec<(IpAddr, u8)>,
}

/// Finds the sandbox interface `ifname` in a result and its addresses (an
/// address without `interface` belongs to it when it is the only one).
pub fn sandbox_interface(result: &Value, ifname: &str) -> CniResult<SandboxInterface> {
    let interfaces = result
        .get("interfaces")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let index = interfaces.iter().position(|i| {
        i.get("name").and_then(Value::as_str) == Some(ifname)
            && i.get("sandbox")
                .and_then(Value::as_str)
                .is_some_and(|s| !s.is_empty())
    });
    let Some(index) = index else {
        return Err(CniError::new(
            Code::InvalidConfig,
            format!("prevResult has no interface {ifname} in the container's namespace; put mvnet-cni after the plugin that creates it (the macvlan plugin) in the conflist"),
        ));
    };
    let mac = interfaces[index]
        .get("mac")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let addresses = result
        .get("ips")
        .and_then(Value::as_array)
        .map(|ips| {
            ips.iter()
                .filter(|ip| match ip.get("interface").and_then(Value::as_u64) {
                    Some(i) => i as usize == index,
                    None => interfaces.len() == 1,
                })
                .filter_map(ip_address)
                .collect()
        })
        .unwrap_or_default();
    Ok(SandboxInterface { mac, addresses })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prev() -> Value {
        json!({
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "eth0", "mac": "02:00:00:00:00:01", "sandbox": "/run/netns/x"}],
            "ips": [{"address": "10.1.0.5/24", "gateway": "10.1.0.1", "interface": 0},
                    {"address": "fd00::5/64", "interface": 0}],
            "dns": {}
        })
    }

    #[test]
    fn converts_between_result_formats() {
        let old = convert(&prev(), Version(0, 3, 1)).unwrap();
        assert_eq!(old["cniVersion"], "0.3.1");
        assert_eq!(old["ips"][0]["version"], "4");
        assert_eq!(old["ips"][1]["version"], "6");
        let new = convert(&old, Version(1, 1, 0)).unwrap();
        assert_eq!(new["cniVersion"], "1.1.0");
        assert!(new["ips"][0].get("version").is_none());
        assert_eq!(new["ips"], prev()["ips"]);
    }

    #[test]
    fn finds_the_sandbox_interface() {
        let i = sandbox_interface(&prev(), "eth0").unwrap();
        assert_eq!(i.mac.as_deref(), Some("02:00:00:00:00:01"));
        assert_eq!(
            i.addresses,
            vec![
                ("10.1.0.5".parse().unwrap(), 24),
                ("fd00::5".parse().unwrap(), 64)
            ]
        );
        assert_eq!(
            sandbox_interface(&prev(), "net1").unwrap_err().code,
            Code::InvalidConfig
        );
    }
}
