//! The differential suite: each scenario runs on Debian's Docker engine
//! (20.10, in a lab namespace) and on mvnet, in twin labs, and the
//! normalized results are compared field by field. Prints one line per
//! scenario, SAME or DIFF; fails on any difference not listed in the
//! README's table of differences. Run by `cargo xtask test` (as root):
//! `cargo test -p macvlan-tests --test parity [-- SCENARIO-SUBSTRING]`.
//!
//! Every `docker` call is bounded in time (120 s, in the VM 360 s). When
//! Docker stops answering (a call killed), the scenario is played once more
//! on both sides with a fresh Docker engine, after a note; a second hang,
//! or a killed mvnet call, fails it. `MVNET_PARITY_FREEZE_DOCKERD=SCENARIO`
//! stops dockerd (SIGSTOP) as that scenario starts, to exercise this. In the
//! VM every call is traced on stderr (`MVNET_TRACE=1` does it on the host),
//! and a suite still running after `MVNET_PARITY_BUDGET` seconds (1800)
//! stops, failed, with what every process and the kernel were doing.
#[path = "../common/mod.rs"]
mod common;

mod differences;
mod docker_host;
mod engine;
mod observe;
mod scenarios;

use std::time::Instant;

use anyhow::Result;
use mvnet_lab::lab::Lab;

use common::docker;

use crate::{
    common::cli::Session,
    docker::Dockerd,
    engine::{Engine, Kind},
    observe::Facts,
    scenarios::{Scenario, Step},
};

fn main() {
    common::require_root();
    match suite() {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("parity suite: {e:#}");
            std::process::exit(1);
        }
    }
}

/// Returns whether every difference was a documented one.
fn suite() -> Result<bool> {
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    // Built in: in the VM the checkout may not be visible (a fresh /tmp).
    let readme = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"));
    let known = differences::load(readme)?;
    let started = Instant::now();
    let in_vm = std::env::var_os("MVNET_IN_VM").is_some();
    if in_vm {
        for module in ["8021q", "dummy"] {
            let st = std::process::Command::new("modprobe")
                .arg(module)
                .status()?;
            anyhow::ensure!(st.success(), "modprobe {module} failed");
        }
    }

    if in_vm {
        watchdog(budget()?);
    }
    let docker_lab = Lab::new()?;
    let dockerd = Dockerd::start(docker_lab.host().path(), docker_lab.id())?;
    set_docker_log(dockerd.log_path());
    println!("Docker engine {} (/usr/sbin/dockerd)", dockerd.version);
    let mut docker = Engine::new("docker", docker_lab, Kind::Docker(dockerd));
    let mvnet_lab = Lab::new()?;
    let session = Session::new(&mvnet_lab);
    let mut mvnet = Engine::new("mvnet", mvnet_lab, Kind::Mvnet(session));

    let mut unlisted = 0;
    let mut ran = 0;
    for scenario in scenarios::all() {
        if !filter.is_empty() && !filter.iter().any(|f| scenario.name.contains(f.as_str())) {
            continue;
        }
        // In the VM only its own scenarios (the host ran the others); on
        // the host, say which ones it leaves to the VM.
        if scenario.needs_vm != in_vm {
            if !in_vm {
                println!(
                    "skip {} ({}): needs 802.1Q and dummy links, runs in the VM (cargo xtask test)",
                    scenario.name, scenario.source
                );
            }
            continue;
        }
        ran += 1;
        common::trace(&format!("scenario {}", scenario.name));
        // Fault injection for the recovery below: dockerd stopped
        // (SIGSTOP) as the named scenario starts.
        if std::env::var("MVNET_PARITY_FREEZE_DOCKERD").as_deref() == Ok(scenario.name) {
            if let Kind::Docker(dockerd) = &docker.kind {
                println!("note: MVNET_PARITY_FREEZE_DOCKERD: dockerd stopped (SIGSTOP)");
                dockerd.freeze();
            }
        }
        let killed = common::killed_calls();
        let (mut d, mut m) = play_both(&mut docker, &mut mvnet, &scenario);
        // Docker, the reference, has been seen to stop answering under
        // the VM's software emulation (a client call killed after its
        // limit). Its results are then not Docker's behaviour: start the
        // engine again and play the scenario once more on both sides. Only
        // Docker's hangs get this second chance; a killed mvnet call, or a
        // second hang, fails the scenario as it is.
        if docker.is_stuck() && common::killed_calls() == killed + 1 {
            println!(
                "note: the Docker engine stopped answering during {} (the killed call's \
                 report is above, on stderr); restarting it and playing the scenario again",
                scenario.name
            );
            let Kind::Docker(dockerd) = &mut docker.kind else {
                unreachable!("the Docker engine")
            };
            dockerd.recover()?;
            set_docker_log(dockerd.log_path());
            (d, m) = play_both(&mut docker, &mut mvnet, &scenario);
        }
        unlisted += report(&scenario, &d, &m, &known);
    }
    // Not a comparison: the tutorial on a host whose Docker engine turned
    // forwarding on.
    let mut host_check_failed = false;
    if !in_vm
        && (filter.is_empty()
            || filter
                .iter()
                .any(|f| "docker-host-tutorial".contains(f.as_str())))
    {
        match docker_host::tutorial_with_forwarding_on() {
            Ok(()) => println!("PASS docker-host-tutorial (mvnet lab tutorial, exact, with net.ipv4.ip_forward=1 in the root namespace)"),
            Err(e) => {
                println!("FAIL docker-host-tutorial: {e:#}");
                host_check_failed = true;
            }
        }
    }
    for k in known.iter().filter(|k| !k.used.get()) {
        if filter.is_empty() && !in_vm {
            println!(
                "note: listed difference not seen: {} {}",
                k.scenario, k.field
            );
        }
    }
    println!(
        "{ran} scenarios in {:.0?}; {unlisted} unlisted difference(s)",
        started.elapsed()
    );
    Ok(unlisted == 0 && !host_check_failed)
}

