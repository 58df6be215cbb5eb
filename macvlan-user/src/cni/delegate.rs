//! Running another CNI plugin (standalone mode's IPAM: `host-local`,
//! `static`, `dhcp`, ...) from CNI_PATH, as the spec's delegation does: the
//! same environment and config, its result or error passed on. host-local's
//! ADD and DEL of the configs [`host_local`] understands run in-process
//! instead (a process start less per call), on the same files.
use std::{
    io::Write as _,
    path::PathBuf,
    process::{Command, Stdio},
};

use serde_json::Value;

use super::{
    host_local,
    spec::{CniError, CniResult, Code, Env},
};

/// The plugin `kind` in CNI_PATH.
fn find(env: &Env, kind: &str) -> CniResult<PathBuf> {
    if kind.contains('/') || kind.is_empty() {
        return Err(CniError::new(
            Code::InvalidConfig,
            format!("invalid plugin type {kind:?}: give the name of a plugin in CNI_PATH"),
        ));
    }
    env.path
        .split(':')
        .filter(|d| !d.is_empty())
        .map(|d| PathBuf::from(d).join(kind))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            CniError::new(
                Code::InvalidConfig,
                format!(
                    "failed to find plugin {kind:?} in path [{}]",
                    env.path.replace(':', " ")
                ),
            )
        })
}

/// The versions `exe` speaks (its VERSION answer).
fn supported_versions(exe: &std::path::Path) -> Vec<String> {
    Command::new(exe)
        .env("CNI_COMMAND", "VERSION")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()
        .and_then(|o| serde_json::from_slice::<Value>(&o.stdout).ok())
        .and_then(|v| serde_json::from_value(v.get("supportedVersions")?.clone()).ok())
        .unwrap_or_default()
}

/// Runs the IPAM plugin of `ipam` (`ipam.type`) for `command` with the
/// whole network config on its stdin; its result (ADD) or nothing.
///
/// An IPAM plugin that predates spec 1.1.0 (containernetworking-plugins
/// before 1.5, as Debian 12 ships) refuses a 1.1.0 config, although ADD and
/// DEL and their results are the same in 1.0.0: it is given the config as
/// 1.0.0, and the caller converts the result back.
pub fn ipam(env: &Env, ipam: &Value, command: &str, conf: &Value) -> CniResult<Option<Value>> {
    let kind = ipam.get("type").and_then(Value::as_str).unwrap_or_default();
    let exe = find(env, kind)?;
    if kind == "host-local" {
        // Found in CNI_PATH above, as the binary must be, so that a missing
        // one fails alike.
        if let Some(cfg) = host_local::config(conf, env) {
            match command {
                "ADD" => return host_local::add(&cfg, env).map(Some),
                "DEL" => return host_local::del(&cfg, env).map(|()| None),
                _ => {}
            }
        }
    }
    let mut conf = conf.clone();
    if conf.get("cniVersion").and_then(Value::as_str) == Some("1.1.0")
        && matches!(command, "ADD" | "DEL" | "CHECK")
    {
        let versions = supported_versions(&exe);
        if !versions.iter().any(|v| v == "1.1.0") && versions.iter().any(|v| v == "1.0.0") {
            conf["cniVersion"] = Value::String("1.0.0".into());
        }
    }
    let mut child = Command::new(&exe)
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", &env.container_id)
        .env("CNI_NETNS", &env.netns)
        .env("CNI_IFNAME", &env.ifname)
        .env("CNI_ARGS", &env.args)
        .env("CNI_PATH", &env.path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| CniError::new(Code::Io, format!("running {}: {e}", exe.display())))?;
    let input = conf.to_string();
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| CniError::new(Code::Io, format!("running {}: {e}", exe.display())))?;
    let parsed: Option<Value> = serde_json::from_slice(&out.stdout).ok();
    if !out.status.success() {
        // The plugin's own error, passed on as it gave it.
        let error = parsed.as_ref().and_then(|v| {
            Some(CniError {
                code: Code(v.get("code")?.as_u64()? as u32),
                msg: format!("{kind}: {}", v.get("msg")?.as_str().unwrap_or_default()),
                details: v
                    .get("details")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
            })
        });
        return Err(error.unwrap_or_else(|| {
            CniError::new(
                Code::Io,
                format!(
                    "{kind} failed ({}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            )
        }));
    }
    if command == "ADD" && parsed.is_none() {
        return Err(CniError::new(
            Code::Decode,
            format!("{kind} answered ADD with no JSON result"),
        ));
    }
    Ok(parsed)
}
