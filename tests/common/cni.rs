//! Calling a CNI plugin as a runtime does: the spec's CNI_* environment
//! and the network config on stdin, in a given namespace. Shared by the
//! host tests (conformance, podman, kubernetes) and the VM tests.
use std::{
    io::Write as _,
    path::Path,
    process::{Command, Stdio},
};

use mvnet::netns::NetNs;
use serde_json::Value;

/// Where Debian installs the reference plugins.
pub const REFERENCE_DIR: &str = "/usr/lib/cni";

/// What a plugin answered.
#[derive(Debug)]
pub struct Reply {
    pub status: i32,
    pub stdout: String,
}

impl Reply {
    /// The JSON it printed (`Null` for none).
    pub fn json(&self) -> Value {
        if self.stdout.trim().is_empty() {
            return Value::Null;
        }
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("plugin printed no JSON ({e}): {}", self.stdout))
    }

    /// Asserts success; the result.
    pub fn ok(&self) -> Value {
        assert_eq!(self.status, 0, "plugin failed: {}", self.stdout);
        self.json()
    }

    /// Asserts a CNI error; (code, msg).
    pub fn err(&self) -> (u64, String) {
        assert_eq!(
            self.status, 1,
            "plugin did not fail with 1: {}",
            self.stdout
        );
        let v = self.json();
        (
            v["code"].as_u64().expect("error code"),
            v["msg"].as_str().expect("error msg").to_owned(),
        )
    }
}

/// One plugin call: CNI_* from `env` only (none inherited), `stdin`.
pub fn exec(ns: &NetNs, plugin: &Path, env: &[(&str, &str)], stdin: &str) -> Reply {
    exec_under(ns, &[], plugin, env, stdin)
}

/// [`exec`] with the plugin run by `wrapper` (a program and its arguments,
/// e.g. strace's), if not empty.
pub fn exec_under(
    ns: &NetNs,
    wrapper: &[&str],
    plugin: &Path,
    env: &[(&str, &str)],
    stdin: &str,
) -> Reply {
    let plugin = plugin.to_owned();
    let wrapper: Vec<String> = wrapper.iter().map(|s| s.to_string()).collect();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let stdin = stdin.to_owned();
    ns.run(move || {
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(&plugin);
                c
            }
            None => Command::new(&plugin),
        };
        for (k, _) in std::env::vars() {
            if k.starts_with("CNI_") {
                cmd.env_remove(k);
            }
        }
        let mut child = cmd
            .envs(env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("running {}: {e}", plugin.display()));
        // A plugin may exit without reading its stdin (an error found in
        // the environment first): a write after that is EPIPE, not a test
        // failure; its reply is on stdout as usual.
        if let Err(e) = child.stdin.take().unwrap().write_all(stdin.as_bytes()) {
            assert_eq!(
                e.kind(),
                std::io::ErrorKind::BrokenPipe,
                "writing {}'s stdin: {e}",
                plugin.display()
            );
        }
        let out = child.wait_with_output().unwrap();
        Reply {
            status: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8(out.stdout).unwrap(),
        }
    })
    .unwrap()
}
