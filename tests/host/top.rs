//! `mvnet top` as a user sees it: in a pseudo-terminal of 80×24 (tmux),
//! with keys, and on a dumb terminal or a pipe as plain text.
use std::{
    path::PathBuf,
    process::{Command, Output},
    time::{Duration, Instant},
};

use mvnet::{datapath::pinned::PinnedMaps, model::Mac};
use mvnet_lab::lab::{frames::FrameSpec, Lab, UPSTREAM_IF};

use crate::{
    common::{
        cli::{mvnet_bin, Session},
        require_root,
    },
    datapath_cp::{mac_of, pin_dir, send},
};

/// A private tmux server (its own socket) whose panes run in the lab's host
/// namespace; killed on drop.
struct Tmux {
    socket: PathBuf,
}

impl Tmux {
    /// Starts the server with a detached 80×24 session `name` running
    /// `argv`, in `s`'s namespace. Panes stay after their process exits, so
    /// the screen it leaves behind can be read.
    fn start(s: &Session, name: &str, argv: &[String]) -> Tmux {
        let out = Command::new("tmux").arg("-V").output();
        assert!(
            out.is_ok_and(|o| o.status.success()),
            "tmux not found; `cargo xtask test` installs it (apt-get install tmux)"
        );
        let tmux = Tmux {
            socket: PathBuf::from(format!("{}-tmux", s.state_dir.display())),
        };
        tmux.session(s, name, argv);
        tmux
    }

    /// Another session on the same server.
    fn session(&self, s: &Session, name: &str, argv: &[String]) {
        let socket = self.socket.clone();
        let argv = argv.to_vec();
        let name = name.to_owned();
        // The server forks from this client, in the namespace it runs in.
        let out =
            s.ns.run(move || {
                Command::new("tmux")
                    .arg("-S")
                    .arg(&socket)
                    .args(["-f", "/dev/null", "new-session", "-d", "-s", &name])
                    .args(["-x", "80", "-y", "24", "--"])
                    .args(&argv)
                    .arg(";")
                    .args(["set-option", "-t", &name, "remain-on-exit", "on"])
                    .output()
                    .unwrap()
            })
            .unwrap();
        check(&out, "tmux new-session");
    }

