//! The documented differences, read from the README's table (between the
//! `parity-differences` markers) so the suite and the documentation cannot
//! drift: `| scenario or * | exact field | intended / open bug (item N) | reason |`.
use anyhow::{bail, Result};

pub struct Difference {
    pub scenario: String,
    pub field: String,
    pub kind: String,
    pub used: std::cell::Cell<bool>,
}

impl Difference {
    /// Whether this entry covers fact `key` of `scenario`. A fact is
    /// `step N: OBJECT.ATTRIBUTE` (OBJECT a container or network); an entry
    /// names either the whole key or the ATTRIBUTE, where `*` stands for
    /// one dot-separated segment (e.g. `inspect.*.IPAMConfig`).
    pub fn excuses(&self, scenario: &str, key: &str) -> bool {
        if self.scenario != "*" && self.scenario != scenario {
            return false;
        }
        // `*` for the whole scenario: only for intended differences, where
        // Docker 20.10 refuses what current moby (and mvnet) does.
        if self.field == key || (self.field == "*" && self.kind.starts_with("intended")) {
            return true;
        }
        let attribute = key
            .split_once(": ")
            .map_or(key, |(_, rest)| rest)
            .split_once('.')
            .map(|(_, attr)| attr);
        let Some(attribute) = attribute else {
            return false;
        };
        let pattern: Vec<&str> = self.field.split('.').collect();
        let segments: Vec<&str> = attribute.split('.').collect();
        pattern.len() == segments.len()
            && pattern
                .iter()
                .zip(&segments)
                .all(|(p, s)| *p == "*" || p == s)
    }
}

const BEGIN: &str = "<!-- parity-differences:begin -->";
const END: &str = "<!-- parity-differences:end -->";

pub fn load(readme: &str) -> Result<Vec<Difference>> {
    let (Some(b), Some(e)) = (readme.find(BEGIN), readme.find(END)) else {
        bail!("README.md has no {BEGIN} … {END} table of differences");
    };
    let mut out = Vec::new();
    for line in readme[b + BEGIN.len()..e].lines() {
        let cells: Vec<&str> = line
            .trim()
            .trim_matches('|')
            .split('|')
            .map(str::trim)
            .collect();
        if cells.len() < 4 || cells[0] == "Scenario" || cells[0].starts_with("---") {
            continue;
        }
        let strip = |c: &str| c.trim_matches('`').to_owned();
        let kind = cells[2].to_owned();
        if !(kind.starts_with("intended") || kind.starts_with("open bug")) {
            bail!("README difference {line:?}: kind must be `intended` or `open bug (item N)`");
        }
        if cells[3].is_empty() {
            bail!("README difference {line:?} gives no reason");
        }
        out.push(Difference {
            scenario: strip(cells[0]),
            field: strip(cells[1]),
            kind,
            used: Default::default(),
        });
    }
    Ok(out)
}
