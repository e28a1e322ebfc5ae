//! PromQL templates: `{{name}}`, `{{namespace}}`, `{{track}}`, `{{version}}`, `{{window}}`.

/// The values a template is rendered with.
#[derive(Clone, Debug, PartialEq)]
pub struct Vars<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    pub track: &'a str,
    pub version: &'a str,
    /// A PromQL range, for example `2m` or `45s`.
    pub window: &'a str,
}

const KNOWN: [&str; 5] = ["name", "namespace", "track", "version", "window"];

/// Checks that a template only uses known variables; the message names the first unknown one.
pub fn check(template: &str) -> Result<(), String> {
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            return Err(format!("unclosed '{{{{' in {template:?}"));
        };
        let var = after[..end].trim();
        if !KNOWN.contains(&var) {
            return Err(format!(
                "unknown template variable {{{{{var}}}}} (known: {})",
                KNOWN.map(|k| format!("{{{{{k}}}}}")).join(", ")
            ));
        }
        rest = &after[end + 2..];
    }
    Ok(())
}

/// Replaces every variable. Values are inserted as they are: they come from object names,
/// versions (label values) and durations, none of which can hold a quote.
pub fn render(template: &str, vars: &Vars<'_>) -> String {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[start..]);
            return out;
        };
        let value = match after[..end].trim() {
            "name" => vars.name,
            "namespace" => vars.namespace,
            "track" => vars.track,
            "version" => vars.version,
            "window" => vars.window,
            _ => "",
        };
        out.push_str(value);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

/// A duration as a PromQL range: whole seconds, at least one.
pub fn promql_range(d: std::time::Duration) -> String {
    format!("{}s", d.as_secs().max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    const VARS: Vars<'static> = Vars {
        name: "fraud",
        namespace: "models",
        track: "shadow",
        version: "v2",
        window: "2m",
    };

    #[test]
    fn renders_every_variable_with_or_without_spaces() {
        let q = r#"rate(x{ns="{{namespace}}",d="{{ name }}",t="{{track}}",v="{{version}}"}[{{window}}])"#;
        assert_eq!(
            render(q, &VARS),
            r#"rate(x{ns="models",d="fraud",t="shadow",v="v2"}[2m])"#
        );
        assert!(check(q).is_ok());
    }

    #[test]
    fn unknown_and_unclosed_variables_are_errors() {
        assert!(check("x{a=\"{{pod}}\"}").unwrap_err().contains("{{pod}}"));
        assert!(check("x{{name").unwrap_err().contains("unclosed"));
    }

    #[test]
    fn ranges_are_whole_seconds() {
        assert_eq!(
            promql_range(std::time::Duration::from_millis(90_500)),
            "90s"
        );
        assert_eq!(promql_range(std::time::Duration::ZERO), "1s");
    }
}
