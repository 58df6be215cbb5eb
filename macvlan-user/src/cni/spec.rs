//! The CNI protocol (spec 1.1.0): versions, the environment a runtime
//! passes, and the error codes and JSON errors a plugin answers with. What
//! the reference plugins' `skel` checks, in the same order and with the same
//! messages, so that a runtime sees mvnet-cni fail the way it sees them fail.
use std::fmt;

use serde_json::{json, Value};

/// The spec versions mvnet-cni speaks, oldest first.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The version mvnet-cni implements.
pub const CURRENT_VERSION: &str = "1.1.0";

/// A spec version, compared numerically ("0.10.0" > "0.4.0").
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32, pub u32, pub u32);

impl Version {
    pub fn parse(s: &str) -> Option<Version> {
        let mut parts = s.split('.').map(|p| p.parse::<u32>().ok());
        let v = Version(parts.next()??, parts.next()??, parts.next()??);
        parts.next().is_none().then_some(v)
    }

    /// Whether results of this version still carry `ips[].version` (the
    /// 0.x result format).
    pub fn has_ip_version_field(self) -> bool {
        self < Version(1, 0, 0)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// An error code: the spec's well-known ones (0-99), mvnet-cni's own (100
/// and up, as the spec reserves them for plugins), or one a delegated
/// plugin answered with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Code(pub u32);

// Named as the spec names them.
#[allow(non_upper_case_globals)]
impl Code {
    pub const IncompatibleVersion: Code = Code(1);
    pub const UnsupportedField: Code = Code(2);
    pub const UnknownContainer: Code = Code(3);
    pub const InvalidEnvironment: Code = Code(4);
    pub const Io: Code = Code(5);
    pub const Decode: Code = Code(6);
    pub const InvalidConfig: Code = Code(7);
    pub const TryAgainLater: Code = Code(11);
    pub const PluginNotAvailable: Code = Code(50);
    /// CHECK: the classifier of the root device is not attached, or the
    /// endpoint is not in its table.
    pub const ClassifierMissing: Code = Code(100);
    /// mvnet refused or failed the change (the message says why).
    pub const Mvnet: Code = Code(101);
}

/// A CNI error: printed as JSON on stdout, and the plugin exits 1.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CniError {
    pub code: Code,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: Code, msg: impl Into<String>) -> CniError {
        CniError {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> CniError {
        self.details = details.into();
        self
    }

    /// An mvnet error (the whole chain of causes in one message).
    pub fn mvnet(e: anyhow::Error) -> CniError {
        CniError::new(Code::Mvnet, format!("{e:#}"))
    }

    /// The spec's error object; `version` is the config's cniVersion when
    /// it was read.
    pub fn to_json(&self, version: &str) -> Value {
        let mut v = json!({
            "cniVersion": version,
            "code": self.code.0,
            "msg": self.msg,
        });
        if !self.details.is_empty() {
            v["details"] = Value::String(self.details.clone());
        }
        v
    }
}

impl fmt::Display for CniError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (code {})", self.msg, self.code.0)?;
        if !self.details.is_empty() {
            write!(f, ": {}", self.details)?;
        }
        Ok(())
    }
}

pub type CniResult<T> = Result<T, CniError>;

/// CNI_COMMAND.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Status,
    Gc,
    Version,
}

impl Command {
    pub fn parse(s: &str) -> Option<Command> {
        Some(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            "VERSION" => Command::Version,
            _ => return None,
        })
    }

    /// Whether the command acts on one attachment (container, interface).
    pub fn per_attachment(self) -> bool {
        matches!(self, Command::Add | Command::Del | Command::Check)
    }
}

/// The environment of one call.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Env {
    pub command: String,
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    pub args: String,
    pub path: String,
}

