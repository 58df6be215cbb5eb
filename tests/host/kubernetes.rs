//! deploy/kubernetes: the manifests validate (deploy/kubernetes/validate.py
//! with kubernetes-validate's schemas, which `cargo xtask setup` installs),
//! a broken one does not, and the NetworkAttachmentDefinition's conflist
//! works when run plugin by plugin as Multus (libcni) runs it.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::{json, Value};

use crate::cni::{exec, Harness, REFERENCE_DIR};

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("deploy/kubernetes")
}

/// The Python of the kubernetes-validate venv.
fn python() -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .unwrap_or_else(|| Path::new(&std::env::var_os("HOME").unwrap()).join(".cache"));
    let py = cache.join("mvnet/k8s-validate/bin/python");
    assert!(
        py.exists(),
        "{} not found; install kubernetes-validate with `cargo xtask setup`",
        py.display()
    );
    py
}

/// Runs validate.py of `dir`: (success, output).
fn validate(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(python())
        .arg(dir.join("validate.py"))
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn kubernetes_manifests_validate_and_a_broken_one_does_not() {
    let (ok, out) = validate(&deploy_dir(), &[]);
    assert!(ok, "{out}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "ok: daemonset.yaml (DaemonSet) against Kubernetes 1.37.0, strict",
            "ok: network-attachment.yaml (NetworkAttachmentDefinition) against its CRD's schema and ObjectMeta",
            "ok: podmonitor.yaml (PodMonitor) against its CRD's schema and ObjectMeta",
            "ok: the PodMonitor selects the DaemonSet's pods and scrapes mvnet serve's port",
            "ok: the NetworkAttachmentDefinition chains mvnet-cni after macvlan",
        ]
    );
    // Each mistake is caught, by name.
    let broken = [
        (
            "daemonset.yaml",
            "hostNetwork: true",
            "hostNetwrk: true",
            "FAIL daemonset.yaml: ",
        ),
        (
            "podmonitor.yaml",
            "port: metrics",
            "port: prometheus",
            "FAIL the PodMonitor scrapes port prometheus, which the serve container does not name",
        ),
        (
            "podmonitor.yaml",
            "interval: 15s",
            "interval: soon",
            "FAIL podmonitor.yaml: spec.podMetricsEndpoints.0.interval",
        ),
        (
            "network-attachment.yaml",
            "\"type\": \"mvnet-cni\"",
            "\"type\": \"bridge\"",
            "FAIL the conflist's plugins are ['macvlan', 'bridge']",
        ),
    ];
    for (file, from, to, want) in broken {
        let dir = std::env::temp_dir().join(format!("mvnet-k8s-{}-{file}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for e in std::fs::read_dir(deploy_dir()).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
        }
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        assert!(text.contains(from), "{file} has no {from:?}");
        std::fs::write(dir.join(file), text.replacen(from, to, 1)).unwrap();
        let (ok, out) = validate(&dir, &[]);
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(!ok, "{file} with {to:?} validated: {out}");
        assert!(
            out.lines().any(|l| l.starts_with(want)),
            "{file} with {to:?}: {out}"
        );
    }
}

#[test]
fn kubernetes_network_attachment_conflist_counts_a_pod() {
    let (ok, out) = validate(&deploy_dir(), &["--conflist"]);
    assert!(ok, "{out}");
    let conflist: Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    let mut h = Harness::new();
    let netns = h.container("pod");
    let cid = "pod0";
    let env = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", cid),
        ("CNI_NETNS", netns.as_str()),
        ("CNI_IFNAME", "net1"),
        ("CNI_PATH", h.cni_path.as_str()),
        (
            "CNI_ARGS",
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0",
        ),
    ];
    // As libcni runs a conflist: each plugin with cniVersion and name, the
    // previous result as prevResult. This machine's paths: host-local's
    // data and mvnet's state in the test's directories.
    let plugins = conflist["plugins"].as_array().unwrap().clone();
    let mut prev: Option<Value> = None;
    for p in &plugins {
        let mut conf = p.clone();
        conf["cniVersion"] = conflist["cniVersion"].clone();
        conf["name"] = conflist["name"].clone();
        if conf.get("ipam").is_some() {
            conf["ipam"]["dataDir"] = json!(h.ipam_dir);
        }
        if conf["type"] == "mvnet-cni" {
            conf["stateDir"] = json!(h.s.state_dir);
        }
        if let Some(prev) = &prev {
            conf["prevResult"] = prev.clone();
        }
        let plugin = match conf["type"].as_str().unwrap() {
            "mvnet-cni" => crate::common::cli::cni_bin(),
            t => Path::new(REFERENCE_DIR).join(t),
        };
        prev = Some(exec(h.lab.host(), &plugin, &env, &conf.to_string()).ok());
    }
    let result = prev.unwrap();
    assert_eq!(result["ips"][0]["address"], "192.168.50.100/24");
    let mac: mvnet::model::Mac = result["interfaces"][0]["mac"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    // Counted, shown as the pod, and verified.
    h.send_to(mac, 29);
    assert_eq!(h.rx_wire(cid), 29);
    let doc: Value = serde_json::from_str(&h.s.ok(&["stats", "--json"])).unwrap();
    assert_eq!(doc["networks"][0]["name"], "mvnet-lan");
    assert_eq!(
        doc["networks"][0]["endpoints"][0]["container"],
        "default/web-0"
    );
    h.s.ok(&["verify"]);
}
