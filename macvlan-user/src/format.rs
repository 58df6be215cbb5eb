//! `--format`: Docker's Go templates (through `gtmpl`), its template
//! functions (`json`, `join`, `upper`, `lower`, `title`, `split`, plus the
//! Go builtins `println`, `index`, `len`, `range`), the `table` directive
//! with Docker's column headers, and Go's `tabwriter` alignment.
use std::collections::HashMap;

use anyhow::{anyhow, Result};
use gtmpl::{Context, Func, FuncError, Template, Value};
use serde_json::Value as Json;

/// The `table` directive's tabwriter settings, as docker/cli's
/// `formatter.Context` sets them: minimum cell width 10, padding 3.
const MIN_WIDTH: usize = 10;
const PADDING: usize = 3;

/// A parsed `--format` value.
pub struct Format {
    template: Template,
    /// `table …`: print a header and align the tab-separated columns.
    table: bool,
    source: String,
}

/// Docker's template functions beyond Go's builtins (docker/cli
/// `templates.basicFunctions`).
fn docker_funcs() -> Vec<(&'static str, Func)> {
    vec![
        ("json", json as Func),
        ("join", join as Func),
        ("upper", upper as Func),
        ("lower", lower as Func),
        ("title", title as Func),
        ("split", split as Func),
        ("pad", pad as Func),
        ("truncate", truncate as Func),
    ]
}

impl Format {
    /// Parses `--format`; `table` alone or `table TEMPLATE` turns on the
    /// header and alignment (`table` alone uses `default_table`).
    pub fn parse(spec: &str, default_table: &str) -> Result<Format> {
        let (table, body) = match spec.strip_prefix("table") {
            Some("") => (true, default_table.to_owned()),
            Some(rest) if rest.starts_with(char::is_whitespace) => {
                (true, rest.trim_start().to_owned())
            }
            _ => (false, spec.to_owned()),
        };
        // Docker reads the escapes \t and \n written in a shell argument.
        let body = body.replace("\\t", "\t").replace("\\n", "\n");
        let mut template = Template::default();
        template.add_funcs(&docker_funcs());
        template.parse(body.as_str()).map_err(|e| {
            anyhow!("template parsing error in --format {spec:?}: {e}; see https://docs.docker.com/config/formatting/")
        })?;
        Ok(Format {
            template,
            table,
            source: spec.to_owned(),
        })
    }

    fn render(&self, v: &Value) -> Result<String> {
        self.template
            .render(&Context::from(v.clone()))
            .map_err(|e| anyhow!("executing --format {:?}: {e}", self.source))
    }

    /// Renders one line per item (a newline is added, as Docker does);
    /// with `table`, a header first (each field's name from `headers`,
    /// others upper-cased) and the columns aligned.
    pub fn render_all(&self, items: &[Json], headers: &[(&str, &str)]) -> Result<String> {
        let mut out = String::new();
        if self.table {
            let header: HashMap<String, Value> = headers
                .iter()
                .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
                .collect();
            out.push_str(&self.render(&Value::Map(header))?);
            out.push('\n');
        }
        for item in items {
            out.push_str(&self.render(&to_gtmpl(item))?);
            out.push('\n');
        }
        Ok(if self.table { tabwrite(&out) } else { out })
    }
}

/// JSON into a template value. Objects become maps, so a missing key
/// prints `<no value>` as a Go map's does.
pub fn to_gtmpl(v: &Json) -> Value {
    match v {
        Json::Null => Value::Nil,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => Value::from(u),
            (_, Some(i), _) => Value::from(i),
            (_, _, Some(f)) => Value::from(f),
            _ => Value::Nil,
        },
        Json::String(s) => Value::String(s.clone()),
        Json::Array(a) => Value::Array(a.iter().map(to_gtmpl).collect()),
        Json::Object(o) => Value::Map(o.iter().map(|(k, v)| (k.clone(), to_gtmpl(v))).collect()),
    }
}

/// A template value back into JSON (for `json`). Keys come out sorted.
fn to_json(v: &Value) -> Json {
    match v {
        Value::NoValue | Value::Nil | Value::Function(_) => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::String(s) => Json::String(s.clone()),
        Value::Number(n) => {
            let text = n.to_string();
            serde_json::from_str(&text).unwrap_or(Json::String(text))
        }
        Value::Array(a) => Json::Array(a.iter().map(to_json).collect()),
        Value::Object(o) | Value::Map(o) => {
            Json::Object(o.iter().map(|(k, v)| (k.clone(), to_json(v))).collect())
        }
    }
}

fn arg<'a>(name: &str, args: &'a [Value], n: usize) -> Result<&'a [Value], FuncError> {
    if args.len() != n {
        return Err(FuncError::ExactlyXArgs(name.into(), n));
    }
    Ok(args)
}

fn string(name: &str, v: &Value) -> Result<String, FuncError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(_) | Value::Bool(_) => Ok(v.to_string()),
        _ => Err(FuncError::Generic(format!(
            "{name}: the argument is not a string"
        ))),
    }
}

fn json(args: &[Value]) -> Result<Value, FuncError> {
    let a = arg("json", args, 1)?;
    Ok(Value::String(to_json(&a[0]).to_string()))
}

fn join(args: &[Value]) -> Result<Value, FuncError> {
    let a = arg("join", args, 2)?;
    let sep = string("join", &a[1])?;
    let Value::Array(items) = &a[0] else {
        return Err(FuncError::Generic(
            "join: the first argument is not a list".into(),
        ));
    };
    let parts: Result<Vec<String>, FuncError> = items.iter().map(|v| string("join", v)).collect();
    Ok(Value::String(parts?.join(&sep)))
}