    fn tmux(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap();
        check(&out, &format!("tmux {args:?}"));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The visible screen of `target`, as text (`escapes`: with its colour
    /// and attribute escape sequences).
    fn screen(&self, target: &str, escapes: bool) -> String {
        let mut args = vec!["capture-pane", "-p", "-t", target];
        if escapes {
            args.push("-e");
        }
        self.tmux(&args)
    }

    /// A pane variable of `target`, e.g. `pane_dead`.
    fn var(&self, target: &str, name: &str) -> String {
        self.tmux(&[
            "display-message",
            "-p",
            "-t",
            target,
            &format!("#{{{name}}}"),
        ])
        .trim()
        .to_owned()
    }

    fn keys(&self, target: &str, keys: &str) {
        self.tmux(&["send-keys", "-t", target, keys]);
    }

    /// Waits (at most 30 s: a loaded machine redraws late) until `target`'s screen satisfies `ok`.
    fn wait_for(&self, target: &str, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let screen = self.screen(target, false);
            if ok(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; the screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .arg("kill-server")
            .output();
        let _ = std::fs::remove_file(&self.socket);
    }
}

fn check(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Whether `line` turns (red, bold) anywhere: reads the parameters of its
/// SGR escapes (`ESC [ p;p;... m`), skipping extended colour arguments.
fn highlight(line: &str) -> (bool, bool) {
    let (mut red, mut bold) = (false, false);
    for seq in line.split('\x1b').skip(1) {
        let Some((params, _)) = seq.strip_prefix('[').and_then(|e| e.split_once('m')) else {
            continue;
        };
        let p: Vec<&str> = params.split(';').collect();
        let mut i = 0;
        while i < p.len() {
            match (p[i], p.get(i + 1)) {
                // 38;5;N (palette) or 38;2;R;G;B; 48 likewise for backgrounds.
                ("38" | "48", Some(&"5")) => {
                    red |= p[i] == "38" && matches!(p.get(i + 2), Some(&"1") | Some(&"9"));
                    i += 3;
                }
                ("38" | "48", Some(&"2")) => i += 5,
                ("31" | "91", _) => {
                    red = true;
                    i += 1;
                }
                ("1", _) => {
                    bold = true;
                    i += 1;
                }
                _ => i += 1,
            }
        }
    }
    (red, bold)
}

/// The order in which `names` appear as rows of `screen`.
fn row_order<'a>(screen: &str, names: &'a [String]) -> Vec<&'a str> {
    screen
        .lines()
        .filter_map(|l| names.iter().find(|n| l.contains(n.as_str())))
        .map(String::as_str)
        .collect()
}

/// `argv` in a shell that then reports its exit status and the terminal's
/// modes, ended by a line `modes-end`, and stays.
fn wrapped(argv: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = [
        "sh",
        "-c",
        "\"$@\"; echo exit=$?; stty -a; echo modes-end; sleep 60",
        "sh",
    ]
    .map(String::from)
    .into();
    out.extend(argv);
    out
}

/// Waits until `mvnet top` in `target` (started [`wrapped`]) exits after
/// `how`, and checks it exited 0 and gave the terminal back: main screen,
/// cursor shown, cooked mode.
fn assert_restored(tmux: &Tmux, target: &str, how: &str) {
    // Until the end marker: `stty -a` writes its lines one by one, and a
    // screen caught between them lacks the modes checked below.
    let screen = tmux.wait_for(target, &format!("mvnet top to exit on {how}"), |s| {
        s.contains("exit=") && s.contains("modes-end")
    });
    assert!(screen.contains("exit=0"), "{how}: {screen}");
    assert!(
        !screen.contains("endpoints"),
        "{how}: the view was left on the screen:\n{screen}"
    );
    assert_eq!(tmux.var(target, "alternate_on"), "0", "{how}");
    assert_eq!(tmux.var(target, "cursor_flag"), "1", "{how}");
    let modes: Vec<&str> = screen.split_whitespace().collect();
    for mode in ["icanon", "echo", "isig", "opost"] {
        assert!(
            modes.contains(&mode),
            "{how}: {mode} not restored: {screen}"
        );
    }
}

/// The lab of datapath_cp: a1, a2 on `na`, b1 on `nb`, all on eth0; 101,
/// 37 and 59 frames from the wire to them and 23 to an unknown MAC.
struct Scene {
    lab: Lab,
    s: Session,
    names: Vec<String>,
    macs: Vec<[u8; 6]>,
}

impl Scene {
    fn new() -> Scene {
        let lab = Lab::new().unwrap();
        let s = Session::new(&lab);
        for (net, subnet) in [("na", "10.81.0.0/24"), ("nb", "10.82.0.0/24")] {
            // The rows assert XDP's column (auto: TC alone on the veth).
            s.network(net, subnet, "eth0", &crate::datapath_cp::XDP_NATIVE);
        }
        let names: Vec<String> = ["a1", "a2", "b1"].iter().map(|n| s.name(n)).collect();
        let nets = ["na", "na", "nb"];
        for (name, net) in names.iter().zip(nets) {
            s.container(net, name, &[]);
        }
        let macs: Vec<[u8; 6]> = names
            .iter()
            .zip(nets)
            .map(|(name, net)| mac_of(&s, name, net))
            .collect();
        let maps = PinnedMaps::open(&pin_dir(&lab)).unwrap();
        let src = lab.mac_of(lab.upstream(), UPSTREAM_IF).unwrap();
        let unknown = [0x02, 0x42, 0x0a, 0x51, 0x00, 0x63];
        for (mac, n) in [(macs[0], 101), (macs[1], 37), (macs[2], 59), (unknown, 23)] {
            send(
                &maps,
                lab.upstream(),
                UPSTREAM_IF,
                crate::datapath_cp::wire_hook(&pin_dir(&lab)),
                FrameSpec::udp4(mac, src).build().unwrap(),
                n,
            );
        }
        Scene {
            lab,
            s,
            names,
            macs,
        }
    }

    /// `mvnet --state-dir DIR top ARGS`, as argv.
    fn top(&self, args: &[&str]) -> Vec<String> {
        let mut argv = vec![
            mvnet_bin().display().to_string(),
            "--state-dir".into(),
            self.s.state_dir.display().to_string(),
            "top".into(),
        ];
        argv.extend(args.iter().map(|a| a.to_string()));
        argv
    }

    fn remove(self) {
        for n in &self.names {
            self.s.ok(&["container", "stop", n]);
            self.s.ok(&["container", "rm", n]);
        }
        self.s.ok(&["network", "rm", "na", "nb"]);
        drop(self.lab);
    }
}

#[test]
fn top_in_a_terminal_shows_sorts_and_quits_cleanly() {
    require_root();
    let scene = Scene::new();
    let names = &scene.names;
    let tmux = Tmux::start(&scene.s, "top", &wrapped(scene.top(&["--interval", "0.3"])));

    // Every endpoint's row, with its container and MAC, grouped by network.
    let screen = tmux.wait_for("top", "the endpoint rows", |screen| {
        row_order(screen, names).len() == 3 && screen.contains("VERDICT")
    });
    assert_eq!(row_order(&screen, names), [&names[0], &names[1], &names[2]]);
    for (name, mac) in names.iter().zip(&scene.macs) {
        let row = screen.lines().find(|l| l.contains(name.as_str())).unwrap();
        assert!(row.contains(&Mac::new(*mac).to_string()), "{row}");
    }
    assert_eq!(tmux.var("top", "alternate_on"), "1");
    let lines: Vec<&str> = screen.lines().collect();
    assert_eq!(lines.len(), 24, "{screen}");
    assert!(lines.iter().all(|l| l.chars().count() <= 80), "{screen}");
    // 23 frames to an unknown MAC: that verdict is highlighted.
    assert!(screen.contains("INVALID TRAFFIC"), "{screen}");
    let coloured = tmux.screen("top", true);
    let unknown = coloured
        .lines()
        .find(|l| l.contains("unknown_mac"))
        .unwrap();
    let delivered = coloured.lines().find(|l| l.contains("delivered")).unwrap();
    let (red, bold) = highlight(unknown);
    assert!(red && bold, "unknown_mac is not red and bold: {unknown:?}");
    assert_eq!(
        highlight(delivered),
        (false, false),
        "delivered is highlighted: {delivered:?}"
    );

    // s: by rx/s, busiest first (all idle now, so by frames received).
    tmux.keys("top", "s");
    let screen = tmux.wait_for("top", "sorting by rx/s", |s| s.contains("rx/s ▼"));
    assert_eq!(row_order(&screen, names), [&names[0], &names[2], &names[1]]);
    // r: reversed.
    tmux.keys("top", "r");
    let screen = tmux.wait_for("top", "the reverse order", |s| s.contains("rx/s ▲"));
    assert_eq!(row_order(&screen, names), [&names[1], &names[2], &names[0]]);
    // n: one network only.
    tmux.keys("top", "n");
    let screen = tmux.wait_for("top", "the network filter", |s| s.contains("· na "));
    assert_eq!(row_order(&screen, names), [&names[1], &names[0]]);

    // q: exits 0 and gives the terminal back.
    tmux.keys("top", "q");
    assert_restored(&tmux, "top", "q");
    // So do Ctrl-C and SIGTERM.
    tmux.session(&scene.s, "ctrl-c", &wrapped(scene.top(&[])));
    tmux.wait_for("ctrl-c", "the view", |s| s.contains("VERDICT"));
    tmux.keys("ctrl-c", "C-c");
    assert_restored(&tmux, "ctrl-c", "Ctrl-C");
    tmux.session(&scene.s, "term", &wrapped(scene.top(&[])));
    tmux.wait_for("term", "the view", |s| s.contains("VERDICT"));
    let sh = tmux.var("term", "pane_pid");
    let children = std::fs::read_to_string(format!("/proc/{sh}/task/{sh}/children")).unwrap();
    let top: i32 = children.trim().parse().expect("one child: mvnet top");
    // SAFETY: plain syscall on a process this test started.
    assert_eq!(unsafe { libc::kill(top, libc::SIGTERM) }, 0);
    assert_restored(&tmux, "term", "SIGTERM");

    // TERM=dumb in the same terminal: plain rows, no escape codes.
    let mut argv: Vec<String> = ["env", "TERM=dumb", "sh", "-c", "\"$@\"; echo exit=$?", "sh"]
        .map(String::from)
        .into();
    argv.extend(scene.top(&["--count", "1"]));
    tmux.session(&scene.s, "dumb", &argv);
    let screen = tmux.wait_for("dumb", "mvnet top --count 1 to exit", |s| {
        s.contains("exit=")
    });
    assert!(screen.contains("exit=0"), "{screen}");
    assert_eq!(tmux.var("dumb", "alternate_on"), "0");
    let raw = tmux.screen("dumb", true);
    assert!(
        !raw.contains('\x1b'),
        "escape codes on a dumb terminal: {raw:?}"
    );
    for (name, mac) in names.iter().zip(&scene.macs) {
        let row = raw.lines().find(|l| l.contains(name.as_str()));
        assert!(
            row.is_some_and(|r| r.contains(&Mac::new(*mac).to_string())),
            "no row with {name} and its MAC:\n{raw}"
        );
    }
    drop(tmux);
    scene.remove();
}

#[test]
fn top_into_a_pipe_prints_plain_rows() {
    require_root();
    let scene = Scene::new();
    let out = scene.s.ok(&["top", "--interval", "0.2", "--count", "2"]);
    assert!(!out.contains('\x1b'), "escape codes in a pipe: {out:?}");
    // Two blocks; the second has rates (idle now: 0).
    let blocks: Vec<&str> = out.split("mvnet top ").filter(|b| !b.is_empty()).collect();
    assert_eq!(blocks.len(), 2, "{out}");
    let last = blocks[1];
    let row = |name: &str| -> Vec<String> {
        last.lines()
            .find(|l| l.split_whitespace().nth(1) == Some(name))
            .unwrap_or_else(|| panic!("no row for {name} in {last}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    // NETWORK CONTAINER MAC VLAN RX/S LOC/S TX/S INV/S RX LOCAL TX INVALID
    for (i, (net, rx)) in [("na", "101"), ("na", "37"), ("nb", "59")]
        .iter()
        .enumerate()
    {
        let r = row(&scene.names[i]);
        let mac = Mac::new(scene.macs[i]).to_string();
        assert_eq!(
            r,
            [
                *net,
                scene.names[i].as_str(),
                mac.as_str(),
                "0",
                "0",
                "0",
                "0",
                "0",
                rx,
                "0",
                "0",
                "0"
            ],
            "{last}"
        );
    }
    // Counted once, at XDP: TC ingress counts only what XDP did not see.
    let unknown = last.lines().find(|l| l.starts_with("unknown_mac")).unwrap();
    assert_eq!(
        unknown.split_whitespace().collect::<Vec<_>>(),
        ["unknown_mac", "0", "23", "0", "0", "0", "0", "INVALID"],
        "{last}"
    );
    // One network only; an unknown one is a clear error.
    let out = scene.s.ok(&["top", "nb", "--count", "1"]);
    assert!(out.contains(scene.names[2].as_str()), "{out}");
    assert!(
        !out.contains(scene.names[0].as_str()) && !out.contains(scene.names[1].as_str()),
        "{out}"
    );
    let err = scene.s.fails(&["top", "nope", "--count", "1"]);
    assert!(
        err.contains("network nope not found; list them with `mvnet network ls`"),
        "{err}"
    );
    scene.remove();
}

/// `mvnet top` whose terminal disappears (the tmux server killed outright,
/// as a dropped SSH session) exits instead of running on without a screen.
#[test]
fn top_exits_when_its_terminal_goes_away() {
    require_root();
    let scene = Scene::new();
    let tmux = Tmux::start(&scene.s, "gone", &scene.top(&["--interval", "0.2"]));
    tmux.wait_for("gone", "the endpoint rows", |screen| {
        row_order(screen, &scene.names).len() == 3
    });
    let top: i32 = tmux.var("gone", "pane_pid").parse().unwrap();
    let server: i32 = tmux.var("gone", "pid").parse().unwrap();
    // SAFETY: plain kill(2) of the tmux server this test started.
    assert_eq!(unsafe { libc::kill(server, libc::SIGKILL) }, 0);
    let deadline = Instant::now() + Duration::from_secs(5);
    let proc = PathBuf::from(format!("/proc/{top}"));
    while proc.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let state = std::fs::read_to_string(proc.join("stat")).unwrap_or_default();
    assert!(
        !proc.exists() || state.split_whitespace().nth(2) == Some("Z"),
        "mvnet top (pid {top}) still runs 5 s after its terminal went away: {state}"
    );
    drop(tmux);
    scene.remove();
}