impl Env {
    /// Reads the CNI_* variables through `get`.
    pub fn read(get: impl Fn(&str) -> Option<String>) -> Env {
        let v = |k: &str| get(k).unwrap_or_default();
        Env {
            command: v("CNI_COMMAND"),
            container_id: v("CNI_CONTAINERID"),
            netns: v("CNI_NETNS"),
            ifname: v("CNI_IFNAME"),
            args: v("CNI_ARGS"),
            path: v("CNI_PATH"),
        }
    }

    /// The variables `command` requires that are missing, as the reference
    /// plugins name them: "required env variables [CNI_NETNS] missing".
    pub fn check_required(&self, command: &str) -> CniResult<()> {
        let per = matches!(command, "ADD" | "CHECK" | "DEL");
        let any = matches!(command, "ADD" | "CHECK" | "DEL" | "GC" | "STATUS");
        let required: [(&str, &str, bool); 5] = [
            ("CNI_COMMAND", &self.command, true),
            ("CNI_CONTAINERID", &self.container_id, per),
            ("CNI_NETNS", &self.netns, matches!(command, "ADD" | "CHECK")),
            ("CNI_IFNAME", &self.ifname, per),
            ("CNI_PATH", &self.path, any),
        ];
        let missing: Vec<&str> = required
            .iter()
            .filter(|(_, v, req)| *req && v.is_empty())
            .map(|(k, _, _)| *k)
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        Err(CniError::new(
            Code::InvalidEnvironment,
            format!("required env variables [{}] missing", missing.join(" ")),
        ))
    }

    /// CNI_ARGS: `KEY=VALUE;KEY=VALUE`.
    pub fn args(&self) -> CniResult<Vec<(String, String)>> {
        self.args
            .split(';')
            .filter(|p| !p.is_empty())
            .map(|pair| {
                pair.split_once('=')
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .ok_or_else(|| {
                        CniError::new(
                            Code::InvalidEnvironment,
                            format!("invalid CNI_ARGS pair {pair:?}: write KEY=VALUE pairs separated by ';'"),
                        )
                    })
            })
            .collect()
    }

    /// `namespace/name` from K8S_POD_NAMESPACE and K8S_POD_NAME (just the
    /// name without a namespace), when the runtime passes them.
    pub fn pod(&self) -> CniResult<Option<String>> {
        let args = self.args()?;
        let get = |k: &str| {
            args.iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
                .filter(|v| !v.is_empty())
        };
        Ok(match (get("K8S_POD_NAMESPACE"), get("K8S_POD_NAME")) {
            (Some(ns), Some(name)) => Some(format!("{ns}/{name}")),
            (None, Some(name)) => Some(name.to_owned()),
            _ => None,
        })
    }
}