/// Plays `scenario` on both engines at once (their labs share nothing).
fn play_both(docker: &mut Engine, mvnet: &mut Engine, scenario: &Scenario) -> (Facts, Facts) {
    std::thread::scope(|s| {
        let d = s.spawn(|| play(docker, scenario));
        let m = play(mvnet, scenario);
        (d.join().expect("the Docker side panicked"), m)
    })
}

/// dockerd's log, for the watchdog's report.
static DOCKER_LOG: std::sync::Mutex<Option<std::path::PathBuf>> = std::sync::Mutex::new(None);

fn set_docker_log(path: std::path::PathBuf) {
    *DOCKER_LOG.lock().unwrap_or_else(|e| e.into_inner()) = Some(path);
}

/// How long the suite may take in the VM: MVNET_PARITY_BUDGET seconds,
/// by default 1800 (its four scenarios take 6 to 14 minutes there), well
/// inside the VM's own time limit (xtask's MVNET_VM_TIMEOUT, 3600 s for the
/// VM tests and this suite together).
fn budget() -> Result<std::time::Duration> {
    let secs = match std::env::var("MVNET_PARITY_BUDGET") {
        Ok(s) => s
            .parse()
            .map_err(|_| anyhow::anyhow!("MVNET_PARITY_BUDGET={s} is not a number of seconds"))?,
        Err(_) => 1800,
    };
    Ok(std::time::Duration::from_secs(secs))
}

/// Ends the suite, failed, with what the machine was doing, once it has
/// run for `budget`: a stuck engine then fails this run with evidence
/// (every process's wait channel, blocked tasks' kernel stacks, the kernel
/// log) before the VM is killed from outside with nothing said.
fn watchdog(budget: std::time::Duration) {
    std::thread::spawn(move || {
        std::thread::sleep(budget);
        let log = DOCKER_LOG
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_deref()
            .map(|p| format!("{}\n", Dockerd::log_tail(p, 40)))
            .unwrap_or_default();
        eprintln!(
            "parity suite: still running after {} s (MVNET_PARITY_BUDGET); stopping it.\n{log}{}",
            budget.as_secs(),
            common::kernel_diagnosis()
        );
        std::process::exit(1);
    });
}

