//! What Docker's scripting interface needs beyond templates and filters:
//! the rows of `network ls` and `container ls` (docker/cli's formatter
//! contexts: their field names, values and column headers), the prune
//! prompt, `--label` parsing, natural sort, and telling an image
//! argument from a host command.
use std::{
    cmp::Ordering,
    collections::BTreeMap,
    io::{BufRead, Write},
    path::Path,
};

use anyhow::{bail, Result};
use serde_json::{json, Value};

use crate::{
    controller::Controller,
    filter::{Filters, Subject},
    model::{Container, Network},
};

/// `network ls`'s columns by default (docker/cli `defaultNetworkTableFormat`).
pub const NETWORK_TABLE: &str = "table {{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.Scope}}";
/// `container ls`'s columns by default: mvnet has no images, ports or
/// commands worth a column; it shows each container's networks.
pub const CONTAINER_TABLE: &str = "table {{.ID}}\t{{.Status}}\t{{.Names}}\t{{.Networks}}";

/// Keys `network ls --filter` takes (docker/cli's list).
pub const NETWORK_FILTERS: &[&str] =
    &["dangling", "driver", "id", "label", "name", "scope", "type"];
/// Keys `container ls --filter` takes.
pub const CONTAINER_FILTERS: &[&str] = &["id", "label", "name", "network", "status"];

/// Header of each `network ls` field in a `table` format.
pub const NETWORK_HEADERS: &[(&str, &str)] = &[
    ("ID", "NETWORK ID"),
    ("Name", "NAME"),
    ("Driver", "DRIVER"),
    ("Scope", "SCOPE"),
    ("IPv6", "IPV6"),
    ("Internal", "INTERNAL"),
    ("Labels", "LABELS"),
    ("CreatedAt", "CREATED AT"),
];

/// Header of each `container ls` field in a `table` format.
pub const CONTAINER_HEADERS: &[(&str, &str)] = &[
    ("ID", "CONTAINER ID"),
    ("Image", "IMAGE"),
    ("Command", "COMMAND"),
    ("CreatedAt", "CREATED AT"),
    ("RunningFor", "CREATED"),
    ("Ports", "PORTS"),
    ("State", "STATE"),
    ("Status", "STATUS"),
    ("Size", "SIZE"),
    ("Names", "NAMES"),
    ("Labels", "LABELS"),
    ("Mounts", "MOUNTS"),
    ("Networks", "NETWORKS"),
];

/// Parses `--label KEY=VALUE` (a bare KEY is an empty value, as in Docker).
pub fn parse_labels(args: &[String]) -> Result<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    for a in args {
        let (k, v) = a.split_once('=').unwrap_or((a.as_str(), ""));
        if k.is_empty() {
            bail!("invalid label {a:?}: give KEY=VALUE, e.g. --label env=prod");
        }
        labels.insert(k.to_owned(), v.to_owned());
    }
    Ok(labels)
}

/// `--label-file` lines (blank lines and `#` comments skipped), then
/// `--label`s; a later value of a key wins, as in Docker.
pub fn labels(files: &[std::path::PathBuf], flags: &[String]) -> Result<BTreeMap<String, String>> {
    let mut all = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f).map_err(|e| {
            anyhow::anyhow!(
                "reading --label-file {}: {e}; give a file of KEY=VALUE lines",
                f.display()
            )
        })?;
        all.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_owned),
        );
    }
    all.extend(flags.iter().cloned());
    parse_labels(&all)
}

fn labels_text(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// docker/cli's `sortorder.NaturalLess`: runs of digits compare by value.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    while !a.is_empty() && !b.is_empty() {
        let (da, db) = (a[0].is_ascii_digit(), b[0].is_ascii_digit());
        if da && db {
            let na = a.iter().take_while(|c| c.is_ascii_digit()).count();
            let nb = b.iter().take_while(|c| c.is_ascii_digit()).count();
            let (ta, tb) = (&a[..na], &b[..nb]);
            let za = ta
                .iter()
                .position(|&c| c != b'0')
                .map_or(&ta[na..], |i| &ta[i..]);
            let zb = tb
                .iter()
                .position(|&c| c != b'0')
                .map_or(&tb[nb..], |i| &tb[i..]);
            let ord = za.len().cmp(&zb.len()).then(za.cmp(zb)).then(na.cmp(&nb));
            if ord != Ordering::Equal {
                return ord;
            }
            (a, b) = (&a[na..], &b[nb..]);
        } else {
            if a[0] != b[0] {
                return a[0].cmp(&b[0]);
            }
            (a, b) = (&a[1..], &b[1..]);
        }
    }
    a.len().cmp(&b.len())
}

fn network_in_use(ctl: &Controller, net: &Network) -> bool {
    ctl.state
        .containers
        .values()
        .any(|c| c.endpoints.contains_key(&net.id))
}

/// `network ls`: the networks that pass `filters`, sorted by name as
/// docker/cli sorts them, as docker/cli's network formatter context.
pub fn network_rows(ctl: &Controller, filters: &Filters, no_trunc: bool) -> Vec<Value> {
    let mut nets: Vec<&Network> = ctl
        .state
        .networks
        .values()
        .filter(|n| {
            filters.matches(&Subject {
                id: &n.id,
                name: &n.name,
                labels: &n.labels,
                created: &n.created,
                fields: vec![
                    ("driver", "macvlan".into()),
                    ("scope", "local".into()),
                    ("type", "custom".into()),
                    ("dangling", (!network_in_use(ctl, n)).to_string()),
                ],
            })
        })
        .collect();
    nets.sort_by(|a, b| natural_cmp(&a.name, &b.name));
    nets.iter()
        .map(|n| {
            json!({
                "ID": if no_trunc { n.id.as_str() } else { n.short_id() },
                "Name": n.name,
                "Driver": "macvlan",
                "Scope": "local",
                "IPv6": n.enable_ipv6.to_string(),
                "Internal": n.internal.to_string(),
                "Labels": labels_text(&n.labels),
                "CreatedAt": n.created,
            })
        })
        .collect()
}

