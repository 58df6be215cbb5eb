//! The state directory against a hostile or broken filesystem, through the
//! real `mvnet` binary: private modes whatever the umask, refusals of a
//! symlinked, foreign or shared directory, planted symbolic links and
//! special files, a full disk, and logs that leave with their container.
use std::{
    fs,
    os::unix::{
        fs::{symlink, MetadataExt as _, PermissionsExt as _},
        process::CommandExt as _,
    },
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use mvnet::{netlink, netns::NetNs};
use mvnet_lab::lab::Lab;

use crate::common::{
    cli::{mvnet_bin, Session},
    require_root,
};

/// Every command here must finish well within this (a FIFO used to hang).
const TIMEOUT: Duration = Duration::from_secs(20);
const NOBODY: u32 = 65534;

/// `mvnet --state-dir DIR ARGS` in `ns`, with `umask` if given, killed and
/// failing the test if it runs longer than [`TIMEOUT`].
fn mvnet(ns: &NetNs, dir: &Path, umask: Option<u32>, args: &[&str]) -> Output {
    let (bin, dir) = (mvnet_bin(), dir.to_owned());
    let argv: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let out = ns
        .run(move || {
            let mut cmd = Command::new(bin);
            cmd.arg("--state-dir")
                .arg(dir)
                .args(&argv)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            if let Some(mask) = umask {
                // SAFETY: umask is async-signal-safe.
                unsafe {
                    cmd.pre_exec(move || {
                        libc::umask(mask);
                        Ok(())
                    });
                }
            }
            let mut child = cmd.spawn().unwrap();
            let start = Instant::now();
            while child.try_wait().unwrap().is_none() {
                if start.elapsed() > TIMEOUT {
                    let _ = child.kill();
                    let _ = child.wait();
                    return None;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Some(child.wait_with_output().unwrap())
        })
        .unwrap();
    out.unwrap_or_else(|| panic!("mvnet {args:?} did not finish within {TIMEOUT:?}"))
}

fn ok(ns: &NetNs, dir: &Path, args: &[&str]) -> String {
    let out = mvnet(ns, dir, None, args);
    assert!(
        out.status.success(),
        "mvnet {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs a command that must fail (exit 1; 125 for `run`, as Docker's);
/// returns its standard error.
fn fails(ns: &NetNs, dir: &Path, args: &[&str]) -> String {
    let out = mvnet(ns, dir, None, args);
    let code = if args[0] == "run" { 125 } else { 1 };
    assert_eq!(out.status.code(), Some(code), "mvnet {args:?}: {out:?}");
    String::from_utf8(out.stderr).unwrap()
}

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

fn chmod(p: &Path, m: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(m)).unwrap();
}

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

/// A scratch directory of this test under the temp dir, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(lab: &Lab, what: &str) -> Scratch {
        let p = std::env::temp_dir().join(format!("{}-{what}", lab.id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir(&p).unwrap();
        Scratch(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The container id in `container inspect`'s JSON.
fn container_id(inspect: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(inspect).unwrap();
    let id = v[0]["Id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 64, "{inspect}");
    id
}

/// The links in a container's namespace, sorted.
fn links_in(container: &str) -> Vec<String> {
    let ns = NetNs::from_path(format!("/run/netns/{container}"));
    let mut v: Vec<String> = netlink::run(Some(&ns), |nl| async move { nl.links().await })
        .unwrap()
        .into_iter()
        .map(|l| l.name)
        .collect();
    v.sort();
    v
}

#[test]
fn state_is_private_whatever_the_umask() {
    require_root();
    let lab = Lab::new().unwrap();
    let s = Session::new(&lab);
    let dir = s.state_dir.clone();
    let c = s.name("private");
    let run = |args: &[&str]| {
        let out = mvnet(lab.host(), &dir, Some(0o000), args);
        assert!(out.status.success(), "mvnet {args:?}: {out:?}");
        // A fresh directory is not "fixed": nothing to report.
        assert_eq!(String::from_utf8_lossy(&out.stderr), "", "{args:?}");
    };
    run(&[
        "network",
        "create",
        "--subnet=10.97.0.0/24",
        "-o",
        "parent=eth0",
        "sd",
    ]);
    run(&[
        "run",
        "-d",
        "--network",
        "sd",
        "--name",
        &c,
        "--",
        "sleep",
        "30",
    ]);
    let log = format!(
        "{}.log",
        container_id(&ok(lab.host(), &dir, &["container", "inspect", &c]))
    );
    let mut expected = [
        "lock".to_owned(),
        "state.journal".into(),
        "state.json".into(),
        log.clone(),
    ];
    expected.sort();
    assert_eq!(names(&dir), expected);
    assert_eq!(mode(&dir), 0o700);
    for f in ["lock", "state.journal", "state.json", &log] {
        assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
    }
}

#[test]
fn a_loose_state_dir_is_tightened_on_the_next_write_and_the_fix_reported() {
    require_root();
    let lab = Lab::new().unwrap();
    let s = Session::new(&lab);
    let dir = s.state_dir.clone();
    s.network("sd1", "10.97.1.0/24", "eth0", &[]);
    // As an older mvnet (or umask 022) left it.
    chmod(&dir, 0o755);
    chmod(&dir.join("state.json"), 0o644);
    let out = mvnet(
        lab.host(),
        &dir,
        None,
        &[
            "network",
            "create",
            "--subnet=10.97.2.0/24",
            "-o",
            "parent=eth0",
            "sd2",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let d = dir.display();
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "mvnet: state directory {d} was mode 0755, open to other users; set it to 0700\n\
             mvnet: {d}/state.json was mode 0644, open to other users; set it to 0600\n"
        )
    );
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("state.json")), 0o600);
    let ls = s.ok(&["network", "ls"]);
    assert!(ls.contains(" sd1 ") && ls.contains(" sd2 "), "{ls}");
    // Reported once.
    assert_eq!(
        String::from_utf8_lossy(&mvnet(lab.host(), &dir, None, &["network", "ls"]).stderr),
        ""
    );
}

#[test]
fn a_symlinked_foreign_or_shared_state_dir_is_refused_and_left_alone() {
    require_root();
    let lab = Lab::new().unwrap();
    let scratch = Scratch::new(&lab, "refused");
    let real = scratch.0.join("real");
    fs::create_dir(&real).unwrap();
    chmod(&real, 0o700);
    let link = scratch.0.join("link");
    symlink(&real, &link).unwrap();
    let create = [
        "network",
        "create",
        "--subnet=10.97.3.0/24",
        "-o",
        "parent=eth0",
        "x",
    ];
    let l = link.display();
    for args in [&["network", "ls"][..], &create] {
        assert_eq!(
            fails(lab.host(), &link, args),
            format!("mvnet: error: state directory {l} is a symbolic link; mvnet refuses it so that nobody can redirect its files: point --state-dir (or MVNET_STATE_DIR) at the real directory (`readlink -f {l}`)\n")
        );
    }
    assert!(names(&real).is_empty());

    let r = real.display();
    std::os::unix::fs::chown(&real, Some(NOBODY), Some(NOBODY)).unwrap();
    assert_eq!(
        fails(lab.host(), &real, &create),
        format!("mvnet: error: state directory {r} is owned by uid {NOBODY}, not by uid 0 which runs mvnet, so that user could change its files; if you trust its content, `chown -R 0 {r}`, else give another --state-dir\n")
    );
    assert_eq!(fs::metadata(&real).unwrap().uid(), NOBODY);
    std::os::unix::fs::chown(&real, Some(0), Some(0)).unwrap();

    for (m, who) in [
        (0o775, "its group"),
        (0o757, "other users"),
        (0o1777, "its group and other users"),
    ] {
        chmod(&real, m);
        assert_eq!(
            fails(lab.host(), &real, &create),
            format!("mvnet: error: state directory {r} is writable by {who} (mode {m:04o}), who could plant or replace files in it; check its content, then `chmod 700 {r}`\n")
        );
        assert_eq!(mode(&real), m);
    }
    assert!(names(&real).is_empty(), "nothing was written");
    // The refused network was never made.
    let s = Session::new(&lab);
    assert!(
        !s.links().iter().any(|l| l.starts_with("mv")),
        "{:?}",
        s.links()
    );
}

#[test]
fn a_planted_temp_file_symlink_is_never_followed() {
    require_root();
    let lab = Lab::new().unwrap();
    let s = Session::new(&lab);
    let dir = s.state_dir.clone();
    let scratch = Scratch::new(&lab, "victim");
    let victim = scratch.0.join("root-owned-file");
    fs::write(&victim, "precious\n").unwrap();
    let tmp = dir.join("state.json.tmp");
    let c = s.name("planted");
    let commands: [&[&str]; 3] = [
        &[
            "network",
            "create",
            "--subnet=10.97.4.0/24",
            "-o",
            "parent=eth0",
            "sd",
        ],
        &["run", "-d", "--network", "sd", "--name", &c],
        &["restore"],
    ];
    for args in commands {
        if dir.exists() {
            symlink(&victim, &tmp).unwrap();
        } else {
            // The first command makes the directory: plant in a fresh one.
            fs::create_dir(&dir).unwrap();
            chmod(&dir, 0o700);
            symlink(&victim, &tmp).unwrap();
        }
        ok(lab.host(), &dir, args);
        assert_eq!(
            fs::read_to_string(&victim).unwrap(),
            "precious\n",
            "{args:?}"
        );
        assert!(
            !tmp.exists() && fs::symlink_metadata(&tmp).is_err(),
            "{args:?}"
        );
    }
    let state = s.state();
    assert!(state.contains("\"sd\"") && state.contains(&c), "{state}");
}

#[test]
fn special_or_oversized_state_files_are_refused_promptly() {
    require_root();
    let lab = Lab::new().unwrap();
    let scratch = Scratch::new(&lab, "special");
    let dir = scratch.0.join("state");
    fs::create_dir(&dir).unwrap();
    chmod(&dir, 0o700);
    let state = dir.join("state.json");
    let st = state.display();
    let refusal = |what: &str| {
        format!("mvnet: error: {st} is {what}, not a regular file; mvnet refuses to use it: move it away (`mv {st} {st}.bad`) and retry\n")
    };

    // A FIFO used to block every command forever (under the lock).
    let fifo = Command::new("mkfifo").arg(&state).status().unwrap();
    assert!(fifo.success());
    let start = Instant::now();
    for args in [&["network", "ls"][..], &["restore"], &["stats"]] {
        assert_eq!(
            fails(lab.host(), &dir, args),
            refusal("a FIFO (named pipe)"),
            "{args:?}"
        );
    }
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    fs::remove_file(&state).unwrap();

    // /dev/zero, by a link or as a device node of its own.
    symlink("/dev/zero", &state).unwrap();
    assert_eq!(
        fails(lab.host(), &dir, &["network", "ls"]),
        refusal("a symbolic link")
    );
    fs::remove_file(&state).unwrap();
    let mknod = Command::new("mknod")
        .arg(&state)
        .args(["c", "1", "5"])
        .status()
        .unwrap();
    assert!(mknod.success());
    assert_eq!(
        fails(lab.host(), &dir, &["network", "ls"]),
        refusal("a character device")
    );
    fs::remove_file(&state).unwrap();

    // A (sparse) file over the 64 MiB cap is refused without reading it.
    fs::File::create(&state)
        .unwrap()
        .set_len((64 << 20) + 1)
        .unwrap();
    chmod(&state, 0o600);
    assert_eq!(
        fails(lab.host(), &dir, &["network", "ls"]),
        format!("mvnet: error: {st} is larger than 67108864 bytes, too large for an mvnet state file; move it away (`mv {st} {st}.bad`) and retry\n")
    );
    assert_eq!(fs::metadata(&state).unwrap().len(), (64 << 20) + 1);
}

/// A small tmpfs mounted for one test; unmounted on drop.
struct SmallFs(Scratch);

impl SmallFs {
    fn new(lab: &Lab) -> SmallFs {
        let s = Scratch::new(lab, "smallfs");
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k,mode=0700", "mvnet-test"])
            .arg(&s.0)
            .status()
            .unwrap();
        assert!(st.success(), "mount -t tmpfs failed");
        SmallFs(s)
    }

    /// Fills the filesystem: writes until ENOSPC (at most its 64 KiB).
    fn fill(&self) -> PathBuf {
        use std::io::Write as _;
        let path = self.0 .0.join("filler");
        let mut f = fs::File::create(&path).unwrap();
        let block = [0u8; 4096];
        for _ in 0..64 {
            if let Err(e) = f.write_all(&block) {
                assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
                return path;
            }
        }
        panic!("a 64 KiB tmpfs took 256 KiB");
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0 .0).status();
    }
}

#[test]
fn a_full_disk_fails_run_and_stop_cleanly_and_changes_nothing() {
    require_root();
    let mut lab = Lab::new().unwrap();
    let s = Session::new(&lab);
    let small = SmallFs::new(&lab);
    let dir = small.0 .0.join("state");
    let host = &lab.host().clone();
    ok(
        host,
        &dir,
        &[
            "network",
            "create",
            "--subnet=10.97.5.0/24",
            "-o",
            "parent=eth0",
            "sd",
        ],
    );
    let a = s.name("full-a");
    let b = s.name("full-b");
    ok(
        host,
        &dir,
        &[
            "run",
            "-d",
            "--network",
            "sd",
            "--name",
            &a,
            "--",
            "sleep",
            "60",
        ],
    );
    let filler = small.fill();
    let saved = || {
        (
            fs::read(dir.join("state.json")).unwrap(),
            fs::read(dir.join("state.journal")).unwrap(),
        )
    };
    let before = saved();
    let files = names(&dir);
    // A save appends to the journal, which may still fit in the page the
    // file has; the sync of it is where a full disk (or a thin volume, or
    // NFS) says so: injected there, on the first save.
    let fails = |host: &NetNs, dir: &Path, args: &[&str]| {
        let out = mvnet_enospc_at(host, dir, "fdatasync", 1, args);
        let code = if args[0] == "run" { 125 } else { 1 };
        assert_eq!(out.status.code(), Some(code), "mvnet {args:?}: {out:?}");
        String::from_utf8(out.stderr).unwrap()
    };
    let enospc = format!(
        "syncing {}/state.journal: No space left on device (os error 28); free space on that filesystem and retry\n",
        dir.display()
    );
    // Every writer saves its intent before it touches the kernel: on a
    // full disk that first save fails, and nothing was changed.
    let nothing = format!("mvnet: error: {}; nothing was changed\n", enospc.trim_end());

    // run: the error, and no namespace, link, temp file or log left.
    let e = fails(
        host,
        &dir,
        &[
            "run",
            "-d",
            "--network",
            "sd",
            "--name",
            &b,
            "--",
            "sleep",
            "60",
        ],
    );
    assert_eq!(e, nothing);
    assert!(!mvnet::netns::list().contains(&b));
    assert_eq!(names(&dir), files);
    assert_eq!(saved(), before);

    // network create: undone, the state as it was.
    let e = fails(
        host,
        &dir,
        &[
            "network",
            "create",
            "--subnet=10.97.8.0/24",
            "-o",
            "parent=eth0",
            "sd2",
        ],
    );
    assert_eq!(e, nothing);
    assert_eq!(names(&dir), files);
    assert_eq!(saved(), before);

    // connect: the endpoint is taken out again.
    let ext = lab.add_container("full-ext").unwrap();
    let ext_path = ext.path().display().to_string();
    let e = fails(
        host,
        &dir,
        &["network", "connect", "--netns", &ext_path, "sd", &b],
    );
    assert_eq!(e, nothing);
    let ext_links = netlink::run(Some(&ext), |nl| async move { nl.links().await }).unwrap();
    assert_eq!(
        ext_links
            .iter()
            .map(|l| l.name.as_str())
            .collect::<Vec<_>>(),
        ["lo"]
    );
    assert_eq!(names(&dir), files);
    assert_eq!(saved(), before);

    // stop, rm and disconnect: refused before they touch the kernel.
    for args in [
        &["container", "stop", &a][..],
        &["container", "rm", "-f", &a],
        &["network", "disconnect", "sd", &a],
    ] {
        assert_eq!(fails(host, &dir, args), nothing, "{args:?}");
        assert!(mvnet::netns::list().contains(&a), "{args:?}");
        assert_eq!(links_in(&a), ["eth0", "lo"], "{args:?}");
        assert_eq!(names(&dir), files, "{args:?}");
        assert_eq!(saved(), before, "{args:?}");
    }
    let ps = ok(host, &dir, &["container", "ls"]);
    assert!(ps.contains(&a), "{ps}");

    // With space again, the same stop works and the address is free.
    fs::remove_file(filler).unwrap();
    ok(host, &dir, &["container", "stop", &a]);
    assert!(!mvnet::netns::list().contains(&a));
    ok(
        host,
        &dir,
        &[
            "run",
            "-d",
            "--network",
            "sd",
            "--name",
            &b,
            "--ip",
            "10.97.5.2",
        ],
    );
    ok(host, &dir, &["container", "rm", "-f", &b]);
    ok(host, &dir, &["container", "rm", &a]);
    assert_eq!(names(&dir), ["lock", "state.journal", "state.json"]);
}

#[test]
fn removed_containers_leave_no_log_behind() {
    require_root();
    let lab = Lab::new().unwrap();
    let s = Session::new(&lab);
    let dir = s.state_dir.clone();
    s.network("sd", "10.97.6.0/24", "eth0", &[]);
    let only_state = [
        "lock".to_owned(),
        "state.journal".into(),
        "state.json".into(),
    ];

    // Foreground --rm: removed when the command exits.
    let c = s.name("fg");
    s.ok(&["run", "--rm", "--network", "sd", "--name", &c, "--", "true"]);
    assert_eq!(names(&dir), only_state);
    assert!(!s.state().contains(&c));

    // Detached --rm with output: its log goes with `container stop`.
    let c = s.name("rm-d");
    s.ok(&[
        "run",
        "--rm",
        "-d",
        "--network",
        "sd",
        "--name",
        &c,
        "--",
        "sh",
        "-c",
        // One process: `stop` ends the recorded pid only (issue 12).
        "echo hello; exec sleep 30",
    ]);
    let id = container_id(&s.ok(&["container", "inspect", &c]));
    let log = dir.join(format!("{id}.log"));
    let start = Instant::now();
    while fs::read_to_string(&log).unwrap() != "hello\n" {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no output in {}",
            log.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    s.ok(&["container", "stop", &c]);
    assert_eq!(names(&dir), only_state);

    // Without --rm: the log stays until `container rm`.
    let c = s.name("kept");
    s.ok(&[
        "run",
        "-d",
        "--network",
        "sd",
        "--name",
        &c,
        "--",
        "sleep",
        "30",
    ]);
    s.ok(&["container", "stop", &c]);
    assert_eq!(names(&dir).len(), 4, "{:?}", names(&dir));
    s.ok(&["container", "rm", &c]);
    assert_eq!(names(&dir), only_state);
}

/// `mvnet --state-dir DIR ARGS` in `ns` under strace, failing its `n`-th
/// call of `syscall` with ENOSPC (the main thread's; the state is saved
/// there): `fdatasync` is the sync of a record appended to the state's
/// journal (a save; nothing else calls it), the deterministic "disk full
/// at the n-th save".
fn mvnet_enospc_at(ns: &NetNs, dir: &Path, syscall: &str, n: u32, args: &[&str]) -> Output {
    let (bin, dir) = (mvnet_bin(), dir.to_owned());
    let argv: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let (trace, inject) = (
        format!("trace={syscall}"),
        format!("inject={syscall}:error=ENOSPC:when={n}"),
    );
    ns.run(move || {
        Command::new("strace")
            .args(["-qq", "-o", "/dev/null", "-e", &trace])
            .arg("-e")
            .arg(inject)
            .arg(bin)
            .arg("--state-dir")
            .arg(dir)
            .args(&argv)
            .stdin(Stdio::null())
            .output()
            .expect("strace not found; install it (`apt-get install strace`)")
    })
    .unwrap()
}

#[test]
fn a_teardown_whose_last_save_fails_stays_recorded_and_is_finished() {
    require_root();
    let lab = Lab::new().unwrap();
    let s = Session::new(&lab);
    let dir = s.state_dir.clone();
    let host = lab.host();
    s.network("sd", "10.97.7.0/24", "eth0", &[]);
    let enospc = format!(
        "syncing {}/state.journal: No space left on device (os error 28); free space on that filesystem and retry\n",
        dir.display()
    );
    let done_in_kernel = |what: &str| {
        format!("mvnet: error: the {what} is done in the kernel, but saving the state failed, so the state still records it as under way; once that is fixed, the next mvnet command that changes state, or `mvnet restore`, finishes it: {enospc}")
    };
    let pending = || -> serde_json::Value {
        let state: serde_json::Value = serde_json::from_str(&s.state()).unwrap();
        state["pending"].clone()
    };

    // stop: the first save (the intent) works, the last one fails.
    let a = s.name("intent-a");
    let id = s.container("sd", &a, &[]).trim().to_owned();
    let out = mvnet_enospc_at(host, &dir, "fdatasync", 2, &["container", "stop", &a]);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        done_in_kernel(&format!("stop of container {a}"))
    );
    assert!(
        !mvnet::netns::list().contains(&a),
        "the kernel side is done"
    );
    assert_eq!(
        pending(),
        serde_json::json!([{ "op": "stop", "container_id": id.clone() }])
    );
    assert!(!dir.join("state.json.tmp").exists());
    let restored = s.ok(&["restore"]);
    assert!(
        restored
            .lines()
            .any(|l| l == format!("finished the interrupted stop of container {a}")),
        "{restored}"
    );
    assert_eq!(pending(), serde_json::Value::Null);
    // The address went back to the pool: a new container gets it.
    let b = s.name("intent-b");
    s.container("sd", &b, &["--ip", "10.97.7.2"]);

    // rm: recorded as a removal; the next writer finishes it.
    let out = mvnet_enospc_at(host, &dir, "fdatasync", 2, &["container", "rm", "-f", &b]);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        done_in_kernel(&format!("removal of container {b}"))
    );
    assert!(!mvnet::netns::list().contains(&b));
    assert!(s.state().contains(&b), "still recorded: {}", s.state());
    let c = s.name("intent-c");
    let cid = s.container("sd", &c, &[]).trim().to_owned();
    assert!(!s.state().contains(&b), "finished by the next writer");
    assert_eq!(pending(), serde_json::Value::Null);

    // disconnect: recorded; the next writer finishes it.
    let out = mvnet_enospc_at(
        host,
        &dir,
        "fdatasync",
        2,
        &["network", "disconnect", "sd", &c],
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).starts_with(&format!(
            "mvnet: error: the disconnect of container {c} from network sd is done in the kernel"
        )),
        "{out:?}"
    );
    assert!(
        !links_in(&c).contains(&"eth0".to_owned()),
        "{:?}",
        links_in(&c)
    );
    let net = s.ok(&["network", "inspect", "sd"]);
    let net: serde_json::Value = serde_json::from_str(&net).unwrap();
    assert_eq!(
        pending(),
        serde_json::json!([{ "op": "disconnect", "container_id": cid, "network_id": net[0]["Id"] }])
    );
    let check = s.run(&["restore", "--check"]);
    assert_eq!(check.status.code(), Some(1), "{check:?}");
    assert_eq!(
        String::from_utf8_lossy(&check.stdout).lines().next(),
        Some(
            format!("would finish the interrupted disconnect of container {c} from network sd")
                .as_str()
        )
    );
    s.ok(&["restore"]);
    assert_eq!(pending(), serde_json::Value::Null);
    s.ok(&["container", "rm", "-f", &c]);
    s.ok(&["network", "rm", "sd"]);
}
