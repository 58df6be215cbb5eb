//! `--filter KEY=VALUE` with Docker's semantics: values of one key are
//! OR'ed, different keys AND'ed; an unknown key is refused.
use std::collections::BTreeMap;

use anyhow::{bail, Result};

/// What a filter is matched against: one network or container.
pub struct Subject<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub labels: &'a BTreeMap<String, String>,
    /// Every other key's value(s): `driver`, `scope`, `type`,
    /// `dangling`, `status`, `network`.
    pub fields: Vec<(&'static str, String)>,
}

/// Parsed `--filter` options, by key.
#[derive(Debug, Default)]
pub struct Filters {
    by_key: BTreeMap<String, Vec<String>>,
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