/// `container ls`: running containers (all with `all`) that pass
/// `filters`, newest first, as docker/cli's container formatter context.
pub fn container_rows(
    ctl: &Controller,
    filters: &Filters,
    all: bool,
    no_trunc: bool,
) -> Vec<Value> {
    let net_names = |c: &Container| -> Vec<String> {
        let eps = if c.running {
            &c.endpoints
        } else {
            &c.stopped_endpoints
        };
        let mut names: Vec<String> = eps
            .keys()
            .filter_map(|id| ctl.state.networks.get(id.as_str()))
            .map(|n| n.name.clone())
            .collect();
        names.sort();
        names
    };
    let mut cs: Vec<&Container> = ctl
        .state
        .containers
        .values()
        .filter(|c| all || c.running)
        .filter(|c| {
            let nets = net_names(c);
            let mut fields = vec![("status", status(c).to_owned())];
            fields.extend(nets.into_iter().map(|n| ("network", n)));
            filters.matches(&Subject {
                id: &c.id,
                name: &c.name,
                labels: &c.labels,
                created: &c.created,
                fields,
            })
        })
        .collect();
    cs.sort_by(|a, b| b.created.cmp(&a.created).then(a.name.cmp(&b.name)));
    cs.iter()
        .map(|c| {
            let mut command = c.command.join(" ");
            if !no_trunc && command.chars().count() > 20 {
                command = command.chars().take(19).collect::<String>() + "…";
            }
            json!({
                "ID": if no_trunc { c.id.as_str() } else { c.short_id() },
                "Image": "",
                "Command": format!("\"{command}\""),
                "CreatedAt": c.created,
                "RunningFor": c.created,
                "Ports": "",
                "State": status(c),
                "Status": status(c),
                "Size": "0B",
                "Names": c.name,
                "Labels": labels_text(&c.labels),
                "Mounts": "",
                "Networks": net_names(c).join(","),
            })
        })
        .collect()
}

fn status(c: &Container) -> &'static str {
    if c.running {
        "running"
    } else {
        "exited"
    }
}

/// Docker's `PromptForConfirmation`: prints `warning` and " [y/N] ",
/// reads one line; only y or Y (trimmed) says yes.
pub fn confirm(warning: &str, input: &mut impl BufRead, out: &mut impl Write) -> Result<bool> {
    write!(out, "{warning} [y/N] ")?;
    out.flush()?;
    let mut answer = String::new();
    input.read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y"))
}

/// Whether `run`'s first command word looks like a Docker image rather
/// than a host program: `NAME:TAG` or `REGISTRY/NAME` that is no file
/// here. A plain word not found on $PATH is a missing command (exit 127,
/// as Docker's), not an image.
pub fn looks_like_image(word: &str) -> bool {
    if word.starts_with('/') || word.starts_with('.') {
        return false;
    }
    if word.contains('/') {
        // A relative path to a host program, or an image like library/alpine.
        return !Path::new(word).exists();
    }
    word.contains(':')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_order_as_docker_cli() {
        let mut v = vec!["net10", "net2", "Net1", "net1", "a", "net02"];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(v, ["Net1", "a", "net1", "net2", "net02", "net10"]);
    }

    #[test]
    fn labels_parse_and_refuse_empty_keys() {
        let l = parse_labels(&["a=1".into(), "b".into(), "c=x=y".into()]).unwrap();
        assert_eq!(labels_text(&l), "a=1,b=,c=x=y");
        assert_eq!(
            parse_labels(&["=1".into()]).unwrap_err().to_string(),
            "invalid label \"=1\": give KEY=VALUE, e.g. --label env=prod"
        );
    }

    #[test]
    fn label_files_come_before_flags() {
        let dir = std::env::temp_dir().join(format!("mvnet-labels-{}", std::process::id()));
        std::fs::write(&dir, "# team labels\nteam=net\n\nenv=dev\n").unwrap();
        let l = labels(std::slice::from_ref(&dir), &["env=prod".into()]).unwrap();
        std::fs::remove_file(&dir).unwrap();
        assert_eq!(labels_text(&l), "env=prod,team=net");
        let e = labels(&["/nonexistent/labels".into()], &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("reading --label-file /nonexistent/labels: "),
            "{e}"
        );
    }

    #[test]
    fn confirm_defaults_to_no() {
        let mut out = Vec::new();
        assert!(!confirm("Sure?", &mut &b"\n"[..], &mut out).unwrap());
        assert!(!confirm("Sure?", &mut &b"n\n"[..], &mut out).unwrap());
        assert!(confirm("Sure?", &mut &b"y\n"[..], &mut out).unwrap());
        assert_eq!(String::from_utf8(out).unwrap(), "Sure? [y/N] ".repeat(3));
    }

    #[test]
    fn images_are_told_from_host_programs() {
        assert!(looks_like_image("alpine:latest"));
        assert!(looks_like_image("library/alpine"));
        assert!(!looks_like_image("alpine-no-such-binary"));
        assert!(!looks_like_image("/no/such/binary"));
        assert!(!looks_like_image("sh"));
        assert!(!looks_like_image("/bin/sh"));
    }
}
