//! `mvnet stats`: the snapshot as tables for people. Per network, one row
//! per endpoint (frames and bytes received from the wire, received from a
//! neighbour on the same parent, sent); per root device, one row per VLAN
//! and one per hook and verdict that counted anything. Under `--watch`
//! the numbers are per second.
use std::fmt::Write as _;

use macvlan_common::{Counter, Hook, Verdict};

use super::{json::direction, Rate, Rates, Snapshot};

/// A cell: an exact count, or a per-second rate (k, M, G from 1000 on,
/// so that `--watch` fits 100 columns).
fn cell(c: Counter, r: Option<Rate>) -> (String, String) {
    match r {
        None => (c.frames.to_string(), c.bytes.to_string()),
        Some(r) => (per_second(r.frames), per_second(r.bytes)),
    }
}

pub(super) fn per_second(v: f64) -> String {
    match v {
        v if v < 1e3 => format!("{v:.1}"),
        v if v < 1e6 => format!("{:.1}k", v / 1e3),
        v if v < 1e9 => format!("{:.1}M", v / 1e6),
        v => format!("{:.1}G", v / 1e9),
    }
}

fn row(out: &mut String, cols: &[String], widths: &[usize]) {
    let mut line = String::new();
    for (i, (c, w)) in cols.iter().zip(widths).enumerate() {
        if i + 1 == cols.len() {
            line.push_str(c);
        } else {
            let _ = write!(line, "{c:<w$}  ");
        }
    }
    let _ = writeln!(out, "  {}", line.trim_end());
}

/// Columns sized to their widest cell.
fn table(out: &mut String, header: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    row(out, &header, &widths);
    for r in &rows {
        row(out, r, &widths);
    }
}

/// The endpoints of `n` whose devices sent frames that failed the source
/// checks, if any: who is spoofing, or sending what it should not.
fn invalid_sent(out: &mut String, n: &super::NetworkStats, rates: Option<&Rates>) {
    let rows: Vec<Vec<String>> = n
        .endpoints
        .iter()
        .filter(|e| e.tx_invalid.frames != 0)
        .map(|e| {
            let r = rates.map(|r| r.endpoint(&n.name, e).tx_invalid);
            let (f, b) = cell(e.tx_invalid, r);
            vec![e.container.to_string(), e.ifname.to_string(), f, b]
        })
        .collect();
    if rows.is_empty() {
        return;
    }
    // The counts span policy changes: say what each policy did with them.
    out.push_str(
        "  sent, failed the source checks (dropped under enforce, passed under observe):\n",
    );
    let header = match rates {
        None => ["CONTAINER", "IFNAME", "INVALID-FRAMES", "INVALID-BYTES"],
        Some(_) => ["CONTAINER", "IFNAME", "INVALID-F/S", "INVALID-B/S"],
    };
    table(out, &header, rows);
}

