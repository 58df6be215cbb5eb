//! Builds the eBPF programs (`macvlan-ebpf`) with aya-build: nightly rustc,
//! `-Z build-std=core`, target bpfel-unknown-none, linked by bpf-linker with
//! BTF. The object lands in OUT_DIR and is embedded by `datapath::object`.
//! `cargo xtask setup` installs what this needs.
use anyhow::{anyhow, Context as _};
use aya_build::Package;

fn main() -> anyhow::Result<()> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?;
    let root = std::path::Path::new(&manifest_dir)
        .parent()
        .ok_or_else(|| anyhow!("macvlan-user has no parent directory"))?;
    let ebpf_dir = root.join("macvlan-ebpf");
    let common_dir = root.join("macvlan-common");
    println!("cargo:rerun-if-changed={}", common_dir.display());
    let ebpf_dir = ebpf_dir
        .to_str()
        .ok_or_else(|| anyhow!("non-UTF-8 path {}", ebpf_dir.display()))?;
    aya_build::build_ebpf(
        [Package {
            name: "macvlan-ebpf",
            root_dir: ebpf_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
    .context("building the eBPF programs failed; run `cargo xtask setup` to install the nightly toolchain, rust-src and bpf-linker")
}