fn upper(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::String(
        string("upper", &arg("upper", args, 1)?[0])?.to_uppercase(),
    ))
}

fn lower(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::String(
        string("lower", &arg("lower", args, 1)?[0])?.to_lowercase(),
    ))
}

/// Go's `strings.Title`: the first letter of each word upper-cased.
fn title(args: &[Value]) -> Result<Value, FuncError> {
    let s = string("title", &arg("title", args, 1)?[0])?;
    let mut out = String::with_capacity(s.len());
    let mut start = true;
    for c in s.chars() {
        if start {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        start = !c.is_alphanumeric() && c != '_' && c != '\'';
    }
    Ok(Value::String(out))
}

fn split(args: &[Value]) -> Result<Value, FuncError> {
    let a = arg("split", args, 2)?;
    let (s, sep) = (string("split", &a[0])?, string("split", &a[1])?);
    Ok(Value::Array(
        s.split(sep.as_str())
            .map(|p| Value::String(p.to_owned()))
            .collect(),
    ))
}

fn pad(args: &[Value]) -> Result<Value, FuncError> {
    let a = arg("pad", args, 3)?;
    let s = string("pad", &a[0])?;
    let n = |v: &Value| {
        string("pad", v)?
            .parse::<usize>()
            .map_err(|e| FuncError::Generic(format!("pad: {e}")))
    };
    let (before, after) = (n(&a[1])?, n(&a[2])?);
    Ok(Value::String(format!(
        "{}{s}{}",
        " ".repeat(before),
        " ".repeat(after)
    )))
}

fn truncate(args: &[Value]) -> Result<Value, FuncError> {
    let a = arg("truncate", args, 2)?;
    let s = string("truncate", &a[0])?;
    let n = string("truncate", &a[1])?
        .parse::<usize>()
        .map_err(|e| FuncError::Generic(format!("truncate: {e}")))?;
    Ok(Value::String(s.chars().take(n).collect()))
}

/// Go's `text/tabwriter` as docker/cli configures it: a cell ended by a
/// tab is padded to its column's widest cell plus 3, at least 10; the
/// last cell of a line is not aligned.
pub fn tabwrite(text: &str) -> String {
    let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split('\t').collect()).collect();
    let mut widths: Vec<usize> = Vec::new();
    for cells in &lines {
        for (i, cell) in cells.iter().enumerate().take(cells.len().saturating_sub(1)) {
            let w = cell.chars().count() + PADDING;
            if widths.len() <= i {
                widths.push(MIN_WIDTH);
            }
            widths[i] = widths[i].max(w);
        }
    }
    let mut out = String::new();
    for cells in &lines {
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 < cells.len() {
                out.push_str(&format!("{cell:<w$}", w = widths[i]));
            } else {
                out.push_str(cell);
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn render(spec: &str, items: &[Json]) -> String {
        Format::parse(spec, "{{.ID}}")
            .unwrap()
            .render_all(items, &[("ID", "NETWORK ID"), ("Name", "NAME")])
            .unwrap()
    }

    #[test]
    fn fields_range_and_functions() {
        let c = json!({"Name": "web", "Labels": {"a": "1"}, "Nets": ["n1", "n2"],
                       "NetworkSettings": {"Networks": {"lan": {"IPAddress": "10.0.0.2"}}}});
        assert_eq!(render("{{.Name}}", std::slice::from_ref(&c)), "web\n");
        assert_eq!(
            render(
                "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                std::slice::from_ref(&c)
            ),
            "10.0.0.2\n"
        );
        assert_eq!(
            render("{{join .Nets \",\"}}", std::slice::from_ref(&c)),
            "n1,n2\n"
        );
        assert_eq!(
            render(
                "{{upper .Name}} {{title \"ab cd\"}}",
                std::slice::from_ref(&c)
            ),
            "WEB Ab Cd\n"
        );
        assert_eq!(render("{{lower \"AB\"}}", std::slice::from_ref(&c)), "ab\n");
        assert_eq!(
            render("{{index .Labels \"a\"}}", std::slice::from_ref(&c)),
            "1\n"
        );
        assert_eq!(render("{{len .Nets}}", std::slice::from_ref(&c)), "2\n");
        assert_eq!(
            render(
                "{{index (split \"a:b\" \":\") 1}}",
                std::slice::from_ref(&c)
            ),
            "b\n"
        );
        assert_eq!(
            render("{{json .Labels}}", std::slice::from_ref(&c)),
            "{\"a\":\"1\"}\n"
        );
        assert_eq!(
            render("{{println .Name}}", std::slice::from_ref(&c)),
            "web\n\n"
        );
    }

    #[test]
    fn table_has_docker_headers_and_aligned_columns() {
        let items = [
            json!({"ID": "0123456789ab", "Name": "a-rather-long-network-name"}),
            json!({"ID": "ba9876543210", "Name": "b"}),
        ];
        assert_eq!(
            render("table {{.ID}}\\t{{.Name}}", &items),
            "NETWORK ID     NAME\n\
             0123456789ab   a-rather-long-network-name\n\
             ba9876543210   b\n"
        );
        assert_eq!(render("table", &items[..1]), "NETWORK ID\n0123456789ab\n");
    }

    #[test]
    fn bad_template_is_an_error_naming_it() {
        let e = Format::parse("{{.Name", "").err().unwrap().to_string();
        assert!(
            e.starts_with("template parsing error in --format \"{{.Name\""),
            "{e}"
        );
    }

    #[test]
    fn tabwriter_minimum_width() {
        assert_eq!(tabwrite("a\tb\nccc\td\n"), "a         b\nccc       d\n");
    }
}
