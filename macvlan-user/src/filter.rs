//! `--filter KEY=VALUE` with Docker's semantics: values of one key are
//! OR'ed, different keys AND'ed; an unknown key is refused.
use std::collections::BTreeMap;

use anyhow::{bail, Result};

/// What a filter is matched against: one network or container.
pub struct Subject<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub labels: &'a BTreeMap<String, String>,
    /// RFC 3339 as mvnet writes it (fixed width, UTC, nanoseconds).
    pub created: &'a str,
    /// Every other key's value(s): `driver`, `scope`, `type`,
    /// `dangling`, `status`, `network`.
    pub fields: Vec<(&'static str, String)>,
}

/// Parsed `--filter` options, by key.
#[derive(Debug, Default)]
pub struct Filters {
    by_key: BTreeMap<String, Vec<String>>,
}

/// `until=`'s value as the cutoff in mvnet's `created` format: a Go
/// duration before `now` (`10m`, `1h30m`, `90s`), Unix seconds, or an
/// RFC 3339 UTC time (`2026-12-01T10:00:00Z`) or date (`2026-12-01`).
pub fn until_cutoff(v: &str, now: std::time::SystemTime) -> Result<String> {
    let bad = || {
        anyhow::anyhow!(
            "invalid filter 'until={v}': give a duration (10m, 1h30m), Unix seconds, \
             or a UTC time such as 2026-12-01T10:00:00Z"
        )
    };
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        let secs: u64 = v.parse().map_err(|_| bad())?;
        return Ok(crate::model::rfc3339(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs),
        ));
    }
    if let Some(d) = go_duration(v) {
        return Ok(crate::model::rfc3339(now.checked_sub(d).ok_or_else(bad)?));
    }
    // YYYY-MM-DD[THH:MM:SS[.frac]Z]: normalized to the fixed width.
    let b = v.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    let date_ok = b.len() >= 10
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10);
    if date_ok && b.len() == 10 {
        return Ok(format!("{v}T00:00:00.000000000Z"));
    }
    let time_ok = b.len() >= 20
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19);
    if date_ok && time_ok && v.ends_with('Z') {
        let frac = &v[19..v.len() - 1];
        let frac = match frac.strip_prefix('.') {
            None if frac.is_empty() => "",
            Some(f) if !f.is_empty() && f.len() <= 9 && f.bytes().all(|d| d.is_ascii_digit()) => f,
            _ => return Err(bad()),
        };
        return Ok(format!("{}.{frac:0<9}Z", &v[..19]));
    }
    Err(bad())
}

/// Go's `time.ParseDuration` for h, m, s and ms (e.g. `1h30m`, `2.5s`).
fn go_duration(v: &str) -> Option<std::time::Duration> {
    let mut rest = v;
    let mut total = 0f64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let n = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let num: f64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let (unit, secs) = [("ms", 0.001), ("h", 3600.0), ("m", 60.0), ("s", 1.0)]
            .into_iter()
            .find(|(u, _)| rest.starts_with(u))?;
        total += num * secs;
        rest = &rest[unit.len()..];
    }
    Some(std::time::Duration::from_secs_f64(total))
}

impl Filters {
    /// Parses `--filter` values; `valid` names the keys this command takes
    /// (`what` names the command in the error).
    pub fn parse(args: &[String], valid: &[&str], what: &str) -> Result<Filters> {
        let mut by_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for a in args {
            let Some((k, v)) = a.split_once('=') else {
                bail!("bad format of filter {a:?} (expected name=value), e.g. --filter name=lan");
            };
            let k = k.trim().to_lowercase();
            if !valid.contains(&k.as_str()) {
                bail!(
                    "invalid filter '{k}'; valid filters for {what}: {}",
                    valid.join(", ")
                );
            }
            by_key.entry(k).or_default().push(v.to_owned());
        }
        let f = Filters { by_key };
        for v in f.values("dangling") {
            if !matches!(v.to_lowercase().as_str(), "true" | "false" | "1" | "0") {
                bail!("invalid filter 'dangling={v}': give dangling=true or dangling=false");
            }
        }
        for v in f.values("type") {
            if v != "custom" && v != "builtin" {
                bail!("invalid filter: 'type'='{v}': give type=custom or type=builtin");
            }
        }
        for v in f.values("until") {
            until_cutoff(v, std::time::SystemTime::now())?;
        }
        for v in f.values("status") {
            if v != "running" && v != "exited" && v != "created" {
                bail!("invalid filter 'status={v}': mvnet containers are running or exited");
            }
        }
        Ok(f)
    }

