use which::which;

/// Rebuild the eBPF object when bpf-linker changes (a new linker can emit a
/// different object for the same source). aya-build builds this crate; the
/// linker itself is found on PATH, where `cargo xtask setup` puts ours.
fn main() {
    let bpf_linker = which("bpf-linker").expect(
        "bpf-linker not found on PATH; run `cargo xtask setup` (it builds one against the nightly toolchain's LLVM)",
    );
    println!("cargo:rerun-if-changed={}", bpf_linker.to_str().unwrap());
}
