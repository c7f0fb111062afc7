//! `ps` and `inspect --format`.

use anyhow::Result;
use berth_api::*;
use std::io::Write;

/// `inspect --format`: docker's template subset — `{{.A.B}}` (a string as is, other values as
/// JSON, a missing field as `<no value>`), `{{json .A.B}}` and `{{json .}}`; other text is
/// copied. Anything else inside `{{ }}` is an error naming it.
pub fn render_template(tpl: &str, doc: &serde_json::Value) -> anyhow::Result<String> {
    let mut out = String::new();
    let mut rest = tpl;
    while let Some(i) = rest.find("{{") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let j = after
            .find("}}")
            .ok_or_else(|| anyhow::anyhow!("template: unclosed {{{{ in {tpl:?}"))?;
        let action = after[..j].trim();
        let (json, path) = match action.strip_prefix("json ") {
            Some(p) => (true, p.trim()),
            None => (false, action),
        };
        if !path.starts_with('.') {
            anyhow::bail!("template: unsupported action {{{{{action}}}}}");
        }
        let mut v = Some(doc);
        for key in path[1..].split('.').filter(|k| !k.is_empty()) {
            v = v.and_then(|x| x.get(key));
        }
        match (v, json) {
            (None, true) => out.push_str("null"),
            (None, false) => out.push_str("<no value>"),
            (Some(v), true) => out.push_str(&v.to_string()),
            (Some(serde_json::Value::String(s)), false) => out.push_str(s),
            (Some(v), false) => out.push_str(&v.to_string()),
        }
        rest = &after[j + 2..];
    }
    out.push_str(rest);
    Ok(out.replace("\\t", "\t").replace("\\n", "\n"))
}

/// `ps --format` with Go-template-like `{{.Field}}` placeholders, `table` and `json`.
pub fn ps(
    out: &mut impl Write,
    list: &[ContainerSummary],
    quiet: bool,
    no_trunc: bool,
    format: &str,
) -> Result<()> {
    let id = |c: &ContainerSummary| {
        if no_trunc {
            c.id.clone()
        } else {
            c.id.chars().take(12).collect()
        }
    };
    let ports = |c: &ContainerSummary| {
        c.ports
            .iter()
            .map(|p| {
                if p.host_port == 0 {
                    format!("{}/{}", p.container_port, p.protocol)
                } else {
                    format!(
                        "{}:{}->{}/{}",
                        if p.host_ip.is_empty() {
                            "0.0.0.0"
                        } else {
                            &p.host_ip
                        },
                        p.host_port,
                        p.container_port,
                        p.protocol
                    )
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let created = |c: &ContainerSummary| {
        crate::fmt::ago(&berth_api::wire::rfc3339_nanos(
            c.created_unix * 1_000_000_000,
        ))
    };
    let command = |c: &ContainerSummary| {
        let s = if no_trunc || c.command.chars().count() <= 20 {
            c.command.clone()
        } else {
            format!("{}…", c.command.chars().take(19).collect::<String>())
        };
        format!("\"{s}\"")
    };
    if quiet {
        for c in list {
            writeln!(out, "{}", id(c))?;
        }
        return Ok(());
    }
    match format {
        "" | "table" => {
            let mut rows = vec![vec![
                "CONTAINER ID".to_string(),
                "IMAGE".into(),
                "COMMAND".into(),
                "CREATED".into(),
                "STATUS".into(),
                "PORTS".into(),
                "NAMES".into(),
            ]];
            for c in list {
                rows.push(vec![
                    id(c),
                    crate::fmt::short_name(&c.image).to_string(),
                    command(c),
                    created(c),
                    c.status.clone(),
                    ports(c),
                    c.name.clone(),
                ]);
            }
            crate::fmt::table(out, &rows)?;
        }
        "json" | "{{json .}}" => {
            for c in list {
                let v = serde_json::json!({
                    "ID": id(c), "Image": c.image, "Command": command(c),
                    "CreatedAt": berth_api::wire::rfc3339_nanos(c.created_unix * 1_000_000_000),
                    "RunningFor": created(c), "Ports": ports(c), "State": c.state,
                    "Status": c.status, "Names": c.name, "Labels": c.labels,
                });
                writeln!(out, "{v}")?;
            }
        }
        t => {
            let t = t.strip_prefix("table ").unwrap_or(t);
            for c in list {
                let line = t
                    .replace("\\t", "\t")
                    .replace("{{.ID}}", &id(c))
                    .replace("{{.Names}}", &c.name)
                    .replace("{{.Image}}", &c.image)
                    .replace("{{.Command}}", &command(c))
                    .replace("{{.Status}}", &c.status)
                    .replace("{{.State}}", &c.state)
                    .replace("{{.Ports}}", &ports(c))
                    .replace("{{.RunningFor}}", &created(c))
                    .replace(
                        "{{.CreatedAt}}",
                        &berth_api::wire::rfc3339_nanos(c.created_unix * 1_000_000_000),
                    );
                writeln!(out, "{line}")?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inspect_templates() {
        let d = serde_json::json!({"State": {"Status": "running", "Pid": 7},
            "Config": {"Env": ["A=1"]}, "Name": "/web"});
        assert_eq!(
            render_template("{{.Name}} {{.State.Status}} {{.State.Pid}}", &d).unwrap(),
            "/web running 7"
        );
        assert_eq!(
            render_template("{{json .Config.Env}}", &d).unwrap(),
            r#"["A=1"]"#
        );
        assert_eq!(render_template("{{.Nope.X}}", &d).unwrap(), "<no value>");
        assert_eq!(render_template("a\\tb", &d).unwrap(), "a\tb");
        assert!(render_template("{{range .X}}", &d)
            .unwrap_err()
            .to_string()
            .contains("unsupported action {{range .X}}"));
        assert!(render_template("{{.A", &d).is_err());
    }
}
