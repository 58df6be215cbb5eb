#![allow(dead_code)]
//! Shared by the host and VM test binaries.

pub mod cli;
pub mod cni;
pub mod docker;
pub mod http;
pub mod podman;

use mvnet::netns;

/// Fails the test with a clear message unless root: these tests build real
/// namespaces, links and BPF programs, and must not pass by skipping.
pub fn require_root() {
    if let Err(e) = mvnet::require_root("the integration tests") {
        panic!("{e}; run `cargo xtask test` as root");
    }
}

/// Lab namespaces of this process still present.
pub fn leftover_namespaces() -> Vec<String> {
    let mine = format!("{}{}-", mvnet_lab::lab::PREFIX, std::process::id());
    netns::list()
        .into_iter()
        .filter(|n| n.starts_with(&mine))
        .collect()
}

/// The `p`-quantile of `v` (0.0 = min, 1.0 = max), the nearest sample.
pub fn percentile(v: &[f64], p: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

pub fn median(v: &[f64]) -> f64 {
    percentile(v, 0.5)
}
