//! The only layer that makes raw system calls, and the only home of
//! `unsafe`: the rest of mvnet speaks in `std` types.
pub mod alloc;
pub mod bpf;
pub mod cache;
pub mod fs;
pub mod mount;
pub mod net;
pub mod netns;
pub mod packet;
pub mod process;
pub mod term;
pub mod text;

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    /// Every `.rs` file under `dir`, recursively.
    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                rust_files(&path, out);
            } else if path.extension().is_some_and(|x| x == "rs") {
                out.push(path);
            }
        }
    }

    /// Lines outside a `sys/` directory under `root` that mention
    /// `unsafe`, as "path:line: text".
    fn unsafe_outside_sys(root: &Path) -> Vec<String> {
        let mut files = Vec::new();
        rust_files(root, &mut files);
        assert!(!files.is_empty(), "no sources under {}", root.display());
        let mut hits = Vec::new();
        for file in files {
            let rel = file.strip_prefix(root).expect("under root");
            if rel.components().any(|c| c.as_os_str() == "sys") {
                continue;
            }
            let text = std::fs::read_to_string(&file).expect("readable source");
            for (i, line) in text.lines().enumerate() {
                if line.contains("unsafe") {
                    hits.push(format!("{}:{}: {}", file.display(), i + 1, line.trim()));
                }
            }
        }
        hits
    }

    #[test]
    fn unsafe_lives_only_under_sys() {
        let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let roots = [crate_dir.join("src"), crate_dir.join("../mvnet-lab/src")];
        let hits: Vec<String> = roots.iter().flat_map(|r| unsafe_outside_sys(r)).collect();
        assert!(
            hits.is_empty(),
            "`unsafe` outside sys/ (move it into macvlan-user/src/sys/):\n{}",
            hits.join("\n")
        );
    }

    #[test]
    fn the_check_sees_unsafe_outside_sys() {
        let dir = std::env::temp_dir().join(format!("mvnet-unsafe-check-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sys")).unwrap();
        std::fs::write(dir.join("sys/ok.rs"), "fn f() { unsafe {} }\n").unwrap();
        std::fs::write(dir.join("bad.rs"), "fn f() {}\nfn g() { unsafe {} }\n").unwrap();
        let hits = unsafe_outside_sys(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            hits,
            vec![format!(
                "{}:2: fn g() {{ unsafe {{}} }}",
                dir.join("bad.rs").display()
            )]
        );
    }
}
