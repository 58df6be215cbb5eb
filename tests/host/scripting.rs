//! Docker's scripting interface on the real binary: `--format` (fields,
//! `range`, `json`, `table`), `--filter` (and its error), `-q`,
//! `--no-trunc`, labels, prune (forced, and answered "n"), the top-level
//! aliases, start/restart/logs, a stopped container's inspect, the image
//! argument, completions and the man page.
use std::{
    io::Write as _,
    process::{Command, Output, Stdio},
};

use mvnet_lab::lab::{Lab, PARENT};

use crate::common::{
    cli::{mvnet_bin, Session},
    require_root,
};

/// `mvnet ARGS` with `input` on standard input.
fn with_stdin(s: &Session, args: &[&str], input: &str) -> Output {
    let (bin, state) = (mvnet_bin(), s.state_dir.clone());
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let input = input.to_owned();
    s.ns.run(move || {
        let mut child = Command::new(bin)
            .arg("--state-dir")
            .arg(state)
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    })
    .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

const LONG: &str = "a-wide-lan-name-longer-than-thirty-characters";

#[test]
fn network_ls_formats_filters_quiet_no_trunc_and_prune() {
    require_root();
    let lab = Lab::new().unwrap();
    let s = Session::new(&lab);
    let id10 = s.network("net10", "10.71.10.0/24", PARENT, &["--label", "env=prod"]);
    let id2 = s.network("net2", "10.71.2.0/24", PARENT, &["--label", "env=dev"]);
    let idl = s.network(LONG, "10.71.3.0/24", PARENT, &["--label", "team"]);
    let (id10, id2, idl) = (id10.trim(), id2.trim(), idl.trim());
    s.container("net2", &s.name("c"), &[]);

    // Sorted by name (naturally: net2 before net10), columns fit the long name.
    let w = LONG.len() + 3;
    assert_eq!(
        s.ok(&["network", "ls"]),
        format!(
            "NETWORK ID     {:<w$}DRIVER    SCOPE\n\
             {}   {LONG}   macvlan   local\n\
             {}   {:<w$}macvlan   local\n\
             {}   {:<w$}macvlan   local\n",
            "NAME",
            &idl[..12],
            &id2[..12],
            "net2",
            &id10[..12],
            "net10",
        )
    );
    assert_eq!(
        s.ok(&["network", "ls", "-q"]),
        format!("{}\n{}\n{}\n", &idl[..12], &id2[..12], &id10[..12])
    );
    assert_eq!(
        s.ok(&["network", "ls", "-q", "--no-trunc"]),
        format!("{idl}\n{id2}\n{id10}\n")
    );
    let names = |filters: &[&str]| {
        let mut args = vec!["network", "ls", "--format", "{{.Name}}"];
        for f in filters {
            args.extend(["--filter", f]);
        }
        s.ok(&args)
    };
    assert_eq!(names(&["name=net"]), "net2\nnet10\n");
    assert_eq!(names(&["name=net1", "name=net2"]), "net2\nnet10\n");
    assert_eq!(names(&["name=net", "label=env=prod"]), "net10\n");
    assert_eq!(names(&["label=env"]), "net2\nnet10\n");
    assert_eq!(names(&["label=team"]), format!("{LONG}\n"));
    assert_eq!(names(&["dangling=false"]), "net2\n");
    assert_eq!(names(&["dangling=true"]), format!("{LONG}\nnet10\n"));
    assert_eq!(names(&[&format!("id={}", &id10[..5])]), "net10\n");
    assert_eq!(
        names(&["driver=macvlan", "scope=local", "type=custom"])
            .lines()
            .count(),
        3
    );
    assert_eq!(names(&["driver=bridge"]), "");
    // As in Docker, -f is --filter on ls (and --format on inspect).
    assert_eq!(
        s.ok(&["network", "ls", "-q", "-f", "name=net10"]),
        format!("{}\n", &id10[..12])
    );
    assert_eq!(
        s.fails(&["network", "ls", "--filter", "x=1"]),
        "mvnet: error: invalid filter 'x'; valid filters for network ls: \
         dangling, driver, id, label, name, scope, type\n"
    );
    assert_eq!(
        s.ok(&["network", "ls", "--filter", "name=net10", "--format", "{{json .}}"]),
        format!(
            "{{\"CreatedAt\":\"{}\",\"Driver\":\"macvlan\",\"ID\":\"{}\",\"IPv6\":\"false\",\
             \"Internal\":\"false\",\"Labels\":\"env=prod\",\"Name\":\"net10\",\"Scope\":\"local\"}}\n",
            s.ok(&["network", "inspect", "-f", "{{.Created}}", "net10"]).trim(),
            &id10[..12]
        )
    );
    assert_eq!(
        s.ok(&[
            "network",
            "ls",
            "--filter",
            "name=net",
            "--format",
            "table {{.Name}}\\t{{.Labels}}"
        ]),
        "NAME      LABELS\nnet2      env=dev\nnet10     env=prod\n"
    );
    assert_eq!(
        s.ok(&[
            "network",
            "inspect",
            "-f",
            "{{.Name}} {{.Labels.env}} {{.Driver}}",
            "net10",
            "net2"
        ]),
        "net10 prod macvlan\nnet2 dev macvlan\n"
    );
    assert_eq!(
        s.ok(&["inspect", "--type", "network", "-f", "{{.Id}}", "net2"]),
        format!("{id2}\n")
    );

    // Prune, declined: asks, deletes nothing.
    let warning =
        "WARNING! This will remove all custom networks not used by at least one container.\n\
                   Are you sure you want to continue? [y/N] ";
    let out = with_stdin(&s, &["network", "prune"], "n\n");
    assert!(out.status.success());
    assert_eq!(stdout(&out), warning);
    assert_eq!(names(&[]).lines().count(), 3);
    // Created within the last hour: none is older.
    assert_eq!(
        s.ok(&["network", "prune", "-f", "--filter", "until=1h"]),
        ""
    );
    // With a label filter and -f: only net10; then all unused ones.
    assert_eq!(
        s.ok(&[
            "network",
            "prune",
            "-f",
            "--filter",
            "label=env=prod",
            "--filter",
            "until=2099-01-01"
        ]),
        "Deleted Networks:\nnet10\n\n"
    );
    let out = with_stdin(&s, &["network", "prune"], "y\n");
    assert_eq!(
        stdout(&out),
        format!("{warning}Deleted Networks:\n{LONG}\n\n")
    );
    assert_eq!(names(&[]), "net2\n");
    assert_eq!(s.ok(&["network", "prune", "-f"]), "");
}

#[test]
fn containers_ps_inspect_stop_start_restart_logs_and_prune() {
    require_root();
    let lab = Lab::new().unwrap();
    let s = Session::new(&lab);
    s.network("lan", "10.72.0.0/24", PARENT, &[]);
    let web = s.name("web");
    let id = s.ok(&[
        "run",
        "-d",
        "--network",
        "lan",
        "--name",
        &web,
        "--ip",
        "10.72.0.20",
        "--label",
        "tier=front",
        "sh",
        "-c",
        "echo hello; exec sleep 60",
    ]);
    let id = id.trim().to_owned();
    let ip = |name: &str| {
        s.ok(&[
            "container",
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            name,
        ])
    };
    assert_eq!(ip(&web), "10.72.0.20\n");
    let settings = "{{json .NetworkSettings.Networks.lan}}";
    let net_id = s
        .ok(&["network", "inspect", "-f", "{{.Id}}", "lan"])
        .trim()
        .to_owned();
    let ep_id = s.ok(&[
        "inspect",
        "-f",
        "{{.NetworkSettings.Networks.lan.EndpointID}}",
        &web,
    ]);
    assert_eq!(ep_id.trim().len(), 64);
    assert_eq!(
        s.ok(&["inspect", "-f", settings, &web]),
        format!(
            "{{\"Aliases\":[\"{}\"],\"DriverOpts\":null,\"EndpointID\":\"{}\",\"Gateway\":\"10.72.0.1\",\
             \"GlobalIPv6Address\":\"\",\"GlobalIPv6PrefixLen\":0,\
             \"IPAMConfig\":{{\"IPv4Address\":\"10.72.0.20\"}},\
             \"IPAddress\":\"10.72.0.20\",\"IPPrefixLen\":24,\"IPv6Gateway\":\"\",\"InterfaceName\":\"eth0\",\"Links\":null,\
             \"MacAddress\":\"02:42:0a:48:00:14\",\"NetworkID\":\"{net_id}\"}}\n",
            &id[..12],
            ep_id.trim()
        )
    );
    assert_eq!(
        s.ok(&["inspect", "-f", "{{.Config.Labels.tier}}", &web]),
        "front\n"
    );
    assert_eq!(
        s.ok(&[
            "ps",
            "--format",
            "{{.Names}} {{.Status}} {{.Networks}} {{.Labels}}"
        ]),
        format!("{web} running lan tier=front\n")
    );
    assert_eq!(s.ok(&["ps", "-q", "--no-trunc"]), format!("{id}\n"));
    assert_eq!(s.ok(&["container", "ls", "-q"]), format!("{}\n", &id[..12]));
    assert_eq!(s.ok(&["ps", "-q", "--filter", "label=tier=back"]), "");
    assert_eq!(
        s.fails(&["ps", "--filter", "driver=macvlan"]),
        "mvnet: error: invalid filter 'driver'; valid filters for container ls: \
         id, label, name, network, status\n"
    );

    // The command has written its line before it is stopped (under load
    // its shell can start late; bounded at 10 s).
    let start = std::time::Instant::now();
    while s.ok(&["logs", &web]) != "hello\n" {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "no output from the container's command"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // Stop: gone from ps, kept by ps -a; inspect keeps the network with
    // the operational data cleared, as Docker's does.
    assert_eq!(s.ok(&["stop", &web]), format!("{web}\n"));
    assert!(!mvnet::netns::list().contains(&web));
    assert_eq!(s.ok(&["ps", "-q"]), "");
    assert_eq!(
        s.ok(&[
            "ps",
            "-a",
            "--format",
            "{{.Names}} {{.Status}} {{.Networks}}"
        ]),
        format!("{web} exited lan\n")
    );
    assert_eq!(
        s.ok(&["inspect", "-f", settings, &web]),
        format!(
            "{{\"Aliases\":[\"{}\"],\"DriverOpts\":null,\"EndpointID\":\"\",\"Gateway\":\"\",\
             \"GlobalIPv6Address\":\"\",\"GlobalIPv6PrefixLen\":0,\
             \"IPAMConfig\":{{\"IPv4Address\":\"10.72.0.20\"}},\
             \"IPAddress\":\"\",\"IPPrefixLen\":0,\"IPv6Gateway\":\"\",\"InterfaceName\":\"eth0\",\"Links\":null,\
             \"MacAddress\":\"\",\"NetworkID\":\"{net_id}\"}}\n",
            &id[..12]
        )
    );
    assert_eq!(s.ok(&["logs", &web]), "hello\n");
    // A second stop changes nothing.
    s.ok(&["container", "stop", &web]);
    assert_eq!(ip(&web), "\n");
    assert_eq!(
        s.ok(&[
            "inspect",
            "-f",
            "{{.NetworkSettings.Networks.lan.NetworkID}}",
            &web
        ]),
        format!("{net_id}\n")
    );
    // restore keeps a stopped container (Docker keeps them too).
    let out = s.ok(&["restore"]);
    assert!(!out.contains("purged"), "{out}");
    assert_eq!(s.ok(&["ps", "-a", "-q", "--no-trunc"]), format!("{id}\n"));

    // Start: the same address again, the command restarted, its output appended.
    assert_eq!(s.ok(&["start", &web]), format!("{web}\n"));
    assert!(mvnet::netns::list().contains(&web));
    assert_eq!(ip(&web), "10.72.0.20\n");
    let dev = s.ok(&["exec", &web, "cat", "/proc/net/dev"]);
    assert!(dev.contains("eth0:"), "{dev}");
    assert_eq!(
        s.ok(&["ps", "--format", "{{.Names}} {{.Status}}"]),
        format!("{web} running\n")
    );
    assert_eq!(s.ok(&["restart", &web]), format!("{web}\n"));
    assert_eq!(ip(&web), "10.72.0.20\n");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while s.ok(&["container", "logs", &web]) != "hello\nhello\nhello\n" {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            s.ok(&["logs", &web])
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    // logs -f follows until the command exits.
    let short = s.name("short");
    s.ok(&[
        "run",
        "-d",
        "--network",
        "lan",
        "--name",
        &short,
        "sh",
        "-c",
        "echo a; sleep 0.5; echo b",
    ]);
    let t = std::time::Instant::now();
    assert_eq!(s.ok(&["logs", "-f", &short]), "a\nb\n");
    assert!(t.elapsed() < std::time::Duration::from_secs(5));
    s.ok(&["rm", "-f", &short]);

    // Prune: declined, then forced after the stop.
    let warning = "WARNING! This will remove all stopped containers.\nAre you sure you want to continue? [y/N] ";
    let out = with_stdin(&s, &["container", "prune"], "\n");
    assert_eq!(
        stdout(&out),
        format!("{warning}Total reclaimed space: 0B\n")
    );
    assert_eq!(
        s.ok(&["container", "prune", "-f"]),
        "Total reclaimed space: 0B\n"
    );
    s.ok(&["stop", &web]);
    assert_eq!(
        s.ok(&["container", "prune", "-f"]),
        format!("Deleted Containers:\n{id}\n\nTotal reclaimed space: 0B\n")
    );
    assert_eq!(s.ok(&["ps", "-a", "-q"]), "");
    assert_eq!(
        s.fails(&["inspect", "nosuch"]),
        "mvnet: error: no such object: nosuch; list them with `mvnet ps -a` and `mvnet network ls`\n"
    );
}

#[test]
fn an_image_argument_is_refused_with_the_mvnet_form() {
    require_root();
    let lab = Lab::new().unwrap();
    let s = Session::new(&lab);
    s.network("lan", "10.73.0.0/24", PARENT, &[]);
    let before = s.state();
    assert_eq!(
        s.fails(&["run", "--network", "lan", "--name", &s.name("a"), "alpine:latest", "ash"]),
        "mvnet: error: \"alpine:latest\" is not a program on this host; it looks like a Docker image. \
         mvnet has no images: it runs host binaries in a network namespace. Give a host command \
         instead, e.g. `mvnet run --network lan -- ash`\n"
    );
    assert_eq!(s.state(), before);
    assert!(!mvnet::netns::list().contains(&s.name("a")));

    // --label-file, then --label (the later value wins).
    let file = std::env::temp_dir().join(format!("{}-labels", lab.id()));
    std::fs::write(&file, "# ours\nteam=net\nenv=dev\n").unwrap();
    let file_arg = file.display().to_string();
    s.network(
        "lab2",
        "10.73.1.0/24",
        PARENT,
        &["--label-file", &file_arg, "--label", "env=prod"],
    );
    std::fs::remove_file(&file).unwrap();
    assert_eq!(
        s.ok(&["network", "inspect", "-f", "{{json .Labels}}", "lab2"]),
        "{\"env\":\"prod\",\"team\":\"net\"}\n"
    );
}

#[test]
fn run_takes_dockers_hidden_net_spelling_of_network() {
    require_root();
    let lab = Lab::new().unwrap();
    let s = Session::new(&lab);
    s.network("lan", "10.73.2.0/24", PARENT, &[]);
    let (a, b) = (s.name("a"), s.name("b"));
    // `docker run --net=NET` and `--net NET` still work in Docker's CLI.
    s.ok(&["run", "-d", "--net=lan", "--name", &a, "--ip", "10.73.2.7"]);
    s.ok(&["run", "-d", "--net", "lan", "--name", &b]);
    let ip = |name: &str| {
        s.ok(&[
            "inspect",
            "-f",
            "{{.NetworkSettings.Networks.lan.IPAddress}}",
            name,
        ])
    };
    assert_eq!(ip(&a), "10.73.2.7\n");
    assert_eq!(ip(&b), "10.73.2.2\n");
}

#[test]
fn completions_and_man_page() {
    let run = |args: &[&str]| {
        let out = Command::new(mvnet_bin()).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let bash = run(&["completion", "bash"]);
    assert!(
        bash.contains("network") && bash.contains("complete -F _mvnet"),
        "{bash}"
    );
    assert!(run(&["completion", "zsh"]).starts_with("#compdef mvnet"));
    assert!(run(&["completion", "fish"]).contains("complete -c mvnet"));
    let man = run(&["man"]);
    assert!(
        man.starts_with(".ie \\n(.g .ds Aq") || man.starts_with(".TH"),
        "{}",
        &man[..80.min(man.len())]
    );
    assert!(
        man.contains(".TH mvnet 1"),
        "{}",
        &man[..200.min(man.len())]
    );
}
