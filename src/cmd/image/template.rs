//! Go templates for `-f/--format` through the `gtmpl` crate, with docker's `json` function and
//! Go-style printing of lists and maps (`{{.Config.Env}}` prints `[A=1 B=2]`).

use anyhow::{anyhow, Context};
use gtmpl::{Context as TmplContext, FuncError, Template, Value};
use std::collections::HashMap;

/// A parsed template, ready to render values.
pub struct GoTemplate {
    template: Template,
}

impl GoTemplate {
    /// Parses a docker-style format string.
    pub fn parse(text: &str) -> anyhow::Result<GoTemplate> {
        let mut template = Template::default();
        template.add_func("json", json_func);
        template.add_func("gofmt", gofmt_func);
        template.add_func("upper", upper_func);
        template.add_func("lower", lower_func);
        template.add_func("join", join_func);
        template
            .parse(wrap_print_actions(text))
            .map_err(|e| anyhow!("invalid format template {text:?}: {e}"))?;
        Ok(GoTemplate { template })
    }

    /// Renders the template for one JSON value.
    pub fn render(&self, value: &serde_json::Value) -> anyhow::Result<String> {
        self.template
            .render(&TmplContext::from(to_gtmpl(value)))
            .map_err(|e| anyhow!("{e}"))
            .context("executing the format template")
    }
}

/// Rewrites every printing action `{{X}}` as `{{gofmt (X)}}` so lists and maps print as Go does.
/// Control actions (if, range, with, end, else, define, template, block), comments and variable
/// assignments are left alone.
fn wrap_print_actions(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let Some(len) = rest[start..].find("}}") else {
            break;
        };
        out.push_str(&rest[..start]);
        let action = &rest[start + 2..start + len];
        let (ltrim, inner) = match action.strip_prefix('-') {
            Some(i) if i.starts_with(char::is_whitespace) => ("-", i),
            _ => ("", action),
        };
        let (inner, rtrim) = match inner.strip_suffix('-') {
            Some(i) if i.ends_with(char::is_whitespace) => (i, "-"),
            _ => (inner, ""),
        };
        let body = inner.trim();
        let first = body.split_whitespace().next().unwrap_or("");
        let control = matches!(
            first,
            "if" | "else" | "end" | "range" | "with" | "define" | "template" | "block"
        ) || body.starts_with("/*")
            || body.is_empty()
            || (body.starts_with('$') && (body.contains(":=") || body.contains(" = ")));
        out.push_str("{{");
        out.push_str(ltrim);
        if control {
            out.push_str(inner);
        } else {
            out.push_str(" gofmt (");
            out.push_str(body);
            out.push_str(") ");
        }
        out.push_str(rtrim);
        out.push_str("}}");
        rest = &rest[start + len + 2..];
    }
    out.push_str(rest);
    out
}

/// serde_json -> gtmpl (objects become maps so that field access works).
pub fn to_gtmpl(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::Nil,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                Value::from(n.as_f64().unwrap_or_default())
            }
        }
        serde_json::Value::String(s) => Value::String(s.clone()),
        serde_json::Value::Array(a) => Value::Array(a.iter().map(to_gtmpl).collect()),
        serde_json::Value::Object(o) => Value::Map(
            o.iter()
                .map(|(k, v)| (k.clone(), to_gtmpl(v)))
                .collect::<HashMap<_, _>>(),
        ),
    }
}

/// gtmpl -> serde_json (maps come out with sorted keys).
fn to_json(v: &Value) -> serde_json::Value {
    match v {
        Value::NoValue | Value::Nil | Value::Function(_) => serde_json::Value::Null,
        Value::Bool(b) => serde_json::Value::Bool(*b),
        Value::String(s) => serde_json::Value::String(s.clone()),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into()
            } else if let Some(u) = n.as_u64() {
                u.into()
            } else {
                serde_json::Number::from_f64(n.as_f64().unwrap_or_default())
                    .map_or(serde_json::Value::Null, serde_json::Value::Number)
            }
        }
        Value::Array(a) => serde_json::Value::Array(a.iter().map(to_json).collect()),
        Value::Object(m) | Value::Map(m) => serde_json::Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), to_json(v)))
                .collect::<serde_json::Map<_, _>>(),
        ),
    }
}

/// Go's `%v` formatting of a value.
fn go_format(v: &Value) -> String {
    match v {
        Value::NoValue => "<no value>".into(),
        Value::Nil => "<nil>".into(),
        Value::Bool(b) => b.to_string(),
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Function(_) => "<func>".into(),
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(go_format).collect::<Vec<_>>().join(" ")
        ),
        Value::Object(m) | Value::Map(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let items: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{k}:{}", go_format(&m[k])))
                .collect();
            format!("map[{}]", items.join(" "))
        }
    }
}

fn one_arg<'a>(name: &str, args: &'a [Value]) -> Result<&'a Value, FuncError> {
    match args {
        [v] => Ok(v),
        _ => Err(FuncError::ExactlyXArgs(name.to_string(), 1)),
    }
}

fn json_func(args: &[Value]) -> Result<Value, FuncError> {
    let v = one_arg("json", args)?;
    serde_json::to_string(&to_json(v))
        .map(Value::String)
        .map_err(|e| FuncError::Generic(e.to_string()))
}

fn gofmt_func(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::String(go_format(one_arg("gofmt", args)?)))
}

fn upper_func(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::String(
        go_format(one_arg("upper", args)?).to_uppercase(),
    ))
}

fn lower_func(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::String(
        go_format(one_arg("lower", args)?).to_lowercase(),
    ))
}

fn join_func(args: &[Value]) -> Result<Value, FuncError> {
    match args {
        [Value::Array(items), Value::String(sep)] => Ok(Value::String(
            items.iter().map(go_format).collect::<Vec<_>>().join(sep),
        )),
        [_, _] => Err(FuncError::UnableToConvertFromValue),
        _ => Err(FuncError::ExactlyXArgs("join".into(), 2)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_docker_style_templates() {
        let v = serde_json::json!({
            "Id": "sha256:abc",
            "Config": {"Env": ["A=1", "B=2"], "Cmd": ["sh"], "Labels": {"b": "2", "a": "1"}}
        });
        let r = |t: &str| GoTemplate::parse(t).unwrap().render(&v).unwrap();
        assert_eq!(r("{{.Id}}"), "sha256:abc");
        assert_eq!(r("{{.Config.Env}}"), "[A=1 B=2]");
        assert_eq!(r("{{json .Config.Cmd}}"), r#"["sh"]"#);
        assert_eq!(r("{{.Config.Labels}}"), "map[a:1 b:2]");
        assert_eq!(r("{{range .Config.Env}}{{.}};{{end}}"), "A=1;B=2;");
        assert_eq!(r("{{join .Config.Env \",\"}}"), "A=1,B=2");
        assert_eq!(r("id={{ .Id -}} \n"), "id=sha256:abc");
    }
}