    fn values(&self, key: &str) -> &[String] {
        self.by_key.get(key).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Whether `s` passes every key (AND) through one of its values (OR).
    pub fn matches(&self, s: &Subject) -> bool {
        self.by_key.iter().all(|(key, values)| {
            values.iter().any(|v| match key.as_str() {
                "id" => s.id.starts_with(v.as_str()),
                "name" => s.name.contains(v.as_str()),
                "until" => until_cutoff(v, std::time::SystemTime::now())
                    .is_ok_and(|cutoff| s.created < cutoff.as_str()),
                "label" => match v.split_once('=') {
                    Some((k, want)) => s.labels.get(k).is_some_and(|have| have == want),
                    None => s.labels.contains_key(v.as_str()),
                },
                "dangling" => {
                    let want = matches!(v.to_lowercase().as_str(), "true" | "1");
                    s.fields
                        .iter()
                        .any(|(k, have)| *k == "dangling" && (have == "true") == want)
                }
                _ => s.fields.iter().any(|(k, have)| k == key && have == v),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NET_KEYS: &[&str] = &["dangling", "driver", "id", "label", "name", "scope", "type"];

    fn f(args: &[&str]) -> Filters {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        Filters::parse(&args, NET_KEYS, "network ls").unwrap()
    }

    fn subject<'a>(
        name: &'a str,
        labels: &'a BTreeMap<String, String>,
        dangling: bool,
    ) -> Subject<'a> {
        Subject {
            id: "abcdef0123456789",
            name,
            labels,
            created: "2026-12-01T10:00:00.500000000Z",
            fields: vec![
                ("driver", "macvlan".into()),
                ("scope", "local".into()),
                ("type", "custom".into()),
                ("dangling", dangling.to_string()),
            ],
        }
    }

    #[test]
    fn same_key_ors_different_keys_and() {
        let labels: BTreeMap<String, String> = [("env".into(), "prod".into())].into();
        let s = subject("lan-one", &labels, true);
        assert!(f(&["name=one", "name=zzz"]).matches(&s));
        assert!(!f(&["name=one", "driver=bridge"]).matches(&s));
        assert!(f(&["name=lan", "driver=macvlan", "scope=local", "type=custom"]).matches(&s));
        assert!(f(&["id=abc"]).matches(&s));
        assert!(!f(&["id=bcd"]).matches(&s));
        assert!(f(&["label=env"]).matches(&s));
        assert!(f(&["label=env=prod"]).matches(&s));
        assert!(!f(&["label=env=dev"]).matches(&s));
        assert!(f(&["dangling=true"]).matches(&s));
        assert!(!f(&["dangling=false"]).matches(&s));
        assert!(!f(&["type=builtin"]).matches(&s));
        assert!(f(&[]).matches(&s));
    }

    #[test]
    fn until_takes_durations_unix_seconds_and_utc_times() {
        let now = std::time::UNIX_EPOCH + std::time::Duration::from_secs(3600);
        assert_eq!(
            until_cutoff("10m", now).unwrap(),
            "1970-01-01T00:50:00.000000000Z"
        );
        assert_eq!(
            until_cutoff("1h", now).unwrap(),
            "1970-01-01T00:00:00.000000000Z"
        );
        assert_eq!(
            until_cutoff("1m30s", now).unwrap(),
            "1970-01-01T00:58:30.000000000Z"
        );
        assert_eq!(
            until_cutoff("60", now).unwrap(),
            "1970-01-01T00:01:00.000000000Z"
        );
        assert_eq!(
            until_cutoff("2026-12-01", now).unwrap(),
            "2026-12-01T00:00:00.000000000Z"
        );
        assert_eq!(
            until_cutoff("2026-12-01T10:00:01Z", now).unwrap(),
            "2026-12-01T10:00:01.000000000Z"
        );
        assert_eq!(
            until_cutoff("2026-12-01T10:00:00.5Z", now).unwrap(),
            "2026-12-01T10:00:00.500000000Z"
        );
        for bad in [
            "",
            "soon",
            "2h5",
            "2026-12-01T10:00:00",
            "2026-12-01T10:00:00.Z",
        ] {
            assert!(until_cutoff(bad, now).is_err(), "{bad}");
        }
        let keys = &["label", "until"];
        let parse =
            |v: &str| Filters::parse(&[format!("until={v}")], keys, "network prune").unwrap();
        let labels = BTreeMap::new();
        let s = subject("n", &labels, true);
        assert!(parse("2026-12-01T10:00:01Z").matches(&s));
        assert!(!parse("2026-12-01T10:00:00.5Z").matches(&s));
        assert!(!parse("2026-12-01T10:00:00Z").matches(&s));
        let e = Filters::parse(&["until=soon".into()], keys, "network prune").unwrap_err();
        assert!(
            e.to_string().starts_with("invalid filter 'until=soon'"),
            "{e}"
        );
    }

    #[test]
    fn unknown_key_and_bad_values_are_refused() {
        let e = Filters::parse(&["x=1".into()], NET_KEYS, "network ls").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid filter 'x'; valid filters for network ls: dangling, driver, id, label, name, scope, type"
        );
        let e = Filters::parse(&["name".into()], NET_KEYS, "network ls").unwrap_err();
        assert!(e.to_string().starts_with("bad format of filter \"name\""));
        let e = Filters::parse(&["dangling=maybe".into()], NET_KEYS, "network ls").unwrap_err();
        assert!(e.to_string().starts_with("invalid filter 'dangling=maybe'"));
    }
}