/// Ids and names the spec restricts to `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
fn valid_id(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// CNI_CONTAINERID, checked as the reference plugins check it.
pub fn validate_container_id(id: &str) -> CniResult<()> {
    if id.is_empty() {
        return Err(CniError::new(Code::UnknownContainer, "missing containerID"));
    }
    if !valid_id(id) {
        return Err(CniError::new(
            Code::InvalidEnvironment,
            "invalid characters in containerID",
        )
        .with_details(id));
    }
    Ok(())
}

/// The network's `name`, checked as the reference plugins check it.
pub fn validate_network_name(name: &str) -> CniResult<()> {
    if name.is_empty() {
        return Err(CniError::new(Code::InvalidConfig, "missing network name"));
    }
    if !valid_id(name) {
        return Err(CniError::new(
            Code::InvalidConfig,
            "invalid characters found in network name",
        )
        .with_details(name));
    }
    Ok(())
}

/// CNI_IFNAME: a Linux interface name.
pub fn validate_ifname(name: &str) -> CniResult<()> {
    let bad = |msg: &str| Err(CniError::new(Code::InvalidEnvironment, msg));
    if name.is_empty() {
        return bad("interface name is empty");
    }
    if name.len() > 15 {
        return Err(
            CniError::new(Code::InvalidEnvironment, "interface name is too long")
                .with_details("interface name should be less than 16 characters"),
        );
    }
    if name == "." || name == ".." {
        return bad("interface name is . or ..");
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        return bad("interface name contains / or : or whitespace characters");
    }
    Ok(())
}

/// The config's cniVersion, which must be one mvnet-cni speaks.
pub fn check_version(v: &str) -> CniResult<Version> {
    let supported = SUPPORTED_VERSIONS.contains(&v);
    match Version::parse(v) {
        Some(parsed) if supported => Ok(parsed),
        _ => Err(
            CniError::new(Code::IncompatibleVersion, "incompatible CNI versions").with_details(
                format!(
                    "config is {v:?}, plugin supports [{}]",
                    SUPPORTED_VERSIONS
                        .iter()
                        .map(|s| format!("{s:?}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                ),
            ),
        ),
    }
}

/// The answer to VERSION.
pub fn version_info() -> Value {
    json!({ "cniVersion": CURRENT_VERSION, "supportedVersions": SUPPORTED_VERSIONS })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_numerically() {
        assert!(Version::parse("0.10.0").unwrap() > Version::parse("0.4.0").unwrap());
        assert_eq!(Version::parse("1.1"), None);
        assert_eq!(Version::parse("1.1.0.0"), None);
        assert!(Version::parse("0.4.0").unwrap().has_ip_version_field());
        assert!(!Version::parse("1.0.0").unwrap().has_ip_version_field());
    }

    #[test]
    fn version_check_names_what_is_supported() {
        assert_eq!(check_version("1.1.0").unwrap(), Version(1, 1, 0));
        let e = check_version("0.2.0").unwrap_err();
        assert_eq!(e.code, Code::IncompatibleVersion);
        assert_eq!(
            e.details,
            r#"config is "0.2.0", plugin supports ["0.3.1" "0.4.0" "1.0.0" "1.1.0"]"#
        );
    }

    #[test]
    fn required_variables_per_command() {
        let env = Env {
            command: "ADD".into(),
            ..Default::default()
        };
        let e = env.check_required("ADD").unwrap_err();
        assert_eq!(e.code, Code::InvalidEnvironment);
        assert_eq!(
            e.msg,
            "required env variables [CNI_CONTAINERID CNI_NETNS CNI_IFNAME CNI_PATH] missing"
        );
        let del = Env {
            command: "DEL".into(),
            container_id: "c1".into(),
            ifname: "eth0".into(),
            path: "/opt/cni/bin".into(),
            ..Default::default()
        };
        del.check_required("DEL").unwrap();
        assert!(del.check_required("CHECK").is_err());
    }

    #[test]
    fn ids_names_and_ifnames() {
        validate_container_id("abc-1.2_3").unwrap();
        assert_eq!(
            validate_container_id("").unwrap_err().code,
            Code::UnknownContainer
        );
        assert_eq!(
            validate_container_id("a/b").unwrap_err().msg,
            "invalid characters in containerID"
        );
        assert_eq!(
            validate_network_name("-x").unwrap_err().code,
            Code::InvalidConfig
        );
        validate_ifname("eth0").unwrap();
        assert_eq!(
            validate_ifname("0123456789abcdef").unwrap_err().msg,
            "interface name is too long"
        );
        assert_eq!(
            validate_ifname("a b").unwrap_err().msg,
            "interface name contains / or : or whitespace characters"
        );
    }

    #[test]
    fn pod_from_cni_args() {
        let env = |args: &str| Env {
            args: args.into(),
            ..Default::default()
        };
        assert_eq!(
            env("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0")
                .pod()
                .unwrap(),
            Some("default/web-0".into())
        );
        assert_eq!(env("IgnoreUnknown=1").pod().unwrap(), None);
        assert_eq!(
            env("K8S_POD_NAME").pod().unwrap_err().code,
            Code::InvalidEnvironment
        );
    }
}
