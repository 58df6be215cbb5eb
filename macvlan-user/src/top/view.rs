//! Drawing a [`View`]: ratatui widgets for a terminal (fitting 80×24 by
//! narrowing and hiding columns, never wrapping), and plain text for a dumb
//! terminal or a pipe.
use std::{fmt::Write as _, time::SystemTime};

use ratatui::{
    layout::{Constraint, Layout, Rect},
    style::{Modifier, Style, Stylize as _},
    text::{Line, Span},
    widgets::{Block, Borders, Cell, Paragraph, Row, Table},
    Frame,
};

use super::model::{compact, sparkline, EndpointRow, VerdictRow, View};

/// The verdict section: title, column header, one row per verdict.
const VERDICT_HEIGHT: u16 = 2 + 7;
/// VLAN rows shown at most before the endpoints get the rest.
const VLAN_ROWS: usize = 4;
/// Short names of the hooks, in [`Hook::ALL`] order, for column titles.
const HOOK_COLUMNS: [&str; 3] = ["XDP", "TC_IN", "TC_EG"];
/// Columns of the trend sparkline below which it is hidden.
const MIN_TREND: u16 = 4;

/// Draws the whole screen.
pub fn draw(frame: &mut Frame, view: &View) {
    let vlan_height = 2 + view.vlans.len().clamp(1, VLAN_ROWS) as u16;
    let [header, endpoints, vlans, verdicts] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(vlan_height),
        Constraint::Length(VERDICT_HEIGHT),
    ])
    .areas(frame.area());
    frame.render_widget(Paragraph::new(header_line(view)), header);
    draw_endpoints(frame, endpoints, view);
    draw_vlans(frame, vlans, view);
    draw_verdicts(frame, verdicts, view);
}

fn header_line(view: &View) -> Line<'static> {
    let h = &view.header;
    let mut spans = vec![
        Span::from("mvnet top").bold(),
        Span::from(format!("  {}", clock(h.taken))),
        Span::from(format!("  attached {}/{} roots", h.attached, h.roots)),
    ];
    if let Some((root, used, cap)) = &h.fullest {
        spans.push(Span::from(format!("  table {root} {used}/{cap}")));
    }
    spans.push(Span::from(format!("  every {}", secs(h.interval))));
    Line::from(spans)
}