/// Runs a scenario on one engine and collects its facts.
fn play(engine: &mut Engine, scenario: &Scenario) -> Facts {
    engine.reset_parents();
    let mut facts = Facts::new();
    let mut containers: Vec<&str> = Vec::new();
    let mut networks: Vec<&str> = Vec::new();
    for (i, step) in scenario.steps.iter().enumerate() {
        let n = i + 1;
        common::trace(&format!("{}: {} step {n}", engine.name, scenario.name));
        match step {
            Step::RunCommand(c, args, argv) => {
                containers.push(c);
                let before = engine.snapshot();
                let out = engine.run_command(c, args, argv);
                let key = format!("step {n}: run {c} {} -- {}", args.join(" "), argv.join(" "));
                facts.insert(key.clone(), if out.ok { "ok" } else { "refused" }.into());
                facts.insert(format!("{key} (exit)"), out.code.to_string());
                if (125..=127).contains(&out.code) {
                    // A container whose command could not start (126,
                    // 127) or was refused (125) leaves nothing running.
                    let after = engine.snapshot();
                    let left = if after == before {
                        "nothing changed".to_owned()
                    } else {
                        format!("changed: before {before} / after {after}")
                    };
                    facts.insert(format!("{key} (leftovers)"), left);
                    facts.insert(format!("{key} (error)"), out.stderr.trim().to_owned());
                }
            }
            Step::Cmd(argv) | Step::Run(_, argv) => {
                let before = engine.snapshot();
                let (label, out) = match step {
                    Step::Run(c, args) => {
                        containers.push(c);
                        (format!("run {c} {}", args.join(" ")), engine.run(c, args))
                    }
                    _ => {
                        if argv[..2] == ["network", "create"] {
                            networks.push(argv[argv.len() - 1]);
                        }
                        (argv.join(" "), engine.cmd(argv))
                    }
                };
                let key = format!("step {n}: {label}");
                facts.insert(key.clone(), if out.ok { "ok" } else { "refused" }.into());
                if !out.ok {
                    let after = engine.snapshot();
                    let left = if after == before {
                        "nothing changed".to_owned()
                    } else {
                        format!("changed: before {before} / after {after}")
                    };
                    facts.insert(format!("{key} (leftovers)"), left);
                    facts.insert(format!("{key} (error)"), out.stderr.trim().to_owned());
                }
            }
            Step::Container(c) => {
                let prefix = format!("step {n}: {c}");
                let inspect = engine.inspect("container", &format!("%{c}"));
                match inspect
                    .as_ref()
                    .and_then(|i| Some((i, engine.netns_of(c, i)?)))
                {
                    Some((inspect, ns)) => {
                        observe::container(&prefix, &ns, &engine.parent_macs, &mut facts);
                        observe::endpoints(&prefix, inspect, &mut facts);
                    }
                    None => {
                        facts.insert(prefix, "no running container".into());
                    }
                }
            }
            Step::Exec(c, argv) => {
                let prefix = format!("step {n}: {c}");
                let name = format!("%{c}");
                let mut args = vec!["exec", name.as_str()];
                args.extend_from_slice(argv);
                let out = engine.cmd(&args);
                // The output of a command that ran; a failure's text is the
                // engine's own (Docker prints the OCI runtime's error).
                if out.ok {
                    facts.insert(
                        format!("{prefix}.exec_stdout"),
                        observe::normalize_mac(out.stdout.trim(), &engine.parent_macs),
                    );
                }
                facts.insert(format!("{prefix}.exec_exit"), out.code.to_string());
            }
            Step::Network(net) => {
                let prefix = format!("step {n}: {net}");
                match engine.inspect("network", net) {
                    Some(inspect) => observe::network(&prefix, &inspect, &mut facts),
                    None => {
                        facts.insert(prefix, "no such network".into());
                    }
                }
            }
        }
    }
    // What the scenario did to the host namespace: its links and the
    // parents' MACs (passthru).
    facts.insert(
        "host.links".into(),
        observe::normalize_dummy(&engine.host_links().join(", ")),
    );
    for (parent, _) in engine::PARENTS {
        let mac = engine.lab.mac_of(engine.lab.host(), parent).ok().map(|m| {
            m.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":")
        });
        facts.insert(
            format!("host.{parent}.mac"),
            observe::normalize_mac(&mac.unwrap_or_default(), &engine.parent_macs),
        );
    }
    engine.cleanup(&containers, &networks);
    facts.insert(
        "leftovers after removing everything".into(),
        engine.leftovers(),
    );
    facts
}

/// Prints SAME or DIFF for a scenario, with the differing fields: listed
/// ones by the README entry that excuses them (with both values when
/// PARITY_VERBOSE is set), unlisted ones with both values. Returns the
/// number of unlisted differing fields.
fn report(scenario: &Scenario, d: &Facts, m: &Facts, known: &[differences::Difference]) -> usize {
    let verbose = std::env::var_os("PARITY_VERBOSE").is_some();
    let mut listed: Vec<String> = Vec::new();
    let mut details = Vec::new();
    let mut errors: Vec<String> = Vec::new();
    let mut unlisted = 0;
    let keys: std::collections::BTreeSet<&String> = d.keys().chain(m.keys()).collect();
    for key in keys {
        // Error texts differ by design; only refusal and leftovers count
        // (PARITY_VERBOSE shows both).
        if key.ends_with("(error)") {
            if verbose {
                let show = |f: &Facts| f.get(key).cloned().unwrap_or_default();
                errors.push(format!(
                    "    error of {key}\n      docker: {}\n      mvnet: {}",
                    show(d),
                    show(m)
                ));
            }
            continue;
        }
        let (dv, mv) = (d.get(key), m.get(key));
        if dv == mv {
            continue;
        }
        let excuse = known.iter().find(|k| k.excuses(scenario.name, key));
        if let Some(k) = excuse {
            k.used.set(true);
            let name = format!("{} ({})", k.field, k.kind);
            if !listed.contains(&name) {
                listed.push(name);
            }
            if !verbose {
                continue;
            }
        } else {
            unlisted += 1;
        }
        let show = |v: Option<&String>| v.map(|s| format!("{s:?}")).unwrap_or("(absent)".into());
        let tag = if excuse.is_some() {
            "listed"
        } else {
            "UNLISTED"
        };
        let mut line = format!("    {tag} {key}: docker {} mvnet {}", show(dv), show(mv));
        // A refusal's reason helps the reader of an unexpected one.
        for (who, f) in [("docker", d), ("mvnet", m)] {
            if let Some(e) = f.get(&format!("{key} (error)")) {
                line += &format!("\n      {who}: {e}");
            }
        }
        details.push(line);
    }
    if listed.is_empty() && details.is_empty() {
        println!("SAME {} ({})", scenario.name, scenario.source);
    } else {
        let listed = if listed.is_empty() {
            String::new()
        } else {
            format!(": listed {}", listed.join(", "))
        };
        println!("DIFF {} ({}){listed}", scenario.name, scenario.source);
        for l in details {
            println!("{l}");
        }
    }
    for l in errors {
        println!("{l}");
    }
    unlisted
}
