//! The network configuration on stdin: the spec's keys, and mvnet's own
//! (`policy`, `stateDir`, `xdpMode`; `master`, `mode` and `ipam` in
//! standalone mode).
use std::path::PathBuf;

use serde::Deserialize;
use serde_json::Value;

use super::spec::{self, CniError, CniResult, Code, Version};
use crate::model::{MacvlanMode, Policy, XdpMode};

/// One attachment the runtime still uses (GC's `cni.dev/valid-attachments`).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// The config as decoded, before mvnet's own checks.
#[derive(Clone, Debug, Default, Deserialize)]
struct Raw {
    #[serde(rename = "cniVersion", default)]
    cni_version: String,
    #[serde(default)]
    name: String,
    #[serde(rename = "type", default)]
    kind: String,
    policy: Option<String>,
    #[serde(rename = "stateDir")]
    state_dir: Option<PathBuf>,
    #[serde(rename = "xdpMode")]
    xdp_mode: Option<String>,
    #[serde(rename = "maxEndpoints")]
    max_endpoints: Option<u32>,
    master: Option<String>,
    mode: Option<String>,
    ipam: Option<Value>,
    #[serde(rename = "prevResult")]
    prev_result: Option<Value>,
    #[serde(rename = "cni.dev/valid-attachments")]
    valid_attachments: Option<Vec<Attachment>>,
}

/// How the plugin is used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// After the reference `macvlan` plugin: registers what it made.
    Chained,
    /// `master` given: mvnet-cni makes the macvlan, IPAM by `ipam.type`.
    Standalone {
        master: String,
        mode: MacvlanMode,
        ipam: Value,
    },
}

/// A checked network config.
#[derive(Clone, Debug)]
pub struct NetConf {
    pub version: Version,
    pub version_str: String,
    pub name: String,
    pub kind: String,
    pub policy: Policy,
    pub xdp_mode: XdpMode,
    /// `maxEndpoints`: the root classifier's endpoint slots (see
    /// `mvnet network create --max-endpoints`).
    pub max_endpoints: Option<u32>,
    pub state_dir: PathBuf,
    pub role: Role,
    pub prev_result: Option<Value>,
    pub valid_attachments: Option<Vec<Attachment>>,
    /// The whole config, for an IPAM plugin.
    pub raw: Value,
}

/// Decodes stdin: malformed JSON is error 6, as in the reference plugins.
pub fn decode(stdin: &[u8]) -> CniResult<Value> {
    serde_json::from_slice(stdin).map_err(|e| {
        CniError::new(
            Code::Decode,
            format!("error unmarshall network config: {e}"),
        )
    })
}