/// The tables of `snap`; rates instead of counts when `rates` is given.
pub fn render(snap: &Snapshot, rates: Option<&Rates>) -> String {
    let mut out = String::new();
    let unit = if rates.is_some() { "/S" } else { "" };
    if snap.networks.is_empty() {
        out.push_str("no networks; create one with `mvnet network create`\n");
    }
    for n in &snap.networks {
        let _ = writeln!(
            out,
            "NETWORK {} ({}): parent {}, root {}, VLAN {}, {}",
            n.name,
            &n.id[..n.id.len().min(12)],
            n.parent,
            n.root,
            n.vlan,
            n.policy.as_str()
        );
        if n.endpoints.is_empty() {
            out.push_str("  no endpoints\n");
            continue;
        }
        // Under --watch: rates only (addresses are in the plain table),
        // short headers, to fit 100 columns.
        let header: Vec<String> = match rates {
            None => [
                "CONTAINER",
                "IFNAME",
                "MAC",
                "VLAN",
                "IPV4",
                "IPV6",
                "RX-WIRE-FRAMES",
                "RX-WIRE-BYTES",
                "RX-LOCAL-FRAMES",
                "RX-LOCAL-BYTES",
                "TX-FRAMES",
                "TX-BYTES",
            ]
            .map(String::from)
            .to_vec(),
            Some(_) => [
                "CONTAINER",
                "IFNAME",
                "WIRE-F/S",
                "WIRE-B/S",
                "LOCAL-F/S",
                "LOCAL-B/S",
                "TX-F/S",
                "TX-B/S",
            ]
            .map(String::from)
            .to_vec(),
        };
        let rows = n
            .endpoints
            .iter()
            .map(|e| {
                let r = rates.map(|r| r.endpoint(&n.name, e));
                let (wf, wb) = cell(e.counters.rx_wire, r.map(|r| r.rx_wire));
                let (lf, lb) = cell(e.counters.rx_local, r.map(|r| r.rx_local));
                let (tf, tb) = cell(e.counters.tx, r.map(|r| r.tx));
                let mut container = e.container.to_string();
                if e.slot.is_none() {
                    container.push_str(" (not in classifier)");
                }
                if r.is_some() {
                    return vec![container, e.ifname.to_string(), wf, wb, lf, lb, tf, tb];
                }
                vec![
                    container,
                    e.ifname.to_string(),
                    e.mac.to_string(),
                    n.vlan.to_string(),
                    e.ipv4.map_or("-".into(), |a| a.to_string()),
                    e.ipv6.map_or("-".into(), |a| a.to_string()),
                    wf,
                    wb,
                    lf,
                    lb,
                    tf,
                    tb,
                ]
            })
            .collect();
        let header: Vec<&str> = header.iter().map(String::as_str).collect();
        table(&mut out, &header, rows);
        invalid_sent(&mut out, n, rates);
    }
    for r in &snap.roots {
        out.push('\n');
        if !r.attached {
            let _ = writeln!(
                out,
                "ROOT {}: no classifier attached; run `mvnet restore`",
                r.root
            );
            continue;
        }
        let _ = writeln!(
            out,
            "ROOT {}: classifier attached, {} of {} endpoint slots in use",
            r.root, r.endpoints, r.capacity
        );
        if let Some(h) = r.hooks {
            let _ = writeln!(out, "  hooks: {}", h.reason(r.xdp_mode));
        }
        let h = |s: &str| format!("{s}{unit}");
        let header = match rates {
            None => [
                "VLAN",
                "RX-XDP-FRAMES",
                "RX-XDP-BYTES",
                "RX-TC-FRAMES",
                "RX-TC-BYTES",
                "TX-TC-FRAMES",
                "TX-TC-BYTES",
            ]
            .map(String::from),
            Some(_) => [
                "VLAN",
                "XDP-F/S",
                "XDP-B/S",
                "TC-F/S",
                "TC-B/S",
                "TX-TC-F/S",
                "TX-TC-B/S",
            ]
            .map(String::from),
        };
        let rows = r
            .vlans
            .iter()
            .map(|(vid, c)| {
                let v = rates.map(|rates| {
                    rates
                        .vlans
                        .get(&(r.root.clone(), *vid))
                        .copied()
                        .unwrap_or_default()
                });
                let (xf, xb) = cell(c.rx_xdp, v.map(|v| v.rx_xdp));
                let (tf, tb) = cell(c.rx_tc, v.map(|v| v.rx_tc));
                let (ef, eb) = cell(c.tx_tc, v.map(|v| v.tx_tc));
                let name = if *vid == 0 {
                    "0 (untagged)".to_owned()
                } else {
                    vid.to_string()
                };
                vec![name, xf, xb, tf, tb, ef, eb]
            })
            .collect();
        let header: Vec<&str> = header.iter().map(String::as_str).collect();
        table(&mut out, &header, rows);
        let mut rows = Vec::new();
        for hook in Hook::ALL {
            for verdict in Verdict::ALL {
                let c = r.verdicts.get(hook, verdict);
                // Rows that never counted anything are left out.
                if c.frames == 0 {
                    continue;
                }
                let rate = rates.map(|rates| {
                    rates
                        .verdicts
                        .get(&(r.root.clone(), hook, verdict))
                        .copied()
                        .unwrap_or_default()
                });
                let (f, b) = cell(c, rate);
                rows.push(vec![
                    hook.name().to_owned(),
                    direction(hook).to_owned(),
                    verdict.name().to_owned(),
                    f,
                    b,
                ]);
            }
        }
        if rows.is_empty() {
            out.push_str("  no frames classified yet\n");
        } else {
            let (f, b) = (h("FRAMES"), h("BYTES"));
            table(&mut out, &["HOOK", "DIR", "VERDICT", &f, &b], rows);
        }
    }
    out
}