fn section(title: Line<'static>) -> Block<'static> {
    Block::new().borders(Borders::TOP).title(title)
}

/// A bold column header: the first `text` titles left-aligned, the rest
/// (numbers) right-aligned over their values.
fn head(cells: &[&'static str], text: usize) -> Row<'static> {
    Row::new(cells.iter().enumerate().map(|(i, c)| {
        let line = Line::from(*c);
        Cell::from(if i < text { line } else { line.right_aligned() })
    }))
    .style(Style::new().add_modifier(Modifier::BOLD))
}

/// Endpoint column widths for `width` columns: (network, container, trend,
/// totals shown).
fn endpoint_widths(view: &View, width: u16) -> (u16, u16, u16, bool) {
    let longest = |f: fn(&EndpointRow) -> usize| view.endpoints.iter().map(f).max().unwrap_or(0);
    // Whole names where the terminal has room (up to 32 and 40).
    let mut net = (longest(|r| r.network.chars().count()) as u16).clamp(7, 32);
    let mut cont = (longest(|r| r.container.chars().count()) as u16).clamp(9, 40);
    // MAC, VLAN, four rates, and a space between the nine columns.
    let fixed = 17 + 4 + 4 * 6 + 8;
    let mut rest = width as i32 - (net + cont + fixed) as i32;
    // Shrink names before giving up the trend, then the trend.
    while rest < MIN_TREND as i32 && (cont > 9 || net > 7) {
        if cont > 9 {
            cont -= 1;
        } else {
            net -= 1;
        }
        rest += 1;
    }
    // Totals (two columns of 7 and their spaces) only when the trend keeps 12.
    let totals = rest >= 12 + 16;
    if totals {
        rest -= 16;
    }
    let trend = if rest >= MIN_TREND as i32 {
        rest as u16 - 1
    } else {
        0
    };
    (net, cont, trend, totals)
}

/// The endpoint columns both views show, before their totals.
const ENDPOINT_HEADS: [&str; 8] = [
    "NETWORK",
    "CONTAINER",
    "MAC",
    "VLAN",
    "RX/S",
    "LOC/S",
    "TX/S",
    "INV/S",
];

fn rate_cell(r: &EndpointRow, f: impl Fn(&crate::stats::EndpointRates) -> f64) -> String {
    match (&r.rates, r.in_classifier) {
        (_, false) => "n/a".into(),
        (None, true) => "-".into(),
        (Some(rates), true) => compact(f(rates)),
    }
}

/// Invalid frames per second sent by the endpoint's device, red once it
/// has sent any (the rate may be 0 now: the total is what marks it).
fn invalid_cell(r: &EndpointRow) -> Cell<'static> {
    let cell = Cell::from(format!("{:>6}", rate_cell(r, |x| x.tx_invalid.frames)));
    if r.tx_invalid.frames > 0 {
        cell.red().bold()
    } else {
        cell
    }
}

fn draw_endpoints(frame: &mut Frame, area: Rect, view: &View) {
    let (w_net, w_cont, w_trend, totals) = endpoint_widths(view, area.width);
    let visible = area.height.saturating_sub(2) as usize;
    let arrow = if view.sort.descending() != view.reverse {
        "▼"
    } else {
        "▲"
    };
    let mut title = vec![Span::from(format!(" endpoints {} ", view.endpoints.len())).bold()];
    if view.endpoints.len() > visible {
        title.push(Span::from(format!(
            "({} hidden) ",
            view.endpoints.len() - visible
        )));
    }
    title.push(Span::from(format!(
        "· {} {arrow} · {} ",
        view.sort.name(),
        view.network.as_deref().unwrap_or("all")
    )));
    let keys = Line::from(" s/←→ sort  r rev  n net  q quit ").right_aligned();

    let mut header = ENDPOINT_HEADS.to_vec();
    let mut widths = vec![
        Constraint::Length(w_net),
        Constraint::Length(w_cont),
        Constraint::Length(17),
        Constraint::Length(4),
        Constraint::Length(6),
        Constraint::Length(6),
        Constraint::Length(6),
        Constraint::Length(6),
    ];
    if totals {
        header.extend(["RX", "TX"]);
        widths.extend([Constraint::Length(7), Constraint::Length(7)]);
    }
    if w_trend > 0 {
        header.push("TREND");
        widths.push(Constraint::Length(w_trend));
    }
    let rows = view.endpoints.iter().map(|r| {
        let mut cells = vec![
            Cell::from(r.network.clone()),
            Cell::from(r.container.clone()),
            Cell::from(r.mac.to_string()),
            Cell::from(format!("{:>4}", r.vlan)),
            Cell::from(format!("{:>6}", rate_cell(r, |x| x.rx_wire.frames))),
            Cell::from(format!("{:>6}", rate_cell(r, |x| x.rx_local.frames))),
            Cell::from(format!("{:>6}", rate_cell(r, |x| x.tx.frames))),
            invalid_cell(r),
        ];
        if totals {
            let rx = r.totals.rx_wire.frames + r.totals.rx_local.frames;
            cells.push(Cell::from(format!("{:>7}", compact(rx as f64))));
            cells.push(Cell::from(format!(
                "{:>7}",
                compact(r.totals.tx.frames as f64)
            )));
        }
        if w_trend > 0 {
            cells.push(Cell::from(sparkline(&r.history, w_trend as usize)).cyan());
        }
        Row::new(cells)
    });
    let header = head(&header, 3);
    let table = Table::new(rows, widths)
        .header(header)
        .column_spacing(1)
        .block(section(Line::from(title)).title(keys));
    frame.render_widget(table, area);
}

fn draw_vlans(frame: &mut Frame, area: Rect, view: &View) {
    let rate = |r: Option<f64>| r.map(compact).unwrap_or_else(|| "-".into());
    let rows = view.vlans.iter().map(|v| {
        let r = v.rates;
        Row::new([
            v.root.clone(),
            format!("{:>4}", v.vlan),
            format!("{:>7}", rate(r.map(|r| r.rx_xdp.frames))),
            format!("{:>7}", rate(r.map(|r| r.rx_tc.frames))),
            format!("{:>7}", rate(r.map(|r| r.tx_tc.frames))),
            format!("{:>7}", compact(v.totals.rx_xdp.frames as f64)),
            format!("{:>7}", compact(v.totals.rx_tc.frames as f64)),
            format!("{:>7}", compact(v.totals.tx_tc.frames as f64)),
        ])
    });
    let mut title = vec![Span::from(format!(" VLANs {} ", view.vlans.len())).bold()];
    if view.vlans.len() > VLAN_ROWS {
        title.push(Span::from(format!(
            "· +{} below ",
            view.vlans.len() - VLAN_ROWS
        )));
    }
    let table = Table::new(rows, columns(&[10, 4], 6))
        .header(head(
            &[
                "ROOT", "VLAN", "XDP/S", "TC_IN/S", "TC_EG/S", "XDP", "TC_IN", "TC_EG",
            ],
            1,
        ))
        .column_spacing(1)
        .block(section(Line::from(title)));
    frame.render_widget(table, area);
}

/// Column widths: the `lead` columns as given, then `counters` columns of
/// 7 (a rate or a total as `compact` writes it).
fn columns(lead: &[u16], counters: usize) -> Vec<Constraint> {
    lead.iter()
        .copied()
        .chain(std::iter::repeat_n(7, counters))
        .map(Constraint::Length)
        .collect()
}

fn verdict_cells(row: &VerdictRow) -> Vec<String> {
    let mut cells = vec![row.verdict.name().to_owned()];
    for (rate, total) in &row.hooks {
        cells.push(format!(
            "{:>7}",
            rate.map(compact).unwrap_or_else(|| "-".into())
        ));
        cells.push(format!("{:>7}", compact(*total as f64)));
    }
    cells
}

fn draw_verdicts(frame: &mut Frame, area: Rect, view: &View) {
    let alarm = Style::new().red().add_modifier(Modifier::BOLD);
    let rows = view.verdicts.iter().map(|v| {
        let row = Row::new(verdict_cells(v));
        if v.alarm() {
            row.style(alarm)
        } else {
            row
        }
    });
    let mut title = vec![Span::from(" verdicts (frames) ").bold()];
    if view.alarm() {
        title.push(Span::styled(" INVALID TRAFFIC ", alarm.reversed()));
    }
    let table = Table::new(rows, columns(&[13], 6))
        .header(head(
            &[
                "VERDICT",
                "XDP/S",
                HOOK_COLUMNS[0],
                "TC_IN/S",
                HOOK_COLUMNS[1],
                "TC_EG/S",
                HOOK_COLUMNS[2],
            ],
            1,
        ))
        .column_spacing(1)
        .block(section(Line::from(title)));
    frame.render_widget(table, area);
}

/// The same rows as plain text, for a dumb terminal or a pipe: no escape
/// codes, no truncation, exact totals, one block per refresh.
pub fn plain(view: &View) -> String {
    let h = &view.header;
    let mut s = String::new();
    let _ = write!(
        s,
        "mvnet top {}  attached {}/{} roots",
        clock(h.taken),
        h.attached,
        h.roots
    );
    if let Some((root, used, cap)) = &h.fullest {
        let _ = write!(s, "  table {root} {used}/{cap}");
    }
    let _ = writeln!(
        s,
        "  every {}  sort {}{}  network {}",
        secs(h.interval),
        view.sort.name(),
        if view.reverse { " (reversed)" } else { "" },
        view.network.as_deref().unwrap_or("all")
    );
    let w_net = col_width("NETWORK", view.endpoints.iter().map(|r| &r.network));
    let w_cont = col_width("CONTAINER", view.endpoints.iter().map(|r| &r.container));
    let [net, cont, mac, vlan, rx, local, tx, inv] = ENDPOINT_HEADS;
    let _ = writeln!(
        s,
        "{net:<w_net$} {cont:<w_cont$} {mac:<17} {vlan:>4} {rx:>6} {local:>6} {tx:>6} {inv:>6} {:>8} {:>8} {:>8} {:>8}",
        "RX", "LOCAL", "TX", "INVALID"
    );
    for r in &view.endpoints {
        let _ = writeln!(
            s,
            "{:<w_net$} {:<w_cont$} {:<17} {:>4} {:>6} {:>6} {:>6} {:>6} {:>8} {:>8} {:>8} {:>8}",
            r.network,
            r.container,
            r.mac.to_string(),
            r.vlan,
            rate_cell(r, |x| x.rx_wire.frames),
            rate_cell(r, |x| x.rx_local.frames),
            rate_cell(r, |x| x.tx.frames),
            rate_cell(r, |x| x.tx_invalid.frames),
            r.totals.rx_wire.frames,
            r.totals.rx_local.frames,
            r.totals.tx.frames,
            r.tx_invalid.frames,
        );
    }
    let rate = |r: Option<f64>| r.map(compact).unwrap_or_else(|| "-".into());
    let w_root = col_width("ROOT", view.vlans.iter().map(|v| &v.root));
    let _ = writeln!(
        s,
        "\n{:<w_root$} {:>4} {:>7} {:>7} {:>7} {:>10} {:>10} {:>10}",
        "ROOT", "VLAN", "XDP/S", "TC_IN/S", "TC_EG/S", "XDP", "TC_IN", "TC_EG"
    );
    for v in &view.vlans {
        let r = v.rates;
        let _ = writeln!(
            s,
            "{:<w_root$} {:>4} {:>7} {:>7} {:>7} {:>10} {:>10} {:>10}",
            v.root,
            v.vlan,
            rate(r.map(|r| r.rx_xdp.frames)),
            rate(r.map(|r| r.rx_tc.frames)),
            rate(r.map(|r| r.tx_tc.frames)),
            v.totals.rx_xdp.frames,
            v.totals.rx_tc.frames,
            v.totals.tx_tc.frames,
        );
    }
    let _ = write!(s, "\n{:<13}", "VERDICT");
    for hook in HOOK_COLUMNS {
        let _ = write!(s, " {:>7} {:>10}", format!("{hook}/S"), hook);
    }
    s.push('\n');
    for v in &view.verdicts {
        let _ = write!(s, "{:<13}", v.verdict.name());
        for (r, total) in &v.hooks {
            let _ = write!(s, " {:>7} {:>10}", rate(*r), total);
        }
        s.push_str(if v.alarm() { "  INVALID\n" } else { "\n" });
    }
    s.push('\n');
    s
}

fn col_width<'a>(title: &str, values: impl Iterator<Item = &'a String>) -> usize {
    values
        .map(|v| v.chars().count())
        .max()
        .unwrap_or(0)
        .max(title.len())
}

fn secs(d: std::time::Duration) -> String {
    format!("{}s", d.as_secs_f64())
}

/// Local wall-clock time, HH:MM:SS.
fn clock(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as libc::time_t)
        .unwrap_or(0);
    match crate::sys::term::local_hms(secs) {
        Some((h, m, s)) => format!("{h:02}:{m:02}:{s:02}"),
        None => "--:--:--".into(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use macvlan_common::{Counter, Hook, Verdict};
    use ratatui::{backend::TestBackend, Terminal};

    use super::*;
    use crate::{
        datapath::VerdictTable,
        stats::Snapshot,
        top::{
            fixtures::{self, endpoint, network},
            model::Model,
        },
    };

    fn snapshot() -> Snapshot {
        let mut verdicts = VerdictTable::default();
        verdicts.set(
            Hook::XdpIngress,
            Verdict::UnknownMac,
            Counter {
                frames: 23,
                bytes: 1380,
            },
        );
        let endpoints = (1..=12)
            .map(|i| {
                let mac = [2, 0x42, 0x0a, 0x5b, 0, i];
                endpoint(&format!("mvl-123456-0-c{i:02}"), mac, 10 * i as u64)
            })
            .collect();
        fixtures::snapshot(&[0], verdicts, vec![network("na", 0, endpoints)])
    }

    #[test]
    fn screen_fits_80_by_24_without_wrapping() {
        let snap = snapshot();
        let view = Model::new(Duration::from_secs(1), 60).view(&snap, None);
        let mut term = Terminal::new(TestBackend::new(80, 24)).unwrap();
        term.draw(|f| draw(f, &view)).unwrap();
        let buf = term.backend().buffer().clone();
        let lines: Vec<String> = (0..24)
            .map(|y| (0..80).map(|x| buf[(x, y)].symbol()).collect::<String>())
            .collect();
        let screen = lines.join("\n");
        // Whole names and MACs, one row each.
        assert!(
            lines
                .iter()
                .any(|l| l.contains("mvl-123456-0-c01") && l.contains("02:42:0a:5b:00:01")),
            "{screen}"
        );
        assert!(
            screen.contains("(3 hidden)"),
            "overflow is announced: {screen}"
        );
        assert!(screen.contains("unknown_mac"), "{screen}");
        assert!(screen.contains("INVALID TRAFFIC"), "{screen}");
        assert!(screen.contains("spoofed"), "all verdicts fit: {screen}");
        // The unknown_mac row is red and bold.
        let y = lines
            .iter()
            .position(|l| l.contains("unknown_mac"))
            .unwrap() as u16;
        let cell = &buf[(0, y)];
        assert_eq!(cell.fg, ratatui::style::Color::Red);
        assert!(cell.modifier.contains(Modifier::BOLD));
        let y = lines
            .iter()
            .position(|l| l.starts_with("broadcast"))
            .unwrap() as u16;
        assert_ne!(buf[(0, y)].fg, ratatui::style::Color::Red);
    }

    #[test]
    fn an_endpoint_that_sent_invalid_frames_is_marked_and_sorts_first() {
        let mut eps: Vec<_> = (1..=3)
            .map(|i| endpoint(&format!("c{i}"), [2, 0x42, 10, 0, 0, i], 10))
            .collect();
        eps[1].tx_invalid = Counter {
            frames: 7,
            bytes: 420,
        };
        let snap = fixtures::snapshot(&[0], VerdictTable::default(), vec![network("na", 0, eps)]);
        let mut model = Model::new(Duration::from_secs(1), 60);
        while model.sort.name() != "invalid/s" {
            model.next_sort();
        }
        let view = model.view(&snap, None);
        let order: Vec<&str> = view
            .endpoints
            .iter()
            .map(|r| r.container.as_str())
            .collect();
        assert_eq!(order, ["c2", "c1", "c3"]);
        let text = plain(&view);
        let row = |name: &str| {
            text.lines()
                .find(|l| l.split_whitespace().nth(1) == Some(name))
                .unwrap()
                .split_whitespace()
                .collect::<Vec<_>>()
        };
        // ... TX/S INV/S RX LOCAL TX INVALID
        assert_eq!(row("c2")[7..], ["-", "10", "0", "0", "7"], "{text}");
        assert_eq!(row("c1")[7..], ["-", "10", "0", "0", "0"], "{text}");
        let mut term = Terminal::new(TestBackend::new(100, 24)).unwrap();
        term.draw(|f| draw(f, &view)).unwrap();
        let buf = term.backend().buffer().clone();
        let lines: Vec<String> = (0..24)
            .map(|y| (0..100).map(|x| buf[(x, y)].symbol()).collect::<String>())
            .collect();
        let head = lines.iter().position(|l| l.contains("INV/S")).unwrap();
        let x = lines[head].find("INV/S").unwrap() as u16 + 4;
        let y = |name: &str| {
            let row = |l: &String| l.split_whitespace().any(|w| w == name);
            lines
                .iter()
                .position(row)
                .unwrap_or_else(|| panic!("no {name}:\n{}", lines.join("\n"))) as u16
        };
        assert_eq!(buf[(x, y("c2"))].fg, ratatui::style::Color::Red);
        assert!(buf[(x, y("c2"))].modifier.contains(Modifier::BOLD));
        assert_ne!(buf[(x, y("c1"))].fg, ratatui::style::Color::Red);
    }

    #[test]
    fn long_network_names_are_whole_at_120_columns() {
        let name = "a-network-name-of-28-letters";
        let eps = vec![endpoint("mvl-123456-0-c01", [2, 0x42, 10, 0, 0, 1], 5)];
        let snap = fixtures::snapshot(&[0], VerdictTable::default(), vec![network(name, 0, eps)]);
        let view = Model::new(Duration::from_secs(1), 60).view(&snap, None);
        let (net, cont, trend, _) = endpoint_widths(&view, 120);
        assert_eq!((net, cont), (28, 16));
        assert!(trend >= MIN_TREND, "{trend}");
        let mut term = Terminal::new(TestBackend::new(120, 24)).unwrap();
        term.draw(|f| draw(f, &view)).unwrap();
        let buf = term.backend().buffer().clone();
        let screen: String = (0..24)
            .map(|y| (0..120).map(|x| buf[(x, y)].symbol()).collect::<String>() + "\n")
            .collect();
        assert!(screen.contains(name), "{screen}");
    }

    #[test]
    fn plain_text_has_every_row_and_no_escape_codes() {
        let snap = snapshot();
        let text = plain(&Model::new(Duration::from_secs(1), 60).view(&snap, None));
        assert!(!text.contains('\x1b'), "{text}");
        for i in 1..=12 {
            assert!(text.contains(&format!("mvl-123456-0-c{i:02}")), "{text}");
        }
        let row = text.lines().find(|l| l.contains("c03")).unwrap();
        assert!(row.contains("02:42:0a:5b:00:03"), "{row}");
        assert!(row.ends_with(" 30        0        0        0"), "{row}");
        assert!(
            text.lines()
                .any(|l| l.starts_with("unknown_mac") && l.ends_with("INVALID")),
            "{text}"
        );
    }
}
