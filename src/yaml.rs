//! YAML for other tools to read (the Kubernetes export): block style, every string that any
//! YAML parser could take for something else quoted.
//!
//! Kubernetes reads manifests with a YAML 1.1 parser, to which `yes`, `off`, `y`, `=`, `12:30`
//! and `0b101` are not strings; serde's YAML emitters follow YAML 1.2 and leave them bare, so an
//! env value `DEBUG = "yes"` became a boolean that `kubectl apply` refused. Here a string is left
//! bare only when it is plainly a word, a path, a URL or an image name.

use serde_json::Value;

/// `value` as a YAML document.
pub fn to_string(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(map) if !map.is_empty() => mapping(map, 0, &mut out),
        Value::Array(items) if !items.is_empty() => sequence(items, 0, &mut out),
        scalar => {
            out.push_str(&inline(scalar, 0));
            out.push('\n');
        }
    }
    out
}

fn mapping(map: &serde_json::Map<String, Value>, indent: usize, out: &mut String) {
    for (i, (key, value)) in map.iter().enumerate() {
        // The first entry of a mapping that is a sequence item follows its `- `.
        if i > 0 || !out.ends_with("- ") {
            push_indent(out, indent);
        }
        out.push_str(&string(key, indent));
        out.push(':');
        match value {
            Value::Object(m) if !m.is_empty() => {
                out.push('\n');
                mapping(m, indent + 2, out);
            }
            Value::Array(items) if !items.is_empty() => {
                out.push('\n');
                sequence(items, indent, out);
            }
            scalar => {
                out.push(' ');
                out.push_str(&inline(scalar, indent + 2));
                out.push('\n');
            }
        }
    }
}

fn sequence(items: &[Value], indent: usize, out: &mut String) {
    for item in items {
        push_indent(out, indent);
        out.push_str("- ");
        match item {
            Value::Object(m) if !m.is_empty() => mapping(m, indent + 2, out),
            Value::Array(inner) if !inner.is_empty() => {
                out.push('\n');
                sequence(inner, indent + 2, out);
            }
            scalar => {
                out.push_str(&inline(scalar, indent + 2));
                out.push('\n');
            }
        }
    }
}

fn push_indent(out: &mut String, indent: usize) {
    out.extend(std::iter::repeat_n(' ', indent));
}

/// A value written on its key's or its dash's line: a scalar, or an empty collection. A
/// string of several lines is a literal block, its lines at `indent`.
fn inline(value: &Value, indent: usize) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => string(s, indent),
        Value::Array(_) => "[]".into(),
        Value::Object(_) => "{}".into(),
    }
}

fn string(s: &str, indent: usize) -> String {
    if is_plain(s) {
        return s.to_string();
    }
    if let Some(block) = literal(s, indent) {
        return block;
    }
    if s.chars().all(|c| !c.is_control()) {
        return format!("'{}'", s.replace('\'', "''"));
    }
    // JSON's escapes are a subset of those of YAML's double-quoted strings.
    serde_json::to_string(s).expect("a string serializes")
}

/// A string of several lines, each kept as it is, as a literal block: `|` when it ends in one
/// newline, `|-` when in none. Anything a block would change (a first line that starts with a
/// space, newlines at the end, control characters) is quoted instead.
fn literal(s: &str, indent: usize) -> Option<String> {
    let body = s.strip_suffix('\n').unwrap_or(s);
    let fits = body.contains('\n')
        && !body.ends_with('\n')
        && !body.starts_with([' ', '\t'])
        && !body
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t');
    if !fits {
        return None;
    }
    let mut out = String::from(if body.len() < s.len() { "|" } else { "|-" });
    for line in body.split('\n') {
        out.push('\n');
        if !line.is_empty() {
            out.extend(std::iter::repeat_n(' ', indent));
            out.push_str(line);
        }
    }
    Some(out)
}

