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
    link_cni_plugin_statically(
        env,
        release,
        &executable(&found, "macvlan-user", "mvnet-cni", "bin")?,
    )?;
    Ok(mvnet)
}

/// Links `mvnet-cni` again, statically: the plugin is copied into nodes'
/// `/opt/cni/bin` (deploy/kubernetes), whose glibc is not the one it was
/// built against, as the reference plugins are (static Go binaries). It
/// also starts faster (no dynamic loader, no libgcc_s constructor):
/// about 0.3 ms of each CNI call. `cargo rustc` relinks the plugin alone
/// on the libraries just built, and cargo keeps both links, so a later
/// plain `cargo build` and this step only swap which one `plugin` is.
fn link_cni_plugin_statically(env: &Env, release: bool, plugin: &std::path::Path) -> Result<()> {
    let mut cmd = env.cargo();
    cmd.args(["rustc", "--package", "macvlan-user", "--bin", "mvnet-cni"]);
    if release {
        cmd.arg("--release");
    }
    cmd.args(["--", "-C", "target-feature=+crt-static"]);
    util::run(&mut cmd)?;
    let bytes = std::fs::read(plugin).map_err(|e| anyhow!("reading {}: {e}", plugin.display()))?;
    match elf_interpreter(&bytes) {
        Some(false) => Ok(()),
        Some(true) => bail!(
            "{} is still linked dynamically after `{}`; is glibc's static library (libc.a, \
             Debian package libc6-dev) installed?",
            plugin.display(),
            util::show(&cmd)
        ),
        None => bail!("{} is not a 64-bit ELF executable", plugin.display()),
    }
}

/// Whether a 64-bit little-endian ELF file asks for a dynamic loader (has
/// a PT_INTERP program header); `None` if `elf` is not one.
fn elf_interpreter(elf: &[u8]) -> Option<bool> {
    const PT_INTERP: u32 = 3;
    if elf.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let u16_at = |at: usize| Some(u16::from_le_bytes(elf.get(at..at + 2)?.try_into().ok()?));
    let u64_at = |at: usize| Some(u64::from_le_bytes(elf.get(at..at + 8)?.try_into().ok()?));
    let (phoff, entsize, count) = (
        usize::try_from(u64_at(0x20)?).ok()?,
        usize::from(u16_at(0x36)?),
        usize::from(u16_at(0x38)?),
    );
    let mut interp = false;
    for i in 0..count {
        let at = phoff.checked_add(i.checked_mul(entsize)?)?;
        let p_type = u32::from_le_bytes(elf.get(at..at + 4)?.try_into().ok()?);
        interp |= p_type == PT_INTERP;
    }
    Some(interp)
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

    /// A 64-bit ELF header with `types` as its program headers' types.
    fn elf_with(types: &[u32]) -> Vec<u8> {
        let mut elf = vec![0u8; 64 + 56 * types.len()];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        elf[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        elf[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        elf[0x38..0x3a].copy_from_slice(&(types.len() as u16).to_le_bytes());
        for (i, t) in types.iter().enumerate() {
            elf[64 + 56 * i..68 + 56 * i].copy_from_slice(&t.to_le_bytes());
        }
        elf
    }

    #[test]
    fn finds_the_dynamic_loader_request() {
        // PT_PHDR, PT_INTERP, PT_LOAD: a dynamically linked executable.
        assert_eq!(elf_interpreter(&elf_with(&[6, 3, 1])), Some(true));
        // A static-pie: PT_LOAD, PT_DYNAMIC, no PT_INTERP.
        assert_eq!(elf_interpreter(&elf_with(&[1, 1, 2])), Some(false));
        // This test binary, linked as cargo links it by default.
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert_eq!(elf_interpreter(&me), Some(true));
        // Not ELF, 32-bit, or program headers past the end.
        assert_eq!(elf_interpreter(b"#!/bin/sh\n"), None);
        let mut elf32 = elf_with(&[3]);
        elf32[4] = 1;
        assert_eq!(elf_interpreter(&elf32), None);
        let elf = elf_with(&[1, 3]);
        assert_eq!(elf_interpreter(&elf[..100]), None);
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