/// The config's `cniVersion` ("" when absent or not a string).
pub fn version_of(raw: &Value) -> String {
    raw.get("cniVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// Checks the config: name, version, and mvnet's keys.
pub fn parse(raw: Value) -> CniResult<NetConf> {
    let r: Raw = serde_json::from_value(raw.clone()).map_err(|e| {
        CniError::new(
            Code::Decode,
            format!("error unmarshall network config: {e}"),
        )
    })?;
    spec::validate_network_name(&r.name)?;
    let version = spec::check_version(&r.cni_version)?;
    let policy = match r.policy.as_deref() {
        None => Policy::Observe,
        Some("observe") => Policy::Observe,
        Some("enforce") => Policy::Enforce,
        Some(p) => {
            return Err(CniError::new(
                Code::InvalidConfig,
                format!("invalid \"policy\": {p:?}; use \"observe\" (count and pass) or \"enforce\" (drop what is not valid)"),
            ))
        }
    };
    let xdp_mode = match r.xdp_mode.as_deref() {
        None | Some("auto") => XdpMode::Auto,
        Some("native") => XdpMode::Native,
        Some("generic") => XdpMode::Generic,
        Some(m) => {
            return Err(CniError::new(
                Code::InvalidConfig,
                format!("invalid \"xdpMode\": {m:?}; use \"auto\", \"native\" or \"generic\""),
            ))
        }
    };
    if let Some(n) = r.max_endpoints {
        crate::datapath::check_capacity(n).map_err(|_| {
            CniError::new(
                Code::InvalidConfig,
                format!(
                    "invalid \"maxEndpoints\": {n}; give a capacity from 1 to 65536 (default 4096)"
                ),
            )
        })?;
    }
    let role = match r.master {
        None => {
            if let Some(key) = [("mode", r.mode.is_some()), ("ipam", r.ipam.is_some())]
                .iter()
                .find_map(|(k, set)| set.then_some(*k))
            {
                return Err(CniError::new(
                    Code::UnsupportedField,
                    format!("\"{key}\" is only used with \"master\" (standalone mode); chained after the macvlan plugin, set it there"),
                ));
            }
            Role::Chained
        }
        Some(master) => {
            let mode = match r.mode.as_deref() {
                None | Some("") => MacvlanMode::Bridge,
                Some(m) => MacvlanMode::parse(m).ok_or_else(|| {
                    CniError::new(
                        Code::InvalidConfig,
                        format!("requested macvlan mode '{m}' is not valid, 'bridge' mode is the macvlan driver default"),
                    )
                })?,
            };
            let ipam = r.ipam.filter(|i| i.get("type").and_then(Value::as_str).is_some_and(|t| !t.is_empty())).ok_or_else(|| {
                CniError::new(
                    Code::InvalidConfig,
                    "standalone mode needs \"ipam\" with a \"type\" (for example {\"type\": \"host-local\", \"subnet\": \"10.1.0.0/24\"})",
                )
            })?;
            Role::Standalone { master, mode, ipam }
        }
    };
    Ok(NetConf {
        version,
        version_str: r.cni_version,
        name: r.name,
        kind: r.kind,
        policy,
        xdp_mode,
        max_endpoints: r.max_endpoints,
        state_dir: crate::store::state_dir(r.state_dir),
        role,
        prev_result: r.prev_result,
        valid_attachments: r.valid_attachments,
        raw,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn chained_defaults() {
        let c = parse(json!({"cniVersion": "1.0.0", "name": "lan", "type": "mvnet-cni"})).unwrap();
        assert_eq!(c.role, Role::Chained);
        assert_eq!(c.policy, Policy::Observe);
        assert_eq!(c.version, Version(1, 0, 0));
    }

    #[test]
    fn bad_policy_and_mode_are_config_errors() {
        let e = parse(json!({"cniVersion": "1.0.0", "name": "lan", "policy": "drop"})).unwrap_err();
        assert_eq!(e.code, Code::InvalidConfig);
        assert!(e.msg.contains("\"enforce\""), "{}", e.msg);
        let e = parse(
            json!({"cniVersion": "1.0.0", "name": "lan", "master": "eth0", "mode": "x",
            "ipam": {"type": "host-local"}}),
        )
        .unwrap_err();
        assert_eq!(
            e.msg,
            "requested macvlan mode 'x' is not valid, 'bridge' mode is the macvlan driver default"
        );
        let e = parse(json!({"cniVersion": "1.0.0", "name": "lan", "mode": "vepa"})).unwrap_err();
        assert_eq!(e.code, Code::UnsupportedField);
        let e = parse(json!({"cniVersion": "1.0.0", "name": "lan", "master": "eth0"})).unwrap_err();
        assert_eq!(e.code, Code::InvalidConfig);
    }

    #[test]
    fn max_endpoints_is_checked() {
        let c =
            parse(json!({"cniVersion": "1.0.0", "name": "lan", "maxEndpoints": 65536})).unwrap();
        assert_eq!(c.max_endpoints, Some(65536));
        let c = parse(json!({"cniVersion": "1.0.0", "name": "lan"})).unwrap();
        assert_eq!(c.max_endpoints, None);
        for bad in [0, 65537] {
            let e = parse(json!({"cniVersion": "1.0.0", "name": "lan", "maxEndpoints": bad}))
                .unwrap_err();
            assert_eq!(e.code, Code::InvalidConfig);
            assert_eq!(
                e.msg,
                format!("invalid \"maxEndpoints\": {bad}; give a capacity from 1 to 65536 (default 4096)")
            );
        }
    }

    #[test]
    fn wrong_types_are_decode_errors() {
        let e = parse(json!({"cniVersion": "1.0.0", "name": 3})).unwrap_err();
        assert_eq!(e.code, Code::Decode);
    }
}
