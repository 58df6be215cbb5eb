//! Cargo invocations whose artifacts we need (the mvnet binary, the VM test
//! executable), read from `--message-format=json-render-diagnostics`: cargo
//! still renders warnings and errors on stderr as usual.

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{anyhow, bail, Result};
use serde_json::Value;

use crate::setup::Env;
use crate::util;

#[derive(Debug)]
pub struct Artifact {
    pub package_id: String,
    pub target_name: String,
    pub kind: Vec<String>,
    pub executable: Option<PathBuf>,
}

/// Parses one line of cargo's JSON output; `None` unless it is a compiler artifact.
fn parse_artifact(line: &str) -> Option<Artifact> {
    let v: Value = serde_json::from_str(line).ok()?;
    if v.get("reason")?.as_str()? != "compiler-artifact" {
        return None;
    }
    let target = v.get("target")?;
    Some(Artifact {
        package_id: v.get("package_id")?.as_str()?.to_string(),
        target_name: target.get("name")?.as_str()?.to_string(),
        kind: target
            .get("kind")?
            .as_array()?
            .iter()
            .filter_map(|k| k.as_str().map(str::to_string))
            .collect(),
        executable: v
            .get("executable")
            .and_then(Value::as_str)
            .map(PathBuf::from),
    })
}

/// Runs a cargo build (or `test --no-run`) and returns the artifacts it reports.
pub fn artifacts(cmd: &mut Command) -> Result<Vec<Artifact>> {
    cmd.arg("--message-format=json-render-diagnostics")
        .stdout(Stdio::piped());
    util::announce(cmd);
    let mut child = cmd
        .spawn()
        .map_err(|e| anyhow!("could not start cargo: {e}"))?;
    let stdout = child.stdout.take().expect("piped");
    let mut found = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        if let Some(artifact) = parse_artifact(&line) {
            found.push(artifact);
        } else if !line.starts_with('{') {
            // Not JSON (e.g. a build script writing to stdout): pass it on.
            println!("{line}");
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("`{}` failed ({})", util::show(cmd), util::describe(status));
    }
    Ok(found)
}

impl Artifact {
    /// The package name from a package id spec: `path+file:///w/tests#macvlan-tests@0.1.0`,
    /// `path+file:///w/macvlan-user#0.1.0` (name = directory), or the older
    /// `macvlan-tests 0.1.0 (path+file:///w/tests)`.
    fn package_name(&self) -> &str {
        let id = self.package_id.as_str();
        match id.split_once('#') {
            Some((_, frag)) if frag.contains('@') => frag.split('@').next().unwrap_or(frag),
            Some((url, _)) => url.rsplit('/').next().unwrap_or(url),
            None => id.split_whitespace().next().unwrap_or(id),
        }
    }

    fn is_of(&self, package: &str) -> bool {
        self.package_name() == package
    }
}

/// The executable of `package`'s target `name` of `kind` ("bin", "test") among `artifacts`.
pub fn executable(
    artifacts: &[Artifact],
    package: &str,
    name: &str,
    kind: &str,
) -> Result<PathBuf> {
    artifacts
        .iter()
        .filter(|a| a.is_of(package) && a.target_name == name && a.kind.iter().any(|k| k == kind))
        .find_map(|a| a.executable.clone())
        .ok_or_else(|| {
            anyhow!("cargo reported no executable for {kind} target `{name}` of package {package}")
        })
}

/// Builds the `mvnet` binary and, beside it, `mvnet-lab` (which runs
/// `mvnet lab …` and `mvnet pktgen`) and `mvnet-cni` (the CNI plugin the
/// host tests drive), debug unless `release`; returns mvnet's path.
pub fn build_mvnet(env: &Env, release: bool) -> Result<PathBuf> {
    let mut cmd = env.cargo();
    cmd.args([
        "build",
        "--package",
        "macvlan-user",
        "--bin",
        "mvnet",
        "--bin",
        "mvnet-cni",
        "--package",
        "mvnet-lab",
        "--bin",
        "mvnet-lab",
    ]);
    if release {
        cmd.arg("--release");
    }
    let found = artifacts(&mut cmd)?;
    let mvnet = executable(&found, "macvlan-user", "mvnet", "bin")?;
    let lab = executable(&found, "mvnet-lab", "mvnet-lab", "bin")?;
    if lab.parent() != mvnet.parent() {
        bail!(
            "cargo put mvnet-lab in {} and mvnet in {}; mvnet runs it only from beside itself or PATH",
            lab.display(),
            mvnet.display()
        );
    }
    Ok(mvnet)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_test_artifact() {
        let line = r#"{"reason":"compiler-artifact","package_id":"path+file:///w/tests#macvlan-tests@0.1.0","target":{"kind":["test"],"crate_types":["bin"],"name":"vm","src_path":"/w/tests/vm/main.rs"},"profile":{"test":true},"features":[],"filenames":["/w/target/debug/deps/vm-1"],"executable":"/w/target/debug/deps/vm-1","fresh":true}"#;
        let a = parse_artifact(line).unwrap();
        assert_eq!(a.target_name, "vm");
        assert_eq!(a.kind, ["test"]);
        assert!(a.is_of("macvlan-tests") && !a.is_of("macvlan"));
        assert_eq!(
            executable(&[a], "macvlan-tests", "vm", "test").unwrap(),
            PathBuf::from("/w/target/debug/deps/vm-1")
        );
    }

    #[test]
    fn package_names() {
        let a = |id: &str| Artifact {
            package_id: id.to_string(),
            target_name: String::new(),
            kind: vec![],
            executable: None,
        };
        assert_eq!(
            a("path+file:///w/macvlan-user#0.1.0").package_name(),
            "macvlan-user"
        );
        assert_eq!(
            a("path+file:///w/tests#macvlan-tests@0.1.0").package_name(),
            "macvlan-tests"
        );
        assert_eq!(
            a("registry+https://github.com/rust-lang/crates.io-index#libc@0.2.191").package_name(),
            "libc"
        );
        assert_eq!(
            a("macvlan-tests 0.1.0 (path+file:///w/tests)").package_name(),
            "macvlan-tests"
        );
    }

    #[test]
    fn skips_libraries_and_other_messages() {
        let lib = r#"{"reason":"compiler-artifact","package_id":"x","target":{"kind":["lib"],"name":"vm"},"executable":null}"#;
        let a = parse_artifact(lib).unwrap();
        assert!(executable(&[a], "x", "vm", "test").is_err());
        assert!(parse_artifact(r#"{"reason":"build-finished","success":true}"#).is_none());
        assert!(parse_artifact("not json").is_none());
    }
}