/// Whether `s` reads as the same string, bare, to every YAML parser: it starts with a letter or
/// `/` or is a quantity or a flag, is no word YAML 1.1 gives a meaning (`yes`, `off`, `null`…), and holds only letters,
/// digits, `_ . / - : @ + = % $ ( ) ,` and single spaces, with no `: ` or ` #` and no `:` at the
/// end.
fn is_plain(s: &str) -> bool {
    const WORDS: [&str; 9] = ["y", "n", "yes", "no", "true", "false", "on", "off", "null"];
    let Some(first) = s.chars().next() else {
        return false;
    };
    // A quantity (`256Mi`, `50m`) has a letter no number, hex or octal one has, and no `-` or
    // `:` that could make it a date or a time.
    let quantity = first.is_ascii_digit()
        && s.chars()
            .any(|c| c.is_ascii_alphabetic() && !"abcdefxoABCDEFXO".contains(c))
        && !s.contains(['-', ':']);
    // A flag (`-p`, `--config=…`): a dash and then a letter, or two and a letter.
    let flag = s
        .strip_prefix("--")
        .or_else(|| s.strip_prefix('-'))
        .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_alphabetic()));
    (first.is_ascii_alphabetic() || first == '/' || quantity || flag)
        && !WORDS.contains(&s.to_ascii_lowercase().as_str())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_./-:@+=%$(), ".contains(c))
        && !s.contains(": ")
        && !s.contains(" #")
        && !s.contains("  ")
        && !s.ends_with([':', ' '])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strings_that_a_yaml_1_1_parser_would_misread_are_quoted() {
        for (s, written) in [
            ("yes", "'yes'"),
            ("Off", "'Off'"),
            ("y", "'y'"),
            ("NULL", "'NULL'"),
            ("~", "'~'"),
            ("=", "'='"),
            ("<<", "'<<'"),
            ("12:30", "'12:30'"),
            ("1_000", "'1_000'"),
            ("0b101", "'0b101'"),
            ("0123", "'0123'"),
            ("8080", "'8080'"),
            (".inf", "'.inf'"),
            ("2026-11-28", "'2026-11-28'"),
            ("2026-11-28T09:30:00Z", "'2026-11-28T09:30:00Z'"),
            ("1e3", "'1e3'"),
            ("0x1F", "'0x1F'"),
            ("0o17", "'0o17'"),
            ("0.0.0.0:8080", "'0.0.0.0:8080'"),
            ("", "''"),
            ("it's", "'it''s'"),
            ("a: b", "'a: b'"),
            ("a #b", "'a #b'"),
            ("key:", "'key:'"),
            (" lead", "' lead'"),
            ("- x", "'- x'"),
            ("-", "'-'"),
            ("-1", "'-1'"),
            ("-.inf", "'-.inf'"),
            ("---", "'---'"),
            ("☃", "'☃'"),
            ("tab\there", "\"tab\\there\""),
            ("bell\u{7}", "\"bell\\u0007\""),
        ] {
            assert_eq!(string(s, 0), written, "{s:?}");
        }
        for plain in [
            "users",
            "nats:2.10",
            "http://otel-collector.msctl.svc.cluster.local:4318",
            "service.instance.id=$(MSCTL_INSTANCE)",
            "app.kubernetes.io/name",
            "/conf/config.yaml",
            "--config=/conf/config.yaml",
            "apply with kubectl",
            "256Mi",
            "50m",
            "-p",
            "-js",
        ] {
            assert_eq!(string(plain, 0), plain, "{plain:?}");
        }
    }

    #[test]
    fn documents_are_block_style_with_literal_blocks_for_lines() {
        let doc = json!({
            "kind": "ConfigMap",
            "data": {"config.yaml": "a: 1\n\nb:\n  - c\n", "trimmed": "x\ny"},
            "spec": {"containers": [{"name": "api", "args": ["--port", "8080"], "env": []}]},
            "empty": {},
        });
        assert_eq!(
            to_string(&doc),
            "data:\n  config.yaml: |\n    a: 1\n\n    b:\n      - c\n  trimmed: |-\n    x\n    y\nempty: {}\nkind: ConfigMap\nspec:\n  containers:\n  - args:\n    - --port\n    - '8080'\n    env: []\n    name: api\n"
        );
    }
}
